"""``build_tokenizer``: ``TokenizerConfig`` -> the ``MegatronTokenizer`` of its family.

The one entry point the data pipeline, ``tools/preprocess_data.py`` and training use. Each family's
``from_config`` checks its own files (errors name the flag); this module only picks the family.
"""

from __future__ import annotations

from megatron.data.tokenizers.base import MegatronTokenizer
from megatron.data.tokenizers.bpe import GPT2BPETokenizer
from megatron.data.tokenizers.config import TokenizerConfig
from megatron.data.tokenizers.hf import HuggingFaceTokenizer, NullTokenizer
from megatron.data.tokenizers.sentencepiece import GPTSentencePieceTokenizer, SentencePieceTokenizer
from megatron.data.tokenizers.wordpiece import BertWordPieceTokenizer
from megatron.logging import get_logger

__all__ = ["build_tokenizer"]

logger = get_logger(__name__)

# --tokenizer-type -> family; every value of TokenizerType has an entry (tests/data/test_tokenizer.py checks it).
TOKENIZER_FAMILIES: dict[str, type[MegatronTokenizer]] = {
    "GPT2BPETokenizer": GPT2BPETokenizer,
    "BertWordPieceLowerCase": BertWordPieceTokenizer,
    "BertWordPieceCase": BertWordPieceTokenizer,
    "SentencePieceTokenizer": SentencePieceTokenizer,
    "GPTSentencePieceTokenizer": GPTSentencePieceTokenizer,
    "HuggingFaceTokenizer": HuggingFaceTokenizer,
    "NullTokenizer": NullTokenizer,
}


def build_tokenizer(cfg: TokenizerConfig) -> MegatronTokenizer:
    """Validate ``cfg`` and construct its tokenizer.

    Raises:
        ValueError: a required file is unset or missing (the message names the flag, e.g. ``--vocab-file``), or a
            file is malformed (the message names the file and line/token).
    """
    tok = TOKENIZER_FAMILIES[cfg.tokenizer_type].from_config(cfg)
    # debug, not log_rank0: preprocessing builds one tokenizer per worker process and must not import torch.
    logger.debug("built %s with %d ids (unpadded)", cfg.tokenizer_type, tok.vocab_size)
    return tok

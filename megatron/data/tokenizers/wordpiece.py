"""BERT WordPiece (``BertWordPieceLowerCase`` / ``BertWordPieceCase``) from a ``vocab.txt``, run on HF tokenizers.

The pipeline reproduces Google's ``FullTokenizer`` that Megatron uses: text cleanup, CJK character splitting,
optional lower-casing with accent stripping, whitespace and punctuation splitting, then greedy longest-match
WordPiece with ``##`` continuations (words longer than 200 characters become ``[UNK]``). Like Megatron, the
tokenizer appends ``[BOS]``, ``[EOS]`` and ``<extra_id_i>`` to the vocabulary when absent (30522 -> 30524 ids).
"""

from __future__ import annotations

from typing import Any, Iterable, Sequence

from megatron.data.tokenizers.base import MegatronTokenizer, file_identity, read_text_file, require_file
from megatron.data.tokenizers.config import TokenizerConfig

__all__ = ["BertWordPieceTokenizer", "load_wordpiece_vocab", "REQUIRED_BERT_TOKENS"]

REQUIRED_BERT_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
# Google's WordpieceTokenizer default; HF's default (100) would turn 101..200-character words into [UNK].
_MAX_WORD_CHARS = 200


def load_wordpiece_vocab(path: str) -> dict[str, int]:
    """``vocab.txt`` -> ``{token: line index}``; lines are stripped, and a repeated token keeps its last line."""
    text = read_text_file(path, "vocab_file (--vocab-file)")
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # the newline that ends the last line does not start another token
    vocab = {line.strip(): i for i, line in enumerate(lines)}
    missing = [t for t in REQUIRED_BERT_TOKENS if t not in vocab]
    if missing:
        raise ValueError(
            f"vocab_file (--vocab-file) {path!r} lacks the BERT special tokens {missing}; "
            f"a WordPiece vocab.txt must contain {list(REQUIRED_BERT_TOKENS)}"
        )
    return vocab


class BertWordPieceTokenizer(MegatronTokenizer):
    """Megatron's ``_BertWordPieceTokenizer``: cls/sep/pad/mask from the file, bos/eos added, no eod.

    ``tokenize`` returns word pieces only (no [CLS]/[SEP] framing; the BERT dataset adds those) and, like
    Google's tokenizer, splits bracketed special-token text such as ``"[MASK]"`` into ordinary pieces.
    ``detokenize`` joins pieces with spaces and glues ``##`` continuations (Megatron's ``decode``).
    """

    @classmethod
    def from_config(cls, cfg: TokenizerConfig) -> "BertWordPieceTokenizer":
        """From ``vocab_file``; ``BertWordPieceLowerCase`` lower-cases and strips accents."""
        return cls(cfg, require_file(cfg, "vocab_file"), lower_case=cfg.tokenizer_type.endswith("LowerCase"))

    def __init__(self, cfg: TokenizerConfig, vocab_file: str, lower_case: bool) -> None:
        from tokenizers import Tokenizer, models, normalizers, pre_tokenizers

        super().__init__(cfg)
        vocab = load_wordpiece_vocab(vocab_file)
        # Megatron appends at len(vocab); with repeated lines that id could already be taken, so append after the
        # largest id instead (identical for every vocab without repeats).
        next_id = max(vocab.values()) + 1
        self._extra_tokens = [f"<extra_id_{i}>" for i in range(cfg.vocab_extra_ids)]
        for token in ("[BOS]", "[EOS]", *self._extra_tokens):
            if token not in vocab:
                vocab[token] = next_id
                next_id += 1
        self._vocab = vocab
        self._inv = {i: t for t, i in vocab.items()}
        self._size = next_id
        self._lower_case = lower_case
        self._files = {"vocab_file": file_identity(vocab_file)}
        # Added tokens all contain punctuation, which the pre-tokenizer splits off, so putting them in the
        # WordPiece vocabulary only makes them decodable, never produced from text.
        tok = Tokenizer(models.WordPiece(vocab=vocab, unk_token="[UNK]", max_input_chars_per_word=_MAX_WORD_CHARS))
        tok.normalizer = normalizers.BertNormalizer(
            clean_text=True, handle_chinese_chars=True, strip_accents=lower_case, lowercase=lower_case
        )
        tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        self._tok = tok

    @property
    def vocab_size(self) -> int:
        return self._size

    @property
    def vocab(self) -> dict[str, int]:
        return dict(self._vocab)

    @property
    def inv_vocab(self) -> dict[int, str]:
        return dict(self._inv)

    def tokenize(self, text: str) -> list[int]:
        return self._tok.encode(text, add_special_tokens=False).ids

    def tokenize_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return [e.ids for e in self._tok.encode_batch(list(texts), add_special_tokens=False)]

    def detokenize(self, ids: Iterable[int]) -> str:
        try:
            tokens = [self._inv[int(i)] for i in ids]
        except KeyError as e:
            raise ValueError(
                f"{self._cfg.tokenizer_type}.detokenize: id {e.args[0]} is not in the vocabulary"
            ) from None
        return " ".join(tokens).replace(" ##", "").strip()

    @property
    def cls(self) -> int:
        return self._vocab["[CLS]"]

    @property
    def sep(self) -> int:
        return self._vocab["[SEP]"]

    @property
    def pad(self) -> int:
        return self._vocab["[PAD]"]

    @property
    def mask(self) -> int:
        return self._vocab["[MASK]"]

    @property
    def bos(self) -> int:
        return self._vocab["[BOS]"]

    @property
    def eos(self) -> int:
        return self._vocab["[EOS]"]

    @property
    def additional_special_tokens_ids(self) -> list[int]:
        return [self._vocab[t] for t in self._extra_tokens]

    @property
    def unique_identifiers(self) -> dict[str, Any]:
        return {
            "class": type(self).__name__,
            "tokenizer_type": self._cfg.tokenizer_type,
            "lower_case": self._lower_case,
            "vocab_extra_ids": self._cfg.vocab_extra_ids,
            **self._files,
        }

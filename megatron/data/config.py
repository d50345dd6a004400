"""``DataConfig``: where the GPT training data comes from and how samples become batches.

Fields mirror Megatron's data flags (``--data-path``, ``--split``, ``--seq-length``, ``--eod-mask-loss``, ...).
``__post_init__`` checks each field on its own and names the field in its errors; cross-room rules (global batch
size, sequence length vs. position embeddings) belong to ``megatron.config.validate``.
"""

from __future__ import annotations

import dataclasses
import enum
import math
import re
from collections.abc import Sequence
from typing import Literal, NamedTuple, Optional

__all__ = ["DataConfig", "Blend", "Split", "parse_blend", "parse_split", "split_document_ranges", "SPLIT_NAMES"]


class Split(enum.IntEnum):
    """The three dataset splits; the value is the position in (train, valid, test) tuples."""

    train = 0
    valid = 1
    test = 2


SPLIT_NAMES = tuple(s.name for s in Split)


class Blend(NamedTuple):
    """A parsed data path: dataset prefixes and their (unnormalized) weights, or None for one plain prefix."""

    prefixes: list[str]
    weights: Optional[list[float]]


def parse_blend(tokens: list[str], field: str) -> Blend:
    """Parse ``["prefix"]`` or ``["w1", "p1", "w2", "p2", ...]`` (Megatron's ``--data-path`` forms).

    Raises:
        ValueError: naming ``field`` for an empty list, an odd number of weight/prefix tokens, a weight that is
            not a number, or a weight that is not positive and finite.
    """
    if not tokens:
        raise ValueError(f"{field} is empty; give one dataset prefix or weight/prefix pairs 'w1 p1 w2 p2 ...'")
    if len(tokens) == 1:
        return Blend([str(tokens[0])], None)
    if len(tokens) % 2:
        raise ValueError(
            f"{field} has {len(tokens)} entries {tokens!r}: with several datasets it must alternate weight and "
            "prefix ('w1 p1 w2 p2 ...'), an even number of entries"
        )
    weights, prefixes = [], []
    for i in range(0, len(tokens), 2):
        raw, prefix = tokens[i], str(tokens[i + 1])
        try:
            weight = float(raw)
        except (TypeError, ValueError):
            raise ValueError(
                f"{field}[{i}] = {raw!r} is not a weight; {field} alternates weight and prefix ('w1 p1 w2 p2 ...')"
            ) from None
        if not math.isfinite(weight) or weight <= 0:
            raise ValueError(f"{field}[{i}]: weight {raw!r} of {prefix!r} must be a positive finite number")
        weights.append(weight)
        prefixes.append(prefix)
    return Blend(prefixes, weights)


def parse_split(split: str, field: str = "split") -> tuple[float, float, float]:
    """Parse ``"969, 30, 1"`` (or ``"949/50/1"``) into normalized train/valid/test fractions.

    Missing trailing entries are zero, as in Megatron. Raises ValueError naming ``field`` for more than three
    entries, a non-number, a negative entry or an all-zero split.
    """
    parts = [p.strip() for p in re.split(r"[,/]", split)] if split.strip() else []
    if not 1 <= len(parts) <= 3:
        raise ValueError(f"{field} = {split!r} must have 1 to 3 comma-separated weights, e.g. '969, 30, 1'")
    values = []
    for part in parts:
        try:
            values.append(float(part))
        except ValueError:
            raise ValueError(f"{field} = {split!r}: {part!r} is not a number; use e.g. '969, 30, 1'") from None
    if any(not math.isfinite(v) or v < 0 for v in values) or sum(values) <= 0:
        raise ValueError(f"{field} = {split!r}: weights must be finite, >= 0 and not all zero")
    values += [0.0] * (3 - len(values))
    total = sum(values)
    return tuple(v / total for v in values)  # type: ignore[return-value]


def split_document_ranges(
    num_documents: int, fractions: Sequence[float]
) -> list[Optional[tuple[int, int]]]:
    """Document range ``[lo, hi)`` of each split (None for an empty split), as megatron-core computes it.

    Cumulative bookends ``0, f0, f0+f1, f0+f1+f2`` (Python float sums) are scaled by ``num_documents`` and
    rounded; a split whose bookends coincide gets None.
    """
    bookends = [0.0]
    for fraction in fractions:
        bookends.append(bookends[-1] + fraction)
    ranges: list[Optional[tuple[int, int]]] = []
    for lo, hi in zip(bookends[:-1], bookends[1:]):
        if hi <= lo:
            ranges.append(None)
        else:
            ranges.append((int(round(lo * float(num_documents))), int(round(hi * float(num_documents)))))
    return ranges


@dataclasses.dataclass(kw_only=True)
class DataConfig:
    """GPT pretraining data: dataset blend, train/valid/test split, sample length, batch masks, loader."""

    data_path: Optional[list[str]] = None
    """Dataset prefix (without .bin/.idx), or weighted blend 'w1 prefix1 w2 prefix2 ...'; all three splits come
    from it according to --split."""
    split: str = "969, 30, 1"
    """Train/valid/test proportions of the documents of each --data-path dataset, e.g. '969, 30, 1'."""
    train_data_path: Optional[list[str]] = None
    """Training blend (prefix or 'w1 p1 w2 p2 ...'), used whole; replaces --data-path and --split."""
    valid_data_path: Optional[list[str]] = None
    """Validation blend (prefix or 'w1 p1 w2 p2 ...'), used whole; replaces --data-path and --split."""
    test_data_path: Optional[list[str]] = None
    """Test blend (prefix or 'w1 p1 w2 p2 ...'), used whole; replaces --data-path and --split."""
    data_cache_path: Optional[str] = None
    """Directory for the cached document/sample/shuffle and blending indices (default: a 'cache' directory next
    to each dataset)."""
    seq_length: int = 1024
    """Tokens per training sample (the model input length); samples read seq_length + 1 tokens for the labels."""
    eod_mask_loss: bool = False
    """Give zero loss weight to positions whose input token is the end-of-document token."""
    reset_position_ids: bool = False
    """Restart position ids at 0 after every end-of-document token inside a sample."""
    reset_attention_mask: bool = False
    """Stop attention across end-of-document tokens inside a sample (implies an attention mask per sample)."""
    create_attention_mask_in_dataloader: bool = False
    """Build the boolean [b, 1, s, s] causal attention mask in the data loader (True = masked out) instead of
    leaving masking to the attention kernel."""
    train_data_exact_num_epochs: Optional[int] = None
    """Build the training split for exactly this many epochs (sample count derived from the data, samples
    addressed by their position); needed by curriculum learning, whose analyzer indexes this dataset."""
    train_doc_idx_path: Optional[str] = None
    """Load the training split's document index from this .npy file (with --train-sample-idx-path and
    --train-shuffle-idx-path) instead of building it: Megatron-DeepSpeed's
    {prefix}_train_indexmap_exact{N}ep_{seq}sl_{seed}s_doc_idx.npy, or ours. Checked against the data."""
    train_sample_idx_path: Optional[str] = None
    """The training split's sample index .npy (goes with --train-doc-idx-path)."""
    train_shuffle_idx_path: Optional[str] = None
    """The training split's shuffle index .npy (goes with --train-doc-idx-path)."""
    train_idx_path: Optional[str] = None
    """BERT: load the training split's samples mapping from this .npy file instead of building it
    (Megatron-DeepSpeed's {prefix}_train_indexmap_exact{N}ep_{msl}msl_{ssp}ssp_{seed}s.npy, or ours)."""
    num_workers: int = 2
    """DataLoader worker processes prefetching training batches on each tensor-parallel group's reading rank (0 loads
    in the training process; the other ranks of the group receive each batch by broadcast)."""
    dataloader_type: Literal["single", "cyclic"] = "single"
    """'single': one pass in dataset order from the consumed-sample count; 'cyclic': reshuffled every epoch."""
    mock_data: bool = False
    """Train on synthetic documents instead of --data-path (for smoke tests and benchmarks)."""

    def __post_init__(self) -> None:
        parse_split(self.split)
        for name in ("data_path", "train_data_path", "valid_data_path", "test_data_path"):
            value = getattr(self, name)
            if value is not None:
                parse_blend(list(value), name)
        per_split = [self.train_data_path, self.valid_data_path, self.test_data_path]
        if self.data_path is not None and any(p is not None for p in per_split):
            raise ValueError(
                "data_path and train_data_path/valid_data_path/test_data_path are mutually exclusive: either one "
                "blend split by 'split', or one blend per split"
            )
        if self.seq_length < 1:
            raise ValueError(f"seq_length must be >= 1, got {self.seq_length}")
        if self.num_workers < 0:
            raise ValueError(f"num_workers must be >= 0, got {self.num_workers}")
        if self.train_data_exact_num_epochs is not None and self.train_data_exact_num_epochs < 1:
            raise ValueError(
                f"train_data_exact_num_epochs must be >= 1 or None, got {self.train_data_exact_num_epochs}"
            )
        names = ("train_doc_idx_path", "train_sample_idx_path", "train_shuffle_idx_path")
        forced = {n: getattr(self, n) for n in names}
        if any(v is not None for v in forced.values()) and any(v is None for v in forced.values()):
            missing = ", ".join("--" + n.replace("_", "-") for n, v in forced.items() if v is None)
            raise ValueError(f"train_doc_idx_path/train_sample_idx_path/train_shuffle_idx_path go together (the three "
                             f"arrays of one training split); also pass {missing}")
        forced_any = self.train_doc_idx_path is not None or self.train_idx_path is not None
        train = self.train_data_path if self.data_path is None else self.data_path
        if forced_any and train is not None and len(train) > 1:
            raise NotImplementedError(
                "--train-doc-idx-path/--train-idx-path force the indices of one dataset, but the training data is a "
                "blend; use one --data-path prefix (Megatron-DeepSpeed's recipes do) or drop the index-path flags"
            )
        if self.dataloader_type not in ("single", "cyclic"):
            raise ValueError(f"dataloader_type must be 'single' or 'cyclic', got {self.dataloader_type!r}")

    @property
    def split_fractions(self) -> tuple[float, float, float]:
        """Normalized (train, valid, test) fractions of ``split``."""
        return parse_split(self.split)

    def blends(self) -> tuple[Optional[Blend], Optional[Blend], Optional[Blend]]:
        """Per-split blends: from ``data_path`` (the same blend for all three) or the per-split paths."""
        if self.data_path is not None:
            blend = parse_blend(list(self.data_path), "data_path")
            return blend, blend, blend
        paths = (self.train_data_path, self.valid_data_path, self.test_data_path)
        names = ("train_data_path", "valid_data_path", "test_data_path")
        return tuple(None if p is None else parse_blend(list(p), n) for p, n in zip(paths, names))  # type: ignore

    @property
    def uses_split(self) -> bool:
        """True when the splits are carved out of ``data_path`` (or of the mock data) by ``split``."""
        return self.data_path is not None or self.mock_data

    @property
    def attention_mask_needed(self) -> bool:
        """Whether batches carry an explicit attention mask (requested, or implied by reset_attention_mask)."""
        return self.create_attention_mask_in_dataloader or self.reset_attention_mask

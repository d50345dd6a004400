"""The base of datasets whose index arrays live in the index cache: their parameters, cache key and pickling.

``GPTDataset`` and ``BertDataset`` differ in how samples are cut and read; they share how a split's index arrays
are identified (``IndexParams`` plus the data's lengths and the tokenizer), built once on rank 0 and memory-mapped
everywhere (``index_cache``), or forced from files, and how memory-mapped arrays travel to spawned loader workers
(as the cache entry's file names, not as copies).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, ClassVar, Optional

import numpy as np
import torch

from megatron.data.config import Split
from megatron.data.index_cache import IndexCache, fingerprint_lengths, load_or_build_indices

__all__ = ["IndexParams", "CachedIndexDataset"]


@dataclasses.dataclass(frozen=True)
class IndexParams:
    """Everything besides the file contents that determines a split's index arrays."""

    path_prefix: str
    """Dataset prefix (``.bin/.idx`` without suffix)."""
    split: Split
    """Which split this is (part of the cache file name)."""
    document_range: tuple[int, int]
    """The split's documents ``[lo, hi)``."""
    num_samples: Optional[int]
    """Requested samples (None: one epoch); ignored with ``exact_num_epochs``."""
    seq_length: int
    """Tokens per sample (the dataset's own meaning: GPT samples hold ``seq_length + 1`` tokens)."""
    seed: int
    """Seed of the shuffles."""
    exact_num_epochs: Optional[int] = None
    """Build exactly this many epochs (curriculum learning's analyzed training split)."""


class CachedIndexDataset(torch.utils.data.Dataset):
    """A dataset over one split of an indexed dataset, driven by cached index arrays.

    Subclasses set ``KIND`` (the cache entry's kind, e.g. ``"GPTDataset"``), ``INDEX_NAMES`` (the arrays, which
    become attributes of the same names) and ``INDEX_FORMAT_VERSION``, and implement ``_build`` and
    ``unique_identifiers`` (starting from ``_common_identifiers``: every key of it is part of existing cache keys).
    """

    KIND: ClassVar[str]
    INDEX_NAMES: ClassVar[tuple[str, ...]]
    INDEX_FORMAT_VERSION: ClassVar[int]

    def __init__(self, indexed_dataset: Any, params: IndexParams) -> None:
        self.indexed_dataset, self.params = indexed_dataset, params
        self.cache: Optional[IndexCache] = None
        self.built_indices = False

    def _load_indices(self, cache_dir: Optional[str], tokenizer_id: Any,
                      forced: Optional[dict[str, np.ndarray]]) -> None:
        """Take ``forced`` arrays as they are, else load the cache entry or build (and save) it."""
        if forced is not None:
            self._set_arrays(forced)
            return
        if cache_dir is not None:
            self.cache = IndexCache(cache_dir, self.KIND, self.params.split.name,
                                    self.unique_identifiers(tokenizer_id), self.INDEX_NAMES)
        arrays, self.built_indices = load_or_build_indices(self.cache, self._build)
        self._set_arrays(arrays)

    def _set_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        for name in self.INDEX_NAMES:
            setattr(self, name, arrays[name])

    def _build(self) -> dict[str, np.ndarray]:
        raise NotImplementedError(f"{type(self).__name__} must build its index arrays {self.INDEX_NAMES}")

    def unique_identifiers(self, tokenizer_id: Any) -> dict[str, Any]:
        """The cache key's parameters (subclasses add theirs to ``_common_identifiers``)."""
        return self._common_identifiers(tokenizer_id)

    def _common_identifiers(self, tokenizer_id: Any) -> dict[str, Any]:
        p, data = self.params, self.indexed_dataset
        return {
            "class": self.KIND,
            "index_format": self.INDEX_FORMAT_VERSION,
            "path_prefix": os.path.abspath(p.path_prefix),
            "num_sequences": int(len(data.sequence_lengths)),
            "sequence_lengths_md5": fingerprint_lengths(data.sequence_lengths),
            "split": p.split.name,
            "document_range": list(p.document_range),
            "num_samples": None if p.exact_num_epochs is not None else p.num_samples,
            "exact_num_epochs": p.exact_num_epochs,
            "seq_length": p.seq_length,
            "seed": p.seed,
            "tokenizer": tokenizer_id,
        }

    def __getstate__(self) -> dict[str, Any]:
        # Memory-mapped indices travel to spawned workers as the cache entry's file names, not as copies.
        state = self.__dict__.copy()
        if self.cache is not None and all(isinstance(state[n], np.memmap) for n in self.INDEX_NAMES):
            for name in self.INDEX_NAMES:
                state[name] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        if getattr(self, self.INDEX_NAMES[0]) is None:
            arrays = self.cache.load(verify=False)
            if arrays is None:
                raise FileNotFoundError(f"index cache {self.cache.stem} vanished from {self.cache.directory}")
            self._set_arrays(arrays)

"""Turn a ``DataConfig`` into train/valid/test datasets of any kind (GPT, BERT): the part they share.

``build_datasets`` opens each ``.bin/.idx`` file once, carves each split's documents out of it by ``split`` (or
uses per-split blends whole), and blends several files with ``BlendedDataset``: weighted (Megatron's greedy
order) or, for ``train_data_exact_num_epochs``, exhaustive. What a dataset of one file and one split is comes from
a ``DatasetFactory`` (``gpt_dataset``, ``bert_dataset``).

Two checks run here, before any index is built: a split that is used (a non-zero sample count) but gets no
documents from ``split`` is an ``EmptySplitError`` (one that is not used is skipped with a warning, as in
Megatron-DeepSpeed), and every file's token ids must lie inside the tokenizer's vocabulary (its id range is read
once and cached beside the indices).
"""

from __future__ import annotations

import logging
import os
from typing import Any, Optional, Protocol, Sequence

import numpy as np

from megatron.data.blending import BlendedDataset, blend_sample_counts, normalize_weights
from megatron.data.config import Blend, DataConfig, Split, split_document_ranges
from megatron.data.index_cache import IndexCache, fingerprint_lengths, load_or_build_indices
from megatron.data.indexed_dataset import IndexedDataset
from megatron.logging import get_logger, log_rank0

__all__ = ["DatasetFactory", "EmptySplitError", "build_datasets", "check_token_ids"]

logger = get_logger(__name__)


class DatasetFactory(Protocol):
    """What the builder needs to know about one kind of dataset."""

    def num_elements(self, data: Any) -> int:
        """Number of units ``split`` divides (sequences for GPT, documents for BERT)."""

    def build(self, data: Any, split: Split, element_range: tuple[int, int], num_samples: int,
              exact_num_epochs: Optional[int], cache_dir: Optional[str]) -> Any:
        """The dataset of ``data``'s units ``[lo, hi)`` for ``split``, with at least ``num_samples`` samples (or
        exactly ``exact_num_epochs`` epochs); ``cache_dir`` None keeps its indices in memory."""

    def open_mock(self) -> Any:
        """The synthetic stand-in for a file (``mock_data``); raise NotImplementedError if unsupported."""


class EmptySplitError(ValueError):
    """A split that is used (samples requested) gets no documents of a file from ``split``.

    Attributes:
        split: which split.
        path_prefix: the file (``"mock"`` for mock data).
        num_documents: the file's documents (units ``split`` divides).
        num_samples: the samples the split was asked for.
    """

    def __init__(self, split: Split, path_prefix: str, num_documents: int, num_samples: int, split_text: str):
        self.split, self.path_prefix = split, path_prefix
        self.num_documents, self.num_samples = num_documents, num_samples
        why = f"{num_samples} {split.name} samples requested" if num_samples else "train_data_exact_num_epochs"
        super().__init__(
            f"{path_prefix}: split {split_text!r} gives the {split.name} split none of the {num_documents} "
            f"documents, but it is used ({why}); give it a larger share in split (e.g. '90,8,2' for a small dataset) "
            "or use more data"
        )


def build_datasets(
    cfg: DataConfig, factory: DatasetFactory, train_valid_test_num_samples: Sequence[int], *,
    vocab_size: Optional[int] = None,
) -> tuple[Optional[Any], Optional[Any], Optional[Any]]:
    """The train, valid and test datasets of ``cfg``; a weighted blend gives a ``BlendedDataset`` of the factory's
    datasets.

    A split with 0 samples (and no exact epochs) is not used: it is None, and a warning says so if its non-zero
    share of ``split`` got no documents. A used split must get documents; a valid or test share of 0 in ``split``
    means there is no such split (None), as in Megatron.

    Args:
        vocab_size: the tokenizer's number of ids; every file's token ids must be below it (None: no check).
    Raises:
        EmptySplitError: a used split gets no documents of a file.
        ValueError: a file holds token ids outside ``[0, vocab_size)`` (made with another tokenizer).
    """
    counts = tuple(train_valid_test_num_samples)
    if len(counts) != 3 or any(n < 0 for n in counts):
        raise ValueError(f"train_valid_test_num_samples must be 3 counts >= 0, got {counts}")
    builder = _Builder(cfg, factory, vocab_size)
    return tuple(builder.split(split, int(n)) for split, n in zip(Split, counts))  # type: ignore[return-value]


# Files with at least this many tokens keep their id range in the index cache: the scan reads the whole .bin
# (0.25 ms for the 1M-token KJV corpus from the page cache, 10B tokens ~ 20 GB take minutes from disk), while a
# cache lookup costs about 1 ms and a collective.
_CACHE_TOKEN_RANGE_FROM = 1 << 26


def check_token_ids(data: IndexedDataset, vocab_size: int, cache_dir: Optional[str]) -> None:
    """Raise ValueError when ``data`` holds a token id outside ``[0, vocab_size)``, naming the id and the size.

    The id range is one pass over the memory-mapped ``.bin``; for large files it is cached in ``cache_dir`` (None:
    never) under the file's path, size, modification time and sequence lengths, so later runs read a few bytes.
    Collective under torch.distributed for large files (every rank must check the same files in the same order).
    """
    token_range = _token_range(data, cache_dir)
    if token_range is None:
        return
    low, high = token_range
    if low < 0 or high >= vocab_size:
        bad = high if high >= vocab_size else low
        raise ValueError(
            f"{data.path_prefix}.bin holds token id {bad} (ids {low}..{high}), but the tokenizer has {vocab_size} "
            f"ids (0..{vocab_size - 1}): the data was tokenized with another tokenizer or vocabulary. Train with "
            "the tokenizer settings (tokenizer_type, vocab_file, merge_file, tokenizer_model) the data was made "
            "with, or re-run tools/preprocess_data.py with these"
        )


def _token_range(data: IndexedDataset, cache_dir: Optional[str]) -> Optional[tuple[int, int]]:
    if cache_dir is None or data.num_tokens < _CACHE_TOKEN_RANGE_FROM:
        return data.token_range()
    bin_path = data.path_prefix + ".bin"
    stat = os.stat(bin_path)
    params = {
        "class": "TokenRange", "path_prefix": os.path.abspath(data.path_prefix), "bin_bytes": stat.st_size,
        "bin_mtime_ns": stat.st_mtime_ns, "sequence_lengths_md5": fingerprint_lengths(data.sequence_lengths),
    }

    def build() -> dict[str, np.ndarray]:
        found = data.token_range()
        # [1, 0]: no tokens (an empty range).
        return {"token_range": np.array([1, 0] if found is None else found, dtype=np.int64)}

    cache = IndexCache(cache_dir, "TokenRange", "all", params, ("token_range",))
    arrays, _ = load_or_build_indices(cache, build)
    low, high = (int(v) for v in arrays["token_range"])
    return None if low > high else (low, high)


class _Builder:
    """Opens each file once and builds the datasets of each split."""

    def __init__(self, cfg: DataConfig, factory: DatasetFactory, vocab_size: Optional[int]) -> None:
        self.cfg, self.factory, self.vocab_size = cfg, factory, vocab_size
        self._files: dict[str, Any] = {}
        if not cfg.mock_data and cfg.data_path is None and not any(
            (cfg.train_data_path, cfg.valid_data_path, cfg.test_data_path)
        ):
            raise ValueError("no data: set data_path, train_data_path/valid_data_path/test_data_path or mock_data")

    def open(self, prefix: str) -> Any:
        if prefix not in self._files:
            data = IndexedDataset(prefix)
            if self.vocab_size is not None:
                check_token_ids(data, self.vocab_size, self.cache_dir(prefix))
            self._files[prefix] = data
        return self._files[prefix]

    def cache_dir(self, prefix: str) -> Optional[str]:
        if self.cfg.data_cache_path is not None:
            return self.cfg.data_cache_path
        return os.path.join(os.path.dirname(os.path.abspath(prefix)), "cache")

    def split(self, split: Split, num_samples: int) -> Optional[Any]:
        exact = self.cfg.train_data_exact_num_epochs if split is Split.train else None
        used = num_samples > 0 or exact is not None
        if split is not Split.train and self.cfg.uses_split and self.cfg.split_fractions[split] == 0:
            if used:  # a share of 0 means "no such split", as in Megatron ('100,0,0' trains without evaluating)
                log_rank0(logger, "split %r has no %s share: no %s dataset", self.cfg.split, split.name, split.name)
            return None
        if self.cfg.mock_data:
            return self._mock(split, num_samples, exact) if used else self._skip_unused(split, ["mock"])
        blend = self.cfg.blends()[split]
        if blend is None:
            return None
        if not used:
            return self._skip_unused(split, blend.prefixes if self.cfg.uses_split else [])
        if blend.weights is None:
            return self._single(blend.prefixes[0], split, num_samples, exact)
        return self._blended(blend, split, num_samples, exact)

    def _skip_unused(self, split: Split, prefixes: Sequence[str]) -> None:
        """An unused split is None; warn when its non-zero share of ``split`` would get no documents anyway."""
        for prefix in prefixes:
            data = self._open_mock() if prefix == "mock" else self.open(prefix)
            num_elements = self.factory.num_elements(data)
            lo, hi = split_document_ranges(num_elements, self.cfg.split_fractions)[split] or (0, 0)
            if hi <= lo:
                log_rank0(logger, "%s: split %r gives the %s split none of the %d documents; skipped, as nothing "
                          "uses it", prefix, self.cfg.split, split.name, num_elements, level=logging.WARNING)
        return None

    def _range(self, data: Any, prefix: str, split: Split, num_samples: int) -> tuple[int, int]:
        """Documents ``[lo, hi)`` of ``data`` for a used ``split``; EmptySplitError when there are none."""
        num_elements = self.factory.num_elements(data)
        if not self.cfg.uses_split:
            return (0, num_elements)  # per-split blends are used whole
        element_range = split_document_ranges(num_elements, self.cfg.split_fractions)[split]
        if element_range is None or element_range[1] <= element_range[0]:
            raise EmptySplitError(split, prefix, num_elements, num_samples, self.cfg.split)
        return element_range

    def _single(self, prefix: str, split: Split, num_samples: int, exact: Optional[int]) -> Any:
        data = self.open(prefix)
        element_range = self._range(data, prefix, split, num_samples)
        dataset = self.factory.build(data, split, element_range, num_samples, exact, self.cache_dir(prefix))
        if exact is not None and num_samples > len(dataset):
            logger.warning(
                "%s: %d training samples requested but train_data_exact_num_epochs=%d gives %d",
                prefix, num_samples, exact, len(dataset),
            )
        return dataset

    def _blended(self, blend: Blend, split: Split, num_samples: int, exact: Optional[int]) -> BlendedDataset:
        weights = normalize_weights(blend.weights)
        cache_dir = self.cfg.data_cache_path or self.cache_dir(blend.prefixes[0])
        if exact is not None:
            return self._exact_blend(blend, split, num_samples, exact, weights, cache_dir)
        counts = blend_sample_counts(weights, num_samples)
        datasets = [self._single(p, split, n, None) for p, n in zip(blend.prefixes, counts)]
        return BlendedDataset(datasets, weights, sum(counts), split.name, cache_dir=cache_dir)

    def _exact_blend(self, blend: Blend, split: Split, num_samples: int, exact: int, weights: np.ndarray,
                     cache_dir: str) -> BlendedDataset:
        """Exact epochs of a weighted blend: each component is its own prefix's exact-epoch dataset (so its
        sample ids are the ones ``tools/analyze_data.py`` indexes), blended exhaustively (every sample once).

        The weights are not used to order samples here (a weighted order would repeat or skip samples); they are
        kept on ``.weights`` and the curriculum sampler draws each global batch across components by them.
        A plain sampler reads the exhaustive order, i.e. the components in proportion to their sizes.
        """
        datasets = [self._single(p, split, 0, exact) for p in blend.prefixes]
        size = sum(len(d) for d in datasets)
        logger.info(
            "%s split: %d exact epoch(s) of a %d-dataset blend, %d samples (%s per component); the blend weights "
            "%s apply through the curriculum sampler", split.name, exact, len(datasets), size,
            [len(d) for d in datasets], [round(float(w), 4) for w in weights],
        )
        if num_samples > size:
            logger.warning("%s: %d training samples requested but train_data_exact_num_epochs=%d gives %d",
                           " + ".join(blend.prefixes), num_samples, exact, size)
        return BlendedDataset(datasets, weights, size, split.name, cache_dir=cache_dir, exhaustive=True)

    def _open_mock(self) -> Any:
        if "mock" not in self._files:
            self._files["mock"] = self.factory.open_mock()
        return self._files["mock"]

    def _mock(self, split: Split, num_samples: int, exact: Optional[int]) -> Any:
        data = self._open_mock()
        element_range = self._range(data, "mock", split, num_samples)
        return self.factory.build(data, split, element_range, num_samples, exact, None)

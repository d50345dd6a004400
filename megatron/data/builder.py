"""Turn a ``DataConfig`` into train/valid/test datasets of any kind (GPT, BERT): the part they share.

``build_datasets`` opens each ``.bin/.idx`` file once, carves each split's documents out of it by ``split`` (or
uses per-split blends whole), and blends several files with ``BlendedDataset``: weighted (Megatron's greedy
order) or, for ``train_data_exact_num_epochs``, exhaustive. What a dataset of one file and one split is comes from
a ``DatasetFactory`` (``gpt_dataset``, ``bert_dataset``).
"""

from __future__ import annotations

import os
from typing import Any, Optional, Protocol, Sequence

import numpy as np

from megatron.data.blending import BlendedDataset, blend_sample_counts, normalize_weights
from megatron.data.config import Blend, DataConfig
from megatron.data.gpt_indices import Split, split_document_ranges
from megatron.data.indexed_dataset import IndexedDataset
from megatron.logging import get_logger

__all__ = ["DatasetFactory", "build_datasets"]

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


def build_datasets(
    cfg: DataConfig, factory: DatasetFactory, train_valid_test_num_samples: Sequence[int]
) -> tuple[Optional[Any], Optional[Any], Optional[Any]]:
    """The train, valid and test datasets of ``cfg`` (None for a split with 0 samples and no exact epochs, or an
    empty share of ``split``); a weighted blend gives a ``BlendedDataset`` of the factory's datasets."""
    counts = tuple(train_valid_test_num_samples)
    if len(counts) != 3 or any(n < 0 for n in counts):
        raise ValueError(f"train_valid_test_num_samples must be 3 counts >= 0, got {counts}")
    builder = _Builder(cfg, factory)
    return tuple(builder.split(split, int(n)) for split, n in zip(Split, counts))  # type: ignore[return-value]


class _Builder:
    """Opens each file once and builds the datasets of each split."""

    def __init__(self, cfg: DataConfig, factory: DatasetFactory) -> None:
        self.cfg, self.factory = cfg, factory
        self._files: dict[str, Any] = {}
        if not cfg.mock_data and cfg.data_path is None and not any(
            (cfg.train_data_path, cfg.valid_data_path, cfg.test_data_path)
        ):
            raise ValueError("no data: set data_path, train_data_path/valid_data_path/test_data_path or mock_data")

    def open(self, prefix: str) -> Any:
        if prefix not in self._files:
            self._files[prefix] = IndexedDataset(prefix)
        return self._files[prefix]

    def cache_dir(self, prefix: str) -> Optional[str]:
        if self.cfg.data_cache_path is not None:
            return self.cfg.data_cache_path
        return os.path.join(os.path.dirname(os.path.abspath(prefix)), "cache")

    def split(self, split: Split, num_samples: int) -> Optional[Any]:
        exact = self.cfg.train_data_exact_num_epochs if split is Split.train else None
        if num_samples == 0 and exact is None:
            return None
        if self.cfg.mock_data:
            return self._mock(split, num_samples, exact)
        blend = self.cfg.blends()[split]
        if blend is None:
            return None
        if blend.weights is None:
            return self._single(blend.prefixes[0], split, num_samples, exact)
        return self._blended(blend, split, num_samples, exact)

    def _range(self, num_elements: int, split: Split) -> Optional[tuple[int, int]]:
        if not self.cfg.uses_split:
            return (0, num_elements)  # per-split blends are used whole
        return split_document_ranges(num_elements, self.cfg.split_fractions)[split]

    def _single(self, prefix: str, split: Split, num_samples: int, exact: Optional[int]) -> Optional[Any]:
        data = self.open(prefix)
        element_range = self._range(self.factory.num_elements(data), split)
        if element_range is None:
            return None
        dataset = self.factory.build(data, split, element_range, num_samples, exact, self.cache_dir(prefix))
        if exact is not None and num_samples > len(dataset):
            logger.warning(
                "%s: %d training samples requested but train_data_exact_num_epochs=%d gives %d",
                prefix, num_samples, exact, len(dataset),
            )
        return dataset

    def _blended(self, blend: Blend, split: Split, num_samples: int, exact: Optional[int]) -> Optional[BlendedDataset]:
        weights = normalize_weights(blend.weights)
        cache_dir = self.cfg.data_cache_path or self.cache_dir(blend.prefixes[0])
        if exact is not None:
            return self._exact_blend(blend, split, num_samples, exact, weights, cache_dir)
        counts = blend_sample_counts(weights, num_samples)
        datasets = [self._single(p, split, n, None) for p, n in zip(blend.prefixes, counts)]
        if any(d is None for d in datasets):
            return None
        return BlendedDataset(datasets, weights, sum(counts), split.name, cache_dir=cache_dir)

    def _exact_blend(self, blend: Blend, split: Split, num_samples: int, exact: int, weights: np.ndarray,
                     cache_dir: str) -> Optional[BlendedDataset]:
        """Exact epochs of a weighted blend: each component is its own prefix's exact-epoch dataset (so its
        sample ids are the ones ``tools/analyze_data.py`` indexes), blended exhaustively (every sample once).

        The weights are not used to order samples here (a weighted order would repeat or skip samples); they are
        kept on ``.weights`` and the curriculum sampler draws each global batch across components by them.
        A plain sampler reads the exhaustive order, i.e. the components in proportion to their sizes.
        """
        datasets = [self._single(p, split, 0, exact) for p in blend.prefixes]
        if any(d is None for d in datasets):
            return None
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

    def _mock(self, split: Split, num_samples: int, exact: Optional[int]) -> Optional[Any]:
        if "mock" not in self._files:
            self._files["mock"] = self.factory.open_mock()
        data = self._files["mock"]
        element_range = split_document_ranges(self.factory.num_elements(data), self.cfg.split_fractions)[split]
        if element_range is None:
            return None
        return self.factory.build(data, split, element_range, num_samples, exact, None)

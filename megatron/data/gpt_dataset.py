"""GPT pretraining datasets: one split of one ``.bin/.idx`` file cut into ``seq_length + 1``-token samples.

``GPTDataset`` serves the samples of one split in shuffled order from cached document/sample/shuffle indices
(``gpt_indices``, megatron-core semantics); ``build_gpt_datasets`` turns a ``DataConfig`` into the train, valid
and test datasets through the shared ``builder`` (which blends several files with ``BlendedDataset``).
"""

from __future__ import annotations

import json
from typing import Any, Optional, Union

import numpy as np

from megatron.data.blending import BlendedDataset
from megatron.data.builder import build_datasets
from megatron.data.cached_dataset import CachedIndexDataset, IndexParams
from megatron.data.config import DataConfig, Split
from megatron.data.forced_indices import load_forced_gpt_indices
from megatron.data.gpt_indices import build_gpt_indices
from megatron.logging import get_logger, log_rank0

__all__ = ["GPTDataset", "GPTIndexParams", "MockIndexedDataset", "build_gpt_datasets", "tokenizer_identity"]

logger = get_logger(__name__)


class GPTIndexParams(IndexParams):
    """What determines a GPT split's document, sample and shuffle indices (``IndexParams``'s fields; samples hold
    ``seq_length + 1`` tokens)."""


def tokenizer_identity(tokenizer: Any) -> Any:
    """The tokenizer's ``unique_identifiers`` as plain JSON (None without a tokenizer), for cache keys."""
    ids = getattr(tokenizer, "unique_identifiers", None) if tokenizer is not None else None
    return json.loads(json.dumps(ids, sort_keys=True, default=str))


class GPTDataset(CachedIndexDataset):
    """Samples of one split of one indexed dataset.

    Item ``k`` is shuffled sample ``shuffle_index[k]``: a dict with ``tokens`` (int64 [seq_length + 1]: inputs
    are ``tokens[:-1]``, labels ``tokens[1:]``), ``dataset_id`` (0) and ``dataset_sample_index`` (``k``, the
    sample's id as the curriculum analyzer and sampler use it).

    Args:
        indexed_dataset: the low-level dataset (``sequence_lengths``, ``get(idx, offset, length)``).
        params: what determines the indices.
        cache_dir: directory of the index cache; None keeps the indices in memory only.
        tokenizer_id: the tokenizer's ``unique_identifiers`` (part of the cache key).
        indices: the three index arrays to use instead of building or caching them (forced index files,
            ``forced_indices``; already checked against the data).
    """

    KIND = "GPTDataset"
    INDEX_NAMES = ("doc_index", "sample_index", "shuffle_index")
    INDEX_FORMAT_VERSION = 1  # bump when the index semantics change, so old cache entries stop matching

    def __init__(
        self,
        indexed_dataset: Any,
        params: GPTIndexParams,
        *,
        cache_dir: Optional[str],
        tokenizer_id: Any = None,
        indices: Optional[dict[str, np.ndarray]] = None,
    ) -> None:
        super().__init__(indexed_dataset, params)
        lo, hi = params.document_range
        if not 0 <= lo < hi <= len(indexed_dataset.sequence_lengths):
            raise ValueError(
                f"{params.path_prefix}: {params.split.name} split has documents [{lo}, {hi}) of "
                f"{len(indexed_dataset.sequence_lengths)}; give it a larger share in 'split' or more data"
            )
        self._load_indices(cache_dir, tokenizer_id, indices)
        verb = "built" if self.built_indices else "loaded"
        log_rank0(logger, f"{verb} GPT {params.split.name} indices for {params.path_prefix}: {len(self)} samples, "
                          f"{len(self.doc_index) // (hi - lo)} epoch(s) of documents [{lo}, {hi})")

    def unique_identifiers(self, tokenizer_id: Any) -> dict[str, Any]:
        """The cache key's parameters: our index parameters, the data's lengths, the tokenizer."""
        return {**self._common_identifiers(tokenizer_id), "add_extra_token": 1}

    def _build(self) -> dict[str, np.ndarray]:
        p = self.params
        documents = np.arange(*p.document_range, dtype=np.int32)
        return build_gpt_indices(
            self.indexed_dataset.sequence_lengths, documents, p.seq_length, p.num_samples, p.seed, p.exact_num_epochs
        )

    def __len__(self) -> int:
        return len(self.shuffle_index)

    def sample_tokens(self, sample: int) -> np.ndarray:
        """Tokens (int64 [seq_length + 1]) of *unshuffled* sample ``sample`` (stream positions ``sample*S ..``)."""
        (first, offset), (last, end) = self.sample_index[sample], self.sample_index[sample + 1]
        first, offset, last, end = int(first), int(offset), int(last), int(end)
        get = self.indexed_dataset.get
        if first == last:
            parts = [get(int(self.doc_index[first]), offset, end - offset + 1)]
        else:
            parts = [get(int(self.doc_index[first]), offset)]
            parts += [get(int(d)) for d in self.doc_index[first + 1 : last]]
            parts.append(get(int(self.doc_index[last]), 0, end + 1))
        tokens = np.concatenate(parts).astype(np.int64, copy=False)
        assert len(tokens) == self.params.seq_length + 1, f"sample {sample} has {len(tokens)} tokens"
        return tokens

    def __getitem__(self, idx: int) -> dict[str, Any]:
        if not -len(self) <= idx < len(self):
            raise IndexError(f"sample {idx} out of range for {len(self)} samples")
        idx = int(idx) % len(self)
        return {
            "tokens": self.sample_tokens(int(self.shuffle_index[idx])),
            "dataset_id": 0,
            "dataset_sample_index": idx,
        }


class MockIndexedDataset:
    """Synthetic documents standing in for an ``IndexedDataset`` (``mock_data``): deterministic, nothing on disk.

    Document ``i`` has a length drawn once from ``RandomState(seed)`` and tokens from a generator seeded by
    ``(seed, i)``, none equal to ``eod`` except the last, which is ``eod``.
    """

    def __init__(self, vocab_size: int, eod: int, num_documents: int = 10_000, max_length: int = 2048, seed: int = 0):
        if vocab_size < 2:
            raise ValueError(f"mock data needs a vocabulary of at least 2 tokens, got {vocab_size}")
        self.vocab_size, self.eod, self.seed = vocab_size, eod, seed
        self.path_prefix = f"mock-{num_documents}x{max_length}-v{vocab_size}-eod{eod}-s{seed}"
        lengths = np.random.RandomState(seed).randint(1, max_length + 1, size=num_documents)
        self.sequence_lengths = lengths.astype(np.int32)

    def get(self, idx: int, offset: int = 0, length: Optional[int] = None) -> np.ndarray:
        size = int(self.sequence_lengths[idx])
        tokens = np.random.default_rng((self.seed, idx)).integers(0, self.vocab_size - 1, size=size, dtype=np.int64)
        tokens[tokens >= self.eod] += 1  # skip the eod id
        tokens[-1] = self.eod
        return tokens[offset : size if length is None else offset + length]


AnyGPTDataset = Union[GPTDataset, BlendedDataset]


def build_gpt_datasets(
    cfg: DataConfig, tokenizer: Any, train_valid_test_num_samples: tuple[int, int, int], seed: int
) -> tuple[Optional[AnyGPTDataset], Optional[AnyGPTDataset], Optional[AnyGPTDataset]]:
    """Build the train, valid and test datasets described by ``cfg``.

    Args:
        cfg: the data config (``data_path`` + ``split``, or per-split paths, or ``mock_data``).
        tokenizer: its ``unique_identifiers`` enter the cache key; every file's token ids must be below its
            ``vocab_size``; mock data also uses ``vocab_size``/``eod``.
        train_valid_test_num_samples: requested samples per split; a split with 0 (and no exact epochs) is None
            (it is not used), a used split must get documents from ``split``. Datasets hold at least the requested
            number of samples.
        seed: shuffle seed (``--seed``).

    Returns:
        ``GPTDataset`` for a single prefix, ``BlendedDataset`` (``.datasets``, ``.weights``) for a weighted blend.
    """
    return build_datasets(cfg, _GPTFactory(cfg, tokenizer, seed), train_valid_test_num_samples,
                          vocab_size=getattr(tokenizer, "vocab_size", None))


class _GPTFactory:
    """GPT datasets for the shared builder: ``split`` divides sequences (documents of a document-level file)."""

    def __init__(self, cfg: DataConfig, tokenizer: Any, seed: int) -> None:
        self.cfg, self.tokenizer, self.seed, self.tokenizer_id = cfg, tokenizer, seed, tokenizer_identity(tokenizer)

    def num_elements(self, data: Any) -> int:
        return len(data.sequence_lengths)

    def build(self, data: Any, split: Split, element_range: tuple[int, int], num_samples: int,
              exact_num_epochs: Optional[int], cache_dir: Optional[str]) -> GPTDataset:
        params = GPTIndexParams(data.path_prefix, split, element_range, num_samples, self.cfg.seq_length, self.seed,
                                exact_num_epochs)
        forced = None
        if split is Split.train and self.cfg.train_doc_idx_path is not None:
            forced = load_forced_gpt_indices(self.cfg, data.sequence_lengths, element_range, self.cfg.seq_length)
        return GPTDataset(data, params, cache_dir=cache_dir, tokenizer_id=self.tokenizer_id, indices=forced)

    def open_mock(self) -> MockIndexedDataset:
        vocab_size = int(getattr(self.tokenizer, "vocab_size", 50257))
        eod = int(getattr(self.tokenizer, "eod", vocab_size - 1))
        return MockIndexedDataset(vocab_size, eod)

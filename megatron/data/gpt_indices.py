"""The document, sample and shuffle indices of a GPT dataset, with Megatron's exact semantics, in numpy.

A GPT dataset concatenates its documents (in a shuffled, epoch-repeated order: the *document index*) into one
token stream and cuts it into samples of ``S + 1`` tokens that overlap by one token, so sample ``j`` covers
stream positions ``[j*S, j*S + S]``. The *sample index* row ``j`` = (position in the document index, offset)
of stream position ``j*S``; the *shuffle index* permutes the samples. Everything matches megatron-core's
``GPTDataset`` (and its C++ ``build_sample_idx``) bit for bit; the sample index is built with a cumulative sum
and ``searchsorted`` instead of a per-sample loop.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

__all__ = [
    "num_epochs_for",
    "build_document_index",
    "build_sample_index",
    "build_shuffle_index",
    "build_gpt_indices",
]

# Megatron separates the last epoch's shuffle when fewer than this fraction of its samples are used, so that a
# barely-started epoch does not mix its few samples into the earlier epochs.
SEPARATE_LAST_EPOCH_THRESHOLD = 0.80
_SEARCH_BLOCK = 1 << 24  # sample positions per searchsorted call (bounds temporary memory)


def num_epochs_for(tokens_per_epoch: int, num_samples: Optional[int], seq_length: int) -> int:
    """Smallest ``E >= 1`` with ``E * tokens_per_epoch >= num_samples * seq_length + 1`` (1 if num_samples is None).

    The ``+ 1`` is the label of the last sample's last token.
    """
    if num_samples is None:
        return 1
    if tokens_per_epoch < 1:
        raise ValueError(f"a dataset split with {tokens_per_epoch} tokens cannot provide {num_samples} samples")
    needed = num_samples * seq_length + 1
    return max(1, -(-needed // tokens_per_epoch))


def build_document_index(
    documents: np.ndarray, num_epochs: int, rng: np.random.RandomState, separate_last_epoch: bool
) -> np.ndarray:
    """Document ids repeated ``num_epochs`` times (epoch-major) and shuffled: int32 [num_epochs * len(documents)].

    With ``separate_last_epoch`` the first ``num_epochs - 1`` epochs are shuffled together and the last one on
    its own (two draws from ``rng``, in that order).
    """
    if not separate_last_epoch or num_epochs == 1:
        index = np.tile(np.asarray(documents, dtype=np.int32), num_epochs)
        rng.shuffle(index)
        return index
    first = build_document_index(documents, num_epochs - 1, rng, False)
    last = build_document_index(documents, 1, rng, False)
    return np.concatenate((first, last))


def build_sample_index(
    sizes: np.ndarray, document_index: np.ndarray, seq_length: int, num_samples: int
) -> np.ndarray:
    """[num_samples + 1, 2] rows (position in ``document_index``, token offset) of stream positions ``j*S``.

    Row 0 is (0, 0). Row ``j >= 1`` names the document holding stream token ``j*S``, so sample ``j`` spans rows
    ``j`` and ``j + 1`` inclusive (``S + 1`` tokens). Zero-length documents are skipped like Megatron's C++
    loop does. dtype int32 when ``max(len(document_index), max(sizes))`` fits, else int64 (megatron-core's
    rule).

    Args:
        sizes: int32 [N] tokens per document of the whole file.
        document_index: document ids in stream order.
        seq_length: ``S``.
        num_samples: number of samples; needs ``num_samples * S + 1`` stream tokens.
    """
    lengths = np.asarray(sizes)[document_index].astype(np.int64)
    ends = np.cumsum(lengths)
    total = int(ends[-1]) if len(ends) else 0
    if num_samples * seq_length + 1 > total:
        raise ValueError(f"{num_samples} samples of {seq_length}+1 tokens need more than the {total} tokens given")
    largest = max(len(document_index), int(np.max(sizes)) if len(sizes) else 0)
    dtype = np.int32 if largest <= np.iinfo(np.int32).max else np.int64
    index = np.zeros((num_samples + 1, 2), dtype=dtype)
    for lo in range(1, num_samples + 1, _SEARCH_BLOCK):
        hi = min(lo + _SEARCH_BLOCK, num_samples + 1)
        positions = np.arange(lo, hi, dtype=np.int64) * seq_length
        doc = np.searchsorted(ends, positions, side="right")  # first document ending after the position
        index[lo:hi, 0] = doc
        index[lo:hi, 1] = positions - (ends[doc] - lengths[doc])
    return index


def build_shuffle_index(num_first: int, num_total: int, rng: np.random.RandomState) -> np.ndarray:
    """``[0, num_first)`` shuffled, then ``[num_first, num_total)`` shuffled separately (if non-empty).

    uint32, or int64 from ``2**32 - 1`` entries on (megatron-core's rule).
    """
    dtype = np.uint32 if num_total < np.iinfo(np.uint32).max - 1 else np.int64
    first = np.arange(num_first, dtype=dtype)
    rng.shuffle(first)
    if num_first == num_total:
        return first
    last = np.arange(num_first, num_total, dtype=dtype)
    rng.shuffle(last)
    return np.concatenate((first, last))


def build_gpt_indices(
    sizes: np.ndarray,
    documents: np.ndarray,
    seq_length: int,
    num_samples: Optional[int],
    seed: int,
    exact_num_epochs: Optional[int] = None,
) -> dict[str, np.ndarray]:
    """Document, sample and shuffle indices of one split (megatron-core ``GPTDataset`` semantics).

    Args:
        sizes: int32 [N] tokens per document of the file.
        documents: the split's document ids (int32, usually a contiguous range).
        seq_length: tokens per sample ``S`` (samples read ``S + 1``).
        num_samples: requested samples; the dataset has at least that many (whole epochs). None = one epoch.
        seed: seed of the single ``RandomState`` used for the document shuffles, then the sample shuffles.
        exact_num_epochs: build exactly this many epochs instead (``num_samples`` ignored; all epochs shuffled
            together, no separate last epoch).

    Returns:
        ``{"doc_index", "sample_index", "shuffle_index"}``; the dataset length is ``len(shuffle_index)``.
    """
    tokens_per_epoch = int(np.asarray(sizes)[documents].sum(dtype=np.int64))
    if tokens_per_epoch < 2:
        raise ValueError(f"the split has {tokens_per_epoch} tokens; at least 2 are needed for one sample")
    separate = False
    if exact_num_epochs is not None:
        num_epochs = exact_num_epochs
    else:
        num_epochs = num_epochs_for(tokens_per_epoch, num_samples, seq_length)
        if num_epochs > 1 and num_samples is not None:
            before_last = ((num_epochs - 1) * tokens_per_epoch - 1) // seq_length
            from_last = num_samples - before_last
            per_epoch = (tokens_per_epoch - 1) // seq_length
            assert 0 <= from_last <= per_epoch + 1, f"last epoch would hold {from_last} of {per_epoch} samples"
            separate = from_last < int(SEPARATE_LAST_EPOCH_THRESHOLD * per_epoch)
    rng = np.random.RandomState(seed)
    doc_index = build_document_index(documents, num_epochs, rng, separate)
    total = (num_epochs * tokens_per_epoch - 1) // seq_length
    sample_index = build_sample_index(sizes, doc_index, seq_length, total)
    num_first = ((num_epochs - 1) * tokens_per_epoch - 1) // seq_length if separate else total
    shuffle_index = build_shuffle_index(num_first, total, rng)
    return {"doc_index": doc_index, "sample_index": sample_index, "shuffle_index": shuffle_index}

"""The BERT sample index compiled with numba: the optional fast path of ``bert_indices`` (imported only when
numba is installed).

``numba`` (``pip install megatron-de[fast]``: wheels, no compiler needed) compiles the obvious sentence-by-sentence
packer and the Fisher-Yates shuffle to machine code, as megatron-core's C++ ``build_mapping`` is. Both random
streams are seeded by ``bert_indices`` (numpy's ``RandomState`` for ``std::mt19937``, ``Mt19937_64`` for
``std::mt19937_64``); here their words are only generated (twist and temper), so the output equals the numpy path
row for row. Compiled code is cached next to this file (or in numba's user cache) after the first call.
"""

from __future__ import annotations

import numba
import numpy as np

__all__ = ["pack_samples", "qualifying_documents", "shuffle_rows"]

_jit = numba.njit(cache=True, nogil=True)


# std::mt19937 words are handled in int64 (all values stay below 2**63), std::mt19937_64 ones in uint64 with
# uint64 constants only: numba would turn a uint64-int64 mix into float64.
_N32, _M32 = 624, 397
_N64, _M64 = 312, 156
_A64, _UPPER64, _LOWER64 = np.uint64(0xB5026F5AA96619E9), np.uint64(0xFFFFFFFF80000000), np.uint64(0x7FFFFFFF)
_ONE64 = np.uint64(1)
_T64 = (np.uint64(29), np.uint64(0x5555555555555555), np.uint64(17), np.uint64(0x71D67FFFEDA60000),
        np.uint64(37), np.uint64(0xFFF7EEE000000000), np.uint64(43))


@_jit
def _twist32(mt):
    """Next block of 624 untempered ``std::mt19937`` words, in place (int64 [624]); three loops instead of
    indices modulo 624 (a division per word)."""
    for i in range(_N32 - _M32):
        y = (mt[i] & 0x80000000) | (mt[i + 1] & 0x7FFFFFFF)
        mt[i] = mt[i + _M32] ^ (y >> 1) ^ ((y & 1) * 0x9908B0DF)
    for i in range(_N32 - _M32, _N32 - 1):
        y = (mt[i] & 0x80000000) | (mt[i + 1] & 0x7FFFFFFF)
        mt[i] = mt[i + _M32 - _N32] ^ (y >> 1) ^ ((y & 1) * 0x9908B0DF)
    y = (mt[_N32 - 1] & 0x80000000) | (mt[0] & 0x7FFFFFFF)
    mt[_N32 - 1] = mt[_M32 - 1] ^ (y >> 1) ^ ((y & 1) * 0x9908B0DF)


@_jit
def _word32(mt, at):
    """The next tempered ``std::mt19937`` output; ``at[0]`` is the position in the current block."""
    if at[0] >= _N32:
        _twist32(mt)
        at[0] = 0
    y = mt[at[0]]
    at[0] += 1
    y ^= y >> 11
    y ^= (y << 7) & 0x9D2C5680
    y ^= (y << 15) & 0xEFC60000
    return y ^ (y >> 18)


@_jit
def _target(mt, at, ratio, max_length):
    """One target length: a draw ``r`` gives ``2 + r % (max_length - 1)`` if ``r % ratio == 0``, else
    ``max_length``; no draw at all when ``ratio`` is 0 (no short targets)."""
    if ratio == 0:
        return max_length
    r = _word32(mt, at)
    return 2 + r % (max_length - 1) if r % ratio == 0 else max_length


@_jit
def _qualifying(doc_bounds, sizes, min_sentences, long_tokens):
    """(first, end) sentence of each document with at least ``min_sentences`` sentences and, if more than one,
    none longer than ``long_tokens`` (``bert_indices._qualifying_documents`` in one pass)."""
    first = np.empty(len(doc_bounds) - 1, dtype=np.int64)
    last = np.empty(len(doc_bounds) - 1, dtype=np.int64)
    k = 0
    for d in range(len(doc_bounds) - 1):
        lo, hi = doc_bounds[d], doc_bounds[d + 1]
        if hi - lo < max(min_sentences, 1):
            continue
        if hi - lo > 1:
            too_long = False
            for s in range(lo, hi):
                if sizes[s] > long_tokens:
                    too_long = True
                    break
            if too_long:
                continue
        first[k], last[k] = lo, hi
        k += 1
    return first[:k], last[:k]


def qualifying_documents(doc_bounds: np.ndarray, sizes: np.ndarray, min_sentences: int,
                         long_tokens: int) -> tuple[np.ndarray, np.ndarray]:
    """First and end sentence (int64 [D']) of the documents that yield samples (see ``_qualifying``)."""
    return _qualifying(np.asarray(doc_bounds, dtype=np.int64), np.asarray(sizes), min_sentences, long_tokens)


@_jit
def _grow(rows, n, size):
    """``rows`` with room for ``size`` rows, the first ``n`` kept."""
    if size <= rows.shape[0]:
        return rows
    grown = np.empty((size, 3), dtype=rows.dtype)
    grown[:n] = rows[:n]
    return grown


@_jit
def _pack(first, last, sizes, mt, at, ratio, max_length, min_sentences, num_samples, num_epochs, rows):
    """Whole epochs of samples over the documents ``[first[d], last[d])`` into ``rows`` (grown as needed);
    returns (rows, number of rows, number of epochs)."""
    n = epoch = 0
    while (num_samples >= 0 and n < num_samples) or (num_epochs >= 0 and epoch < num_epochs):
        for d in range(len(first)):
            start, end = first[d], last[d]
            if n + end - start > rows.shape[0]:  # at most a sample per sentence: no check per sample
                rows = _grow(rows, n, rows.shape[0] + max(rows.shape[0] // 2, end - start) + 1024)
            tokens, goal = 0, _target(mt, at, ratio, max_length)
            for s in range(start, end):
                tokens += sizes[s]
                if (tokens >= goal and end - s - 1 > 1 and s - start + 1 >= min_sentences) or s == end - 1:
                    rows[n, 0], rows[n, 1], rows[n, 2] = start, s + 1, goal
                    n += 1
                    start, tokens, goal = s + 1, 0, _target(mt, at, ratio, max_length)
        epoch += 1
        if epoch == 1 and num_samples > n > 0:  # the first epoch's count sizes the whole index (epochs vary ~1%)
            rows = _grow(rows, n, (num_samples // n + 2) * n)
    return rows, n, epoch


@_jit
def _twist64(x):
    """Next block of 312 untempered ``std::mt19937_64`` words, in place (uint64 [312])."""
    for k in range(_N64 - _M64):
        y = (x[k] & _UPPER64) | (x[k + 1] & _LOWER64)
        x[k] = x[k + _M64] ^ (y >> _ONE64) ^ ((y & _ONE64) * _A64)
    for k in range(_N64 - _M64, _N64 - 1):
        y = (x[k] & _UPPER64) | (x[k + 1] & _LOWER64)
        x[k] = x[k + _M64 - _N64] ^ (y >> _ONE64) ^ ((y & _ONE64) * _A64)
    y = (x[_N64 - 1] & _UPPER64) | (x[0] & _LOWER64)
    x[_N64 - 1] = x[_M64 - 1] ^ (y >> _ONE64) ^ ((y & _ONE64) * _A64)


@_jit
def _shuffle(rows, n, state):
    """Fisher-Yates over ``rows[:n]`` in place, as megatron's: for i = n-1 .. 1 swap rows i and ``r % (i + 1)``,
    ``r`` the next ``std::mt19937_64`` output (``state``: the seeded engine's 312 words, before its first twist)."""
    at = _N64
    t1, m1, t2, m2, t3, m3, t4 = _T64
    for i in range(n - 1, 0, -1):
        if at >= _N64:
            _twist64(state)
            at = 0
        y = state[at]
        at += 1
        y ^= (y >> t1) & m1
        y ^= (y << t2) & m2
        y ^= (y << t3) & m3
        y ^= y >> t4
        j = y % np.uint64(i + 1)
        for c in range(3):
            rows[i, c], rows[j, c] = rows[j, c], rows[i, c]


def pack_samples(first: np.ndarray, last: np.ndarray, sizes: np.ndarray, mt_key: np.ndarray, ratio: int,
                 max_length: int, min_sentences: int, num_samples: int, num_epochs: int,
                 dtype: type) -> np.ndarray:
    """Unshuffled samples of whole epochs, [n, 3] rows (first, end, target) of ``dtype``, in document order.

    Args:
        first, last: int64 [D], each qualifying document's first and end sentence.
        sizes: int32 [N], tokens per sentence.
        mt_key: the 624 words of a freshly seeded ``std::mt19937`` (``RandomState.get_state()[1]``).
        ratio: one in how many draws gives a short target (0: none, and no draws).
        num_samples, num_epochs: epochs are added until ``num_samples`` rows exist or ``num_epochs`` are done;
            the unused one is -1.
    """
    # Room for about an epoch (grown as needed, sized after the first epoch when num_samples is given).
    rows = np.empty((min(max(num_samples, 2 * len(first) + 1024), len(sizes) + 1024), 3), dtype=dtype)
    rows, n, _ = _pack(np.asarray(first, dtype=np.int64), np.asarray(last, dtype=np.int64), np.asarray(sizes),
                       np.asarray(mt_key, dtype=np.int64).copy(), np.array([_N32], dtype=np.int64), ratio,
                       max_length, min_sentences, num_samples, num_epochs, rows)
    # Epoch sizing overshoots by about one epoch: copy only when that wastes much memory.
    return rows[:n].copy() if n < 0.9 * len(rows) else rows[:n]


def shuffle_rows(rows: np.ndarray, mt64_state: np.ndarray) -> np.ndarray:
    """``rows`` shuffled in place by megatron's Fisher-Yates (``mt64_state``: a seeded ``Mt19937_64``'s words)."""
    _shuffle(rows, len(rows), np.array(mt64_state, dtype=np.uint64))
    return rows

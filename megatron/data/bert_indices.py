"""The sample index of a BERT dataset: which sentences make up each sample, in numpy/Python.

A BERT sample is a run of consecutive sentences of one document, packed until it reaches a target length
(``seq_length - 3``, or with probability ``short_seq_prob`` a random shorter one). The *sample index* is an
[n, 3] array of (first sentence, end sentence, target length) rows, built over whole epochs of the split's
documents and then shuffled. Its values, row order and dtype equal megatron-core's C++ ``build_mapping``: the
target lengths come from the same 32-bit Mersenne Twister stream (numpy's legacy ``RandomState`` seeds MT19937
exactly like ``std::mt19937``) and the shuffle replays ``std::mt19937_64``, which numpy lacks, so it is
implemented here (vectorised per 312-word block).
"""

from __future__ import annotations

import math
from bisect import bisect_left
from typing import Optional

import numpy as np

__all__ = ["LONG_SENTENCE_TOKENS", "Mt19937_64", "build_bert_sample_index", "short_sequence_ratio"]

# Megatron skips documents (of two or more sentences) holding a sentence longer than this many tokens.
LONG_SENTENCE_TOKENS = 512
_CHUNK_SENTENCES = 1 << 20  # cumulative lengths turned into a Python list per chunk of documents (bounds memory)
_RNG_BLOCK = 1 << 16  # 32-bit draws fetched from the RandomState at a time

_U64 = np.uint64
_MASK64 = (1 << 64) - 1


class Mt19937_64:
    """``std::mt19937_64`` (Matsumoto & Nishimura's 64-bit Mersenne Twister), seeded as the C++ standard says.

    Args:
        seed: the engine's seed (reduced modulo 2**64 like the C++ unsigned conversion).
    """

    _N, _M = 312, 156
    _MATRIX_A = _U64(0xB5026F5AA96619E9)
    _UPPER, _LOWER = _U64(0xFFFFFFFF80000000), _U64(0x7FFFFFFF)

    def __init__(self, seed: int) -> None:
        state = [int(seed) & _MASK64]
        for i in range(1, self._N):
            prev = state[-1]
            state.append((6364136223846793005 * (prev ^ (prev >> 62)) + i) & _MASK64)
        self._state = np.array(state, dtype=_U64)

    def _mix(self, upper: np.ndarray, lower: np.ndarray, far: np.ndarray) -> np.ndarray:
        y = (upper & self._UPPER) | (lower & self._LOWER)
        return far ^ (y >> _U64(1)) ^ np.where((y & _U64(1)) != 0, self._MATRIX_A, _U64(0))

    def _twist(self) -> None:
        # Word i mixes words i and i+1 with word i+M; words past N-M read words already twisted in this round,
        # so the block is done in three vectorised pieces.
        n, m, old = self._N, self._M, self._state
        new = np.empty_like(old)
        new[: n - m] = self._mix(old[: n - m], old[1 : n - m + 1], old[m:])
        new[n - m : n - 1] = self._mix(old[n - m : n - 1], old[n - m + 1 :], new[: m - 1])
        new[n - 1 :] = self._mix(old[n - 1 :], new[:1], new[m - 1 : m])
        self._state = new

    def draw(self, count: int) -> np.ndarray:
        """The next ``count`` outputs (uint64 [count]); a fresh engine's first draw twists first, as in C++."""
        blocks = []
        for _ in range(-(-count // self._N)):
            self._twist()
            blocks.append(self._state)
        y = np.concatenate(blocks)[:count] if blocks else np.empty(0, dtype=_U64)
        # Only whole blocks are drawn, so callers must draw once (the shuffle does): no partial-block carry-over.
        y = y ^ ((y >> _U64(29)) & _U64(0x5555555555555555))
        y = y ^ ((y << _U64(17)) & _U64(0x71D67FFFEDA60000))
        y = y ^ ((y << _U64(37)) & _U64(0xFFF7EEE000000000))
        return y ^ (y >> _U64(43))


def short_sequence_ratio(short_seq_prob: float) -> int:
    """One in how many targets is short: ``round(1 / p)`` (half away from zero, as C's ``round``); 0 = never."""
    if short_seq_prob <= 0:
        return 0
    return int(math.floor(1.0 / short_seq_prob + 0.5))


class _Targets:
    """Target lengths drawn from ``std::mt19937(seed)``'s stream: ``max_length`` unless ``r % ratio == 0``, then
    ``2 + r % (max_length - 1)``. With ratio 0 no number is drawn."""

    def __init__(self, seed: int, ratio: int, max_length: int) -> None:
        self.ratio, self.max_length = ratio, max_length
        self._rng = np.random.RandomState(seed % 2**32)  # MT19937 init_genrand(seed), as std::mt19937(seed)
        self._block: list[int] = []
        self._next = 0

    def next(self) -> int:
        if self.ratio == 0:
            return self.max_length
        if self._next == len(self._block):
            # The full 32-bit range returns the generator's raw words, one per value.
            raw = self._rng.randint(0, 2**32, size=_RNG_BLOCK, dtype=np.uint32).astype(np.int64)
            short = raw % self.ratio == 0
            self._block = np.where(short, 2 + raw % (self.max_length - 1), self.max_length).tolist()
            self._next = 0
        self._next += 1
        return self._block[self._next - 1]


def _qualifying_documents(doc_bounds: np.ndarray, sizes: np.ndarray, min_sentences: int) -> np.ndarray:
    """Indices of documents with at least ``min_sentences`` sentences and, if more than one, none too long."""
    counts = np.diff(doc_bounds)
    ok = counts >= max(min_sentences, 1)
    multi = np.flatnonzero(ok & (counts > 1))
    if len(multi):
        longest = np.maximum.reduceat(sizes, doc_bounds[multi]) if len(sizes) else np.zeros(0)
        ok[multi[longest > LONG_SENTENCE_TOKENS]] = False
    return np.flatnonzero(ok)


def _pack_epoch(doc_bounds: np.ndarray, docs: np.ndarray, sizes: np.ndarray, targets: _Targets, min_sentences: int,
                rows: list[int]) -> None:
    """Append (first, end, target) of every sample of one epoch to ``rows`` (flat).

    Sentences of a document are added until the sample reaches its target with at least ``min_sentences``
    sentences and more than one sentence left, or the document ends. The sample's end is found by bisecting the
    cumulative lengths: one step per sample, not per sentence.
    """
    lo = 0
    while lo < len(docs):
        # A chunk of documents whose sentences' cumulative lengths fit one Python list.
        base = int(doc_bounds[docs[lo]])
        hi = lo + 1 + int(np.searchsorted(doc_bounds[docs[lo + 1 :] + 1], base + _CHUNK_SENTENCES, side="right"))
        end_sentence = int(doc_bounds[docs[hi - 1] + 1])
        cum = np.zeros(end_sentence - base + 1, dtype=np.int64)
        np.cumsum(sizes[base:end_sentence], out=cum[1:])
        cum = cum.tolist()
        for d in docs[lo:hi].tolist():
            first, last = int(doc_bounds[d]) - base, int(doc_bounds[d + 1]) - base
            start, target = first, targets.next()
            while True:
                s = max(bisect_left(cum, cum[start] + target, start + 1, last + 1) - 1, start + min_sentences - 1)
                end = s + 1 if s <= last - 3 else last
                rows += (start + base, end + base, target)
                target = targets.next()
                if end == last:
                    break
                start = end
        lo = hi


def _shuffle_rows(rows: np.ndarray, seed: int) -> np.ndarray:
    """Megatron's Fisher-Yates over the rows with ``std::mt19937_64(seed + 1)``: for i = n-1 .. 1 swap rows i and
    ``r % (i + 1)``. The swaps are replayed on a permutation (a Python loop: each swap depends on the last)."""
    n = len(rows)
    if n < 2:
        return rows
    draws = Mt19937_64(seed + 1).draw(n - 1)
    js = (draws % np.arange(n, 1, -1, dtype=_U64)).tolist()
    perm = list(range(n))
    for i, j in zip(range(n - 1, 0, -1), js):
        perm[i], perm[j] = perm[j], perm[i]
    return rows[np.asarray(perm, dtype=np.int64)]


def build_bert_sample_index(
    doc_bounds: np.ndarray,
    sizes: np.ndarray,
    num_samples: Optional[int],
    max_length: int,
    short_seq_prob: float,
    seed: int,
    min_sentences: int,
    num_epochs: Optional[int] = None,
) -> np.ndarray:
    """Sample index of a split, equal to megatron-core's ``helpers.build_mapping``.

    Args:
        doc_bounds: int64 [D + 1], the split's documents as sentence boundaries (document ``d`` is sentences
            ``doc_bounds[d]:doc_bounds[d + 1]``, global sentence ids).
        sizes: int32 [N], tokens per sentence of the whole dataset.
        num_samples: epochs are added until at least this many samples exist (whole epochs only); None with
            ``num_epochs`` builds exactly those epochs.
        max_length: target length of a sample in tokens (``seq_length - 3``: [CLS] and two [SEP]).
        short_seq_prob: probability (as ``1 / round(1 / p)``) that a sample's target is uniform in [2, max_length].
        seed: seed of the targets (``std::mt19937(seed)``) and of the shuffle (``std::mt19937_64(seed + 1)``).
        min_sentences: fewest sentences per sample (2 with the next-sentence head, else 1).
        num_epochs: number of epochs when ``num_samples`` is None.

    Returns:
        [n, 3] rows (first sentence, end sentence exclusive, target length), shuffled; uint32, or uint64 when the
        dataset has more than 2**32 - 1 sentences.
    """
    if (num_samples is None) == (num_epochs is None):
        raise ValueError(f"give exactly one of num_samples ({num_samples}) and num_epochs ({num_epochs})")
    if max_length < 2:
        raise ValueError(f"the target sample length must be >= 2 tokens, got {max_length}")
    doc_bounds = np.asarray(doc_bounds, dtype=np.int64)
    docs = _qualifying_documents(doc_bounds, sizes, min_sentences)
    targets = _Targets(seed, short_sequence_ratio(short_seq_prob), max_length)
    rows: list[int] = []
    epoch = 0
    while (num_samples is not None and len(rows) < 3 * num_samples) or (num_epochs is not None and epoch < num_epochs):
        if not len(docs):
            raise ValueError(
                f"no document of the split has {min_sentences} or more sentences (each <= {LONG_SENTENCE_TOKENS} "
                "tokens), so it yields no BERT sample; preprocess with --split-sentences, use more data or give the "
                "split a larger share"
            )
        if targets.ratio == 0 and epoch > 0:
            rows += rows[: len(rows) // epoch]  # no random targets: every epoch packs the same samples
        else:
            _pack_epoch(doc_bounds, docs, sizes, targets, min_sentences, rows)
        epoch += 1
    dtype = np.uint64 if len(sizes) > np.iinfo(np.uint32).max else np.uint32
    return _shuffle_rows(np.asarray(rows, dtype=dtype).reshape(-1, 3), seed)

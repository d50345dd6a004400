"""The sample index of a BERT dataset: which sentences make up each sample, in numpy (and numba when installed).

A BERT sample is a run of consecutive sentences of one document, packed until it reaches a target length
(``seq_length - 3``, or with probability ``short_seq_prob`` a random shorter one). The *sample index* is an
[n, 3] array of (first sentence, end sentence, target length) rows, built over whole epochs of the split's
documents and then shuffled. Its values, row order and dtype equal megatron-core's C++ ``build_mapping``: the
target lengths come from the same 32-bit Mersenne Twister stream (numpy's legacy ``RandomState`` seeds MT19937
exactly like ``std::mt19937``) and the shuffle replays ``std::mt19937_64``, which numpy lacks, so it is
implemented here (vectorised per 312-word block). With numba installed, ``bert_indices_numba`` packs and shuffles
the same streams in compiled code, at the speed of the C++ helper; the numpy path is the fallback.
"""

from __future__ import annotations

import importlib
import importlib.util
import math
from bisect import bisect_left
from typing import Literal, Optional

import numpy as np

from megatron.logging import get_logger

__all__ = ["LONG_SENTENCE_TOKENS", "Mt19937_64", "build_bert_sample_index", "short_sequence_ratio"]

# Megatron skips documents (of two or more sentences) holding a sentence longer than this many tokens.
LONG_SENTENCE_TOKENS = 512
# Below this many unfinished documents, the all-max_length packing goes on one sample at a time: a numpy round
# per sample would cost more than the Python steps for a few very long documents.
_FEW_DOCUMENTS = 32

_log = get_logger(__name__)
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

    @property
    def state(self) -> np.ndarray:
        """The engine's 312 words (uint64; a copy), before the twist of its next draw."""
        return self._state.copy()

    def draw(self, count: int) -> np.ndarray:
        """The next ``count`` outputs (uint64 [count]); a fresh engine's first draw twists first, as in C++."""
        n, m = self._N, self._M
        # The engine's words as one sequence: x[k + N] = x[k + M] ^ twist(x[k], x[k + 1]). The M new words from
        # x[k + N] on read only words before them, so they are computed together (the most a step can do).
        blocks = -(-count // n)
        x = np.empty((blocks + 1) * n, dtype=_U64)
        x[:n] = self._state
        for k in range(0, blocks * n, m):
            y = (x[k : k + m] & self._UPPER) | (x[k + 1 : k + m + 1] & self._LOWER)
            np.bitwise_xor(x[k + m : k + n], y >> _U64(1), out=x[k + n : k + n + m])
            x[k + n : k + n + m] ^= (y & _U64(1)) * self._MATRIX_A
        self._state = x[blocks * n :].copy()
        # Only whole blocks are drawn, so callers must draw once (the shuffle does): no partial-block carry-over.
        # Tempered in place with one scratch array: fresh large arrays cost page faults as much as the arithmetic.
        y, scratch = x[n : n + count], np.empty(count, dtype=_U64)
        for shift, mask in ((-29, 0x5555555555555555), (17, 0x71D67FFFEDA60000), (37, 0xFFF7EEE000000000),
                            (-43, _MASK64)):
            (np.left_shift if shift > 0 else np.right_shift)(y, _U64(abs(shift)), out=scratch)
            scratch &= _U64(mask)
            y ^= scratch
        return y


def short_sequence_ratio(short_seq_prob: float) -> int:
    """One in how many targets is short: ``round(1 / p)`` (half away from zero, as C's ``round``); 0 = never."""
    if short_seq_prob <= 0:
        return 0
    return int(math.floor(1.0 / short_seq_prob + 0.5))


class _Draws:
    """The target lengths of ``std::mt19937(seed)``'s stream, drawn ahead: ``targets`` holds those of the draws not
    yet consumed (int64 [k]) and ``short`` the offsets into it of the ones other than ``max_length`` (sorted int64):
    only those can change a packing. A draw ``r`` gives ``2 + r % (max_length - 1)`` if ``r % ratio == 0``."""

    def __init__(self, seed: int, ratio: int, max_length: int) -> None:
        self.ratio, self.max_length = ratio, max_length
        self._rng = np.random.RandomState(seed % 2**32)  # MT19937 init_genrand(seed), as std::mt19937(seed)
        self.targets = np.empty(0, dtype=np.int64)
        self.short = np.empty(0, dtype=np.int64)

    def ensure(self, count: int) -> None:
        """Have at least ``count`` unconsumed draws."""
        extra = count - len(self.targets)
        if extra > 0:
            # The full 32-bit range returns the generator's raw words, one per value, whatever the batch size.
            raw = self._rng.randint(0, 2**32, size=extra, dtype=np.uint32).astype(np.int64)
            new = np.where(raw % self.ratio == 0, 2 + raw % (self.max_length - 1), self.max_length)
            self.short = np.concatenate([self.short, np.flatnonzero(new != self.max_length) + len(self.targets)])
            self.targets = np.concatenate([self.targets, new])

    def consume(self, count: int) -> None:
        self.targets = self.targets[count:]
        self.short = self.short[np.searchsorted(self.short, count) :] - count


def _qualifying_documents(doc_bounds: np.ndarray, sizes: np.ndarray, min_sentences: int) -> np.ndarray:
    """Indices of documents with at least ``min_sentences`` sentences and, if more than one, none too long."""
    counts = np.diff(doc_bounds)
    # Long sentences counted per document exactly (a reduceat over the multi-sentence documents' starts alone would
    # also scan the one-sentence documents between them).
    long_so_far = np.concatenate([[0], np.cumsum(np.asarray(sizes) > LONG_SENTENCE_TOKENS)])
    has_long = long_so_far[doc_bounds[1:]] > long_so_far[doc_bounds[:-1]]
    return np.flatnonzero((counts >= max(min_sentences, 1)) & ~((counts > 1) & has_long))


def _sample_end(cum, start: int, target: int, last: int, min_sentences: int) -> int:
    """End (exclusive) of the sample that starts at sentence ``start`` of a document ending at ``last``: the first
    sentence where the sample reaches ``target`` tokens with ``min_sentences`` sentences and more than one sentence
    left, else the document's end (``cum``: cumulative sentence lengths, a sequence)."""
    s = max(bisect_left(cum, cum[start] + target, start + 1, last + 1) - 1, start + min_sentences - 1)
    return s + 1 if s <= last - 3 else last


def _pack_long(first: np.ndarray, last: np.ndarray, cum: np.ndarray, max_length: int,
               min_sentences: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every document packed as if each target were ``max_length``: (document, start, end) of each sample, int64.

    One vectorised round packs the next sample of every unfinished document (the ``bisect`` of ``_sample_end`` as a
    ``searchsorted`` over all of them: ``cum[start] + target > cum[start]``, so the search starts past ``start``);
    a few long documents left over are finished one sample at a time instead of one numpy round per sample.
    """
    docs, starts, ends = [], [], []
    active, pos = np.arange(len(first)), first
    while len(active) > _FEW_DOCUMENTS:
        lst = last[active]
        s = np.minimum(np.searchsorted(cum, cum[pos] + max_length), lst + 1) - 1
        s = np.maximum(s, pos + min_sentences - 1)
        end = np.where(s <= lst - 3, s + 1, lst)
        docs.append(active), starts.append(pos), ends.append(end)
        active, pos = active[end < lst], end[end < lst]
    cum_seq, rest = memoryview(cum), []
    for d, p in zip(active.tolist(), pos.tolist()):
        lst = int(last[d])
        while True:
            end = _sample_end(cum_seq, p, max_length, lst, min_sentences)
            rest += (d, p, end)
            if end == lst:
                break
            p = end
    rest = np.asarray(rest, dtype=np.int64).reshape(-1, 3)
    return tuple(np.concatenate([*parts, rest[:, k]]) for k, parts in enumerate((docs, starts, ends)))


class _LongPacking:
    """The all-``max_length`` packing of the qualifying documents, in document order (arrays over its samples:
    ``doc``, ``index`` within the document, ``start``, ``end``; over documents: ``count`` and ``offset``, the
    first sample's position, [D + 1]; ``coord`` [D + 1]: the draw of each document's first sample counted from
    the epoch's first draw when no target is short, each document taking one draw per sample plus one; over those
    draws, ``at_draw``: the sample a draw is the target of, -1 for a document's closing draw)."""

    def __init__(self, first: np.ndarray, last: np.ndarray, cum: np.ndarray, max_length: int, min_sentences: int):
        doc, start, end = _pack_long(first, last, cum, max_length, min_sentences)
        order = np.argsort(doc, kind="stable")  # rounds come document-interleaved; keep each one's own order
        self.doc, self.start, self.end = doc[order], start[order], end[order]
        self.count = np.bincount(self.doc, minlength=len(first)).astype(np.int64)
        self.offset = np.concatenate([[0], np.cumsum(self.count)])
        self.index = np.arange(len(self.doc)) - self.offset[self.doc]
        self.coord = np.concatenate([[0], np.cumsum(self.count + 1)])
        self.at_draw = np.full(self.coord[-1], -1, dtype=np.int64)
        self.at_draw[self.coord[self.doc] + self.index] = np.arange(len(self.doc))


def _walk_epoch(long: _LongPacking, last: np.ndarray, cum: np.ndarray, draws: _Draws, min_sentences: int):
    """Follow one epoch's draws through the documents, touching only the samples that a short target changes.

    While no target is short, document ``d`` starts at draw ``coord[d] + delta`` with ``delta`` fixed, so a short
    draw either falls on a document's closing draw (no effect) or on sample ``j`` of a document: that document keeps
    its first ``j`` long samples and its rest is packed here one sample at a time; its new sample count gives the
    next ``delta``. Returns flat lists: segments (end document, delta), changed documents (document, samples kept,
    samples added), added samples (start, end, draw), and the number of draws the epoch took.
    """
    coord, at_draw, doc_of, kept_of = (memoryview(a) for a in (long.coord, long.at_draw, long.doc, long.index))
    starts, ends_at, cum = memoryview(long.start), memoryview(last), memoryview(cum)
    num_docs, epoch_draws = len(long.count), long.coord[-1]
    draws.ensure(epoch_draws + epoch_draws // 2 + 1024)
    targets, short, num_short = memoryview(draws.targets), memoryview(draws.short), len(draws.short)
    segments, changed, added = [], [], []
    least = min_sentences - 1
    d = o = q = 0
    while d < num_docs:
        delta, sample = o - coord[d], -1
        # The drawn window always reaches this epoch's end if no target were short from here on.
        while q < num_short and short[q] - delta < epoch_draws:  # the next short draw that lands on a sample
            sample = at_draw[short[q] - delta]
            if sample >= 0:
                break
            q += 1
        if sample < 0:
            segments += (num_docs, delta)
            return segments, changed, added, epoch_draws + delta
        dd, kept, k = doc_of[sample], kept_of[sample], short[q]
        p, lst, before = starts[sample], ends_at[dd], len(added)
        need = k + lst - p + 2 + epoch_draws - coord[dd + 1]  # at most a draw per sentence, one to close, the rest
        if need > len(targets):
            draws.ensure(2 * need)
            targets, short, num_short = memoryview(draws.targets), memoryview(draws.short), len(draws.short)
        while True:  # _sample_end, inlined: this loop runs once per changed sample
            s = bisect_left(cum, cum[p] + targets[k], p + 1, lst + 1) - 1
            if s < p + least:
                s = p + least
            end = s + 1 if s <= lst - 3 else lst
            added += (p, end, k)
            k, p = k + 1, end
            if end == lst:
                break
        segments += (dd + 1, delta)
        changed += (dd, kept, (len(added) - before) // 3)
        d, o = dd + 1, k + 1
        while q < num_short and short[q] < o:
            q += 1
    return segments, changed, added, o


def _pack_epoch(long: _LongPacking, last: np.ndarray, cum: np.ndarray, draws: _Draws,
                min_sentences: int) -> np.ndarray:
    """One epoch's samples, int64 [n, 3] rows (first, end, target) in document order; consumes its draws."""
    segments, changed, added, used = _walk_epoch(long, last, cum, draws, min_sentences)
    segments = np.asarray(segments, dtype=np.int64).reshape(-1, 2)
    changed = np.asarray(changed, dtype=np.int64).reshape(-1, 3)
    added = np.asarray(added, dtype=np.int64).reshape(-1, 3)
    num_docs = len(long.count)
    delta = np.repeat(segments[:, 1], np.diff(segments[:, 0], prepend=0))
    kept, extra = long.count.copy(), np.zeros(num_docs, dtype=np.int64)
    kept[changed[:, 0]], extra[changed[:, 0]] = changed[:, 1], changed[:, 2]
    row_of_doc = np.concatenate([[0], np.cumsum(kept + extra)])
    keep = long.index < kept[long.doc]
    doc, index = long.doc[keep], long.index[keep]
    rows = np.empty((row_of_doc[-1], 3), dtype=np.int64)
    from_long = np.zeros(len(rows), dtype=bool)
    pos = row_of_doc[doc] + index
    from_long[pos] = True
    rows[pos, 0], rows[pos, 1] = long.start[keep], long.end[keep]
    rows[pos, 2] = draws.targets[long.coord[doc] + delta[doc] + index]
    # Rows are in (document, sample) order and a document's added samples follow its kept ones: they fill the gaps.
    pos = np.flatnonzero(~from_long)
    rows[pos, :2], rows[pos, 2] = added[:, :2], draws.targets[added[:, 2]]
    draws.consume(used)
    return rows


def _shuffle_order(n: int, seed: int) -> np.ndarray:
    """The row order of megatron's Fisher-Yates with ``std::mt19937_64(seed + 1)`` (for i = n-1 .. 1 swap rows i
    and ``r % (i + 1)``), without replaying the swaps: int64 [n], ``order[i]`` = original row now at i.

    Step i finalises position i with what position ``j = partner[i] < i`` holds then. Position j holds its own row
    until the first (largest) step that names it, then the row each such step's own position held just before
    it: ``held[i]``. So a step's result is ``held`` of the previous step naming the same position, and
    ``held[p]`` is ``held`` of the last (smallest) step naming p, or p: a chain resolved by pointer jumping.
    """
    order = np.arange(n, dtype=np.int64)
    if n < 2:
        return order
    # Large temporaries are few and reused (out=, in place): on fresh memory their page faults cost as much as the
    # arithmetic.
    partner = np.zeros(n, dtype=np.int64)
    np.add(order[1:], 1, out=partner[1:])
    np.remainder(Mt19937_64(seed + 1).draw(n - 1)[::-1], partner[1:].view(_U64), out=partner[1:].view(_U64))
    step = np.flatnonzero(partner < order)  # steps that swap two different positions
    bits = n.bit_length()
    if 2 * bits < 63:  # one int64 key per step sorts by (position named, step), much faster than an argsort
        key = partner[step]
        key <<= bits
        key |= step
        key.sort()
        step = np.bitwise_and(key, (1 << bits) - 1, out=key)
    else:
        step = step[np.argsort(partner[step], kind="stable")]
    named = partner[step]
    first = np.ones(len(step), dtype=bool)
    first[1:] = named[1:] != named[:-1]
    held, jumped = order.copy(), partner  # partner is not needed any more: its memory takes the jumps
    held[named[first]] = step[first]
    while True:
        np.take(held, held, out=jumped)
        if np.array_equal(jumped, held):
            break
        held, jumped = jumped, held
    # Positions that no step swaps with another keep what they held (position 0: its final row).
    largest = np.append(first[1:], True)  # first step to run on its position: takes the position's own row
    previous = np.append(step[1:], 0)
    previous[largest] = 0
    order = held.copy()
    order[step] = np.where(largest, named, held[previous])
    return order


def build_bert_sample_index(
    doc_bounds: np.ndarray,
    sizes: np.ndarray,
    num_samples: Optional[int],
    max_length: int,
    short_seq_prob: float,
    seed: int,
    min_sentences: int,
    num_epochs: Optional[int] = None,
    backend: Literal["auto", "numba", "numpy"] = "auto",
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
        backend: "numba" packs and shuffles in compiled code (``bert_indices_numba``, needs numba), "numpy" in
            vectorised numpy rounds; "auto" takes numba when it is installed. The output is the same.

    Returns:
        [n, 3] rows (first sentence, end sentence exclusive, target length), shuffled; uint32, or uint64 when the
        dataset has more than 2**32 - 1 sentences.
    """
    if (num_samples is None) == (num_epochs is None):
        raise ValueError(f"give exactly one of num_samples ({num_samples}) and num_epochs ({num_epochs})")
    if max_length < 2:
        raise ValueError(f"the target sample length must be >= 2 tokens, got {max_length}")
    compiled = _compiled_backend(backend)
    doc_bounds = np.asarray(doc_bounds, dtype=np.int64)
    if compiled is not None:
        first, last = compiled.qualifying_documents(doc_bounds, sizes, min_sentences, LONG_SENTENCE_TOKENS)
    else:
        docs = _qualifying_documents(doc_bounds, sizes, min_sentences)
        first, last = doc_bounds[docs], doc_bounds[docs + 1]
    if not len(first) and ((num_samples or 0) > 0 or (num_epochs or 0) > 0):
        raise ValueError(
            f"no document of the split has {min_sentences} or more sentences (each <= {LONG_SENTENCE_TOKENS} "
            "tokens), so it yields no BERT sample; preprocess with --split-sentences, use more data or give the "
            "split a larger share"
        )
    ratio = short_sequence_ratio(short_seq_prob)
    dtype = np.uint64 if len(sizes) > np.iinfo(np.uint32).max else np.uint32
    if compiled is not None:
        key = np.random.RandomState(seed % 2**32).get_state()[1]  # std::mt19937(seed), as in _Draws
        rows = compiled.pack_samples(
            first, last, np.asarray(sizes), key, ratio, max_length, min_sentences,
            -1 if num_samples is None else num_samples, -1 if num_epochs is None else num_epochs, dtype)
        return compiled.shuffle_rows(rows, Mt19937_64(seed + 1).state)
    rows = _numpy_rows(first, last, sizes, num_samples, num_epochs, max_length, ratio, seed, min_sentences, dtype)
    return np.take(rows, _shuffle_order(len(rows), seed), axis=0)


def _compiled_backend(backend: str):
    """The ``bert_indices_numba`` module when ``backend`` asks for it (or "auto" finds numba), else None."""
    if backend not in ("auto", "numba", "numpy"):
        raise ValueError(f"backend must be 'auto', 'numba' or 'numpy', got {backend!r}")
    if backend == "numpy" or (backend == "auto" and importlib.util.find_spec("numba") is None):
        return None
    try:
        return importlib.import_module("megatron.data.bert_indices_numba")
    except ImportError as exc:  # e.g. a numba built for another numpy
        if backend == "numba":
            raise ValueError(f"backend 'numba' needs a working numba (pip install numba): {exc}") from exc
        _log.warning("numba is installed but does not import (%s); the BERT sample index uses numpy", exc)
        return None


def _numpy_rows(first, last, sizes, num_samples, num_epochs, max_length, ratio, seed, min_sentences, dtype):
    """Unshuffled rows of whole epochs, the vectorised numpy way (see ``build_bert_sample_index``)."""
    cum = np.zeros(len(sizes) + 1, dtype=np.int64)
    np.cumsum(sizes, out=cum[1:])
    long = _LongPacking(first, last, cum, max_length, min_sentences)
    draws = _Draws(seed, ratio, max_length)
    epochs, total = [], 0
    while (num_samples is not None and total < num_samples) or (num_epochs is not None and len(epochs) < num_epochs):
        if ratio == 0:  # no random targets (and no draws): every epoch is the all-max_length packing
            rows = epochs[0] if epochs else np.stack([long.start, long.end, np.full_like(long.start, max_length)], 1)
        else:
            rows = _pack_epoch(long, last, cum, draws, min_sentences)
        epochs.append(rows.astype(dtype, copy=False))
        total += len(rows)
    return np.concatenate(epochs) if epochs else np.empty((0, 3), dtype=dtype)

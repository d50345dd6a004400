"""Weighted blends of datasets: Megatron's greedy blending indices and the ``BlendedDataset`` built on them.

``build_blending_indices`` reproduces Megatron's C++ ``build_blending_indices`` bit for bit (same float64
expressions, first index on ties) without a compiled helper: the greedy is simulated in thousands of chunks at
once from guessed starting states, then stitched together exactly (see the function's docstring). Sizes follow
Megatron-LM ``core_v0.8`` / Megatron-DeepSpeed: each component gets ``ceil(N * w * 1.005)`` samples and the blend
is their sum.

``build_exhaustive_blending_indices`` is the other layout: every sample of every component exactly once,
interleaved in proportion to the component sizes. Exact-epoch training data (curriculum learning) uses it; the
blend weights are then applied by the curriculum sampler, which draws each global batch across components by them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Optional

import numpy as np
import torch

from megatron.data.index_cache import IndexCache, load_or_build_indices
from megatron.logging import get_logger

__all__ = [
    "build_blending_indices", "build_exhaustive_blending_indices", "blend_sample_counts", "continue_blend",
    "normalize_weights", "BlendedDataset",
]

logger = get_logger(__name__)

# Megatron-LM core_v0.8 and Megatron-DeepSpeed oversample every component by 0.5% so rounding in the greedy can
# never ask a component for more samples than it was built with. (Megatron-LM HEAD moved the margin into
# --mid-level-dataset-surplus and dropped it from the blend size; we follow the older, documented behaviour.)
BLEND_MARGIN = 1.005

_WARMUP_STEPS = 64  # a trajectory started from a guessed state joins the true one within a few dozen steps
_TARGET_CHUNKS = 4096  # chunks simulated side by side: amortises numpy call overhead over the steps
_UNROLLED_MAX = 6
_MIN_CHUNK = 2048  # long enough for most guessed trajectories to meet the true one inside their chunk


def normalize_weights(weights: Sequence[float]) -> np.ndarray:
    """float64 weights divided by their sum, computed exactly like megatron-core's ``normalize``."""
    w = np.asarray(weights, dtype=np.float64)
    return w / np.sum(w)


def blend_sample_counts(weights: Sequence[float], num_samples: int) -> list[int]:
    """Samples to build per component for a blend of ``num_samples``: ``ceil(num_samples * w * 1.005)``.

    ``weights`` must already be normalized. The blend itself has ``sum(...)`` samples (Megatron core_v0.8).
    """
    return [int(math.ceil(num_samples * float(w) * BLEND_MARGIN)) for w in weights]


def _guess_counts(weights: np.ndarray, steps: np.ndarray) -> np.ndarray:
    """Largest-remainder counts after ``steps`` draws: within a sample or two of the greedy's true counts."""
    ideal = np.multiply.outer(steps.astype(np.float64), weights)  # [P, n]
    counts = np.floor(ideal)
    missing = steps - counts.sum(axis=1).astype(np.int64)  # in [0, n)
    order = np.argsort(counts - ideal, axis=1, kind="stable")  # largest remainder first
    bump = np.arange(len(weights))[None, :] < missing[:, None]
    np.put_along_axis(counts, order, np.take_along_axis(counts, order, axis=1) + bump, axis=1)
    return counts


def _greedy_step(weights: np.ndarray, x: np.ndarray, counts: np.ndarray, scratch: np.ndarray) -> np.ndarray:
    """One greedy draw in every lane: ``argmax_d(w_d * x - counts[d])``, first maximum on ties.

    float64 counts are exact below 2**53 and make ``w * x - c`` the same IEEE expression as the C++
    ``weights[d] * x - double(count[d])``, so comparisons, ties included, come out identical.
    ``counts`` is float64 [n, k], ``x`` float64 [k]; ``scratch`` is a float64 [n + 1, k] work buffer.
    """
    n = len(weights)
    if n > _UNROLLED_MAX:
        error = scratch[:n]
        np.multiply.outer(weights, x, out=error)
        error -= counts
        return error.argmax(axis=0)
    # A running maximum over a few datasets is much faster than argmax along a short axis.
    best, error = scratch[0], scratch[1]
    np.multiply(weights[0], x, out=best)
    best -= counts[0]
    choice = np.zeros(len(x), dtype=np.intp)
    for d in range(1, n):
        np.multiply(weights[d], x, out=error)
        error -= counts[d]
        better = error > best  # strict: the first maximum wins, like the C++ scan
        np.copyto(best, error, where=better)
        choice[better] = d
    return choice


class _Chunks:
    """The blend cut into ``P`` chunks of ``length`` steps; chunk ``r`` covers steps ``[r*length, (r+1)*length)``.

    Holds each chunk's recorded draws (``picks``, ``drawn``: [P, length]) and its counts before its first and
    after its last step (``begin``, ``end``: float64 [n, P]). Chunk 0 always starts from the exact empty state.
    """

    def __init__(self, weights: np.ndarray, num_chunks: int, length: int) -> None:
        self.weights, self.length = weights, length
        self.picks = np.empty((num_chunks, length), dtype=np.int16)
        self.drawn = np.empty((num_chunks, length), dtype=np.int64)
        self.begin = np.zeros((len(weights), num_chunks))
        self.end = np.zeros((len(weights), num_chunks))

    def run(self, warmup: int) -> None:
        """Simulate every chunk at once, each from a guessed state ``warmup`` steps before it starts."""
        w, length, num_chunks = self.weights, self.length, self.picks.shape[0]
        first = np.maximum(np.arange(num_chunks, dtype=np.int64) * length - warmup, 0)  # chunk 0 starts at 0
        counts = np.ascontiguousarray(_guess_counts(w, first).T)
        counts[:, 0] = 0.0
        lanes = np.arange(num_chunks)
        flat = counts.reshape(-1)
        scratch = np.empty((len(w) + 1, num_chunks))
        base = first.astype(np.float64)
        picks = np.empty((num_chunks, warmup + length), dtype=np.int16)
        drawn = np.empty((num_chunks, warmup + length), dtype=np.int64)
        for t in range(warmup + length):
            if t == warmup:
                self.begin[:] = counts
            choice = _greedy_step(w, np.maximum(base + t, 1.0), counts, scratch)  # Megatron's x = max(i, 1)
            where = choice * num_chunks + lanes
            picks[:, t] = choice
            drawn[:, t] = flat[where]
            flat[where] += 1.0
        self.end[:] = counts
        self.picks[0], self.drawn[0] = picks[0, :length], drawn[0, :length]  # chunk 0 did not warm up
        self.picks[1:], self.drawn[1:] = picks[1:, warmup:], drawn[1:, warmup:]
        self.begin[:, 0] = 0.0
        self.end[:, 0] = np.bincount(self.picks[0], minlength=len(w))

    def rerun(self, lanes: np.ndarray, start: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Re-simulate chunks ``lanes`` from counts ``start`` ([n, k]) until each meets its old record.

        From the first step at which the new and the recorded states agree the deterministic greedy repeats
        the record, so only the prefix before it is rewritten. Returns new ``picks``, ``drawn`` ([k, length])
        and ``end`` ([n, k]) for the lanes, without committing them.
        """
        w, length = self.weights, self.length
        picks, drawn = self.picks[lanes], self.drawn[lanes]
        end = np.empty_like(start)
        cur, rec = start.copy(), self.begin[:, lanes].copy()
        rows = np.arange(len(lanes))  # rows of picks/drawn still being simulated
        step = lanes.astype(np.float64) * length
        for t in range(length):
            moving = ~np.all(cur == rec, axis=0)
            if not moving.all():  # met the record: the old end stands
                end[:, rows[~moving]] = self.end[:, lanes[rows[~moving]]]
                rows, cur, rec, step = rows[moving], cur[:, moving], rec[:, moving], step[moving]
                if len(rows) == 0:
                    return picks, drawn, end
            choice = _greedy_step(w, np.maximum(step + t, 1.0), cur, np.empty((len(w) + 1, len(rows))))
            cols = np.arange(len(rows))
            rec[picks[rows, t], cols] += 1.0
            picks[rows, t] = choice
            drawn[rows, t] = cur[choice, cols]
            cur[choice, cols] += 1.0
        end[:, rows] = cur
        return picks, drawn, end

    def commit(self, lanes: np.ndarray, start: np.ndarray, picks: np.ndarray, drawn: np.ndarray, end: np.ndarray):
        """Store re-run records for ``lanes``."""
        self.begin[:, lanes], self.end[:, lanes] = start, end
        self.picks[lanes], self.drawn[lanes] = picks, drawn

    def stitch(self) -> int:
        """Re-run chunks until each starts where its predecessor ends; returns the number of chunk re-runs.

        Chunk 0 is exact and every record stays a greedy trajectory from its ``begin``, so once the chain is
        consistent every chunk is exact (induction over chunks). Each round re-runs every inconsistent chunk
        from its predecessor's end; the first of them starts from an exact state, so this terminates.
        """
        reruns = 0
        while True:
            bad = np.flatnonzero(np.any(self.begin[:, 1:] != self.end[:, :-1], axis=0)) + 1
            if len(bad) == 0:
                return reruns
            reruns += len(bad)
            start = self.end[:, bad - 1]
            self.commit(bad, start, *self.rerun(bad, start))


def continue_blend(weights: Sequence[float], counts: list[int], num_samples: int) -> list[int]:
    """Megatron's greedy blend continued for ``num_samples`` more draws from the cumulative ``counts``.

    The rule of ``build_blending_indices`` one draw at a time: draw ``i`` (``i = sum(counts)``) goes to
    ``argmax_d(w_d * max(i, 1) - counts[d])``, first maximum on ties. ``counts`` is updated in place; returns how
    many of the new draws each component got. Python floats give the same IEEE values as the vectorised greedy.
    """
    if len(weights) == 1:
        counts[0] += num_samples
        return [num_samples]
    w = [float(x) for x in weights]
    out = [0] * len(w)
    i = sum(counts)
    rest = range(1, len(w))
    for _ in range(num_samples):
        x = float(max(i, 1))
        best, top = 0, w[0] * x - counts[0]
        for d in rest:  # strict comparison: the first maximum wins, as in Megatron's helper
            err = w[d] * x - counts[d]
            if err > top:
                best, top = d, err
        counts[best] += 1
        out[best] += 1
        i += 1
    return out


def build_blending_indices(weights: Sequence[float], size: int) -> tuple[np.ndarray, np.ndarray]:
    """Megatron's greedy blend: sample ``i`` comes from ``argmax_d(w_d * max(i, 1) - count_d)`` (first on ties).

    Equal, element for element, to Megatron's C++ helper, without one. The greedy is sequential, but in
    practice a trajectory started from an approximately right state (largest-remainder counts) joins the true
    one within a few dozen steps: two states at the same step differ by an integer vector, and the greedy
    pulls every error ``w * i - c`` back into the same bounded region. So the ``size`` steps are cut into up to
    ~4096 chunks, simulated side by side (numpy over chunks) from guessed states ``_WARMUP_STEPS`` before each
    chunk; chunks whose start disagrees with the previous chunk's exact end are re-run from it until they meet
    their record. Exactness never depends on the guess, only the speed does (weights below ~1e-4 need more
    re-runs: a few seconds per 10M samples instead of ~0.5 s).

    Args:
        weights: normalized float64 weights, one per dataset (at most 32767 datasets).
        size: number of blended samples.

    Returns:
        ``dataset_index`` (int16 [size], as megatron-core) and ``dataset_sample_index`` (int64 [size]): sample
        ``i`` is sample ``dataset_sample_index[i]`` of dataset ``dataset_index[i]``.
    """
    w = np.asarray(weights, dtype=np.float64)
    if w.ndim != 1 or not 1 <= len(w) <= np.iinfo(np.int16).max:
        raise ValueError(f"weights must be a 1-D sequence of 1..32767 values, got shape {w.shape}")
    if size < 0:
        raise ValueError(f"size must be >= 0, got {size}")
    if len(w) == 1 or size == 0:
        return np.zeros(size, dtype=np.int16), np.arange(size, dtype=np.int64)
    length = min(size, max(_MIN_CHUNK, -(-size // _TARGET_CHUNKS)))
    assert length >= _WARMUP_STEPS or length == size, "later chunks must start warming up at step >= 0"
    chunks = _Chunks(w, -(-size // length), length)
    chunks.run(_WARMUP_STEPS)
    reruns = chunks.stitch()
    logger.debug("blending indices: %d chunks of %d steps, %d re-runs", len(chunks.picks), length, reruns)
    return chunks.picks.reshape(-1)[:size], chunks.drawn.reshape(-1)[:size]


def build_exhaustive_blending_indices(sizes: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """Every sample of every component exactly once, components interleaved in proportion to their sizes.

    Sample ``k`` of component ``d`` (of ``n_d``) sits at the fractional position ``(k + 1/2) / n_d``; the blend is
    all samples ordered by that position (ties: lower component first). Each component keeps its own order, and a
    prefix of ``m`` samples holds ``m * s_d +- (1/2 + s_d * (D - 2) / 2)`` samples of component ``d`` (share
    ``s_d = n_d / N``, ``D`` components): within half a sample for two components.
    (Megatron-LM's exhaustive mode instead runs its greedy over size-weights and drops exhausted components; the
    stratified order reaches the same guarantee with one sort and no special case at the end.)

    Args:
        sizes: samples per component (at most 32767 components).

    Returns:
        ``dataset_index`` (int16 [sum(sizes)]) and ``dataset_sample_index`` (int64 [sum(sizes)]).
    """
    n = np.asarray(sizes, dtype=np.int64)
    if n.ndim != 1 or not 1 <= len(n) <= np.iinfo(np.int16).max or (n < 0).any():
        raise ValueError(f"sizes must be 1..32767 counts >= 0, got {list(sizes)}")
    component = np.repeat(np.arange(len(n), dtype=np.int16), n)
    starts = np.cumsum(n) - n
    sample = np.arange(int(n.sum()), dtype=np.int64) - np.repeat(starts, n)
    # float64 positions: within a component they are strictly increasing (steps of 1/n_d); across components two
    # positions closer than float64 resolution (sizes above ~2**26) may swap, moving a prefix by one more sample.
    position = (2.0 * sample + 1.0) / (2.0 * np.repeat(n, n).astype(np.float64))
    order = np.lexsort((component, position))
    return component[order], sample[order]


class BlendedDataset(torch.utils.data.Dataset):
    """Samples drawn from several datasets in Megatron's greedy weighted order.

    Item ``i`` is item ``dataset_sample_index[i]`` of ``datasets[dataset_index[i]]``, returned with
    ``dataset_id`` = ``dataset_index[i]`` and ``dataset_sample_index`` = that position in the component (so ids
    never collide across components).

    With ``exhaustive=True`` the order is ``build_exhaustive_blending_indices`` instead: every sample of every
    component exactly once (``size`` must be the sum of the component lengths). ``weights`` are then not used to
    order the samples; they stay on ``.weights`` for a sampler that applies them (the curriculum sampler).

    Args:
        datasets: the components (each indexable, returning a dict with ``tokens``).
        weights: normalized weights, one per component.
        size: number of blended samples.
        split: split name (cache file name).
        cache_dir: index cache directory; None keeps the indices in memory.
        exhaustive: every component sample once, interleaved by size, instead of the weighted greedy.
    """

    def __init__(
        self, datasets: Sequence[Any], weights: Sequence[float], size: int, split: str, *, cache_dir: Optional[str],
        exhaustive: bool = False,
    ) -> None:
        if len(datasets) != len(weights) or not datasets:
            raise ValueError(f"need one weight per dataset, got {len(datasets)} datasets and {len(weights)} weights")
        self.datasets, self.weights, self.size = list(datasets), [float(w) for w in weights], int(size)
        self.exhaustive = bool(exhaustive)
        if self.exhaustive and self.size != sum(len(d) for d in self.datasets):
            raise ValueError(f"an exhaustive blend holds every component sample once: size must be "
                             f"{sum(len(d) for d in self.datasets)}, got {self.size}")
        params = {
            "class": "BlendedDataset",
            "index_format": 1,
            "split": split,
            "size": self.size,
            "weights": self.weights,
            "datasets": [getattr(d, "cache", None) and d.cache.key for d in self.datasets],
        }
        if self.exhaustive:  # only then: weighted blends keep the cache keys they always had
            params["order"] = "exhaustive"
        # Components without an on-disk cache have no stable identity; keep the blend in memory as well.
        cache = None if cache_dir is None or any(k is None for k in params["datasets"]) else IndexCache(
            cache_dir, "BlendedDataset", split, params, ("dataset_index", "dataset_sample_index")
        )
        arrays, self.built_indices = load_or_build_indices(cache, self._build)
        self.dataset_index, self.dataset_sample_index = arrays["dataset_index"], arrays["dataset_sample_index"]

    def _build(self) -> dict[str, np.ndarray]:
        if self.exhaustive:
            dataset_index, dataset_sample_index = build_exhaustive_blending_indices([len(d) for d in self.datasets])
            return {"dataset_index": dataset_index, "dataset_sample_index": dataset_sample_index}
        dataset_index, dataset_sample_index = build_blending_indices(self.weights, self.size)
        drawn = np.bincount(dataset_index, minlength=len(self.datasets))
        for d, (count, dataset) in enumerate(zip(drawn.tolist(), self.datasets)):
            if count > len(dataset):
                raise ValueError(
                    f"the blend draws {count} samples from dataset {d} ({getattr(dataset, 'params', '')}), which "
                    f"has only {len(dataset)}; its weight {self.weights[d]:.3g} is too large for its data"
                )
        return {"dataset_index": dataset_index, "dataset_sample_index": dataset_sample_index}

    def __len__(self) -> int:
        return len(self.dataset_index)

    def __getitem__(self, idx: int) -> dict[str, Any]:
        d = int(self.dataset_index[idx])
        k = int(self.dataset_sample_index[idx])
        item = dict(self.datasets[d][k])
        item["dataset_id"], item["dataset_sample_index"] = d, k
        return item

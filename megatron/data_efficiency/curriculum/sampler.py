"""Curriculum sampler: global batches drawn from the samples the current difficulties admit, resumable exactly.

Every DP rank runs the same deterministic sampler and takes its slice of each global batch, so no broadcast is
needed. Samples admitted by a difficulty increase form a new cluster (DeepSpeed's design); a global batch picks
clusters in proportion to their sizes (uniform over the admitted pool) and walks each cluster in a seeded
per-epoch permutation, so no sample of a cluster repeats before all were used. Blended datasets keep their
weights: each component has its own analysis files and thresholds.
"""

from __future__ import annotations

import collections
import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from megatron.data.blending import build_blending_indices, continue_blend
from megatron.data.samplers import MicroBatchIndices
from megatron.data_efficiency.config import CurriculumMetricConfig, DataEfficiencyConfig, DifficultyType
from megatron.data_efficiency.curriculum.index_files import read_flat
from megatron.data_efficiency.curriculum.identity import check_analysis_identity
from megatron.data_efficiency.curriculum.scheduler import CustomSchedule, DifficultySchedule
from megatron.logging import get_logger

__all__ = ["MetricIndex", "DatasetLayout", "CurriculumBatch", "CurriculumSampler", "build_curriculum_sampler"]

logger = get_logger(__name__)

_STATE_VERSION = 1


@dataclass(frozen=True)
class MetricIndex:
    """One schedule-based metric over one dataset component: the samples sorted by difficulty.

    Attributes:
        name: metric name (key of ``curriculum_metrics``).
        difficulty_type: ``value`` or ``percentile``.
        order: [N] sample ids in ascending metric value, ties by ascending id (index_to_sample concatenated).
        values: [V] distinct metric values, ascending (value type only).
        ends: [V] int64, ``order[:ends[k]]`` are the samples with metric <= ``values[k]`` (value type only).
    """

    name: str
    difficulty_type: DifficultyType
    order: np.ndarray
    values: np.ndarray | None = None
    ends: np.ndarray | None = None

    def admitted_count(self, difficulty: int) -> int:
        """How many samples (a prefix of ``order``) ``difficulty`` admits.

        value: metric <= difficulty. percentile: the easiest ``floor(N * difficulty / 100)`` samples (DeepSpeed
        uses ``N // max_difficulty * difficulty``, which leaves up to max_difficulty - 1 samples out until the end).
        """
        n = len(self.order)
        if self.difficulty_type == "percentile":
            return n if difficulty >= 100 else n * max(difficulty, 0) // 100
        k = int(np.searchsorted(self.values, difficulty, side="right"))
        return 0 if k == 0 else int(self.ends[k - 1])

    @classmethod
    def load(cls, name: str, cfg: CurriculumMetricConfig, index_to_sample: str, index_to_metric: str | None,
             num_samples: int) -> MetricIndex:
        """Read the analyzer's files for one component; ValueError if they do not describe ``num_samples``."""
        order, lengths = read_flat(index_to_sample)
        if len(order) != num_samples:
            raise ValueError(
                f"{index_to_sample}: lists {len(order)} samples but the training dataset has {num_samples}; "
                "analyze the same data, split, seed and seq-length with exactly one epoch "
                "(--train-data-exact-num-epochs 1)"
            )
        order = np.array(order, dtype=np.int64 if num_samples > np.iinfo(np.int32).max else np.int32)
        if len(order) and (order.min() < 0 or order.max() >= num_samples
                           or np.bincount(order, minlength=num_samples).max() != 1):
            raise ValueError(f"{index_to_sample}: sample ids are not a permutation of 0..{num_samples - 1}")
        if cfg.difficulty_type == "percentile":
            return cls(name=name, difficulty_type="percentile", order=order)
        values, value_rows = read_flat(index_to_metric)
        if len(value_rows) != len(lengths) or np.any(value_rows != 1):
            raise ValueError(
                f"{index_to_metric} has {len(value_rows)} rows but {index_to_sample} has {len(lengths)}: "
                "difficulty_type value needs the plain {metric}_index_to_sample file (the _percentile_merged file "
                "is for difficulty_type percentile)"
            )
        values = np.asarray(values, dtype=np.int64)
        if np.any(np.diff(values) <= 0):
            raise ValueError(f"{index_to_metric}: metric values are not strictly increasing")
        return cls(name=name, difficulty_type="value", order=order, values=values, ends=np.cumsum(lengths))


@dataclass(frozen=True)
class DatasetLayout:
    """The training dataset as the sampler sees it: one component, or a weighted blend of components.

    Attributes:
        size: len of the training dataset (sampler output indices are positions in it).
        component_sizes: len of each component (its analysis covers exactly these samples).
        weights: normalized blend weights (``[1.0]`` for a single dataset).
        positions: per component, int64 [N_c] blended position of each component sample (-1 if the blend never
            uses it); None for a single dataset (identity).
    """

    size: int
    component_sizes: tuple[int, ...]
    weights: tuple[float, ...] = (1.0,)
    positions: tuple[np.ndarray, ...] | None = None

    @classmethod
    def single(cls, size: int) -> DatasetLayout:
        """A plain (unblended) dataset of ``size`` samples."""
        return cls(size=size, component_sizes=(size,))

    @classmethod
    def from_blend(cls, dataset_index: np.ndarray, dataset_sample_index: np.ndarray,
                   component_sizes: Sequence[int], weights: Sequence[float]) -> DatasetLayout:
        """Invert a blend's (dataset_index, dataset_sample_index): first blended position of each sample."""
        dataset_index = np.asarray(dataset_index)
        dataset_sample_index = np.asarray(dataset_sample_index, dtype=np.int64)
        positions = []
        for c, n in enumerate(component_sizes):
            where = np.flatnonzero(dataset_index == c)
            if len(where) and int(dataset_sample_index[where].max()) >= n:
                raise ValueError(f"the blend uses sample {int(dataset_sample_index[where].max())} of component {c}, "
                                 f"which has only {n} samples")
            pos = np.full(n, -1, dtype=np.int64)
            # Reversed assignment keeps the first position when the blend repeats a sample.
            pos[dataset_sample_index[where][::-1]] = where[::-1]
            positions.append(pos)
        w = np.asarray(weights, dtype=np.float64)
        return cls(size=len(dataset_index), component_sizes=tuple(int(n) for n in component_sizes),
                   weights=tuple((w / w.sum()).tolist()), positions=tuple(positions))


@dataclass(frozen=True)
class CurriculumBatch:
    """A global batch and the curriculum state it was drawn under.

    Attributes:
        curriculum_step: 1 for the first global batch (DeepSpeed's counter).
        difficulties: current difficulty of every configured metric (incl. seqlen_truncate/reshape).
        indices: int64 [global_batch_size], positions in the training dataset.
    """

    curriculum_step: int
    difficulties: dict[str, int]
    indices: np.ndarray


class _Cluster:
    """Samples admitted together; consumed along a seeded permutation that is redrawn each epoch."""

    def __init__(self, members: np.ndarray, seed_key: tuple[int, ...]) -> None:
        self.members = members
        self.seed_key = seed_key
        self.epoch = 0
        self.cursor = 0
        self.perm = self._permutation(0)

    def _permutation(self, epoch: int) -> np.ndarray:
        # Its own stream per (seed, component, cluster, epoch): restoring a cluster needs only (epoch, cursor).
        perm = self.members.copy()
        np.random.default_rng([*self.seed_key, epoch]).shuffle(perm)
        return perm

    def restore(self, epoch: int, cursor: int) -> None:
        self.epoch, self.cursor = epoch, cursor
        self.perm = self._permutation(epoch)

    def take(self, count: int) -> np.ndarray:
        """Next ``count`` samples, wrapping into new epochs as often as needed (DeepSpeed wraps only once)."""
        parts = []
        while count > 0:
            n = min(count, len(self.perm) - self.cursor)
            parts.append(self.perm[self.cursor : self.cursor + n])
            self.cursor += n
            count -= n
            if self.cursor == len(self.perm):
                self.restore(self.epoch + 1, 0)
        return np.concatenate(parts) if len(parts) != 1 else parts[0]


class _ComponentPool:
    """The admitted samples of one dataset component, as clusters."""

    def __init__(self, component: int, metrics: list[MetricIndex], num_samples: int,
                 available: np.ndarray | None, seed: int) -> None:
        self.component = component
        self.metrics = metrics
        self.num_samples = num_samples
        self.available = available
        self.seed = seed
        self.reset()

    def reset(self) -> None:
        self.admitted: tuple[int, ...] | None = None
        self.clusters: list[_Cluster] = []
        self.cluster_keys: list[tuple[int, ...]] = []
        self.sizes = np.zeros(0, dtype=np.float64)
        # With two or more metrics a sample is admitted iff its rank in every metric's order is admitted.
        self.ranks = None
        if len(self.metrics) >= 2:
            self.ranks = []
            for m in self.metrics:
                r = np.empty(self.num_samples, dtype=m.order.dtype)
                r[m.order] = np.arange(self.num_samples, dtype=m.order.dtype)
                self.ranks.append(r)

    @property
    def pool_size(self) -> int:
        return int(self.sizes.sum())

    def admit(self, counts: tuple[int, ...]) -> None:
        """Widen the pool to the prefixes ``counts`` (one per metric); new samples become a new cluster."""
        old = self.admitted
        if old == counts:
            return
        if old is not None and any(n < o for n, o in zip(counts, old)):
            raise ValueError(
                f"curriculum difficulty decreased for dataset component {self.component} (admitted prefix "
                f"{old} -> {counts}); the sampler only widens the pool, use a non-decreasing schedule"
            )
        new = self._band(old, counts)
        self.admitted = counts
        if self.available is not None:
            new = new[self.available[new]]
        if len(new):
            self.clusters.append(_Cluster(np.sort(new), (self.seed, self.component, len(self.clusters))))
            self.cluster_keys.append(counts)
            self.sizes = np.append(self.sizes, float(len(new)))

    def _band(self, old: tuple[int, ...] | None, new: tuple[int, ...]) -> np.ndarray:
        if not self.metrics:
            return np.arange(self.num_samples) if old is None else np.empty(0, dtype=np.int64)
        old = old or (0,) * len(self.metrics)
        if len(self.metrics) == 1:
            return self.metrics[0].order[old[0] : new[0]]
        # A newly admitted sample lies in the new band of at least one metric whose prefix grew.
        cand = np.unique(np.concatenate([m.order[o:n] for m, o, n in zip(self.metrics, old, new) if n > o]
                                        or [np.empty(0, dtype=np.int64)]))
        keep = np.ones(len(cand), dtype=bool)
        for r, n in zip(self.ranks, new):
            keep &= r[cand] < n
        return cand[keep]

    def draw(self, count: int, rng: np.random.Generator) -> np.ndarray:
        """``count`` sample ids: clusters chosen in proportion to their size, then walked in order."""
        if count == 0:
            return np.empty(0, dtype=np.int64)
        per_cluster = rng.multinomial(count, self.sizes / self.sizes.sum())
        parts = [cl.take(int(k)) for cl, k in zip(self.clusters, per_cluster) if k]
        return np.concatenate(parts).astype(np.int64, copy=False)

    def state(self) -> dict[str, Any]:
        return {
            "admitted": list(self.admitted) if self.admitted is not None else None,
            "cluster_keys": [list(k) for k in self.cluster_keys],
            "epochs": [cl.epoch for cl in self.clusters],
            "cursors": [cl.cursor for cl in self.clusters],
        }

    def load(self, state: Mapping[str, Any]) -> None:
        self.reset()
        for key in state["cluster_keys"]:
            self.admit(tuple(int(k) for k in key))
        if state["admitted"] is not None:
            self.admit(tuple(int(k) for k in state["admitted"]))
        if len(self.clusters) != len(state["epochs"]):
            raise ValueError(
                f"sampler state of dataset component {self.component} has {len(state['epochs'])} clusters but "
                f"rebuilding them from this run's analysis files gives {len(self.clusters)}; the analysis files "
                "changed since the checkpoint"
            )
        for cl, e, c in zip(self.clusters, state["epochs"], state["cursors"]):
            cl.restore(int(e), int(c))


class CurriculumSampler:
    """Draws curriculum global batches; iterating yields this DP rank's micro-batches (a DataLoader batch_sampler).

    Each global batch: ``curriculum_step += 1``; every metric's difficulty comes from its schedule at that step;
    schedule-based metrics widen each component's admitted pool (the intersection over metrics); the blend's
    greedy rule over cumulative counts splits the batch between components; each component draws uniformly
    from its pool (by clusters); the batch is shuffled. ``single_cluster`` metrics select nothing; their
    difficulty is reported for batch post-processing (seqlen truncation/reshape).

    Prefetch-safe checkpoints: ``state_dict()`` returns the state after the last global batch handed to training
    ("committed"), never the position of batches drawn ahead. With ``auto_commit`` (default) iteration commits a
    global batch when it yields that batch's last micro-batch for this rank: exact when the loader fetches in the
    training process (no prefetch). Behind a prefetching DataLoader pass ``auto_commit=False`` and call
    ``commit()`` once per global batch when training takes it (the yielded :class:`MicroBatchIndices` say when, and
    carry the batch's curriculum step and difficulties). Drawing ahead changes nothing: a batch's difficulties
    follow from its own curriculum step, not from training progress. DeepSpeed's sampler checkpoints the prefetched
    position and the global numpy RNG instead of its own generator (DeepSpeed issue #8405), so a resumed run
    replays the sampling stream from the seed; here the generator state, cluster cursors and counters are saved
    together.

    Args:
        config: the data_efficiency config (curriculum learning must be enabled).
        layout: the training dataset's size and blend structure.
        indexes: per component, the loaded ``MetricIndex`` of every schedule-based metric (config order).
        global_batch_size / micro_batch_size: in samples; global = micro x dp_size x gradient accumulation.
        dp_rank / dp_size: this rank's slice of every global batch.
        custom_schedules: metric name -> callable for ``schedule_type: custom`` metrics.
        auto_commit: commit each global batch when iteration hands out its last micro-batch (see above).
        batch_size_at: consumed samples -> size of the next global batch, for a batch-size ramp-up (default: always
            ``global_batch_size``); every value must be a multiple of ``micro_batch_size x dp_size``.
    """

    prefetch_safe = True  # its micro-batches say when to commit() (MicroBatchIndices.info): a loader may run ahead

    def __init__(self, config: DataEfficiencyConfig, layout: DatasetLayout, indexes: Sequence[list[MetricIndex]], *,
                 global_batch_size: int, micro_batch_size: int, dp_rank: int = 0, dp_size: int = 1,
                 custom_schedules: Mapping[str, CustomSchedule] | None = None, auto_commit: bool = True,
                 batch_size_at: Callable[[int], int] | None = None) -> None:
        cl = config.data_sampling.curriculum_learning
        if not config.curriculum_enabled:
            raise ValueError("data_efficiency.data_sampling.curriculum_learning.enabled is false; no curriculum "
                             "sampler is needed")
        if global_batch_size % (micro_batch_size * dp_size) != 0:
            raise ValueError(f"global_batch_size {global_batch_size} is not a multiple of micro_batch_size "
                             f"{micro_batch_size} x dp_size {dp_size}")
        if not 0 <= dp_rank < dp_size:
            raise ValueError(f"dp_rank {dp_rank} is outside [0, dp_size={dp_size})")
        if len(indexes) != len(layout.component_sizes):
            raise ValueError(f"{len(indexes)} metric index lists for {len(layout.component_sizes)} components")
        custom_schedules = dict(custom_schedules or {})
        self._schedules = {}
        for name, m in cl.curriculum_metrics.items():
            fn = custom_schedules.pop(name, None) if m.schedule_type == "custom" else None
            if m.schedule_type == "custom" and fn is None:
                raise ValueError(f"curriculum metric {name!r} has schedule_type custom: pass its pacing function "
                                 f"as custom_schedules={{{name!r}: f}} with f(step) -> difficulty")
            self._schedules[name] = DifficultySchedule.from_config(m, fn)
        if custom_schedules:
            raise ValueError(f"custom schedules given for {sorted(custom_schedules)}, which are not metrics with "
                             "schedule_type custom")
        self.seed = config.seed
        self.layout = layout
        self.global_batch_size = global_batch_size
        self.batch_size_at = batch_size_at
        self.micro_batch_size = micro_batch_size
        self.dp_rank, self.dp_size = dp_rank, dp_size
        self.auto_commit = auto_commit
        self.total_samples = layout.size * config.data_sampling.num_epochs
        self._weights = np.asarray(layout.weights, dtype=np.float64)
        self._pools = [
            _ComponentPool(c, list(idx), n, None if layout.positions is None else layout.positions[c] >= 0, self.seed)
            for c, (idx, n) in enumerate(zip(indexes, layout.component_sizes))
        ]
        self._reset_stream()
        self._check_first_step()
        self._committed = self._snapshot()
        self._pending: collections.deque[tuple[CurriculumBatch, dict[str, Any]]] = collections.deque()

    # ---- stream ------------------------------------------------------------------------------------------------

    def _reset_stream(self) -> None:
        self._rng = np.random.Generator(np.random.PCG64(self.seed))
        self._step = 0
        self._consumed = 0
        self._blend_counts = [0] * len(self._pools)
        for pool in self._pools:
            pool.reset()

    def _difficulties(self, step: int) -> dict[str, int]:
        return {name: s.difficulty(step) for name, s in self._schedules.items()}

    def _admit(self, difficulties: Mapping[str, int]) -> None:
        for pool in self._pools:
            pool.admit(tuple(m.admitted_count(difficulties[m.name]) for m in pool.metrics))

    def _check_first_step(self) -> None:
        diffs = self._difficulties(1)
        self._admit(diffs)
        for pool, w in zip(self._pools, self._weights):
            if w > 0 and pool.pool_size == 0:
                counts = {m.name: m.admitted_count(diffs[m.name]) for m in pool.metrics}
                raise ValueError(
                    f"at curriculum step 1 the difficulties {diffs} admit no sample of dataset component "
                    f"{pool.component} ({pool.num_samples} samples; admitted per metric: {counts}); raise "
                    "min_difficulty of the schedule-based metrics"
                )

    def _split_between_components(self, count: int) -> list[int]:
        """Megatron's greedy blending rule continued over the cumulative counts (``data.blending``)."""
        return continue_blend(self._weights.tolist(), self._blend_counts, count)

    def _batch_size(self, consumed: int) -> int:
        """Size of the global batch drawn after ``consumed`` samples (constant unless ``batch_size_at``)."""
        if self.batch_size_at is None:
            return self.global_batch_size
        size = int(self.batch_size_at(consumed))
        if size < 1 or size % (self.micro_batch_size * self.dp_size):
            raise ValueError(f"batch_size_at({consumed}) = {size} is not a positive multiple of micro_batch_size "
                             f"{self.micro_batch_size} x dp_size {self.dp_size}")
        return size

    def draw_global_batch(self) -> CurriculumBatch:
        """Draw the next global batch (every rank draws the same one); it stays uncommitted until ``commit``."""
        step = self._step + 1
        diffs = self._difficulties(step)
        self._admit(diffs)
        parts = []
        for pool, k in zip(self._pools, self._split_between_components(self._batch_size(self._consumed))):
            ids = pool.draw(k, self._rng)
            pos = self.layout.positions
            parts.append(ids if pos is None else pos[pool.component][ids])
        indices = np.concatenate(parts)
        self._rng.shuffle(indices)
        self._step = step
        self._consumed += len(indices)
        batch = CurriculumBatch(curriculum_step=step, difficulties=diffs, indices=indices)
        self._pending.append((batch, self._snapshot()))
        return batch

    def commit(self) -> CurriculumBatch:
        """Mark the oldest drawn-but-uncommitted global batch as handed to training and return it.

        Call once per global batch (per optimizer step), after its micro-batches were fetched; ``state_dict``
        then resumes right after it. The returned difficulties are the ones that batch was drawn under.
        """
        if not self._pending:
            raise RuntimeError("commit() called but no global batch was drawn since the last commit; fetch the "
                               "batch's micro-batches from the loader first")
        batch, state = self._pending.popleft()
        self._committed = state
        return batch

    # ---- iteration ---------------------------------------------------------------------------------------------

    def _has_next(self, consumed: int) -> bool:
        """Whether a whole global batch is left after ``consumed`` samples (an incomplete last one is dropped)."""
        return consumed + self._batch_size(consumed) <= self.total_samples

    def _sizes_from(self, consumed: int) -> Iterator[int]:
        """Sizes of the global batches left after ``consumed`` samples, in order."""
        while self._has_next(consumed):
            yield self._batch_size(consumed)
            consumed += self._batch_size(consumed)

    @property
    def num_global_batches(self) -> int:
        """Global batches in ``num_epochs`` passes over the dataset (an incomplete last batch is dropped)."""
        return sum(1 for _ in self._sizes_from(0))

    def __len__(self) -> int:
        """Micro-batches this rank still yields from the committed position."""
        left = sum(self._sizes_from(int(self._committed["consumed_samples"])))
        return left // (self.micro_batch_size * self.dp_size)

    def rank_micro_batches(self, indices: np.ndarray) -> list[list[int]]:
        """This rank's micro-batches of a global batch: Megatron's order, ``micro x dp`` samples per micro-step."""
        span = self.micro_batch_size * self.dp_size
        lo = self.dp_rank * self.micro_batch_size
        return [indices[s + lo : s + lo + self.micro_batch_size].tolist() for s in range(0, len(indices), span)]

    def __iter__(self) -> Iterator[list[int]]:
        if self._pending:  # an abandoned iterator drew ahead: rewind to what training actually consumed
            self.load_state_dict(self._committed)
        while self._has_next(self._consumed):
            batch = self.draw_global_batch()
            micro_batches = self.rank_micro_batches(batch.indices)
            travels = {"curriculum_step": batch.curriculum_step, "difficulties": dict(batch.difficulties)}
            for i, mb in enumerate(micro_batches):
                last = i == len(micro_batches) - 1
                if self.auto_commit and last:
                    self.commit()  # handed to training with its last micro-batch (no prefetch in between)
                yield MicroBatchIndices(mb, {"batch": travels, "commit": last and not self.auto_commit})

    # ---- checkpoint --------------------------------------------------------------------------------------------

    def _snapshot(self) -> dict[str, Any]:
        return {
            "version": _STATE_VERSION,
            "seed": self.seed,
            "global_batch_size": self.global_batch_size,
            "dataset_size": self.layout.size,
            "component_sizes": list(self.layout.component_sizes),
            "metrics": [[m.name for m in pool.metrics] for pool in self._pools],
            "curriculum_step": self._step,
            "consumed_samples": self._consumed,
            # The sampler's own generator (JSON keeps PCG64's 128-bit ints exact and loads with weights_only).
            "rng_state": json.dumps(self._rng.bit_generator.state),
            "blend_counts": list(self._blend_counts),
            "components": [pool.state() for pool in self._pools],
        }

    def state_dict(self) -> dict[str, Any]:
        """State after the last committed global batch: plain ints/strings/lists (``torch.load(weights_only=True)``)."""
        return json.loads(json.dumps(self._committed))

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Resume so that the next global batch is exactly the one the uninterrupted run drew next.

        Raises:
            ValueError: the state belongs to another seed, batch size, dataset or metric set.
        """
        want = self._snapshot()
        if state.get("version") != _STATE_VERSION:
            raise ValueError(f"curriculum sampler state version {state.get('version')} != {_STATE_VERSION}")
        for key in ("seed", "global_batch_size", "dataset_size", "component_sizes", "metrics"):
            if state.get(key) != want[key]:
                raise ValueError(f"curriculum sampler checkpoint has {key}={state.get(key)} but this run has "
                                 f"{want[key]}; the resumed stream cannot match, keep the original setting")
        self._reset_stream()
        for pool, pool_state in zip(self._pools, state["components"]):
            pool.load(pool_state)
        self._rng.bit_generator.state = json.loads(state["rng_state"])
        self._step = int(state["curriculum_step"])
        self._consumed = int(state["consumed_samples"])
        self._blend_counts = [int(c) for c in state["blend_counts"]]
        self._pending.clear()
        self._committed = self._snapshot()

    @property
    def curriculum_step(self) -> int:
        """Curriculum step of the last committed global batch (0 before the first)."""
        return int(self._committed["curriculum_step"])

    def difficulties(self, step: int | None = None) -> dict[str, int]:
        """Difficulties at ``step`` (default: the next global batch after the committed one)."""
        return self._difficulties(self.curriculum_step + 1 if step is None else step)


def _blend_structure(dataset: Any) -> DatasetLayout:
    """Layout of a training dataset: a blend exposes ``.datasets`` and ``.weights`` (and its index arrays)."""
    if not hasattr(dataset, "datasets"):
        return DatasetLayout.single(len(dataset))
    sizes = [len(d) for d in dataset.datasets]
    dataset_index = getattr(dataset, "dataset_index", None)
    sample_index = getattr(dataset, "dataset_sample_index", None)
    if dataset_index is None or sample_index is None:
        dataset_index, sample_index = build_blending_indices(dataset.weights, len(dataset))
    return DatasetLayout.from_blend(dataset_index, sample_index, sizes, dataset.weights)


def build_curriculum_sampler(config: DataEfficiencyConfig, dataset: Any, *, global_batch_size: int,
                             micro_batch_size: int, dp_rank: int = 0, dp_size: int = 1,
                             custom_schedules: Mapping[str, CustomSchedule] | None = None,
                             auto_commit: bool = True,
                             identities: Sequence[Mapping[str, Any]] | None = None,
                             batch_size_at: Callable[[int], int] | None = None) -> CurriculumSampler:
    """Load every schedule-based metric's analysis files for ``dataset`` (one set per blend component) and build
    the sampler. ``dataset`` is the training dataset built for exactly one epoch, as analyzed.

    ``identities`` (one per component, ``curriculum.identity.analysis_identities`` of the training config) are
    compared with what each analysis recorded, so an analysis of another seed, split, length or data is refused
    even when its sample count happens to match. ``batch_size_at``: see :class:`CurriculumSampler`.

    Raises:
        ValueError: a metric file does not match the dataset or the identity, or the first difficulties admit no
            sample.
    """
    layout = _blend_structure(dataset)
    assert identities is None or len(identities) == len(layout.component_sizes), (
        f"{len(identities or [])} identity records for {len(layout.component_sizes)} dataset components")
    metrics = config.data_sampling.curriculum_learning.sampling_metrics
    indexes: list[list[MetricIndex]] = [[] for _ in layout.component_sizes]
    key = "data_efficiency.data_sampling.curriculum_learning.curriculum_metrics"
    for name, m in metrics.items():
        try:
            paths = m.index_paths(len(layout.component_sizes))
        except ValueError as e:
            raise ValueError(f"{key}.{name}.{e}") from None
        for c, (samples, values) in enumerate(paths):
            if identities is not None:
                check_analysis_identity(samples, identities[c], f"{key}.{name}.index_to_sample_path")
            indexes[c].append(MetricIndex.load(name, m, samples, values, layout.component_sizes[c]))
    return CurriculumSampler(config, layout, indexes, global_batch_size=global_batch_size,
                             micro_batch_size=micro_batch_size, dp_rank=dp_rank, dp_size=dp_size,
                             custom_schedules=custom_schedules, auto_commit=auto_commit,
                             batch_size_at=batch_size_at)

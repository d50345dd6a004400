"""Curriculum sampler: thresholds hold, clusters are exhausted before repeating, DP slices partition each global
batch, resume is exact (also under prefetch), and blends keep their weights with per-component thresholds."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch

from megatron.data.blending import build_exhaustive_blending_indices
from megatron.data_efficiency.config import parse_data_efficiency_config
from megatron.data_efficiency.curriculum.analyzer import AnalyzerOptions, analyze
from megatron.data_efficiency.curriculum.index_files import output_prefix
from megatron.data_efficiency.curriculum.sampler import (
    CurriculumSampler,
    DatasetLayout,
    build_curriculum_sampler,
)

THIS = "test_curriculum_sampler"


class ValueDataset:
    """Items whose first two tokens carry two difficulty metrics (read by the custom metrics below)."""

    def __init__(self, first: np.ndarray, second: np.ndarray) -> None:
        self.tokens = np.stack([first, second, np.zeros_like(first)], axis=1).astype(np.int64)

    def __len__(self) -> int:
        return len(self.tokens)

    def __getitem__(self, i: int) -> dict:
        return {"tokens": self.tokens[i]}


def first_token(tokens: np.ndarray) -> np.ndarray:
    """Custom metric: the first token."""
    return tokens[:, 0]


def second_token(tokens: np.ndarray) -> np.ndarray:
    """Custom metric: the second token."""
    return tokens[:, 1]


def _make(tmp_path_factory, name, n, lo, hi, seed):
    rng = np.random.default_rng(seed)
    ds = ValueDataset(rng.integers(lo, hi, n), rng.integers(0, 1000, n))
    save = str(tmp_path_factory.mktemp(name))
    analyze(ds, AnalyzerOptions(metrics=[f"{THIS}:first_token", f"{THIS}:second_token"], save_path=save,
                                batch_size=256), vocab_size=None, progress=False)
    return ds, save


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """One analyzed dataset of 600 samples (values 0..59) and a second blend component of 400 (values 20..79)."""
    return _make(tmp_path_factory, "a", 600, 0, 60, 1), _make(tmp_path_factory, "b", 400, 20, 80, 2)


def _metric(save, name, kind, lo, hi, total, clustering="schedule_based", schedule="fixed_linear"):
    paths = save if isinstance(save, list) else [save]
    cfg = {
        "index_to_sample_path": [output_prefix(p, name, "index_to_sample" + ("_percentile_merged" if kind ==
                                                                             "percentile" else "")) for p in paths],
        "index_to_metric_path": [output_prefix(p, name, "index_to_metric") for p in paths],
        "difficulty_type": kind, "clustering_type": clustering, "min_difficulty": lo, "max_difficulty": hi,
        "schedule_type": schedule,
        "schedule_config": {"total_curriculum_step": total, "difficulty_step": 1} if schedule != "custom" else {},
    }
    if len(paths) == 1:
        cfg["index_to_sample_path"], cfg["index_to_metric_path"] = cfg["index_to_sample_path"][0], \
            cfg["index_to_metric_path"][0]
    return cfg


def _config(metrics, seed=1234, num_epochs=1000):
    return parse_data_efficiency_config({"enabled": True, "seed": seed, "data_sampling": {
        "enabled": True, "num_epochs": num_epochs,
        "curriculum_learning": {"enabled": True, "curriculum_metrics": metrics}}})


def _ranks(values):
    """Position of each sample in ascending (value, id) order."""
    r = np.empty(len(values), dtype=np.int64)
    r[np.argsort(values, kind="stable")] = np.arange(len(values))
    return r


def test_never_above_threshold_value_and_percentile(data):
    """Every drawn sample is admitted: value <= difficulty, and percentile rank < N * difficulty / 100."""
    (ds, save), _ = data
    first, second = ds.tokens[:, 0], ds.tokens[:, 1]
    cfg = _config({"first_token": _metric(save, "first_token", "value", 5, 59, 40),
                   "second_token": _metric(save, "second_token", "percentile", 10, 100, 30)})
    sampler = build_curriculum_sampler(cfg, ds, global_batch_size=32, micro_batch_size=32)
    rank2 = _ranks(second)
    seen_at_threshold = 0
    for _ in range(60):
        b = sampler.draw_global_batch()
        sampler.commit()
        d1, d2 = b.difficulties["first_token"], b.difficulties["second_token"]
        assert first[b.indices].max() <= d1
        assert rank2[b.indices].max() < len(ds) * d2 // 100
        seen_at_threshold += int((first[b.indices] == d1).any())
    assert seen_at_threshold > 10  # the bound is reached, not just respected


def test_clusters_exhausted_before_any_repeat(data):
    """Within each cluster, draw counts of its members never differ by more than one (no repeat before all used)."""
    (ds, save), _ = data
    sampler = build_curriculum_sampler(_config({"f": _metric(save, "first_token", "value", 10, 59, 25)}), ds,
                                       global_batch_size=48, micro_batch_size=48)
    counts = np.zeros(len(ds), dtype=np.int64)
    for _ in range(80):
        np.add.at(counts, sampler.draw_global_batch().indices, 1)
        sampler.commit()
        for cl in sampler._pools[0].clusters:
            c = counts[cl.members]
            assert c.max() - c.min() <= 1
    assert len(sampler._pools[0].clusters) > 10 and (counts > 0).all()


def test_intersection_of_two_metrics_is_covered_exactly(data):
    """With fixed difficulties the pool is the intersection of both metrics; it is drawn completely, once."""
    (ds, save), _ = data
    cfg = _config({"a": _metric(save, "first_token", "value", 30, 30, 1),
                   "b": _metric(save, "second_token", "percentile", 50, 50, 1)})
    sampler = build_curriculum_sampler(cfg, ds, global_batch_size=16, micro_batch_size=16)
    admitted = set(np.flatnonzero((ds.tokens[:, 0] <= 30) & (_ranks(ds.tokens[:, 1]) < len(ds) // 2)).tolist())
    drawn = np.concatenate([sampler.draw_global_batch().indices for _ in range(len(admitted) // 16)])
    assert len(set(drawn.tolist())) == len(drawn) and set(drawn.tolist()) <= admitted
    assert len(admitted) - len(drawn) < 16


def test_dp_slices_partition_each_global_batch(data):
    """Each rank computes the same global batch and takes its slice: slices are disjoint and complete."""
    (ds, save), _ = data
    cfg = _config({"f": _metric(save, "first_token", "value", 30, 59, 20)})
    dp, micro, gbs = 4, 2, 32
    iters = [iter(build_curriculum_sampler(cfg, ds, global_batch_size=gbs, micro_batch_size=micro, dp_rank=r,
                                           dp_size=dp)) for r in range(dp)]
    reference = build_curriculum_sampler(cfg, ds, global_batch_size=gbs, micro_batch_size=micro)
    for _ in range(12):
        expected = reference.draw_global_batch().indices
        got = np.empty(gbs, dtype=np.int64)
        for step in range(gbs // (micro * dp)):
            for r, it in enumerate(iters):
                start = step * micro * dp + r * micro
                got[start:start + micro] = next(it)
        assert np.array_equal(got, expected)


def test_exact_resume_mid_curriculum_under_prefetch(data):
    """A resumed run draws exactly the uninterrupted run's batches, although the loader had prefetched ahead."""
    (ds, save), _ = data
    cfg = _config({"f": _metric(save, "first_token", "value", 5, 59, 30),
                   "seqlen_truncate": {"difficulty_type": "value", "clustering_type": "single_cluster",
                                       "min_difficulty": 8, "max_difficulty": 64, "schedule_type": "fixed_linear",
                                       "schedule_config": {"total_curriculum_step": 30, "difficulty_step": 8}}})
    kw = dict(global_batch_size=16, micro_batch_size=8, auto_commit=False)  # a prefetching loader commits by hand
    uninterrupted = build_curriculum_sampler(cfg, ds, **kw)
    stream = [uninterrupted.draw_global_batch() for _ in range(40)]
    run = build_curriculum_sampler(cfg, ds, **kw)
    it = iter(run)
    prefetched = [next(it) for _ in range(2 * 13)]  # the loader is 3 global batches ahead of training
    for k in range(10):
        trained = run.commit()
        assert trained.curriculum_step == k + 1
        assert np.array_equal(np.concatenate(prefetched[2 * k:2 * k + 2]), stream[k].indices)
    buf = io.BytesIO()
    torch.save({"data_sampler": run.state_dict()}, buf)
    buf.seek(0)
    state = torch.load(buf, weights_only=True)["data_sampler"]
    resumed = build_curriculum_sampler(cfg, ds, **kw)
    resumed.load_state_dict(state)
    assert resumed.curriculum_step == 10
    it2 = iter(resumed)
    for k in range(10, 40):
        got = np.concatenate([next(it2), next(it2)])
        info = resumed.commit()
        assert np.array_equal(got, stream[k].indices) and info.difficulties == stream[k].difficulties


def _greedy_blend(weights, size):
    counts = np.zeros(len(weights))
    index = np.empty(size, dtype=np.int64)
    sample = np.empty(size, dtype=np.int64)
    for i in range(size):
        d = int(np.argmax(np.asarray(weights) * max(i, 1) - counts))
        index[i], sample[i] = d, counts[d]
        counts[d] += 1
    return index, sample


class Blend:
    """A blended dataset as the sampler sees it: components, weights and Megatron's blending index arrays."""

    def __init__(self, datasets, weights, size):
        self.datasets, self.weights = datasets, weights
        self.dataset_index, self.dataset_sample_index = _greedy_blend(weights, size)

    def __len__(self):
        return len(self.dataset_index)


def test_blend_keeps_weights_and_per_component_thresholds(data):
    """Blend weights hold batch by batch; each component's own analysis and threshold apply to its samples."""
    (ds_a, save_a), (ds_b, save_b) = data
    blend = Blend([ds_a, ds_b], [0.7, 0.3], 800)  # 560 + 240 positions: part of component b is never used
    cfg = _config({"f": _metric([save_a, save_b], "first_token", "value", 25, 79, 30),
                   "g": _metric([save_a, save_b], "second_token", "percentile", 40, 100, 30)})
    sampler = build_curriculum_sampler(cfg, blend, global_batch_size=20, micro_batch_size=20)
    comp_counts = np.zeros(2)
    for _ in range(50):
        b = sampler.draw_global_batch()
        comps, local = blend.dataset_index[b.indices], blend.dataset_sample_index[b.indices]
        comp_counts += np.bincount(comps, minlength=2)
        assert np.all(np.abs(comp_counts - np.array([0.7, 0.3]) * comp_counts.sum()) <= 1)
        for c, ds in enumerate((ds_a, ds_b)):
            j = local[comps == c]
            assert np.all(ds.tokens[j, 0] <= b.difficulties["f"])
            assert np.all(_ranks(ds.tokens[:, 1])[j] < len(ds) * b.difficulties["g"] // 100)
    assert comp_counts[1] > 0


def test_exhaustive_blend_resumes_exactly_and_keeps_weights(data):
    """Over an exact-epoch (exhaustive) blend, whose order holds each component sample once and ignores the
    weights, the sampler still splits batches 0.37 / 0.63 within one sample; a state_dict taken after 12 global batches
    (torch round trip, weights_only) resumes the identical stream, blend counters included."""
    (ds_a, save_a), (ds_b, save_b) = data
    blend = Blend([ds_a, ds_b], [0.37, 0.63], 0)
    blend.dataset_index, blend.dataset_sample_index = build_exhaustive_blending_indices([len(ds_a), len(ds_b)])
    cfg = _config({"f": _metric([save_a, save_b], "first_token", "value", 25, 79, 30)})
    kw = dict(global_batch_size=20, micro_batch_size=10)
    straight = build_curriculum_sampler(cfg, blend, **kw)
    stream = [straight.draw_global_batch().indices for _ in range(30)]
    comps = np.cumsum([np.bincount(blend.dataset_index[b], minlength=2) for b in stream], axis=0)
    assert np.all(np.abs(comps - np.outer(20 * np.arange(1, 31), [0.37, 0.63])) <= 1)
    first = build_curriculum_sampler(cfg, blend, **kw)
    for _ in range(12):
        first.draw_global_batch()
        first.commit()
    buf = io.BytesIO()
    torch.save(first.state_dict(), buf)
    buf.seek(0)
    resumed = build_curriculum_sampler(cfg, blend, **kw)
    resumed.load_state_dict(torch.load(buf, weights_only=True))
    for k in range(12, 30):
        assert np.array_equal(resumed.draw_global_batch().indices, stream[k])


def test_invalid_setups_are_clear_value_errors(data):
    """Empty first pool, metric files of another dataset, wrong file kind, missing custom schedule, foreign state."""
    (ds, save), (ds_b, _) = data
    with pytest.raises(ValueError, match="admit no sample of dataset component 0"):
        build_curriculum_sampler(_config({"f": _metric(save, "first_token", "value", -5, 59, 1000)}), ds,
                                 global_batch_size=8, micro_batch_size=8)
    with pytest.raises(ValueError, match="lists 600 samples but the training dataset has 400"):
        build_curriculum_sampler(_config({"f": _metric(save, "first_token", "value", 5, 59, 10)}), ds_b,
                                 global_batch_size=8, micro_batch_size=8)
    wrong = _metric(save, "second_token", "value", 5, 999, 10)  # > 100 distinct values: merged rows differ
    wrong["index_to_sample_path"] += "_percentile_merged"
    with pytest.raises(ValueError, match="needs the plain"):
        build_curriculum_sampler(_config({"f": wrong}), ds, global_batch_size=8, micro_batch_size=8)
    custom = _config({"f": _metric(save, "first_token", "value", 5, 59, 10, schedule="custom")})
    with pytest.raises(ValueError, match="custom_schedules"):
        build_curriculum_sampler(custom, ds, global_batch_size=8, micro_batch_size=8)
    s = build_curriculum_sampler(custom, ds, global_batch_size=8, micro_batch_size=8,
                                 custom_schedules={"f": lambda step: min(5 + step, 59)})
    assert s.draw_global_batch().difficulties == {"f": 6}
    other = build_curriculum_sampler(custom, ds, global_batch_size=16, micro_batch_size=8,
                                     custom_schedules={"f": lambda step: 5})
    with pytest.raises(ValueError, match="global_batch_size=8 but this run has 16"):
        other.load_state_dict(s.state_dict())
    with pytest.raises(RuntimeError, match="no global batch was drawn"):
        other.commit()


def test_single_cluster_only_draws_uniformly_without_repeats(data):
    """With no schedule-based metric all samples form one cluster: one pass covers the dataset exactly once."""
    (ds, _), _ = data
    cfg = _config({"seqlen_reshape": {"difficulty_type": "value", "clustering_type": "single_cluster",
                                      "min_difficulty": 8, "max_difficulty": 64, "schedule_type": "fixed_linear",
                                      "schedule_config": {"total_curriculum_step": 10, "difficulty_step": 8}}},
                  num_epochs=1)
    sampler = CurriculumSampler(cfg, DatasetLayout.single(len(ds)), [[]], global_batch_size=24, micro_batch_size=12)
    expected_micro_batches = len(sampler)
    micro_batches = list(sampler)
    drawn = np.concatenate(micro_batches)
    assert len(micro_batches) == expected_micro_batches == 50
    assert len(drawn) == 600 and len(np.unique(drawn)) == 600


def test_auto_commit_checkpoints_the_batch_handed_out(data):
    """With an in-process loader the state advances when a global batch's last micro-batch is handed out."""
    (ds, save), _ = data
    cfg = _config({"f": _metric(save, "first_token", "value", 5, 59, 30)})
    kw = dict(global_batch_size=12, micro_batch_size=3, dp_rank=1, dp_size=2)
    run = build_curriculum_sampler(cfg, ds, **kw)
    it = iter(run)
    handed = [next(it) for _ in range(2 * 7 + 1)]  # 7 global batches and the first micro-batch of the 8th
    assert run.curriculum_step == 7 and handed[-1].info["batch"]["curriculum_step"] == 8  # travels with the batch
    resumed = build_curriculum_sampler(cfg, ds, **kw)
    resumed.load_state_dict(run.state_dict())
    assert next(iter(resumed)) == handed[-1]

"""Blending: greedy indices equal to Megatron's (C++ helper and a plain loop), proportions, BlendedDataset."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from megatron.data import blending
from megatron.data.blending import (
    BlendedDataset,
    blend_sample_counts,
    build_blending_indices,
    continue_blend,
    normalize_weights,
)
from megatron.data.config import DataConfig
from megatron.data.gpt_dataset import build_gpt_datasets
from megatron.data.indexed_dataset import write_dataset

REPO = Path(__file__).resolve().parents[2]
MCORE = REPO / ".venv" / "mcore"


def greedy_reference(weights, size):
    """Megatron's C++ loop transcribed literally (slow; small sizes only)."""
    counts = [0] * len(weights)
    index, sample = [], []
    for i in range(size):
        x = float(max(i, 1))
        best, best_err = 0, weights[0] * x - counts[0]
        for d in range(1, len(weights)):
            err = weights[d] * x - counts[d]
            if err > best_err:
                best, best_err = d, err
        index.append(best)
        sample.append(counts[best])
        counts[best] += 1
    return np.array(index), np.array(sample)


def _weight_sets(rng):
    sets = [[0.5, 0.5], [0.3, 0.7], [1 / 3] * 3, [0.2, 0.3, 0.5], [0.999, 0.001], [0.1] * 10]
    for n, power in ((2, 1), (3, 1), (5, 6), (10, 1), (10, 6), (40, 6)):
        w = rng.random(n) ** power
        sets.append((w / w.sum()).tolist())
    return sets


@pytest.fixture
def small_chunks(monkeypatch):
    """Tiny chunks so that a few thousand samples already exercise stitching and re-runs."""
    monkeypatch.setattr(blending, "_MIN_CHUNK", 16)
    monkeypatch.setattr(blending, "_WARMUP_STEPS", 4)
    monkeypatch.setattr(blending, "_TARGET_CHUNKS", 256)


def test_equals_plain_greedy_loop(small_chunks, caplog):
    """The chunked, vectorised builder equals the literal greedy loop element for element (dataset and
    per-dataset sample indices, ties to the first dataset) for many weight sets and sizes, including weights
    down to 1e-12 whose guessed chunk starts are wrong and must be re-run."""
    caplog.set_level("DEBUG", logger="megatron.data.blending")
    rng = np.random.default_rng(0)
    for weights in _weight_sets(rng):
        for size in (1, 7, 1000, 3001):
            index, sample = build_blending_indices(weights, size)
            ref_index, ref_sample = greedy_reference(weights, size)
            assert index.dtype == np.int16 and sample.dtype == np.int64
            np.testing.assert_array_equal(index, ref_index, err_msg=f"{len(weights)} datasets, size {size}")
            np.testing.assert_array_equal(sample, ref_sample)
    reruns = [int(r.getMessage().split(", ")[-1].split()[0]) for r in caplog.records if "re-runs" in r.getMessage()]
    assert max(reruns) > 0, "the weight sets must make some guessed chunk starts wrong"


MCORE_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import numpy
    from megatron.core.datasets import helpers_cpp
    out = []
    for weights, size in json.loads(sys.argv[1]):
        index = numpy.zeros(size, dtype=numpy.int16)
        sample = numpy.zeros(size, dtype=numpy.int64)
        helpers_cpp.build_blending_indices(index, sample, numpy.array(weights, dtype=numpy.float64), len(weights),
                                           size, False)
        out.append([index.tolist(), sample.tolist()])
    print(json.dumps(out))
    """
)


@pytest.mark.skipif(not (MCORE / "megatron" / "core").is_dir(), reason="megatron-core side install .venv/mcore absent")
@pytest.mark.parametrize("weights", [[1.0], [0.5, 0.3, 0.2], [0.7, 0.1, 0.1, 0.05, 0.05]])
def test_continued_greedy_is_the_same_rule(weights):
    """continue_blend, fed batch after batch of uneven sizes (the curriculum sampler's use), splits every prefix of
    the stream exactly as build_blending_indices does: one greedy rule, drawn incrementally or at once."""
    w = normalize_weights(weights)
    dataset_index, _ = build_blending_indices(w, 700)
    counts, done = [0] * len(w), 0
    for size in [1, 7, 64, 3, 125, 200, 300]:
        split = continue_blend(w.tolist(), counts, size)
        want = np.bincount(dataset_index[done : done + size], minlength=len(w)).tolist()
        assert split == want and sum(split) == size
        done += size
    assert counts == np.bincount(dataset_index, minlength=len(w)).tolist()


def test_equals_megatron_core_cpp_helper():
    """For realistic sizes (default chunking, several hundred chunks) the indices equal megatron-core's
    compiled build_blending_indices bit for bit."""
    rng = np.random.default_rng(1)
    cases = [(w, int(s)) for w, s in zip(_weight_sets(rng), rng.integers(50_000, 200_000, size=12))]
    env = {**os.environ, "PYTHONPATH": str(MCORE)}
    proc = subprocess.run([sys.executable, "-c", MCORE_SCRIPT, json.dumps(cases)], cwd=REPO.parent, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    for (weights, size), (ref_index, ref_sample) in zip(cases, json.loads(proc.stdout)):
        index, sample = build_blending_indices(weights, size)
        np.testing.assert_array_equal(index, ref_index, err_msg=f"{len(weights)} datasets, size {size}")
        np.testing.assert_array_equal(sample, ref_sample)


@pytest.mark.parametrize("weights", [[0.5, 0.5], [0.3, 0.7], [0.25, 0.25, 0.5], [0.6, 0.3, 0.1], [0.05, 0.95]])
def test_proportions_within_one_sample_at_every_prefix(weights):
    """After every prefix of i samples each dataset has been drawn within one sample of w_d * i."""
    w = normalize_weights(weights)
    index, _ = build_blending_indices(w, 20_000)
    counts = np.cumsum(np.eye(len(w), dtype=np.int64)[index], axis=0)
    ideal = np.arange(1, 20_001)[:, None] * w[None, :]
    assert np.abs(counts - ideal).max() <= 1.0 + 1e-9


def test_deviation_bound_for_any_weights():
    """For arbitrary weights the greedy keeps every dataset within [-1, n - 1] samples of its share: it always
    draws the most-behind dataset (the bound that makes per-dataset sizes with a small margin sufficient)."""
    rng = np.random.default_rng(2)
    for n in (3, 8, 20):
        w = normalize_weights(rng.random(n) ** 4)
        index, sample = build_blending_indices(w, 30_000)
        counts = np.cumsum(np.eye(n, dtype=np.int64)[index], axis=0)
        deviation = counts - np.arange(1, 30_001)[:, None] * w[None, :]
        assert deviation.max() <= 1.0 + 1e-9 and deviation.min() >= -(n - 1)
        for d in range(n):  # each dataset's samples are taken in order 0, 1, 2, ...
            np.testing.assert_array_equal(sample[index == d], np.arange((index == d).sum()))


def test_sample_counts_follow_megatron_core_v08():
    """Per-dataset sizes are ceil(N * w * 1.005) (Megatron-LM core_v0.8 / Megatron-DeepSpeed)."""
    assert blend_sample_counts([0.3, 0.7], 1000) == [302, 704]
    assert blend_sample_counts(normalize_weights([1, 1, 2]), 10) == [3, 3, 6]


def _dataset(prefix: Path, num_docs: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    write_dataset(str(prefix), [rng.integers(1, 500, size=int(n)) for n in rng.integers(5, 60, size=num_docs)],
                  np.uint16)


class _Tokenizer:
    eod, vocab_size, unique_identifiers = 0, 500, {"class": "stub"}


def test_blended_gpt_datasets(tmp_path):
    """A weighted data_path gives BlendedDatasets of sum(ceil(N w 1.005)) samples whose items are the
    components' items tagged with dataset_id and dataset_sample_index; the blend indices are cached."""
    _dataset(tmp_path / "a", 80, 0)
    _dataset(tmp_path / "b", 50, 1)
    cfg = DataConfig(data_path=["3", str(tmp_path / "a"), "1", str(tmp_path / "b")], split="90,10,0", seq_length=16,
                     data_cache_path=str(tmp_path / "cache"))
    train, valid, test = build_gpt_datasets(cfg, _Tokenizer(), (200, 20, 0), seed=1)
    assert test is None and isinstance(train, BlendedDataset)
    assert len(train) == sum(blend_sample_counts([0.75, 0.25], 200)) and train.weights == [0.75, 0.25]
    assert [len(d) >= n for d, n in zip(train.datasets, blend_sample_counts([0.75, 0.25], 200))] == [True, True]
    for i in (0, 1, 2, 57, len(train) - 1):
        item = train[i]
        d, k = item["dataset_id"], item["dataset_sample_index"]
        assert (d, k) == (train.dataset_index[i], train.dataset_sample_index[i])
        np.testing.assert_array_equal(item["tokens"], train.datasets[d][k]["tokens"])
    assert abs(np.mean(np.asarray(train.dataset_index) == 0) - 0.75) < 0.01
    again, _, _ = build_gpt_datasets(cfg, _Tokenizer(), (200, 20, 0), seed=1)
    assert train.built_indices and not again.built_indices
    np.testing.assert_array_equal(again.dataset_index, train.dataset_index)
    assert len(list((tmp_path / "cache").glob("*-BlendedDataset-*-description.json"))) == 2


def test_per_split_paths_use_whole_files(tmp_path):
    """train_data_path/valid_data_path are used whole (split ignored) and a missing test path gives None."""
    _dataset(tmp_path / "a", 30, 0)
    _dataset(tmp_path / "b", 20, 1)
    cfg = DataConfig(train_data_path=[str(tmp_path / "a")], valid_data_path=["1", str(tmp_path / "b")],
                     seq_length=8, data_cache_path=str(tmp_path / "cache"))
    train, valid, test = build_gpt_datasets(cfg, _Tokenizer(), (10, 5, 5), seed=1)
    assert test is None and train.params.document_range == (0, 30)
    assert isinstance(valid, BlendedDataset) and valid.datasets[0].params.document_range == (0, 20)


@pytest.mark.parametrize("sizes", [[3, 5, 0, 2], [1, 1], [1000, 7], [17, 17, 17], [123, 456, 789, 1, 50]])
def test_exhaustive_blend_uses_every_sample_once_in_proportion(sizes):
    """The exhaustive order holds every (component, sample) pair exactly once, keeps each component's own order,
    and every prefix of m samples holds m * s_d +- (1/2 + s_d * (D - 2) / 2) of component d (size share s_d)."""
    index, sample = blending.build_exhaustive_blending_indices(sizes)
    assert index.dtype == np.int16 and sample.dtype == np.int64 and len(index) == sum(sizes)
    for d, n in enumerate(sizes):
        np.testing.assert_array_equal(sample[index == d], np.arange(n))
    share = np.asarray(sizes, dtype=np.float64) / sum(sizes)
    counts = np.cumsum(np.eye(len(sizes), dtype=np.int64)[index], axis=0)
    expected = np.arange(1, len(index) + 1)[:, None] * share[None, :]
    assert (np.abs(counts - expected) <= 0.5 + share * (len(sizes) - 2) / 2 + 1e-9).all()


def test_exact_epochs_with_weighted_blend_is_exhaustive(tmp_path):
    """Exact epochs of a weighted blend: each component equals its prefix's own exact-epoch dataset (the one the
    analyzer indexes), the blend holds every component sample exactly once, ``.weights`` keeps the configured
    (normalized) weights for the curriculum sampler, and the exhaustive indices are cached apart from greedy ones."""
    _dataset(tmp_path / "a", 60, 0)
    _dataset(tmp_path / "b", 30, 1)
    common = dict(split="90,10,0", seq_length=16, data_cache_path=str(tmp_path / "cache"),
                  train_data_exact_num_epochs=1)
    cfg = DataConfig(data_path=["1", str(tmp_path / "a"), "3", str(tmp_path / "b")], **common)
    train, valid, _ = build_gpt_datasets(cfg, _Tokenizer(), (10_000, 20, 0), seed=1)
    assert isinstance(train, BlendedDataset) and train.exhaustive and train.weights == [0.25, 0.75]
    for d, prefix in enumerate(("a", "b")):
        alone, _, _ = build_gpt_datasets(DataConfig(data_path=[str(tmp_path / prefix)], **common), _Tokenizer(),
                                         (0, 0, 0), seed=1)
        assert len(train.datasets[d]) == len(alone)
        np.testing.assert_array_equal(train.datasets[d][len(alone) - 1]["tokens"], alone[len(alone) - 1]["tokens"])
    assert len(train) == sum(len(d) for d in train.datasets)
    pairs = set(zip(np.asarray(train.dataset_index).tolist(), np.asarray(train.dataset_sample_index).tolist()))
    assert pairs == {(d, k) for d, ds in enumerate(train.datasets) for k in range(len(ds))}
    assert isinstance(valid, BlendedDataset) and not valid.exhaustive, "exact epochs concern the training split only"
    again, _, _ = build_gpt_datasets(cfg, _Tokenizer(), (10, 0, 0), seed=1)
    assert not again.built_indices and np.array_equal(again.dataset_index, train.dataset_index)


def test_exhaustive_size_must_cover_every_sample():
    """An exhaustive BlendedDataset whose size is not the components' total is a ValueError naming the size."""
    parts = [[{"tokens": np.zeros(3, dtype=np.int64)}] * 4, [{"tokens": np.ones(3, dtype=np.int64)}] * 6]
    with pytest.raises(ValueError, match="size must be 10"):
        BlendedDataset(parts, [0.5, 0.5], 12, "train", cache_dir=None, exhaustive=True)
    assert len(BlendedDataset(parts, [0.9, 0.1], 10, "train", cache_dir=None, exhaustive=True)) == 10


def test_oversampled_component_is_an_error():
    """A blend that would draw more samples from a component than it holds raises ValueError naming it."""
    small = [{"tokens": np.zeros(3, dtype=np.int64)}] * 3
    large = [{"tokens": np.ones(3, dtype=np.int64)}] * 100
    with pytest.raises(ValueError, match="dataset 0"):
        BlendedDataset([small, large], [0.5, 0.5], 100, "train", cache_dir=None)

"""Analyzer outputs equal a brute-force numpy reference for any worker/thread split; incomplete maps are refused."""

from __future__ import annotations

import os

import numpy as np
import pytest

from megatron.data.indexed_dataset import DType, IndexedDataset
from megatron.data_efficiency.curriculum.analyzer import AnalyzerOptions, analyze, run_map, run_reduce
from megatron.data_efficiency.curriculum.index_files import output_prefix, read_flat
from megatron.data_efficiency.curriculum.metrics import Metric, resolve_metric, seqlen_coefficient, vocab_rarity_table

VOCAB, LENGTH, PAD = 97, 17, 0
THIS = "test_curriculum_analyzer"  # importable by name: pytest puts this directory on sys.path


class ToyDataset:
    """GPT-style items {'tokens': int64[L]} with a Zipf-like vocabulary and pad-filled tails of random length."""

    def __init__(self, n: int, seed: int = 0, fail_at: int | None = None) -> None:
        rng = np.random.default_rng(seed)
        self.tokens = np.minimum(rng.zipf(1.3, size=(n, LENGTH)), VOCAB - 1).astype(np.int64)
        keep = rng.integers(1, LENGTH + 1, size=n)
        self.tokens[np.arange(LENGTH)[None, :] >= keep[:, None]] = PAD
        self.fail_at = fail_at

    def __len__(self) -> int:
        return len(self.tokens)

    def __getitem__(self, i: int) -> dict:
        if i == self.fail_at:
            raise RuntimeError(f"simulated read failure at sample {i}")
        return {"tokens": self.tokens[i]}


def distinct_tokens(tokens: np.ndarray) -> np.ndarray:
    """Custom per-sample metric used through its module path: number of distinct token ids per sample."""
    return np.array([len(np.unique(row)) for row in tokens], dtype=np.int64)


def _bigram_histogram(ctx):
    def fn(batch):
        t = batch["tokens"]
        return np.bincount(((t[:, :-1] % 7) * 7 + t[:, 1:] % 7).reshape(-1), minlength=49).astype(np.int64)
    return fn


BIGRAMS = Metric(name="bigrams", kind="accumulate", build=_bigram_histogram)


def _reference(ds: ToyDataset) -> dict[str, np.ndarray]:
    t = ds.tokens
    real = t != PAD
    freq = np.bincount(t[real], minlength=VOCAB)
    table = vocab_rarity_table(freq)
    rarity = np.floor(np.where(real, table[t], 0.0).sum(axis=1)).astype(np.int64)
    seqlen = real.sum(axis=1)
    return {
        "total_vocab_freq": freq,
        "vocab_rarity": rarity,
        "seqlen": seqlen,
        "seqlen_vocab_rarity": seqlen * seqlen_coefficient(table, LENGTH) + rarity,
        "distinct_tokens": distinct_tokens(t),
        "bigrams": np.bincount(((t[:, :-1] % 7) * 7 + t[:, 1:] % 7).reshape(-1), minlength=49),
    }


def _check_per_sample(save: str, name: str, expected: np.ndarray) -> None:
    n = len(expected)
    s2m, rows = read_flat(output_prefix(save, name, "sample_to_metric"))
    assert np.array_equal(np.asarray(s2m), expected) and np.all(rows == 1)
    distinct, counts = np.unique(expected, return_counts=True)
    i2m, _ = read_flat(output_prefix(save, name, "index_to_metric"))
    assert np.array_equal(np.asarray(i2m), distinct)
    i2s = IndexedDataset(output_prefix(save, name, "index_to_sample"))
    assert len(i2s) == len(distinct)
    for k, v in enumerate(distinct):  # row k = every sample with the k-th value, ascending ids
        assert np.array_equal(i2s[k], np.flatnonzero(expected == v))
    merged, merged_rows = read_flat(output_prefix(save, name, "index_to_sample_percentile_merged"))
    flat, _ = read_flat(output_prefix(save, name, "index_to_sample"))
    assert np.array_equal(np.asarray(merged), np.asarray(flat))
    step = max(1, len(distinct) // 100)
    assert merged_rows.tolist() == [int(counts[i:i + step].sum()) for i in range(0, len(distinct), step)]
    for suffix in ("sample_to_metric", "index_to_metric", "index_to_sample"):
        code = DType.from_numpy(IndexedDataset(output_prefix(save, name, suffix)).dtype)
        assert 1 <= int(code) <= 5, f"{suffix}: dtype code {int(code)} is not readable the same way by DeepSpeed"
    assert IndexedDataset(output_prefix(save, name, "index_to_sample")).dtype == np.dtype(np.int16)  # fits n - 1


METRICS = ["seqlen", "vocab_rarity", "seqlen_vocab_rarity", f"{THIS}:distinct_tokens", f"{THIS}:BIGRAMS"]


@pytest.mark.parametrize(("workers", "threads"), [(1, 1), (2, 2)])
def test_analyzer_matches_brute_force(tmp_path, workers, threads):
    """Every output file equals numpy over all samples, for 1 worker x 1 thread and 2 workers x 2 threads."""
    ds = ToyDataset(1000)
    ref = _reference(ds)
    save = str(tmp_path)
    for w in range(workers):  # workers as separate invocations sharing save_path (as on separate machines)
        opts = AnalyzerOptions(metrics=METRICS, save_path=save, task="map" if workers > 1 else "both",
                               num_workers=workers, worker_id=w, num_threads=threads, batch_size=64)
        if workers > 1:
            # vocab_rarity needs total_vocab_freq reduced first: map + reduce it over all workers, then the rest.
            pre = AnalyzerOptions(metrics=["total_vocab_freq"], save_path=save, task="map", num_workers=workers,
                                  worker_id=w, num_threads=threads, batch_size=64)
            analyze(ds, pre, vocab_size=VOCAB, pad_id=PAD, sample_length=LENGTH, progress=False)
    if workers > 1:
        analyze(ds, AnalyzerOptions(metrics=["total_vocab_freq"], save_path=save, task="reduce", num_workers=workers),
                vocab_size=VOCAB, pad_id=PAD, sample_length=LENGTH, progress=False)
        for w in range(workers):
            analyze(ds, AnalyzerOptions(metrics=METRICS, save_path=save, task="map", num_workers=workers,
                                        worker_id=w, num_threads=threads, batch_size=64),
                    vocab_size=VOCAB, pad_id=PAD, sample_length=LENGTH, progress=False)
        analyze(ds, AnalyzerOptions(metrics=METRICS, save_path=save, task="reduce", num_workers=workers),
                vocab_size=VOCAB, pad_id=PAD, sample_length=LENGTH, progress=False)
    else:
        analyze(ds, opts, vocab_size=VOCAB, pad_id=PAD, sample_length=LENGTH, progress=False)
    freq, _ = read_flat(output_prefix(save, "total_vocab_freq", "metric_value"))
    assert np.array_equal(np.asarray(freq), ref["total_vocab_freq"])
    bigrams, _ = read_flat(output_prefix(save, "bigrams", "metric_value"))
    assert np.array_equal(np.asarray(bigrams), ref["bigrams"])
    for name in ("seqlen", "vocab_rarity", "seqlen_vocab_rarity", "distinct_tokens"):
        _check_per_sample(save, name, ref[name])


def test_seqlen_vocab_rarity_orders_by_seqlen_then_rarity():
    """The combined metric sorts samples exactly like the pair (seqlen, vocab_rarity)."""
    ref = _reference(ToyDataset(300))
    lexi = np.lexsort((ref["vocab_rarity"], ref["seqlen"]))
    assert np.array_equal(np.argsort(ref["seqlen_vocab_rarity"], kind="stable"), lexi)


def test_reduce_refuses_incomplete_map_and_failed_worker_reruns_alone(tmp_path):
    """Reduce names the worker whose map is missing; a failed worker leaves no marker and can be rerun alone."""
    ds, save = ToyDataset(400), str(tmp_path)
    metrics = [resolve_metric("seqlen")]
    from megatron.data_efficiency.curriculum.analyzer import dataset_fingerprint
    from megatron.data_efficiency.curriculum.metrics import MetricContext

    fp = dataset_fingerprint(ds)
    ctx = MetricContext(vocab_size=VOCAB, pad_id=PAD, sample_length=LENGTH, load_metric_value=None)
    run_map(ds, metrics, save, ctx=ctx, fingerprint=fp, num_workers=2, worker_id=0, num_threads=2, batch_size=50,
            progress=False)
    with pytest.raises(ValueError, match="worker 1: no done-marker"):
        run_reduce(metrics, save, num_workers=2, num_samples=len(ds), fingerprint=fp)
    broken = ToyDataset(400, fail_at=350)
    with pytest.raises(RuntimeError, match="(?s)map worker 1 failed.*simulated read failure at sample 350"):
        run_map(broken, metrics, save, ctx=ctx, fingerprint=fp, num_workers=2, worker_id=1, num_threads=2,
                batch_size=50, progress=False)
    assert os.path.isdir(os.path.join(save, "seqlen", "worker1_thread0"))  # partial output without a marker
    with pytest.raises(ValueError, match="worker 1: no done-marker"):
        run_reduce(metrics, save, num_workers=2, num_samples=len(ds), fingerprint=fp)
    run_map(ds, metrics, save, ctx=ctx, fingerprint=fp, num_workers=2, worker_id=1, num_threads=1, batch_size=50,
            progress=False)
    run_reduce(metrics, save, num_workers=2, num_samples=len(ds), fingerprint=fp)
    _check_per_sample(save, "seqlen", _reference(ds)["seqlen"])
    with pytest.raises(ValueError, match="fingerprint"):  # map outputs of another dataset are never mixed in
        run_reduce(metrics, save, num_workers=2, num_samples=len(ds), fingerprint="other")


def test_map_of_dependent_metric_needs_reduced_prerequisite(tmp_path):
    """task=map for vocab_rarity without a reduced total_vocab_freq is a ValueError saying what to run first."""
    with pytest.raises(ValueError, match="needs the reduced output of total_vocab_freq"):
        analyze(ToyDataset(50), AnalyzerOptions(metrics=["vocab_rarity"], save_path=str(tmp_path), task="map"),
                vocab_size=VOCAB, progress=False)


def test_bad_metric_specs():
    """Unknown names and unimportable custom metrics are ValueErrors naming the spec."""
    with pytest.raises(ValueError, match="unknown metric 'rarity'"):
        resolve_metric("rarity")
    with pytest.raises(ValueError, match="cannot import module 'no_such_module_xyz'"):
        resolve_metric("no_such_module_xyz:f")
    with pytest.raises(ValueError, match="has no attribute 'nope'"):
        resolve_metric(f"{THIS}:nope")

"""Benchmark: GPT index build (document/sample/shuffle) and blending-index build over synthetic sizes.

Documents get a realistic heavy-tailed length distribution (log-normal, median ~400 tokens, clipped to
[1, 100k]). Times our numpy builders; where megatron-core's compiled helpers are installed (``.venv/mcore``)
its C++ ``build_sample_idx`` / ``build_blending_indices`` run on the same inputs, interleaved with ours
(``bench/compare.py``: min and median per side, both ratios, a verdict on the noise), and the outputs are checked
equal. Usage: ``python bench/bench_index_build.py [--max-tokens 1e9] [--repeats 5]``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from compare import HEADER, compare, machine_line  # noqa: E402

from megatron.data.blending import build_blending_indices, normalize_weights  # noqa: E402
from megatron.data.gpt_indices import (  # noqa: E402
    build_document_index,
    build_gpt_indices,
    build_sample_index,
    num_epochs_for,
)


def _mcore_helpers():
    """megatron-core's compiled helper module, imported by file (its package collides with ours), or None."""
    directory = REPO / ".venv" / "mcore" / "megatron" / "core" / "datasets"
    if not any(p.name.startswith("helpers_cpp") for p in directory.glob("helpers_cpp*")):
        return None
    sys.path.insert(0, str(directory))
    try:
        import helpers_cpp  # type: ignore[import-not-found]
    except ImportError:
        return None
    finally:
        sys.path.pop(0)
    return helpers_cpp


def synthetic_lengths(num_tokens: int, seed: int = 0) -> np.ndarray:
    """int32 document lengths summing to about ``num_tokens`` (log-normal, median ~400)."""
    rng = np.random.default_rng(seed)
    mean = float(np.exp(np.log(400) + 1.1**2 / 2))
    lengths = np.clip(rng.lognormal(np.log(400), 1.1, size=int(num_tokens / mean * 1.02) + 1), 1, 100_000)
    lengths = lengths.astype(np.int32)
    cut = int(np.searchsorted(np.cumsum(lengths, dtype=np.int64), num_tokens)) + 1
    return lengths[:cut]


def _time(fn, repeat: int = 1):
    best, out = float("inf"), None
    for _ in range(repeat):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return best, out


def bench_gpt(num_tokens: int, epochs: float, seq_length: int, helpers, repeats: int) -> str | None:
    sizes = synthetic_lengths(num_tokens)
    docs = np.arange(len(sizes), dtype=np.int32)
    tokens = int(sizes.sum(dtype=np.int64))
    num_samples = int(epochs * (tokens - 1) // seq_length)
    total, result = _time(lambda: build_gpt_indices(sizes, docs, seq_length, num_samples, 1234))
    num_epochs = num_epochs_for(tokens, num_samples, seq_length)
    n = (num_epochs * tokens - 1) // seq_length
    doc_index = result["doc_index"]
    t_doc, _ = _time(lambda: build_document_index(docs, num_epochs, np.random.RandomState(1), False))
    print(f"{tokens:>14,d} {len(sizes):>11,d} {seq_length:>5d} {num_epochs:>3d} {len(result['shuffle_index']):>11,d} "
          f"{t_doc:8.3f} {total:8.3f}")
    if helpers is None:
        return None
    fn = helpers.build_sample_idx_int32 if doc_index.dtype == np.int32 else helpers.build_sample_idx_int64
    comparison, ours, theirs = compare(lambda: build_sample_index(sizes, doc_index, seq_length, n),
                                       lambda: fn(sizes, doc_index, seq_length, num_epochs, tokens, True, 1),
                                       repeats=repeats)
    assert np.array_equal(ours, theirs), "sample index differs from megatron-core's C++ helper"
    return comparison.row(f"GPT sample index, {tokens:.0e} tokens, S={seq_length}, {len(ours):,} rows")


def bench_blend(size: int, weights: np.ndarray, label: str, helpers, repeats: int) -> str:
    if helpers is None:
        t_ours, _ = _time(lambda: build_blending_indices(weights, size))
        return f"| blend, {size:,} samples, {len(weights)} datasets ({label}) | {t_ours:.3f} | - | - | - | - | - |"

    def cpp():
        idx, smp = np.zeros(size, np.int16), np.zeros(size, np.int64)
        helpers.build_blending_indices(idx, smp, weights, len(weights), size, False)
        return idx, smp

    comparison, (index, sample), (ref_index, ref_sample) = compare(lambda: build_blending_indices(weights, size),
                                                                   cpp, repeats=repeats)
    assert np.array_equal(index, ref_index) and np.array_equal(sample, ref_sample), "blend differs from C++"
    return comparison.row(f"blend, {size:,} samples, {len(weights)} datasets ({label})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-tokens", type=float, default=1e9, help="largest synthetic dataset, in tokens")
    parser.add_argument("--max-blend", type=float, default=3e7, help="largest blend, in samples")
    parser.add_argument("--repeats", type=int, default=5, help="interleaved calls per side")
    args = parser.parse_args()
    helpers = _mcore_helpers()
    print(f"numpy {np.__version__}; {machine_line()}; megatron-core C++ peer: "
          f"{'yes' if helpers is not None else 'not installed'}; times in seconds")
    print("\nGPT indices, ours (train split = whole file; best of one run)")
    print(f"{'tokens':>14s} {'documents':>11s} {'seq':>5s} {'ep':>3s} {'samples':>11s} {'doc_idx':>8s} {'total':>8s}")
    rows = []
    for tokens, epochs, seq in ((1e7, 1, 2048), (1e8, 1, 2048), (1e8, 3.5, 1024), (1e9, 1, 2048), (1e9, 1, 512)):
        if tokens <= args.max_tokens:
            rows.append(bench_gpt(int(tokens), epochs, seq, helpers, args.repeats))
    rng = np.random.default_rng(0)
    weight_sets = [
        (normalize_weights([0.5, 0.3, 0.2]), "0.5/0.3/0.2"),
        (normalize_weights(rng.dirichlet(np.ones(10))), "Dirichlet(1) x10"),
        (normalize_weights(rng.dirichlet(np.full(40, 0.5))), "Dirichlet(0.5) x40"),
        (normalize_weights([0.989, 0.01, 0.001]), "0.989/0.01/0.001"),
    ]
    for size in (1e6, 1e7, 3e7):
        if size <= args.max_blend:
            for weights, label in weight_sets:
                rows.append(bench_blend(int(size), weights, label, helpers, args.repeats))
    print(f"\nOurs against megatron-core's C++ helpers ({args.repeats} interleaved calls per side; ratio > 1: ours "
          "faster)")
    print(HEADER + "\n" + "\n".join(r for r in rows if r))


if __name__ == "__main__":
    main()

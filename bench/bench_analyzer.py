"""Benchmark: our curriculum analyzer vs DeepSpeed's ``DataAnalyzer``, same dataset and metrics, side by side.

Both analyze total_vocab_freq then vocab_rarity (Megatron-DeepSpeed's GPT recipe) over the same synthetic
Zipf-token dataset, map + reduce with the same number of map processes. The script checks that the outputs are
identical (sample_to_metric, index_to_metric, index_to_sample rows, percentile-merged rows, vocab histogram) and
prints both timings and their ratio.

DeepSpeed is installed at run time into its own directory (``pip install --target``, ``DS_BUILD_OPS=0``, without
torch: the venv's torch is used) and runs in a subprocess with that directory on ``PYTHONPATH``; its code is never
part of this repository. Its files use DeepSpeed's dtype codes (6-8 mean uint16/32/64), so the DeepSpeed side
reads them with DeepSpeed's own reader and hands plain arrays back. DeepSpeed pitfalls met here: batches must
carry an ``index`` column (sample ids come only from it); accumulated metrics must return torch tensors with
``metric_dtypes=[torch.int64]`` (its accumulate branch calls the metric again and ``.add_``s the raw result, so a
numpy result breaks on the second batch); ``import deepspeed`` logs "Setting accelerator to CPU" and the install
also drops pydantic/typing_extensions into the target directory, which therefore goes first on PYTHONPATH only
in the subprocess.

    .venv/bin/python bench/bench_analyzer.py --num-samples 100000 --num-threads 2
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

DS_VERSION = "0.19.8"
DS_DEPS = ["hjson", "py-cpuinfo", "pydantic>=2", "psutil", "msgpack", "ninja", "einops"]


class ZipfTokens:
    """Deterministic GPT-like samples: ``{'tokens': int64[L], 'index': [i]}`` with Zipf-distributed token ids."""

    def __init__(self, num_samples: int, sample_length: int, vocab_size: int, seed: int = 1234) -> None:
        rng = np.random.default_rng(seed)
        self.tokens = np.minimum(rng.zipf(1.15, size=(num_samples, sample_length)), vocab_size) - 1
        self.vocab_size = vocab_size

    def __len__(self) -> int:
        return len(self.tokens)

    def __getitem__(self, i: int) -> dict:
        return {"tokens": self.tokens[i], "index": np.array([i], dtype=np.int64)}


def rarity_table(freq: np.ndarray) -> np.ndarray:
    """-ln p(token) with unseen ids counted once (Megatron-DeepSpeed's formula; same expression on both sides)."""
    f = np.asarray(freq, dtype=np.float64).copy()
    f[f == 0] = 1.0
    return -np.log(f / f.sum())


# ----------------------------------------------------------------------------------------------------------------
# DeepSpeed side (runs in a subprocess with the DeepSpeed directory on PYTHONPATH)
# ----------------------------------------------------------------------------------------------------------------


def run_deepspeed(args: argparse.Namespace) -> None:
    import torch
    from deepspeed.runtime.data_pipeline.data_sampling.data_analyzer import DataAnalyzer
    from deepspeed.runtime.data_pipeline.data_sampling.indexed_dataset import MMapIndexedDataset

    ds = ZipfTokens(args.num_samples, args.sample_length, args.vocab_size)
    out = os.path.join(args.work_dir, "deepspeed")

    def analyzer(name, fn, kind):
        # Metric functions return torch int64 tensors: DeepSpeed's accumulate path calls tensor.add_.
        return DataAnalyzer(ds, num_workers=1, worker_id=0, num_threads=args.num_threads,
                            num_threads_reduce=args.num_threads, batch_size=args.batch_size, metric_names=[name],
                            metric_functions=[fn], metric_types=[kind], metric_dtypes=[torch.int64], save_path=out)

    def freq_fn(data):
        return torch.bincount(data["tokens"].reshape(-1), minlength=args.vocab_size)

    t0 = time.perf_counter()
    a = analyzer("total_vocab_freq", freq_fn, "accumulate_value_over_samples")
    a.run_map()
    a.run_reduce()
    freq_ds = MMapIndexedDataset(f"{out}/total_vocab_freq/total_vocab_freq_metric_value", skip_warmup=True)
    table = rarity_table(np.asarray(freq_ds[0]))

    def rarity_fn(data):
        return torch.from_numpy(np.floor(table[data["tokens"].numpy()].sum(axis=1)).astype(np.int64))

    a = analyzer("vocab_rarity", rarity_fn, "single_value_per_sample")
    a.run_map()
    a.run_reduce()
    seconds = time.perf_counter() - t0

    def rows(suffix):
        d = MMapIndexedDataset(f"{out}/vocab_rarity/vocab_rarity_{suffix}", skip_warmup=True)
        parts = [np.asarray(d[i]).astype(np.int64) for i in range(len(d))]  # keep `d` alive while reading
        return np.concatenate(parts), np.array([len(p) for p in parts])

    arrays = {"freq": np.asarray(freq_ds[0]).astype(np.int64)}
    for suffix in ("sample_to_metric", "index_to_metric", "index_to_sample", "index_to_sample_percentile_merged"):
        arrays[suffix], arrays[suffix + "_rows"] = rows(suffix)
    np.savez(os.path.join(args.work_dir, "deepspeed.npz"), **arrays)
    print(json.dumps({"seconds": seconds}))


def ensure_deepspeed(target: str) -> None:
    if os.path.isdir(os.path.join(target, "deepspeed")):
        return
    env = {**os.environ, "DS_BUILD_OPS": "0"}
    pip = [sys.executable, "-m", "pip", "install", "-q", "--target", target]
    print(f"installing deepspeed=={DS_VERSION} into {target} (no ops, venv torch) ...", flush=True)
    subprocess.run(pip + ["--no-deps", f"deepspeed=={DS_VERSION}"], check=True, env=env)
    subprocess.run(pip + DS_DEPS, check=True, env=env)


# ----------------------------------------------------------------------------------------------------------------
# Our side and the comparison
# ----------------------------------------------------------------------------------------------------------------


def run_ours(args: argparse.Namespace) -> tuple[float, dict[str, np.ndarray]]:
    from megatron.data_efficiency.curriculum.analyzer import AnalyzerOptions, analyze, output_prefix, read_flat

    ds = ZipfTokens(args.num_samples, args.sample_length, args.vocab_size)
    save = os.path.join(args.work_dir, "ours")
    opts = AnalyzerOptions(metrics=["vocab_rarity"], save_path=save, num_threads=args.num_threads,
                           batch_size=args.batch_size)
    t0 = time.perf_counter()
    analyze(ds, opts, vocab_size=args.vocab_size, sample_length=args.sample_length, progress=False)
    seconds = time.perf_counter() - t0
    arrays = {"freq": np.asarray(read_flat(output_prefix(save, "total_vocab_freq", "metric_value"))[0])}
    for suffix in ("sample_to_metric", "index_to_metric", "index_to_sample", "index_to_sample_percentile_merged"):
        values, rows = read_flat(output_prefix(save, "vocab_rarity", suffix))
        arrays[suffix], arrays[suffix + "_rows"] = np.asarray(values, dtype=np.int64), rows
    return seconds, arrays


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--num-samples", type=int, default=100000)
    p.add_argument("--sample-length", type=int, default=129, help="tokens per sample (seq_length + 1)")
    p.add_argument("--vocab-size", type=int, default=50257)
    p.add_argument("--num-threads", type=int, default=2, help="map processes, the same for both")
    p.add_argument("--batch-size", type=int, default=1000)
    p.add_argument("--work-dir", default=None, help="scratch directory (default: a new temporary one)")
    p.add_argument("--deepspeed-dir", default=os.path.join(tempfile.gettempdir(), f"megatron_de_ds{DS_VERSION}"),
                   help="where deepspeed is pip-installed (--target) for this benchmark")
    p.add_argument("--deepspeed-side", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.deepspeed_side:
        run_deepspeed(args)
        return
    args.work_dir = args.work_dir or tempfile.mkdtemp(prefix="bench_analyzer_")
    ensure_deepspeed(args.deepspeed_dir)
    cmd = [sys.executable, os.path.abspath(__file__), "--deepspeed-side", "--work-dir", args.work_dir,
           "--num-samples", str(args.num_samples), "--sample-length", str(args.sample_length),
           "--vocab-size", str(args.vocab_size), "--num-threads", str(args.num_threads),
           "--batch-size", str(args.batch_size)]
    # cwd outside the repository and DeepSpeed first on the path: nothing of ours shadows or is shadowed.
    env = {**os.environ, "PYTHONPATH": args.deepspeed_dir}
    proc = subprocess.run(cmd, cwd=args.work_dir, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"DeepSpeed side failed:\n{proc.stderr[-4000:]}")
    ds_seconds = json.loads(proc.stdout.strip().splitlines()[-1])["seconds"]
    ours_seconds, ours = run_ours(args)
    theirs = dict(np.load(os.path.join(args.work_dir, "deepspeed.npz")))
    checks = {k: np.array_equal(ours[k], theirs[k]) for k in sorted(theirs)}
    n = args.num_samples
    print(f"\nanalyzer: total_vocab_freq + vocab_rarity, {n} samples x {args.sample_length} tokens, vocab "
          f"{args.vocab_size}, {args.num_threads} map processes, batch {args.batch_size}, "
          f"{len(theirs['index_to_metric'])} distinct rarity values")
    print(f"| implementation | map+reduce (s) | samples/s |\n|---|---|---|")
    print(f"| DeepSpeed {DS_VERSION} DataAnalyzer | {ds_seconds:.2f} | {n / ds_seconds:,.0f} |")
    print(f"| megatron-de analyzer | {ours_seconds:.2f} | {n / ours_seconds:,.0f} |")
    print(f"speed-up: {ds_seconds / ours_seconds:.1f}x")
    print("identical outputs: " + ", ".join(f"{k} {'yes' if ok else 'NO'}" for k, ok in checks.items()))
    if not all(checks.values()):
        sys.exit("outputs differ")


if __name__ == "__main__":
    main()

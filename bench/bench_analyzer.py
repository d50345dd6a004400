"""Benchmark: our curriculum analyzer vs DeepSpeed's ``DataAnalyzer``, same dataset and metrics, side by side.

Both analyze total_vocab_freq then vocab_rarity (Megatron-DeepSpeed's GPT recipe) over the same synthetic
Zipf-token dataset, map + reduce with the same number of map processes, each call into a fresh directory. The two
sides are called in turn (``bench/compare.py``: interleaved, min and median per side, a verdict on the noise); the
script checks that the outputs are identical (sample_to_metric, index_to_metric, index_to_sample rows,
percentile-merged rows, vocab histogram). ``--num-samples`` takes several sizes (the fixed costs weigh more on small
ones).

DeepSpeed is installed at run time into its own directory (``pip install --target``, ``DS_BUILD_OPS=0``, without
torch: the venv's torch is used) and runs in a subprocess with that directory on ``PYTHONPATH``; its code is never
part of this repository. Its files use DeepSpeed's dtype codes (6-8 mean uint16/32/64), so the DeepSpeed side
reads them with DeepSpeed's own reader and hands plain arrays back. DeepSpeed pitfalls met here: batches must
carry an ``index`` column (sample ids come only from it); accumulated metrics must return torch tensors with
``metric_dtypes=[torch.int64]`` (its accumulate branch calls the metric again and ``.add_``s the raw result, so a
numpy result breaks on the second batch); ``import deepspeed`` logs "Setting accelerator to CPU" and the install
also drops pydantic/typing_extensions into the target directory, which therefore goes first on PYTHONPATH only
in the subprocess.

    .venv/bin/python bench/bench_analyzer.py --num-samples 30000 100000 --num-threads 2 --repeats 5
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from compare import HEADER, PeerProcess, compare, machine_line  # noqa: E402

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
    """Serve DeepSpeed runs (``compare.serve``): ``run(num_samples, out)`` analyzes into ``out``;
    ``arrays(num_samples, out, npz)`` saves that output's arrays for the comparison."""
    import torch
    from deepspeed.runtime.data_pipeline.data_sampling.data_analyzer import DataAnalyzer
    from deepspeed.runtime.data_pipeline.data_sampling.indexed_dataset import MMapIndexedDataset

    from compare import serve

    datasets = {}

    def run(num_samples, out):
        ds = datasets.setdefault(num_samples, ZipfTokens(num_samples, args.sample_length, args.vocab_size))

        def analyzer(name, fn, kind):
            # Metric functions return torch int64 tensors: DeepSpeed's accumulate path calls tensor.add_.
            return DataAnalyzer(ds, num_workers=1, worker_id=0, num_threads=args.num_threads,
                                num_threads_reduce=args.num_threads, batch_size=args.batch_size,
                                metric_names=[name], metric_functions=[fn], metric_types=[kind],
                                metric_dtypes=[torch.int64], save_path=out)

        def freq_fn(data):
            return torch.bincount(data["tokens"].reshape(-1), minlength=args.vocab_size)

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

    def arrays(num_samples, out, npz):
        def rows(suffix):
            d = MMapIndexedDataset(f"{out}/vocab_rarity/vocab_rarity_{suffix}", skip_warmup=True)
            parts = [np.asarray(d[i]).astype(np.int64) for i in range(len(d))]  # keep `d` alive while reading
            return np.concatenate(parts), np.array([len(p) for p in parts])

        freq_ds = MMapIndexedDataset(f"{out}/total_vocab_freq/total_vocab_freq_metric_value", skip_warmup=True)
        found = {"freq": np.asarray(freq_ds[0]).astype(np.int64)}
        for suffix in ("sample_to_metric", "index_to_metric", "index_to_sample",
                       "index_to_sample_percentile_merged"):
            found[suffix], found[suffix + "_rows"] = rows(suffix)
        np.savez(npz, **found)

    serve({"run": run, "arrays": arrays})


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


def run_ours(args: argparse.Namespace, ds: ZipfTokens, save: str) -> None:
    from megatron.data_efficiency.curriculum.analyzer import AnalyzerOptions, analyze

    opts = AnalyzerOptions(metrics=["vocab_rarity"], save_path=save, num_threads=args.num_threads,
                           batch_size=args.batch_size)
    analyze(ds, opts, vocab_size=args.vocab_size, sample_length=args.sample_length, progress=False)


def our_arrays(save: str) -> dict[str, np.ndarray]:
    from megatron.data_efficiency.curriculum.index_files import output_prefix, read_flat

    arrays = {"freq": np.asarray(read_flat(output_prefix(save, "total_vocab_freq", "metric_value"))[0])}
    for suffix in ("sample_to_metric", "index_to_metric", "index_to_sample", "index_to_sample_percentile_merged"):
        values, rows = read_flat(output_prefix(save, "vocab_rarity", suffix))
        arrays[suffix], arrays[suffix + "_rows"] = np.asarray(values, dtype=np.int64), rows
    return arrays


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--num-samples", type=int, nargs="+", default=[30000, 100000])
    p.add_argument("--sample-length", type=int, default=129, help="tokens per sample (seq_length + 1)")
    p.add_argument("--vocab-size", type=int, default=50257)
    p.add_argument("--num-threads", type=int, default=2, help="map processes, the same for both")
    p.add_argument("--batch-size", type=int, default=1000)
    p.add_argument("--repeats", type=int, default=5, help="interleaved calls per side and size")
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
    argv = [os.path.abspath(__file__), "--deepspeed-side", "--sample-length", str(args.sample_length),
            "--vocab-size", str(args.vocab_size), "--num-threads", str(args.num_threads),
            "--batch-size", str(args.batch_size)]
    print(f"analyzer: total_vocab_freq + vocab_rarity, samples of {args.sample_length} tokens, vocab "
          f"{args.vocab_size}, {args.num_threads} map processes, batch {args.batch_size}, DeepSpeed {DS_VERSION}; "
          f"{args.repeats} interleaved calls per side; map+reduce seconds; {machine_line()}")
    print(HEADER)
    rows, calls = [], iter(range(10**9))

    def deepspeed_process() -> PeerProcess:
        # cwd outside the repository and DeepSpeed first on the path: nothing of ours shadows or is shadowed.
        return PeerProcess(argv, env={"PYTHONPATH": args.deepspeed_dir}, cwd=args.work_dir)

    for n in args.num_samples:
        ds = ZipfTokens(n, args.sample_length, args.vocab_size)
        mine, theirs = [], []

        def ours():
            mine.append(os.path.join(args.work_dir, f"ours{next(calls)}"))
            run_ours(args, ds, mine[-1])

        def deepspeed():
            # A fresh process per run: a second run in one process hung (its forked map processes never finished,
            # most likely as the parent had run torch ops, and forking after OpenMP threads exist is unsafe). Its
            # import and dataset creation are not timed, only the analysis.
            theirs.append(os.path.join(args.work_dir, f"deepspeed{next(calls)}"))
            with deepspeed_process() as peer:
                return peer.call("run", n, theirs[-1])

        comparison, _, _ = compare(ours, deepspeed, repeats=args.repeats)
        npz = os.path.join(args.work_dir, f"deepspeed{n}.npz")
        with deepspeed_process() as peer:
            peer.call("arrays", n, theirs[-1], npz)
        expected, found = dict(np.load(npz)), our_arrays(mine[-1])
        checks = {k: np.array_equal(found[k], expected[k]) for k in sorted(expected)}
        if not all(checks.values()):
            sys.exit(f"outputs differ at {n} samples: " + ", ".join(k for k, ok in checks.items() if not ok))
        rows.append(comparison.row(f"{n:,} samples ({len(expected['index_to_metric'])} rarity values)"))
        print(rows[-1], flush=True)
        for d in mine + theirs:
            shutil.rmtree(d, ignore_errors=True)
    print("\n" + HEADER + "\n" + "\n".join(rows))
    print("identical outputs (freq, sample_to_metric, index_to_metric, index_to_sample, percentile merged): yes")


if __name__ == "__main__":
    main()

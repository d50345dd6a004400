"""Benchmark: cost per global batch of the curriculum sampler, vs DeepSpeed's DeepSpeedDataSampler and vs a step.

Setting (GPT recipe shape, "CL best"): vocab-rarity percentile metric, schedule_based, fixed_root degree 2 from
1% to 100% over ``--steps`` curriculum steps, plus seqlen_truncate; global batch 512. The analysis files are
synthetic (``--num-samples`` samples, ``--distinct-values`` metric values) and written by our analyzer's writer;
DeepSpeed's sampler reads the same files (dtype codes 1-5 mean the same to both). Reported: build time, mean and
max time per global batch over the whole curriculum (it crosses ~100 difficulty changes), and the ratio to a
proxy CPU training step (the ``debug`` GPT size: 4 layers, hidden 64, 4 heads, vocab 50304, same global batch at
``--seq-length``; one micro-batch forward + backward timed and scaled, plus AdamW, in torch).
A second row of ours draws the same samples split into ``--blend-components`` components (each with its own
analysis and thresholds, random blend weights) from an exact-epoch blend, as blended curriculum training does;
DeepSpeed has no blended curriculum to compare with. Ours and DeepSpeed's (served from a child process with
DeepSpeed on its path) each run the whole curriculum ``--repeats`` times, interleaved (``bench/compare.py``: min and
median of the mean time per global batch, both ratios and a verdict on the noise); every DeepSpeed run gets a fresh
cluster directory, so none reuses the clusters another one wrote.

    .venv/bin/python bench/bench_curriculum_sampler.py            # add --deepspeed-dir DIR to reuse an install
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_analyzer import DS_VERSION, ensure_deepspeed  # noqa: E402
from compare import HEADER, PeerProcess, Timed, compare, machine_line  # noqa: E402


def ds_config(save: str | list[str], steps: int, cluster_dir: str) -> dict:
    """The DeepSpeed JSON both samplers read (a list of analysis dirs: one per blend component)."""
    def path(file: str) -> str | list[str]:
        if isinstance(save, list):
            return [os.path.join(d, "vocab_rarity", "vocab_rarity_" + file) for d in save]
        return os.path.join(save, "vocab_rarity", "vocab_rarity_" + file)

    return {"data_efficiency": {"enabled": True, "seed": 1234, "data_sampling": {
        "enabled": True, "num_epochs": 1, "num_workers": 0, "curriculum_learning": {
            "enabled": True, "data_cluster_path": cluster_dir, "curriculum_metrics": {
                "voc": {"index_to_sample_path": path("index_to_sample_percentile_merged"),
                        "index_to_metric_path": path("index_to_metric"), "difficulty_type": "percentile",
                        "clustering_type": "schedule_based", "min_difficulty": 1, "max_difficulty": 100,
                        "schedule_type": "fixed_root",
                        "schedule_config": {"total_curriculum_step": steps, "difficulty_step": 1, "root_degree": 2}},
                "seqlen_truncate": {"index_to_sample_path": "dummy", "index_to_metric_path": "dummy",
                                    "difficulty_type": "value", "clustering_type": "single_cluster",
                                    "min_difficulty": 64, "max_difficulty": 1024, "schedule_type": "fixed_linear",
                                    "schedule_config": {"total_curriculum_step": steps, "difficulty_step": 8}}}}}}}


class _Sized:
    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n


class _Blend(_Sized):
    """What the sampler reads of an exact-epoch BlendedDataset: components, weights and the exhaustive order."""

    def __init__(self, sizes: list[int], weights: np.ndarray) -> None:
        from megatron.data.blending import build_exhaustive_blending_indices

        super().__init__(sum(sizes))
        self.datasets, self.weights = [_Sized(n) for n in sizes], (weights / weights.sum()).tolist()
        self.dataset_index, self.dataset_sample_index = build_exhaustive_blending_indices(sizes)


def run_ours(args, cfg_dict, dataset=None) -> dict:
    from megatron.data_efficiency.config import parse_data_efficiency_config
    from megatron.data_efficiency.curriculum.sampler import build_curriculum_sampler

    t0 = time.perf_counter()
    sampler = build_curriculum_sampler(parse_data_efficiency_config(cfg_dict), dataset or _Sized(args.num_samples),
                                       global_batch_size=args.global_batch_size,
                                       micro_batch_size=args.micro_batch_size,
                                       dp_size=args.global_batch_size // args.micro_batch_size)
    build = time.perf_counter() - t0
    times = []
    for _ in range(args.steps + 10):
        t = time.perf_counter()
        batch = sampler.draw_global_batch()
        sampler.rank_micro_batches(batch.indices)  # this rank's slice, as handed to the DataLoader
        sampler.commit()
        times.append(time.perf_counter() - t)
    t = time.perf_counter()
    sampler.state_dict()
    return Timed(float(np.mean(times)), {"build": build, "mean": float(np.mean(times)),
                                         "max": float(np.max(times)), "state_dict": time.perf_counter() - t})


def run_deepspeed(args) -> None:
    """Serve DeepSpeed runs (``compare.serve``): ``run(config)`` builds a sampler and draws the curriculum."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(29500 + os.getpid() % 1000), RANK="0",
                      WORLD_SIZE="1", LOCAL_RANK="0")
    import deepspeed
    import torch.distributed as dist
    from deepspeed.runtime.data_pipeline.config import get_data_efficiency_config
    from deepspeed.runtime.data_pipeline.data_sampling.data_sampler import DeepSpeedDataSampler

    from compare import serve

    deepspeed.init_distributed(dist_backend="gloo")
    group = dist.new_group(ranks=[0])

    def run(config):
        cfg = get_data_efficiency_config(config)
        t0 = time.perf_counter()
        sampler = DeepSpeedDataSampler(cfg, one_epoch_total_samples=args.num_samples,
                                       micro_batch_size=args.micro_batch_size, data_parallel_rank=0,
                                       data_parallel_size=1, data_parallel_group=group,
                                       gradient_accumulation_steps=args.global_batch_size // args.micro_batch_size,
                                       global_rank=0, drop_last=True)
        build = time.perf_counter() - t0
        per_global = args.global_batch_size // args.micro_batch_size
        it = iter(sampler)
        times = []
        for _ in range(args.steps + 10):
            t = time.perf_counter()
            for _ in range(per_global):
                next(it)
            times.append(time.perf_counter() - t)
        return Timed(float(np.mean(times)), {"build": build, "mean": float(np.mean(times)),
                                             "max": float(np.max(times))})

    serve({"run": run})


def proxy_train_step(args) -> float:
    """Seconds of one training step of a debug-sized GPT on the global batch (torch, CPU).

    One micro-batch forward + backward is timed (median of 3) and multiplied by the number of micro-batches
    per global batch; the AdamW step is added once.
    """
    import torch
    from torch import nn

    torch.manual_seed(0)
    vocab, hidden, layers, heads, s = 50304, 64, 4, 4, args.seq_length
    emb, pos = nn.Embedding(vocab, hidden), nn.Embedding(s, hidden)
    block = nn.TransformerEncoderLayer(hidden, heads, 4 * hidden, dropout=0.0, batch_first=True, norm_first=True)
    stack = nn.TransformerEncoder(block, layers, enable_nested_tensor=False)
    params = [*emb.parameters(), *pos.parameters(), *stack.parameters()]
    opt = torch.optim.AdamW(params, lr=1e-4)
    mask = nn.Transformer.generate_square_subsequent_mask(s)
    x = torch.randint(0, vocab, (args.micro_batch_size, s + 1))

    def micro_step() -> float:
        t = time.perf_counter()
        h = stack(emb(x[:, :-1]) + pos.weight, mask=mask, is_causal=True)
        nn.functional.cross_entropy((h @ emb.weight.T).flatten(0, 1), x[:, 1:].flatten()).backward()
        return time.perf_counter() - t

    micro_step()
    micro = float(np.median([micro_step() for _ in range(3)]))
    t = time.perf_counter()
    opt.step()
    return micro * (args.global_batch_size // args.micro_batch_size) + time.perf_counter() - t


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--num-samples", type=int, default=1_000_000)
    p.add_argument("--distinct-values", type=int, default=5000)
    p.add_argument("--steps", type=int, default=1000, help="curriculum length in global batches")
    p.add_argument("--global-batch-size", type=int, default=512)
    p.add_argument("--micro-batch-size", type=int, default=8)
    p.add_argument("--seq-length", type=int, default=128, help="of the proxy training step")
    p.add_argument("--blend-components", type=int, default=4, help="components of the blended row (0: no row)")
    p.add_argument("--work-dir", default=None)
    p.add_argument("--deepspeed-dir", default=os.path.join(tempfile.gettempdir(), f"megatron_de_ds{DS_VERSION}"))
    p.add_argument("--skip-deepspeed", action="store_true")
    p.add_argument("--repeats", type=int, default=5, help="interleaved curriculum runs per side")
    p.add_argument("--deepspeed-side", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.deepspeed_side:
        run_deepspeed(args)
        return
    from megatron.data_efficiency.curriculum.analyzer import write_metric_index

    args.work_dir = args.work_dir or tempfile.mkdtemp(prefix="bench_cl_sampler_")
    rng = np.random.default_rng(0)
    write_metric_index(args.work_dir, "vocab_rarity", rng.integers(0, args.distinct_values, args.num_samples))
    cfg = ds_config(args.work_dir, args.steps, os.path.join(args.work_dir, "ds_clusters"))
    print(f"curriculum sampler: {args.num_samples:,} samples, {args.distinct_values} metric values, global batch "
          f"{args.global_batch_size}, {args.steps} curriculum steps (percentile 1->100, root 2) + seqlen_truncate; "
          f"{args.repeats} interleaved runs per side; {machine_line()}", flush=True)
    comparison = None
    if args.skip_deepspeed:
        ours = run_ours(args, cfg).value
    else:
        ensure_deepspeed(args.deepspeed_dir)
        argv = [os.path.abspath(__file__), "--deepspeed-side"]
        for k in ("num_samples", "steps", "global_batch_size", "micro_batch_size"):
            argv += [f"--{k.replace('_', '-')}", str(getattr(args, k))]
        runs = iter(range(10**9))

        def deepspeed():
            fresh = json.loads(json.dumps(cfg))
            fresh["data_efficiency"]["data_sampling"]["curriculum_learning"]["data_cluster_path"] = os.path.join(
                args.work_dir, f"ds_clusters{next(runs)}")
            return peer.call("run", fresh)

        with PeerProcess(argv, env={"PYTHONPATH": args.deepspeed_dir}, cwd=args.work_dir) as peer:
            comparison, ours, theirs = compare(lambda: run_ours(args, cfg), deepspeed, repeats=args.repeats)
    rows = [("megatron-de CurriculumSampler", ours)]
    if comparison is not None:
        rows.insert(0, (f"DeepSpeed {DS_VERSION} DeepSpeedDataSampler", theirs))
    if args.blend_components:
        sizes = [len(part) for part in np.array_split(np.arange(args.num_samples), args.blend_components)]
        dirs = [os.path.join(args.work_dir, f"dataset{c}") for c in range(len(sizes))]
        for d, n in zip(dirs, sizes):
            write_metric_index(d, "vocab_rarity", rng.integers(0, args.distinct_values, n))
        blend = _Blend(sizes, rng.random(len(sizes)) + 0.1)
        rows.append((f"megatron-de CurriculumSampler, {len(sizes)}-way blend",
                     run_ours(args, ds_config(dirs, args.steps, cfg["data_efficiency"]["data_sampling"]
                                              ["curriculum_learning"]["data_cluster_path"]), blend).value))
    train = proxy_train_step(args)
    print("| implementation (last run) | build (s) | mean per global batch (ms) | max (ms) | mean / proxy train step |")
    print("|---|---|---|---|---|")
    for name, r in rows:
        print(f"| {name} | {r['build']:.2f} | {1e3 * r['mean']:.3f} | {1e3 * r['max']:.1f} | "
              f"{100 * r['mean'] / train:.1e}% |")
    print(f"proxy CPU training step (debug GPT, {args.global_batch_size} x {args.seq_length} tokens, from one "
          f"micro-batch of {args.micro_batch_size}): {train:.2f} s")
    if comparison is not None:
        print(HEADER)
        print(comparison.row("ms per global batch (mean over the curriculum)", unit=1e-3))
    print(f"state_dict(): {1e3 * ours['state_dict']:.2f} ms")


if __name__ == "__main__":
    main()

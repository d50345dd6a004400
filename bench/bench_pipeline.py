"""CPU forward+backward step time of a GPT under pipeline parallelism: PP = 1 against PP = 2 with GPipe, 1F1B and
interleaved 1F1B (the pipeline bubble).

Every rank is one process with one intra-op thread (gloo on localhost), so PP = 2 has twice the compute of PP = 1
and would run in half the time without a bubble. The step is ``PipelineEngine.train_step`` over M micro-batches
plus the tied-embedding gradient sync (no optimizer step: the bubble is in the forward/backward). Per schedule the
table shows the fastest and the median step time (slowest rank of the step), the speedup over PP = 1 of the fastest
steps, and the speedup the bubble alone allows: ``P * M / (M + P - 1)`` for GPipe and 1F1B, ``P * M / (M + (P - 1)
/ v)`` interleaved with ``v`` chunks per rank. The runs take turns for ``--rounds`` rounds so that load from other
processes hits all of them; on a shared machine the fastest steps are the ones to compare.

    .venv/bin/python bench/bench_pipeline.py [--layers 8 --hidden 256 --heads 8 --seq 128 --mbs 2 --microbatches 8 --rounds 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

from dist_utils import run_distributed  # noqa: E402

from megatron.model.config import TransformerConfig  # noqa: E402
from megatron.parallel.pipeline_state import PipelineParallelState  # noqa: E402
from megatron.training.pipeline import allreduce_tied_embedding_grads, build_gpt_stages  # noqa: E402
from megatron.training.pipeline_schedule import PipelineEngine  # noqa: E402

VOCAB = 1024
# (label, pipeline size, schedule, chunks per rank)
RUNS = [("PP=1", 1, "1f1b", 1), ("PP=2 GPipe", 2, "gpipe", 1), ("PP=2 1F1B", 2, "1f1b", 1),
        ("PP=2 interleaved", 2, "interleaved_1f1b", 2)]


def _microbatches(args) -> list[dict]:
    gen = torch.Generator().manual_seed(0)
    out = []
    for _ in range(args.microbatches):
        text = torch.randint(0, VOCAB, (args.mbs, args.seq + 1), generator=gen)
        out.append({"tokens": text[:, :-1], "labels": text[:, 1:], "loss_mask": torch.ones(args.mbs, args.seq),
                    "position_ids": torch.arange(args.seq).expand(args.mbs, args.seq).clone()})
    return out


def _rank_body(rank: int, world_size: int, args, schedule: str, chunks: int) -> list[float]:
    cfg = TransformerConfig(num_layers=args.layers, hidden_size=args.hidden, num_attention_heads=args.heads,
                            max_position_embeddings=args.seq, hidden_dropout=0.0, attention_dropout=0.0)
    pstate = PipelineParallelState.build(1, world_size)
    per_chunk = args.layers // (world_size * chunks) if chunks > 1 else None
    stages = build_gpt_stages(cfg, pstate, VOCAB, seed=1234, num_layers_per_virtual_stage=per_chunk)
    engine = PipelineEngine(stages, pstate, schedule)
    batch = _microbatches(args)
    times = []
    for step in range(args.warmup + args.steps):
        for stage in stages:
            stage.zero_grad(set_to_none=False)
        dist.barrier()
        start = time.perf_counter()
        engine.train_step(batch)
        allreduce_tied_embedding_grads(stages, pstate)
        elapsed = torch.tensor([time.perf_counter() - start])
        dist.all_reduce(elapsed, op=dist.ReduceOp.MAX)  # the step ends when its slowest rank does
        if step >= args.warmup:
            times.append(elapsed.item())
    return times


def _bubble_bound(pp: int, m: int, chunks: int) -> float:
    return pp * m / (m + (pp - 1) / chunks)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--mbs", type=int, default=2, help="micro-batch size")
    parser.add_argument("--microbatches", type=int, default=8, help="micro-batches per step (M)")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=3, help="turns of all runs (steps per run per round: --steps)")
    args = parser.parse_args()
    print(f"GPT {args.layers} layers, h={args.hidden}, seq {args.seq}, micro-batch {args.mbs}, "
          f"M={args.microbatches}; one thread per rank; torch {torch.__version__}; {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.1f}")
    times: dict[str, list[float]] = {label: [] for label, *_ in RUNS}
    for _ in range(args.rounds):
        for label, pp, schedule, chunks in RUNS:
            times[label] += run_distributed(_rank_body, pp, args, schedule, chunks, timeout_s=3600)[0]
    print(f"{'run':<18} {'min step s':>11} {'median':>8} {'speedup':>8} {'bubble bound':>13}")
    base = min(times[RUNS[0][0]])
    for label, pp, _schedule, chunks in RUNS:
        best, median = min(times[label]), statistics.median(times[label])
        bound = _bubble_bound(pp, args.microbatches, chunks)
        print(f"{label:<18} {best:>11.3f} {median:>8.3f} {base / best:>8.2f} {bound:>13.2f}")


if __name__ == "__main__":
    main()

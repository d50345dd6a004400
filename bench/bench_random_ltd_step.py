"""Training-step time of a GPT with random-LTD at several kept ratios against the FLOP-model prediction (CPU or GPU).

One model with layers 1..L-2 wrapped by ``wrap_layers``; its scheduler runs r = S/4, S/2, 3S/4, S at steps
0..3, so ``controller.set_step(k)`` picks the kept ratio. A step is forward (per-token loss, mean) + backward +
``torch.optim.AdamW`` step; ratios are timed round-robin, in ABBA order, so machine noise hits all of them, and
each ratio against r/S = 1 gets ``bench/compare.py``'s verdict (spread and min/median agreement). The prediction is the
r/S = 1 time scaled by ``num_floating_point_operations`` with per-layer sequence lengths (Megatron's formula;
embedding and logit FLOPs stay at full length). "saving realised" = (T_1 - T_r) / (T_1 - T_pred), target >= 80%,
from the medians and from the mins.

    .venv/bin/python bench/bench_random_ltd_step.py [--layers 8 --hidden 512 --heads 8 --seq 512 --batch 4]
    python bench/bench_random_ltd_step.py --device cuda --flavor gpt-350m --seq 2048 --batch 8   # bf16 on a GPU
    python bench/bench_random_ltd_step.py --device cuda --flavor gpt-350m --seq 2048 --batch 8 --compile

``--compile`` sets ``TransformerConfig.torch_compile`` (layers and loss; the warm-up step at each ratio pays the
compilation, dynamic shapes after the second length) and reports the graph breaks Dynamo recorded.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch
from torch._dynamo.utils import counters

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from compare import Comparison, Side, machine_line  # noqa: E402

from megatron.data_efficiency.config import (  # noqa: E402
    RandomLTDConfig,
    RandomLTDScheduleConfig,
    RandomLTDScheduleSettings,
)
from megatron.data_efficiency.routing import RandomLTDScheduler, default_layer_ids, wrap_layers  # noqa: E402
from megatron.model.config import TransformerConfig, num_floating_point_operations  # noqa: E402
from megatron.model.gpt import GPTModel  # noqa: E402
from megatron.parallel.state import ParallelState  # noqa: E402

QUARTERS = (4, 3, 2, 1)  # kept ratio r/S in quarters, baseline first


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--layers", type=int, default=8)
    p.add_argument("--hidden", type=int, default=512)
    p.add_argument("--heads", type=int, default=8)
    p.add_argument("--seq", type=int, default=512, help="sequence length S (a multiple of 4)")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--vocab", type=int, default=8192, help="padded vocabulary (logits are not dropped)")
    p.add_argument("--rounds", type=int, default=5, help="timed steps per ratio (after one warm-up step each)")
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--device", default="cpu", help="cpu or cuda (cuda runs the model in bf16 with fused AdamW)")
    p.add_argument("--flavor", default=None, help="a TransformerConfig flavour (e.g. gpt-350m) instead of the sizes")
    p.add_argument("--dropout", type=float, default=0.1, help="hidden and attention dropout (the paper's recipes: 0.1)")
    p.add_argument("--compile", action="store_true", help="TransformerConfig.torch_compile (layers and loss)")
    p.add_argument("--json", type=Path, default=None, help="also write the rows here (atomically)")
    args = p.parse_args()
    if args.seq % 4 or args.layers < 3:
        p.error(f"--seq must be a multiple of 4 and --layers >= 3, got {args.seq} and {args.layers}")
    return args


def build(args: argparse.Namespace):
    common = dict(max_position_embeddings=args.seq, hidden_dropout=args.dropout, attention_dropout=args.dropout,
                  torch_compile=args.compile)
    if args.flavor:
        cfg = TransformerConfig.flavor(args.flavor, **common)
        args.layers = cfg.num_layers
    else:
        cfg = TransformerConfig(num_layers=args.layers, hidden_size=args.hidden, num_attention_heads=args.heads,
                                **common)
    cuda = args.device.startswith("cuda")
    if cuda:
        cfg.params_dtype = "bfloat16"
    model = GPTModel(cfg, ParallelState.single(), args.vocab, seed=1234).to(args.device).train()
    ids = default_layer_ids(args.layers)
    quarter = args.seq // 4
    schedule = RandomLTDScheduleConfig(
        min_value=quarter, max_value=args.seq, schedule_type="fixed_linear",
        schedule_config=RandomLTDScheduleSettings(require_steps=3, seq_per_step=quarter))
    scheduler = RandomLTDScheduler(RandomLTDConfig(
        enabled=True, total_layer_num=args.layers, random_ltd_layer_num=len(ids), random_ltd_layer_id=ids,
        model_mask_name="attention_mask", model_type="decoder", hidden_state_order="seq_batch_dim",
        random_ltd_schedule=schedule))
    controller = wrap_layers(model.layers, ids, scheduler, model.rng_tracker)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.01,
                                  **({"fused": True} if cuda else {"foreach": True}))
    return cfg, model, controller, optimizer


def train_step(model, optimizer, tokens, labels) -> float:
    """Seconds for forward + backward + AdamW step (inputs are ready; no data loading)."""
    sync = torch.cuda.synchronize if tokens.is_cuda else (lambda: None)
    sync()
    start = time.perf_counter()
    optimizer.zero_grad(set_to_none=True)
    model(tokens, labels=labels).mean().backward()
    optimizer.step()
    sync()
    return time.perf_counter() - start


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cfg, model, controller, optimizer = build(args)
    gen = torch.Generator().manual_seed(0)
    data = torch.randint(0, args.vocab, (args.batch, args.seq + 1), generator=gen).to(args.device)
    tokens, labels = data[:, :-1], data[:, 1:]
    step_of = {q: q - 1 for q in QUARTERS}  # scheduler step k keeps (k + 1) / 4 of the tokens

    for q in QUARTERS:  # warm-up at every length: allocator, AdamW state, kernels chosen per shape
        controller.set_step(step_of[q], args.seq)
        train_step(model, optimizer, tokens, labels)
    times: dict[int, list[float]] = {q: [] for q in QUARTERS}
    for r in range(args.rounds):
        for q in QUARTERS if r % 2 == 0 else QUARTERS[::-1]:
            kept = controller.set_step(step_of[q], args.seq)
            assert kept == q * args.seq // 4, f"schedule gave {kept} kept tokens for ratio {q}/4"
            times[q].append(train_step(model, optimizer, tokens, labels))

    ids = set(controller.layer_ids)
    flops = {q: num_floating_point_operations(
        cfg, args.batch, args.seq, args.vocab,
        layer_seq_lengths=[q * args.seq // 4 if i in ids else args.seq for i in range(args.layers)])
        for q in QUARTERS}
    base = statistics.median(times[4])
    print(f"GPT {args.layers}L h{args.hidden} heads{args.heads} S{args.seq} b{args.batch} V{args.vocab}, random-LTD on "
          f"layers {min(ids)}..{max(ids)}, {args.device}{' bf16' if args.device.startswith('cuda') else f', {args.threads} threads'}, median of {args.rounds} steps (fwd+bwd+AdamW); {machine_line()}")
    print(f"dropout {args.dropout}, torch.compile {'on' if args.compile else 'off'}"
          + (f", graph breaks {sum(counters['graph_break'].values())}" if args.compile else ""))
    print(f"{'r/S':>5} {'r':>5} {'TFLOP/step':>10} {'FLOP ratio':>10} {'measured s':>10} {'predicted s':>11} "
          f"{'GFLOP/s':>8} {'saving realised':>15} {'(from mins)':>11}  verdict vs r/S=1")
    rows = []
    for q in QUARTERS:
        measured = statistics.median(times[q])
        ratio = flops[q] / flops[4]
        predicted = base * ratio
        realised = (base - measured) / (base - predicted) if q < 4 else float("nan")
        base_min = min(times[4])
        realised_min = (base_min - min(times[q])) / (base_min - base_min * ratio) if q < 4 else float("nan")
        verdict = Comparison(Side(f"r/S={q / 4}", times[q]), Side("r/S=1", times[4])).verdict() if q < 4 else ""
        rows.append(dict(kept_ratio=q / 4, kept=q * args.seq // 4, flops=flops[q], flop_ratio=ratio,
                         measured_s=measured, predicted_s=predicted, saving_realised=realised,
                         saving_realised_min=realised_min, verdict=verdict, samples_s=times[q]))
        shown = "-" if q == 4 else f"{100 * realised:.0f}%"
        shown_min = "-" if q == 4 else f"{100 * realised_min:.0f}%"
        print(f"{q / 4:>5.2f} {q * args.seq // 4:>5d} {flops[q] / 1e12:>10.3f} {ratio:>10.3f} {measured:>10.3f} "
              f"{predicted:>11.3f} {flops[q] / measured / 1e9:>8.1f} {shown:>15} {shown_min:>11}  {verdict}")
    if args.json is not None:
        tmp = args.json.with_name(args.json.name + ".tmp")
        tmp.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "rows": rows,
                                   "graph_breaks": sum(counters["graph_break"].values())}, indent=1))
        os.replace(tmp, args.json)


if __name__ == "__main__":
    main()

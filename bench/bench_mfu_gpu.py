"""Model FLOP utilization of a 350M GPT (24 x 1024, 16 heads) at sequence 2048 in bf16 on one GPU.

Runs the real training step: ``GPTModel`` (bf16 parameters) -> masked token mean -> ``MegatronOptimizer`` (fp32
master weights, fp32 gradient buffer, fused AdamW, clipping at 1.0). FLOPs per step use Megatron-LM's formula
(``megatron.model.config.num_floating_point_operations``: forward + backward, no recomputation, full attention
scores); MFU = achieved FLOP/s / the device's dense bf16 peak (table in ``megatron.training.metrics``, or
``--peak-tflops``). Exits with a message when CUDA is absent.

    .venv/bin/python bench/bench_mfu_gpu.py [--micro-batch 8 --steps 20 --recompute none|selective|full]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from megatron.model.config import TransformerConfig, num_floating_point_operations  # noqa: E402
from megatron.model.gpt import GPTModel  # noqa: E402
from megatron.parallel.state import ParallelState  # noqa: E402
from megatron.training.metrics import peak_device_tflops  # noqa: E402
from megatron.training.optimizer import AdamWSettings, MegatronOptimizer  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--micro-batch", type=int, default=8)
    p.add_argument("--seq", type=int, default=2048)
    p.add_argument("--vocab", type=int, default=50304, help="padded GPT-2 vocabulary")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--recompute", choices=["none", "selective", "full"], default="none")
    p.add_argument("--peak-tflops", type=float, default=None)
    p.add_argument("--compile", action="store_true", help="TransformerConfig.torch_compile (layers and loss)")
    args = p.parse_args()
    if not torch.cuda.is_available():
        print("bench_mfu_gpu: CUDA is not available; nothing to measure (run on a GPU machine).")
        return
    torch.backends.cuda.matmul.allow_tf32 = True
    device = torch.device("cuda", 0)
    cfg = TransformerConfig.flavor(
        "gpt-350m", max_position_embeddings=max(2048, args.seq), hidden_dropout=0.0, attention_dropout=0.0,
        recompute_granularity=None if args.recompute == "none" else args.recompute, torch_compile=args.compile,
    )
    cfg.params_dtype = "bfloat16"
    pstate = ParallelState.single()
    model = GPTModel(cfg, pstate, args.vocab, seed=1234).to(device)
    opt = MegatronOptimizer(model, AdamWSettings(weight_decay=0.1, clip_grad=1.0), pstate)
    for g in opt.param_groups:
        g["lr"] = 1e-4
    b, s = args.micro_batch, args.seq
    data = torch.randint(0, args.vocab, (4, b, s + 1), device=device)
    mask = torch.ones(b, s, device=device)

    def step(i: int) -> None:
        tokens, labels = data[i % 4, :, :-1], data[i % 4, :, 1:]
        opt.zero_grad()
        per_token = model(tokens, None, None, labels=labels)
        opt.backward((per_token * mask).sum() / mask.sum())
        opt.step()

    for i in range(args.warmup):
        step(i)
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    for i in range(args.steps):
        step(i)
    torch.cuda.synchronize()
    dt = (time.perf_counter() - t0) / args.steps
    flops = num_floating_point_operations(cfg, b, s, args.vocab)
    tflops = flops / dt / 1e12
    peak = peak_device_tflops(args.peak_tflops)
    params = sum(p.numel() for p in model.parameters())
    print(f"\nGPU MFU: {torch.cuda.get_device_name()}, torch {torch.__version__}, bf16, "
          f"recompute {args.recompute}, compile {args.compile}")
    print(f"{'model':<24}{'params':>14}{'batch x seq':>14}{'s/step':>10}{'tokens/s':>12}{'TFLOP/s':>10}{'MFU':>8}"
          f"{'peak mem GB':>13}")
    mfu = f"{tflops / peak:.1%}" if peak else "n/a"
    print(f"{'GPT 350M (24x1024x16)':<24}{params:>14,}{f'{b} x {s}':>14}{dt:>10.3f}{b * s / dt:>12.0f}{tflops:>10.1f}"
          f"{mfu:>8}{torch.cuda.max_memory_allocated() / 1e9:>13.1f}")
    print(f"FLOPs/step = Megatron-LM formula = {flops:.3e}; peak = {peak} TFLOP/s (dense bf16)")


if __name__ == "__main__":
    main()

"""Forward + backward time of our GPTModel next to megatron-core 0.16's GPTModel (local layer spec) on one GPU.

Both models get the same shape, bf16 parameters, dropout 0.1, causal attention and a per-token loss; each timed step
is ``loss.mean().backward()`` (no optimizer). Ours runs attention through ``scaled_dot_product_attention`` (flash);
megatron-core's local spec (no Transformer Engine or apex installed) runs its unfused baddbmm + softmax path.
megatron-core runs in a subprocess with ``PYTHONPATH=.venv/mcore`` because its ``megatron`` namespace collides with
ours. TFLOP/s use Megatron-LM's formula (``num_floating_point_operations``). Exits with a message without CUDA.

    python bench/bench_gpt_model.py [--flavors gpt-125m gpt-350m --seq 2048 --micro-batch 8 --steps 10]
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
MCORE = REPO / ".venv" / "mcore"
sys.path.insert(0, str(REPO))

from megatron.model.config import TransformerConfig, num_floating_point_operations  # noqa: E402
from megatron.model.gpt import GPTModel  # noqa: E402
from megatron.parallel.state import ParallelState  # noqa: E402

VOCAB = 50304  # GPT-2 vocabulary padded to a multiple of 128



def time_steps(step, warmup: int, steps: int) -> tuple[float, float]:
    """Mean seconds per ``step()`` after ``warmup`` calls, and the peak GiB allocated while timing."""
    for _ in range(warmup):
        step()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    torch.cuda.synchronize()
    return (time.perf_counter() - start) / steps, torch.cuda.max_memory_allocated() / 2**30


# The megatron-core side; the same timing function is pasted in from its source.
MCORE_SCRIPT = textwrap.dedent(
    """
    import json, os, sys, time, warnings
    warnings.simplefilter("ignore")
    import torch
    import torch.distributed as dist
    from megatron.core import parallel_state
    from megatron.core.tensor_parallel.random import model_parallel_cuda_manual_seed
    from megatron.core.transformer.transformer_config import TransformerConfig
    from megatron.core.models.gpt import GPTModel
    from megatron.core.models.gpt.gpt_layer_specs import get_gpt_layer_local_spec
    """
) + inspect.getsource(time_steps) + textwrap.dedent(
    """
    spec = json.loads(sys.argv[1])
    dist.init_process_group("nccl", init_method="file://" + os.path.abspath("store"), rank=0, world_size=1)
    parallel_state.initialize_model_parallel(1, 1)
    model_parallel_cuda_manual_seed(1234)
    cfg = TransformerConfig(
        num_layers=spec["num_layers"], hidden_size=spec["hidden_size"], num_attention_heads=spec["heads"],
        hidden_dropout=0.1, attention_dropout=0.1, bf16=True, params_dtype=torch.bfloat16,
        masked_softmax_fusion=False, gradient_accumulation_fusion=False, persist_layer_norm=False,
    )
    model = GPTModel(cfg, get_gpt_layer_local_spec(), vocab_size=spec["vocab"],
                     max_sequence_length=spec["seq"]).cuda().bfloat16()  # as Megatron's Float16Module does
    b, s = spec["mbs"], spec["seq"]
    tokens = torch.randint(0, spec["vocab"], (b, s), device="cuda")
    labels = torch.randint(0, spec["vocab"], (b, s), device="cuda")
    position_ids = torch.arange(s, device="cuda").unsqueeze(0).expand(b, s)
    mask = torch.ones(s, s, dtype=torch.bool, device="cuda").triu(1)[None, None]
    def step():
        model(tokens, position_ids, mask, labels=labels).float().mean().backward()
    seconds, peak = time_steps(step, spec["warmup"], spec["steps"])
    print(json.dumps({"seconds": seconds, "peak_gib": peak}))
    """
)


def _ours(cfg: TransformerConfig, mbs: int, seq: int, warmup: int, steps: int) -> tuple[float, float]:
    model = GPTModel(cfg, ParallelState.single(), VOCAB).to(device="cuda", dtype=torch.bfloat16)
    tokens = torch.randint(0, VOCAB, (mbs, seq), device="cuda")
    labels = torch.randint(0, VOCAB, (mbs, seq), device="cuda")

    def step() -> None:
        model(tokens, labels=labels).mean().backward()

    result = time_steps(step, warmup, steps)
    del model
    torch.cuda.empty_cache()
    return result


def _mcore(cfg: TransformerConfig, mbs: int, seq: int, warmup: int, steps: int) -> tuple[float, float] | str:
    spec = dict(num_layers=cfg.num_layers, hidden_size=cfg.hidden_size, heads=cfg.num_attention_heads, vocab=VOCAB,
                seq=seq, mbs=mbs, warmup=warmup, steps=steps)
    with tempfile.TemporaryDirectory() as cwd:
        proc = subprocess.run([sys.executable, "-c", MCORE_SCRIPT, json.dumps(spec)], cwd=cwd, capture_output=True,
                              text=True, env={**os.environ, "PYTHONPATH": str(MCORE)})
    if proc.returncode != 0:
        print(f"megatron-core run failed:\n{proc.stderr[-3000:]}", file=sys.stderr)
        return "out of memory" if "OutOfMemoryError" in proc.stderr else "failed"
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    return out["seconds"], out["peak_gib"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--flavors", nargs="+", default=["gpt-125m", "gpt-350m"])
    p.add_argument("--seq", type=int, default=2048)
    p.add_argument("--micro-batch", type=int, default=8)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--no-peer", action="store_true", help="skip megatron-core")
    args = p.parse_args()
    if not torch.cuda.is_available():
        sys.exit("bench_gpt_model.py needs a CUDA GPU (torch.cuda.is_available() is False)")
    peer = not args.no_peer and (MCORE / "megatron" / "core").is_dir()
    print(f"device: {torch.cuda.get_device_name()}  torch {torch.__version__}  seq {args.seq}  "
          f"micro-batch {args.micro_batch}  bf16  dropout 0.1  fwd+bwd per step\n")
    print("| model | implementation | ms/step | tokens/s | TFLOP/s | peak GiB | speed vs megatron-core |")
    print("|---|---|---|---|---|---|---|")
    for flavor in args.flavors:
        cfg = TransformerConfig.flavor(flavor)
        flops = num_floating_point_operations(cfg, args.micro_batch, args.seq, VOCAB)
        tokens = args.micro_batch * args.seq
        rows = {"ours (SDPA)": _ours(cfg, args.micro_batch, args.seq, args.warmup, args.steps)}
        if peer:
            rows["megatron-core local spec"] = _mcore(cfg, args.micro_batch, args.seq, args.warmup, args.steps)
        base = rows.get("megatron-core local spec")
        base = base if isinstance(base, tuple) else None
        for name, res in rows.items():
            if isinstance(res, str):
                print(f"| {flavor} | {name} | {res} | | | | |")
                continue
            sec, peak = res
            ratio = f"{base[0] / sec:.2f}x" if base else "n/a"
            print(f"| {flavor} | {name} | {sec * 1e3:.1f} | {tokens / sec:,.0f} | {flops / sec / 1e12:.1f} | "
                  f"{peak:.1f} | {ratio} |")


if __name__ == "__main__":
    main()

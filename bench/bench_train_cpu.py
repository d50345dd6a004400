"""CPU training throughput of Megatron-DE's GPT against Hugging Face ``transformers`` GPT-2, side by side.

Both models get the same shape (layers, hidden, heads, sequence, padded vocabulary), no dropout, the same random
token batches, AdamW with gradient clipping at 1.0, and the same number of threads. Our side runs the real
training path (``GPTModel`` per-token loss -> masked mean -> ``MegatronOptimizer`` with its fp32 gradient buffer);
the peer runs ``GPT2LMHeadModel(labels=...)`` -> ``torch.optim.AdamW``. Steps alternate in blocks so that machine
noise hits both (``bench/compare.py``: each step timed, ABBA blocks, min and median per side, both ratios and a
verdict on the noise). Prints a table and the ratio ours / theirs in tokens/s (target >= 1.0).

``transformers`` is not a dependency: if it is missing it is pip-installed into ``.venv/bench-hf`` (outside the
import path of the project) and appended to ``sys.path`` for this process only.

    .venv/bin/python bench/bench_train_cpu.py [--layers 4 --hidden 256 --heads 4 --seq 256 --batch 8 --steps 12]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from compare import HEADER, compare, machine_line  # noqa: E402

from megatron.model.config import TransformerConfig  # noqa: E402
from megatron.model.gpt import GPTModel  # noqa: E402
from megatron.parallel.state import ParallelState  # noqa: E402
from megatron.training.optimizer import AdamWSettings, MegatronOptimizer  # noqa: E402

HF_DIR = REPO / ".venv" / "bench-hf"


def import_transformers():
    """Import transformers, installing it into ``.venv/bench-hf`` first if needed."""
    try:
        import transformers  # noqa: F401
    except ImportError:
        if not (HF_DIR / "transformers").is_dir():
            print(f"installing transformers into {HF_DIR.relative_to(REPO)} (benchmark only) ...", flush=True)
            subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--target", str(HF_DIR), "transformers"],
                           check=True)
        sys.path.append(str(HF_DIR))  # appended: the project's own numpy/tokenizers keep priority
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    import transformers

    return transformers


def build_ours(args, vocab: int):
    cfg = TransformerConfig(num_layers=args.layers, hidden_size=args.hidden, num_attention_heads=args.heads,
                            max_position_embeddings=args.seq, hidden_dropout=0.0, attention_dropout=0.0)
    model = GPTModel(cfg, ParallelState.single(), vocab, seed=1234)
    opt = MegatronOptimizer(model, AdamWSettings(weight_decay=0.1, clip_grad=1.0), ParallelState.single())
    for g in opt.param_groups:
        g["lr"] = 1e-4
    mask = torch.ones(args.batch, args.seq)

    def step(tokens: torch.Tensor, labels: torch.Tensor) -> float:
        opt.zero_grad()
        per_token = model(tokens, None, None, labels=labels)
        loss = (per_token * mask).sum() / mask.sum()
        opt.backward(loss)
        opt.step()
        return float(loss)

    return model, step


def build_theirs(args, vocab: int, transformers):
    cfg = transformers.GPT2Config(
        n_layer=args.layers, n_embd=args.hidden, n_head=args.heads, n_positions=args.seq, vocab_size=vocab,
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=0, eos_token_id=0,
    )
    torch.manual_seed(1234)
    model = transformers.GPT2LMHeadModel(cfg)
    model.train()
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=1e-4, foreach=True)

    def step(tokens: torch.Tensor, labels: torch.Tensor) -> float:
        opt.zero_grad(set_to_none=True)
        # HF shifts labels internally (s - 1 predictions per row against our s): a 0.4% advantage to HF at s=256.
        out = model(input_ids=tokens, labels=tokens)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        return float(out.loss)

    return model, step


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--seq", type=int, default=256)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--vocab", type=int, default=50304, help="padded GPT-2 vocabulary")
    p.add_argument("--steps", type=int, default=12, help="timed steps per model")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--block", type=int, default=2, help="consecutive steps per model before switching")
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    transformers = import_transformers()

    ours_model, ours = build_ours(args, args.vocab)
    theirs_model, theirs = build_theirs(args, args.vocab, transformers)
    g = torch.Generator().manual_seed(0)
    data = torch.randint(0, args.vocab, (args.steps + args.warmup, args.batch, args.seq + 1), generator=g)

    def stepper(fn):
        """One training step per call, over the same batches in the same order for both sides."""
        batches = iter(range(10**9))

        def step():
            i = next(batches) % len(data)
            return fn(data[i, :, :-1], data[i, :, 1:])

        return step

    if args.steps % args.block:
        raise SystemExit(f"--steps ({args.steps}) must be a multiple of --block ({args.block})")
    comparison, _, _ = compare(stepper(ours), stepper(theirs), repeats=args.steps // args.block, block=args.block,
                               warmup=args.warmup)
    tokens = args.batch * args.seq
    n_ours = sum(p.numel() for p in ours_model.parameters())
    n_theirs = sum(p.numel() for p in theirs_model.parameters())
    print(f"\nCPU training throughput: {args.layers} layers, hidden {args.hidden}, {args.heads} heads, seq {args.seq},"
          f" batch {args.batch}, vocab {args.vocab}, {args.threads} threads, {args.steps} timed steps per side in "
          f"blocks of {args.block}, torch {torch.__version__}, transformers {transformers.__version__}; "
          f"{machine_line()}")
    print(f"{'implementation':<36}{'params':>12}{'min s/step':>12}{'median':>10}{'tokens/s (min)':>16}")
    for side, label, n in ((comparison.ours, "Megatron-DE GPTModel + optimizer", n_ours),
                           (comparison.peer, "HF GPT2LMHeadModel + AdamW", n_theirs)):
        print(f"{label:<36}{n:>12,}{side.min:>12.3f}{side.median:>10.3f}{tokens / side.min:>16.0f}")
    print(HEADER)
    print(comparison.row("s per training step"))
    print(f"ratio ours/theirs (tokens/s): {comparison.ratio_min:.2f}x of mins, {comparison.ratio_median:.2f}x of "
          f"medians; {comparison.verdict()}")


if __name__ == "__main__":
    main()

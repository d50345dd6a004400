#!/usr/bin/env python
"""Convert checkpoints between Megatron-DE and Hugging Face ``transformers`` (Megatron-LM's converter flags).

Thin command line over :mod:`megatron.interop.huggingface`:

    # training checkpoint (any TP size) -> HF directory (GPT2LMHeadModel / GPTNeoXForCausalLM /
    # LlamaForCausalLM / MegatronBert*)
    .venv/bin/python tools/checkpoint/convert.py --model-type GPT --loader megatron --saver hf \
        --load-dir runs/gpt/checkpoints --save-dir runs/gpt/hf

    # HF directory -> our ``release`` checkpoint at TP=2 (then pretrain_gpt.py --load DIR --finetune ...)
    .venv/bin/python tools/checkpoint/convert.py --model-type GPT --loader hf --saver megatron \
        --load-dir runs/gpt/hf --save-dir runs/gpt/tp2 --target-tensor-parallel-size 2

    # training checkpoint at one TP size -> ``release`` checkpoint at another (weights only)
    .venv/bin/python tools/checkpoint/convert.py --model-type GPT --loader megatron --saver megatron \
        --load-dir runs/gpt/checkpoints --save-dir runs/gpt/tp4 --target-tensor-parallel-size 4

The output directory must not exist (or be empty); it appears only once complete.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Sequence

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from megatron.interop.checkpoint import reshard_megatron  # noqa: E402
from megatron.interop.huggingface import hf_to_megatron, megatron_to_hf  # noqa: E402
from megatron.logging import setup_logging  # noqa: E402

_TOKENIZER_FLAGS = ("vocab_file", "merge_file", "tokenizer_model")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    p.add_argument("--model-type", required=True, choices=("GPT", "BERT"), help="Model family of the checkpoint.")
    p.add_argument("--loader", required=True, choices=("megatron", "hf"), help="Format of --load-dir.")
    p.add_argument("--saver", required=True, choices=("hf", "megatron"),
                   help="Format to write to --save-dir (megatron: a 'release' checkpoint; from --loader megatron, "
                   "a re-split one).")
    p.add_argument("--load-dir", required=True,
                   help="Training --save directory (holding latest_checkpointed_iteration.txt) or HF directory.")
    p.add_argument("--save-dir", required=True, help="Output directory; must not exist or be empty.")
    p.add_argument("--target-tensor-parallel-size", type=int, default=None,
                   help="--saver megatron: TP size of the written shards (default 1).")
    p.add_argument("--vocab-file", default=None,
                   help="Tokenizer vocab (vocab.json / vocab.txt) replacing the checkpoint's (e.g. moved files).")
    p.add_argument("--merge-file", default=None, help="GPT-2 BPE merges.txt replacing the checkpoint's.")
    p.add_argument("--tokenizer-model", default=None,
                   help="HF tokenizer.json (or its folder) replacing the checkpoint's.")
    p.add_argument("--make-vocab-size-divisible-by", type=int, default=None,
                   help="--saver megatron: vocabulary padding multiple (default: the exported run's, else 128).")
    return p


def main(argv: Sequence[str] | None = None) -> str:
    """Run one conversion; returns the written directory. Bad input raises ``ValueError`` naming what to change
    (the command line prints it and exits with status 2)."""
    args = build_parser().parse_args(argv)
    setup_logging()
    overrides = {k: getattr(args, k) for k in _TOKENIZER_FLAGS if getattr(args, k) is not None}
    if args.loader == "megatron" and args.saver == "hf":
        for flag in ("target_tensor_parallel_size", "make_vocab_size_divisible_by"):
            if getattr(args, flag) is not None:
                raise ValueError(f"--{flag.replace('_', '-')} applies to --saver megatron only; drop it")
        return str(megatron_to_hf(args.load_dir, args.save_dir, args.model_type, overrides))
    if args.loader == "hf" and args.saver == "megatron":
        if args.make_vocab_size_divisible_by is not None and args.make_vocab_size_divisible_by < 1:
            raise ValueError(f"--make-vocab-size-divisible-by must be >= 1, got {args.make_vocab_size_divisible_by}")
        return str(hf_to_megatron(args.load_dir, args.save_dir, args.model_type,
                                  target_tp=args.target_tensor_parallel_size or 1, tokenizer_overrides=overrides,
                                  make_vocab_size_divisible_by=args.make_vocab_size_divisible_by))
    if args.loader == "megatron" and args.saver == "megatron":
        if args.target_tensor_parallel_size is None:
            raise ValueError("--loader megatron --saver megatron re-splits a checkpoint: pass "
                             "--target-tensor-parallel-size")
        if args.make_vocab_size_divisible_by is not None:
            raise ValueError("--make-vocab-size-divisible-by: a re-split keeps the run's padding rule; drop it")
        return str(reshard_megatron(args.load_dir, args.save_dir, args.model_type, args.target_tensor_parallel_size,
                                    overrides))
    raise ValueError("--loader hf --saver hf is not a conversion; use --loader megatron or --saver megatron")


if __name__ == "__main__":
    try:
        main(sys.argv[1:])
    except (ValueError, NotImplementedError) as exc:  # user mistakes: the message says what to change
        print(f"convert.py: error: {exc}", file=sys.stderr)
        sys.exit(2)

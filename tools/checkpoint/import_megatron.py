#!/usr/bin/env python
"""Import a Megatron-LM or Megatron-DeepSpeed checkpoint's weights as a Megatron-DE ``release`` checkpoint.

Thin command line over :mod:`megatron.interop.megatron_import`:

    # Megatron-LM, --ckpt-format torch (iter_XXXXXXX/mp_rank_XX/model_optim_rng.pt) at any TP size, or
    # --ckpt-format torch_dist (iter_XXXXXXX/.metadata, *.distcp, common.pt) at any TP/PP size
    .venv/bin/python tools/checkpoint/import_megatron.py --loader megatron_lm --model-type GPT \
        --load-dir /ckpt/gpt --save-dir runs/gpt_imported --vocab-file vocab.json --merge-file merges.txt

    # Megatron-DeepSpeed (global_stepN/mp_rank_XX_model_states.pt, 'latest' file)
    .venv/bin/python tools/checkpoint/import_megatron.py --loader deepspeed --model-type GPT \
        --load-dir /ckpt/gpt_ds --save-dir runs/gpt_ds_imported

Then train or evaluate from it: ``pretrain_gpt.py --load runs/gpt_imported --finetune ...`` or
``tasks/main.py --load runs/gpt_imported ...``. Weights only (no optimizer, RNG or data-sampler state); files are
read without a full unpickle. The output directory must not exist (or be empty); it appears only once complete.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Sequence

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from megatron.interop.megatron_import import import_foreign_checkpoint  # noqa: E402
from megatron.logging import setup_logging  # noqa: E402

_TOKENIZER_FLAGS = ("vocab_file", "merge_file", "tokenizer_model")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    p.add_argument("--loader", required=True, choices=("megatron_lm", "deepspeed"),
                   help="megatron_lm: Megatron-LM --ckpt-format torch or torch_dist; deepspeed: Megatron-DeepSpeed's "
                        "DeepSpeed engine checkpoints.")
    p.add_argument("--model-type", required=True, choices=("GPT", "BERT"), help="Model family of the checkpoint.")
    p.add_argument("--load-dir", required=True, help="The --save directory of the Megatron-LM/-DeepSpeed run.")
    p.add_argument("--save-dir", required=True, help="Output directory; must not exist or be empty.")
    p.add_argument("--iteration", type=int, default=None,
                   help="Iteration to import (default: the one the tracker / 'latest' file names).")
    p.add_argument("--target-tensor-parallel-size", type=int, default=1, help="TP size of the written shards.")
    p.add_argument("--qkv-layout", choices=("interleaved", "contiguous"), default="interleaved",
                   help="Fused QKV rows per TP shard: interleaved per head (Megatron-LM, megatron-core, "
                        "Megatron-DeepSpeed before Dec 2024) or contiguous [Q|K|V] (Megatron-DeepSpeed since).")
    p.add_argument("--vocab-file", default=None, help="The run's tokenizer vocabulary (vocab.json / vocab.txt).")
    p.add_argument("--merge-file", default=None, help="The run's GPT-2 BPE merges.txt.")
    p.add_argument("--tokenizer-model", default=None, help="The run's SentencePiece / HF tokenizer model.")
    return p


def main(argv: Sequence[str] | None = None) -> str:
    """Run one import; returns the written directory. Bad input exits with one ``error:`` line."""
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging()
    overrides = {n: getattr(args, n) for n in _TOKENIZER_FLAGS if getattr(args, n) is not None}
    try:
        out = import_foreign_checkpoint(
            args.load_dir, args.save_dir, args.loader, args.model_type, target_tp=args.target_tensor_parallel_size,
            qkv_layout=args.qkv_layout, iteration=args.iteration, tokenizer_overrides=overrides or None,
        )
    except (ValueError, NotImplementedError) as exc:
        parser.exit(2, f"error: {exc}\n")
    print(out)
    return str(out)


if __name__ == "__main__":
    main()

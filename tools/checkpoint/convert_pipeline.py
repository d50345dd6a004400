#!/usr/bin/env python
"""Re-split a training checkpoint over another pipeline-parallel size, keeping it exactly resumable.

Thin command line over :func:`megatron.training.pipeline_checkpoint.convert_pipeline_checkpoint`:

    # saved with --pipeline-model-parallel-size 2 -> resume with 1 (or 4, or interleaved)
    .venv/bin/python tools/checkpoint/convert_pipeline.py --load runs/gpt/checkpoints --save runs/gpt/pp1 \
        --target-pipeline-model-parallel-size 1
    .venv/bin/python pretrain_gpt.py ... --load runs/gpt/pp1 --save runs/gpt/pp1

The tensor-parallel size is kept (tools/checkpoint/convert.py reshards TP, weights only). The output directory must
not exist (or be empty); its tracker file appears only once the checkpoint is complete.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Sequence

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from megatron.logging import run_entry_point, setup_logging  # noqa: E402
from megatron.training.pipeline_checkpoint import convert_pipeline_checkpoint  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    p.add_argument("--load", required=True, help="A training --save directory (holding the tracker file).")
    p.add_argument("--save", required=True, help="Output directory; must not exist or be empty.")
    p.add_argument("--target-pipeline-model-parallel-size", type=int, required=True,
                   help="Pipeline stages of the written checkpoint.")
    p.add_argument("--target-num-layers-per-virtual-pipeline-stage", type=int, default=None,
                   help="Layers per virtual stage of the written checkpoint (interleaved schedule); default none.")
    return p


def main(argv: Sequence[str] | None = None) -> str:
    """Convert; returns the written iteration directory."""
    setup_logging()
    args = build_parser().parse_args(argv)
    out = convert_pipeline_checkpoint(args.load, args.save, args.target_pipeline_model_parallel_size,
                                      args.target_num_layers_per_virtual_pipeline_stage)
    print(f"wrote {out}")
    return str(out)


if __name__ == "__main__":
    run_entry_point(main, sys.argv[1:])

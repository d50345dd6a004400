#!/usr/bin/env python
"""Downstream tasks (Megatron's ``tasks/main.py``): evaluate a GPT checkpoint zero-/few-shot or fine-tune a BERT
checkpoint, with every model, tokenizer, parallelism and optimizer flag of the pretraining scripts.

    python tasks/main.py --task LAMBADA --valid-data lambada_test.jsonl --load checkpoints/gpt --strict-lambada
    python tasks/main.py --task MC --mc-format hellaswag --valid-data hellaswag_val.jsonl --load checkpoints/gpt \
        --num-fewshot 10 --train-data hellaswag_train.jsonl --results-file results/hellaswag.json
    torchrun --nproc-per-node 2 tasks/main.py --task MNLI --train-data MNLI/train.tsv \
        --valid-data MNLI/dev_matched.tsv MNLI/dev_mismatched.tsv --pretrained-checkpoint checkpoints/bert \
        --epochs 3 --lr 2e-5 --micro-batch-size 8 --seq-length 128 --save checkpoints/bert_mnli

Without architecture flags the model and tokenizer come from the checkpoint's ``config.json``. Results print as a
table; ``--results-file F`` writes ``{"task": NAME, "metrics": {...}}``.
"""

from __future__ import annotations

import os
import sys
from typing import Sequence

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from megatron.logging import run_entry_point  # noqa: E402
from megatron.tasks.common import TaskResult, build_task_config, report, task_context  # noqa: E402
from megatron.tasks.registry import get_runner  # noqa: E402


def main(argv: Sequence[str] | None = None) -> TaskResult:
    """Parse the flags, run the task, print and write its results; returns them."""
    cfg, task = build_task_config(argv)
    runner = get_runner(task.task)
    with task_context(cfg, task) as ctx:
        result = runner(ctx)
        report(ctx, result)
    return result


if __name__ == "__main__":
    run_entry_point(main, sys.argv[1:])

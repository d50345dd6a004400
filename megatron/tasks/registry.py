"""Task name -> runner. Runners are imported on first use (``module:function``), so a GPT evaluation does not
load the fine-tuning code and vice versa."""

from __future__ import annotations

import importlib
from typing import Callable

from megatron.tasks.common import TaskContext, TaskResult
from megatron.tasks.config import TASK_NAMES

__all__ = ["RUNNERS", "get_runner"]

RUNNERS: dict[str, str] = {
    "LAMBADA": "megatron.tasks.zeroshot_gpt:run_lambada",
    "WIKITEXT103": "megatron.tasks.zeroshot_gpt:run_wikitext",
    "MC": "megatron.tasks.multiple_choice:run_multiple_choice",
    **{name: "megatron.tasks.glue:run_glue" for name in ("MNLI", "QQP", "QNLI", "SST2", "COLA", "STSB", "MRPC",
                                                        "RTE")},
    "RACE": "megatron.tasks.race:run_race",
}
assert set(RUNNERS) == set(TASK_NAMES), "every task name needs a runner"


def get_runner(task: str) -> Callable[[TaskContext], TaskResult]:
    """The ``run(ctx) -> TaskResult`` function of ``task``."""
    module, _, name = RUNNERS[task].partition(":")
    return getattr(importlib.import_module(module), name)

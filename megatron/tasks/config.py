"""The downstream-task section of the command line (Megatron's ``tasks/main.py`` flags) and the task names.

``TaskConfig`` joins the pretraining rooms' flags (model, tokenizer, parallel, training) in one generated parser,
so ``tasks/main.py`` takes every flag of ``pretrain_gpt.py`` / ``pretrain_bert.py`` plus these.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

__all__ = ["TaskConfig", "GPT_TASKS", "BERT_TASKS", "TASK_NAMES", "McFormat"]

GPT_TASKS = ("LAMBADA", "WIKITEXT103", "MC")
"""Zero-/few-shot evaluation of a GPT checkpoint."""
BERT_TASKS = ("MNLI", "QQP", "QNLI", "SST2", "COLA", "STSB", "MRPC", "RTE", "RACE")
"""Fine-tuning (then evaluation) of a BERT checkpoint."""
TASK_NAMES = GPT_TASKS + BERT_TASKS
# Megatron-DeepSpeed's spellings of the GLUE names.
TASK_ALIASES = {"SST-2": "SST2", "COLA": "COLA", "CoLA": "COLA", "STS-B": "STSB"}

McFormat = Literal["generic", "hellaswag", "piqa", "arc", "boolq", "winogrande", "race"]


@dataclass(kw_only=True)
class TaskConfig:
    """What to evaluate or fine-tune, on which files, and where the results go."""

    task: str | None = None
    """The task: LAMBADA, WIKITEXT103 or MC (multiple choice, see --mc-format) evaluate a GPT checkpoint;
    MNLI, QQP, QNLI, SST2, COLA, STSB, MRPC, RTE (GLUE) and RACE fine-tune a BERT checkpoint."""
    train_data: list[str] | None = None
    """Training files of a fine-tuning task (or the demonstration pool of few-shot MC)."""
    valid_data: list[str] | None = field(default=None, metadata={"nargs": "*"})
    """Evaluation files (one for LAMBADA and WIKITEXT103; several are reported one by one and pooled)."""
    pretrained_checkpoint: str | None = None
    """Checkpoint directory whose weights a fine-tuning task starts from (also accepted instead of --load by the
    evaluation tasks)."""
    use_checkpoint_args: bool = False
    """Take the model and tokenizer flags from the checkpoint's config.json (also done when no architecture flag
    is given); flags given on the command line still win."""
    epochs: int | None = None
    """Fine-tuning epochs (0 evaluates the loaded model without training)."""
    eval_micro_batch_size: int | None = None
    """Examples per evaluation micro-batch per data-parallel rank; default --micro-batch-size."""
    overlapping_eval: int = 32
    """WIKITEXT103: tokens scored per window after the first (each window sees seq_length - this of context)."""
    strict_lambada: bool = False
    """LAMBADA: the target is the whole last word (all its tokens) instead of its last token."""
    keep_last: bool = False
    """Keep the last, partial batch of a fine-tuning epoch (Megatron drops it)."""
    num_fewshot: int = 0
    """MC: demonstrations put before each question, drawn from --train-data (or the other questions) with
    --fewshot-seed."""
    fewshot_seed: int = 1234
    """MC: seed of the demonstration draw."""
    mc_format: McFormat = "generic"
    """MC: how to read --valid-data: generic JSONL {context, choices, gold} or the original files of HellaSwag,
    PIQA, ARC, BoolQ, Winogrande or RACE."""
    max_examples: int | None = None
    """Evaluate only the first this many examples of each file (smoke runs)."""
    results_file: str | None = None
    """Write {"task": NAME, "metrics": {...}} here as JSON (atomically)."""

    def __post_init__(self) -> None:
        if self.task is not None:
            self.task = TASK_ALIASES.get(self.task, self.task.upper())
            if self.task not in TASK_NAMES:
                raise ValueError(f"task {self.task!r} is unknown; choose one of {', '.join(TASK_NAMES)} (--task)")
        for name in ("overlapping_eval", "eval_micro_batch_size", "max_examples"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} ({value}) must be >= 1; change --{name.replace('_', '-')}")
        if self.num_fewshot < 0:
            raise ValueError(f"num_fewshot ({self.num_fewshot}) must be >= 0; change --num-fewshot")
        if self.epochs is not None and self.epochs < 0:
            raise ValueError(f"epochs ({self.epochs}) must be >= 0; change --epochs")

    @property
    def is_gpt_task(self) -> bool:
        return self.task in GPT_TASKS

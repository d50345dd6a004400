"""RACE fine-tuning (Megatron's ``tasks/race``): the reader of the distributed ``*.txt`` JSON files and the runner.

Each question becomes four sequences ``[CLS] A [SEP] B [SEP]``: A is the question with its blank (``_``) filled by
one option (or the option appended when there is no blank), cut to 128 tokens; B is the article, cut at the tail
by the packing rule. The label is the answer letter's index (``A`` = 0). A micro-batch counts questions, so it
holds four times as many sequences.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from megatron.tasks.common import TaskContext, TaskResult, jsonl_rows
from megatron.tasks.finetune import FinetuneTask, run_finetune
from megatron.tasks.glue import PackedDataset, clean_text, pack_pair
from megatron.tasks.metrics import accuracy

__all__ = ["NUM_CHOICES", "MAX_QA_TOKENS", "race_files", "read_race", "race_metrics", "run_race"]

NUM_CHOICES = 4
MAX_QA_TOKENS = 128
"""Tokens kept of each question-plus-option (Megatron's ``max_qa_length``)."""


def race_files(path: str) -> list[Path]:
    """``path`` itself if it is a file, else every ``*.txt`` below it (sorted, so the order is stable)."""
    p = Path(path)
    files = sorted(p.rglob("*.txt")) if p.is_dir() else [p]
    if not files:
        raise ValueError(f"{path}: no *.txt files below this directory; pass RACE's train/dev/test folders "
                         "(e.g. RACE/dev/middle) or single files")
    return files


def _question_texts(question: str, options: Sequence[str]) -> list[str]:
    if "_" in question:
        return [clean_text(question.replace("_", option)) for option in options]
    return [clean_text(f"{question} {option}") for option in options]


def _check_document(data: Any, where: str) -> tuple[str, list, list, list]:
    if not isinstance(data, dict):
        raise ValueError(f"{where}: expected a JSON object with article, questions, options, answers")
    for key, kind in (("article", str), ("questions", list), ("options", list), ("answers", list)):
        if not isinstance(data.get(key), kind):
            raise ValueError(f"{where}: key {key!r} missing or not a {kind.__name__}")
    q, o, a = data["questions"], data["options"], data["answers"]
    if not len(q) == len(o) == len(a):
        raise ValueError(f"{where}: {len(q)} questions, {len(o)} option lists and {len(a)} answers; they must match")
    for i, (opts, ans) in enumerate(zip(o, a)):
        if not isinstance(opts, list) or len(opts) != NUM_CHOICES:
            raise ValueError(f"{where}: question {i} has {len(opts) if isinstance(opts, list) else 'no'} options, "
                             f"expected a list of {NUM_CHOICES}")
        if ans not in ("A", "B", "C", "D"):
            raise ValueError(f"{where}: answer {ans!r} of question {i} is not one of A, B, C, D")
    return data["article"], q, o, a


def read_race(paths: Sequence[str], tokenizer: Any, seq_length: int, max_examples: int | None = None,
              max_qa_tokens: int = MAX_QA_TOKENS) -> PackedDataset:
    """Questions of every RACE file under ``paths`` packed as four sequences each (``max_examples`` questions per
    path at most).

    Raises:
        ValueError: naming ``file:line`` and the key, for a line that is not JSON or lacks a field, mismatched
            question/option/answer counts, other than four options, or an answer that is not A-D.
    """
    sequences, num_type0, labels = [], [], []
    for path in paths:
        taken = 0
        for file in race_files(path):
            if max_examples is not None and taken >= max_examples:
                break
            for where, data in jsonl_rows(file):
                article, questions, options, answers = _check_document(data, where)
                article_ids = tokenizer.tokenize(clean_text(article))
                if max_examples is not None:
                    questions = questions[: max_examples - taken]
                texts = [t for q, opts in zip(questions, options) for t in _question_texts(q, opts)]
                for qa_ids in tokenizer.tokenize_batch(texts):
                    ids, n0 = pack_pair(qa_ids[:max_qa_tokens], article_ids, seq_length, tokenizer.cls,
                                        tokenizer.sep)
                    sequences.append(ids)
                    num_type0.append(n0)
                labels += [ord(ans) - ord("A") for ans in answers[: len(questions)]]
                taken += len(questions)
                if max_examples is not None and taken >= max_examples:
                    break  # --max-examples reached: the rest is neither read nor checked
        if taken == 0:
            raise ValueError(f"{path}: no RACE questions in its *.txt files; check the path")
    return PackedDataset(sequences, num_type0, np.asarray(labels, dtype=np.int64), seq_length, tokenizer.pad,
                         choices=NUM_CHOICES)


def race_metrics(pred: np.ndarray, gold: np.ndarray) -> dict[str, float]:
    """Accuracy over questions, with the counts."""
    pred, gold = np.asarray(pred, dtype=np.int64), np.asarray(gold, dtype=np.int64)
    return {"accuracy": accuracy(pred, gold), "correct": float((pred == gold).sum()), "total": float(len(gold))}


def run_race(ctx: TaskContext) -> TaskResult:
    """Fine-tune a multiple-choice head on ``--train-data`` and report accuracy on every ``--valid-data`` path
    (see :func:`megatron.tasks.finetune.run_finetune`)."""
    def read(paths: Sequence[str]) -> PackedDataset:
        return read_race(paths, ctx.tokenizer, ctx.seq_length, ctx.task.max_examples)

    spec = FinetuneTask(name="RACE", num_classes=NUM_CHOICES, num_choices=NUM_CHOICES, read=read,
                        metrics=race_metrics, primary_metric="accuracy")
    return run_finetune(ctx, spec)

"""GLUE fine-tuning (Megatron's ``tasks/glue``): the readers of the eight TSV formats as GLUE distributes them, the
``[CLS] A [SEP] B [SEP]`` packing with Megatron's truncation rule, the packed dataset shared with RACE, the official
metrics per task and the runner ``run_glue`` (the loop itself is :mod:`megatron.tasks.finetune`).

Labels follow Megatron: MNLI contradiction/entailment/neutral = 0/1/2, QNLI and RTE entailment/not_entailment = 0/1,
the others 0/1 as written; STS-B keeps its float score (Megatron-DeepSpeed floors it to an int, a bug).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from megatron.logging import get_logger, log_rank0
from megatron.tasks.common import TaskContext, TaskResult
from megatron.tasks.finetune import FinetuneTask, run_finetune
from megatron.tasks.metrics import accuracy, f1_binary, matthews_corrcoef, pearson, spearman

__all__ = [
    "GlueFormat", "GLUE_FORMATS", "GlueExamples", "read_glue_tsv", "clean_text", "pack_pair", "PackedDataset",
    "build_glue_dataset", "glue_metrics", "primary_metric", "run_glue",
]

logger = get_logger(__name__)

_BINARY = {"0": 0, "1": 1}
_NLI2 = {"entailment": 0, "not_entailment": 1}
MNLI_LABELS = {"contradiction": 0, "entailment": 1, "neutral": 2}
"""Megatron's MNLI order (HF GLUE and lm-eval use entailment/neutral/contradiction = 0/1/2)."""
STSB_RANGE = (0.0, 5.0)


@dataclass(frozen=True)
class GlueFormat:
    """The columns of one task's train/dev TSV files (0-based indices; -1 = last column)."""

    columns: int | None
    """Columns of every row; None: as many as the header (MNLI: 12 in train, 16 in dev)."""
    header: bool
    """The first line is a header (every task but CoLA)."""
    text_a: int
    """Column of the first sentence."""
    text_b: int | None
    """Column of the second sentence; None for single-sentence tasks."""
    label: int
    """Column of the label."""
    labels: Mapping[str, int] | None
    """Label text -> class id; None: a float score in ``STSB_RANGE`` (regression)."""
    skip_malformed: bool = False
    """Skip (count and log) rows with the wrong number of columns instead of failing (QQP's train file has some)."""
    train_header_first: str | None = None
    """First header cell of the train/dev files where the unlabelled test file has the same column count but
    starts with ``index`` (SST-2, MRPC)."""

    @property
    def num_classes(self) -> int:
        return 1 if self.labels is None else len(self.labels)


GLUE_FORMATS: dict[str, GlueFormat] = {
    "MNLI": GlueFormat(None, True, 8, 9, -1, MNLI_LABELS),
    "QQP": GlueFormat(6, True, 3, 4, 5, _BINARY, skip_malformed=True),
    "QNLI": GlueFormat(4, True, 1, 2, 3, _NLI2),
    "RTE": GlueFormat(4, True, 1, 2, 3, _NLI2),
    "SST2": GlueFormat(2, True, 0, None, 1, _BINARY, train_header_first="sentence"),
    "COLA": GlueFormat(4, False, 3, None, 1, _BINARY),
    "MRPC": GlueFormat(5, True, 3, 4, 0, _BINARY, train_header_first="Quality"),
    "STSB": GlueFormat(10, True, 7, 8, -1, None),
}
# The MNLI test files have 10 columns (no label columns); train has 12 and dev 16.
_MNLI_MIN_COLUMNS = 11
_TEST_HINT = "a GLUE test file has no labels; pass the labelled train.tsv / dev*.tsv files"


@dataclass
class GlueExamples:
    """The rows of one or more GLUE files: sentence(s) and labels (int class ids, or float scores for STS-B)."""

    text_a: list[str]
    text_b: list[str] | None
    labels: np.ndarray
    skipped: int = 0
    """Malformed rows skipped (QQP only)."""


def _header_columns(task: str, fmt: GlueFormat, header: list[str], path: str) -> int:
    """The column count the data rows must have, after checking that ``header`` is not a test file's."""
    n = len(header)
    if fmt.columns is None:
        if n < _MNLI_MIN_COLUMNS:
            raise ValueError(f"{path}:1: the {task} header has {n} columns, no label column; {_TEST_HINT}")
        return n
    if fmt.train_header_first and header[0].strip().lower() == "index":
        raise ValueError(f"{path}:1: the header starts with 'index', not {fmt.train_header_first!r}; {_TEST_HINT}")
    if n != fmt.columns:
        hint = f"; {_TEST_HINT}" if n < fmt.columns else ""
        raise ValueError(f"{path}:1: the {task} header has {n} columns, expected {fmt.columns}{hint}")
    return n


def _label(task: str, fmt: GlueFormat, row: list[str], path: str, lineno: int) -> float | int:
    col = fmt.label if fmt.label >= 0 else len(row) + fmt.label
    cell = row[col].strip()
    if fmt.labels is not None:
        if cell not in fmt.labels:
            raise ValueError(f"{path}:{lineno}: label {cell!r} in column {col + 1} is not a {task} label "
                             f"({', '.join(fmt.labels)}); check --task and the file")
        return fmt.labels[cell]
    try:
        score = float(cell)
    except ValueError:
        raise ValueError(f"{path}:{lineno}: score {cell!r} in column {col + 1} is not a number; check --task "
                         "and the file") from None
    lo, hi = STSB_RANGE
    if not lo <= score <= hi:
        raise ValueError(f"{path}:{lineno}: score {score} in column {col + 1} is outside [{lo}, {hi}]")
    return score


def read_glue_tsv(task: str, path: str, max_examples: int | None = None) -> GlueExamples:
    """Read one GLUE train/dev TSV of ``task`` (a key of :data:`GLUE_FORMATS`): every row, in file order.

    Raises:
        ValueError: naming ``file:line``: a row with the wrong column count (how many were expected), a label
            outside the task's label set, a non-numeric or out-of-range STS-B score, or a test file (no labels).
    """
    fmt = GLUE_FORMATS[task]
    text_a: list[str] = []
    text_b: list[str] | None = [] if fmt.text_b is not None else None
    labels: list[float | int] = []
    skipped: list[int] = []
    expected = fmt.columns
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            row = line.rstrip("\r\n").split("\t")
            if lineno == 1 and fmt.header:
                expected = _header_columns(task, fmt, row, path)
                continue
            if not line.strip():
                continue
            if len(row) != expected:
                if fmt.skip_malformed:
                    skipped.append(lineno)
                    continue
                origin = " (as the header)" if fmt.columns is None else ""
                hint = f" ({task} files have no header; {_TEST_HINT})" if lineno == 1 and not fmt.header else ""
                raise ValueError(f"{path}:{lineno}: expected {expected} tab-separated columns{origin}, found "
                                 f"{len(row)}{hint}")
            labels.append(_label(task, fmt, row, path, lineno))
            text_a.append(row[fmt.text_a])
            if text_b is not None:
                text_b.append(row[fmt.text_b])
            if max_examples is not None and len(labels) >= max_examples:
                break
    if not labels:
        raise ValueError(f"{path}: no {task} examples in this file; check the path")
    if skipped:
        log_rank0(logger, "%s: skipped %d malformed rows (not %d columns), first at line %d", path, len(skipped),
                  expected, skipped[0])
    dtype = np.float32 if fmt.labels is None else np.int64
    return GlueExamples(text_a, text_b, np.asarray(labels, dtype=dtype), len(skipped))


# ---- packing ------------------------------------------------------------------------------------------------------
_WHITESPACE = re.compile(r"\s+")


def clean_text(text: str) -> str:
    """Megatron's ``clean_text``: newlines to spaces, whitespace runs to one space, ``" . "`` to ``". "``."""
    text = _WHITESPACE.sub(" ", text.replace("\n", " "))
    while " . " in text:  # " . . " overlaps itself: repeat until none is left
        text = text.replace(" . ", ". ")
    return text


def pack_pair(a_ids: Sequence[int], b_ids: Sequence[int] | None, seq_length: int, cls_id: int,
              sep_id: int) -> tuple[list[int], int]:
    """``[CLS] A [SEP] B [SEP]`` cut to ``seq_length`` by Megatron's rule; returns ``(ids, num_type0)``.

    ``[CLS] A [SEP]`` is type 0 and ``B`` type 1. When the framed pair reaches ``seq_length`` it is cut to
    ``seq_length - 1`` from the tail (B loses tokens first, then A; not longest-first), and a closing ``[SEP]``
    follows whenever there is a B or a cut (type 1 with a B, else 0). Types are a run of zeros then ones, so
    ``num_type0`` (the zeros) describes them.
    """
    if seq_length < 2:
        raise ValueError(f"seq_length ({seq_length}) must be >= 2 to hold [CLS] and [SEP]")
    ids = [cls_id, *a_ids, sep_id]
    num_type0 = len(ids)
    if b_ids is not None:
        ids.extend(b_ids)
    cut = len(ids) >= seq_length
    if cut:
        ids = ids[: seq_length - 1]
        num_type0 = min(num_type0, len(ids))
    if b_ids is not None or cut:
        ids.append(sep_id)
        if b_ids is None:
            num_type0 = len(ids)
    return ids, num_type0


class PackedDataset:
    """Packed examples of a fine-tuning task: ``choices`` sequences per example (1, or 4 for RACE) and a label.

    Items are padded to ``seq_length`` (ids and types with the pad id, as Megatron); :meth:`collate` stacks them
    and cuts the batch to its longest real sequence, which leaves every real position's output unchanged
    (padded keys are masked) and saves the work of attending over padding.

    Args:
        sequences: token ids of each sequence, example-major (example i holds ``sequences[i*choices:(i+1)*choices]``).
        num_type0: leading type-0 tokens of each sequence (the rest are type 1).
        labels: one per example, int class ids or float scores.
    """

    def __init__(self, sequences: Sequence[Sequence[int]], num_type0: Sequence[int], labels: np.ndarray,
                 seq_length: int, pad_id: int, choices: int = 1) -> None:
        if len(sequences) != len(labels) * choices or len(num_type0) != len(sequences):
            raise ValueError(f"{len(sequences)} sequences / {len(num_type0)} type counts do not make "
                             f"{len(labels)} examples of {choices} choices")
        lengths = np.fromiter((len(s) for s in sequences), dtype=np.int64, count=len(sequences))
        if len(lengths) and lengths.max() > seq_length:
            raise ValueError(f"a packed sequence has {lengths.max()} tokens > seq_length {seq_length}")
        self.offsets = np.concatenate([[0], np.cumsum(lengths)])
        self.ids = (np.concatenate([np.asarray(s, dtype=np.int64) for s in sequences]) if len(sequences)
                    else np.zeros(0, dtype=np.int64))
        self.num_type0 = np.asarray(num_type0, dtype=np.int64)
        self.labels = np.asarray(labels)
        self.seq_length, self.pad_id, self.choices = seq_length, pad_id, choices
        # Megatron pads the types with the pad id too (0 in BERT vocabularies); an id that is no valid type would
        # break the type embedding, and padded positions never reach a real one, so 0 stands in for it.
        self.type_pad = pad_id if pad_id in (0, 1) else 0

    def __len__(self) -> int:
        return len(self.labels)

    def _sequence(self, j: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        s = self.seq_length
        real = self.ids[self.offsets[j]: self.offsets[j + 1]]
        tokens = np.full(s, self.pad_id, dtype=np.int64)
        tokens[: len(real)] = real
        types = np.full(s, self.type_pad, dtype=np.int64)
        types[: len(real)] = 1
        types[: self.num_type0[j]] = 0
        mask = np.zeros(s, dtype=np.int64)
        mask[: len(real)] = 1
        return tokens, types, mask

    def __getitem__(self, i: int) -> dict[str, Any]:
        """``tokens``, ``types``, ``padding_mask``: ``[s]`` (``[choices, s]`` with several choices); ``label``."""
        parts = [self._sequence(i * self.choices + c) for c in range(self.choices)]
        tokens, types, mask = (np.stack(x) if self.choices > 1 else x[0] for x in zip(*parts))
        return {"tokens": tokens, "types": types, "padding_mask": mask, "label": self.labels[i]}

    @staticmethod
    def collate(items: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        """Stack items into ``[b, s']`` (``[b, choices, s']``) tensors, ``s'`` the longest real length."""
        mask = torch.from_numpy(np.stack([it["padding_mask"] for it in items]))
        longest = max(int(mask.sum(-1).max()), 1)
        batch = {k: torch.from_numpy(np.stack([it[k] for it in items]))[..., :longest]
                 for k in ("tokens", "types")}
        batch["padding_mask"] = mask[..., :longest]
        batch["labels"] = torch.from_numpy(np.asarray([it["label"] for it in items]))
        return batch

    @classmethod
    def concat(cls, parts: Sequence[PackedDataset]) -> PackedDataset:
        """One dataset holding the examples of ``parts`` in order (several --train-data files)."""
        if len(parts) == 1:
            return parts[0]
        first = parts[0]
        seqs = [p.ids[p.offsets[j]: p.offsets[j + 1]] for p in parts for j in range(len(p.offsets) - 1)]
        return cls(seqs, np.concatenate([p.num_type0 for p in parts]), np.concatenate([p.labels for p in parts]),
                   first.seq_length, first.pad_id, first.choices)


def build_glue_dataset(task: str, path: str, tokenizer: Any, seq_length: int,
                       max_examples: int | None = None) -> PackedDataset:
    """Read, clean, tokenize and pack one GLUE file of ``task``."""
    ex = read_glue_tsv(task, path, max_examples)
    a_ids = tokenizer.tokenize_batch([clean_text(t) for t in ex.text_a])
    b_ids = tokenizer.tokenize_batch([clean_text(t) for t in ex.text_b]) if ex.text_b is not None else None
    packed = [pack_pair(a, b_ids[i] if b_ids is not None else None, seq_length, tokenizer.cls, tokenizer.sep)
              for i, a in enumerate(a_ids)]
    return PackedDataset([p[0] for p in packed], [p[1] for p in packed], ex.labels, seq_length, tokenizer.pad)


# ---- metrics ------------------------------------------------------------------------------------------------------
def glue_metrics(task: str, pred: np.ndarray, gold: np.ndarray) -> dict[str, float]:
    """GLUE's official metrics of ``task``: accuracy (+ F1 for QQP/MRPC, + Matthews for CoLA); STS-B Pearson,
    Spearman and their mean ``corr``. ``correct``/``total`` are counts (total only for STS-B)."""
    n = float(len(gold))
    if GLUE_FORMATS[task].labels is None:
        p, s = pearson(pred, gold), spearman(pred, gold)
        return {"pearson": p, "spearman": s, "corr": (p + s) / 2, "total": n}
    pred, gold = np.asarray(pred, dtype=np.int64), np.asarray(gold, dtype=np.int64)
    out = {"accuracy": accuracy(pred, gold), "correct": float((pred == gold).sum()), "total": n}
    if task in ("QQP", "MRPC"):
        out["f1"] = f1_binary(pred, gold)
    if task == "COLA":
        out["mcc"] = matthews_corrcoef(pred, gold)
    return out


def primary_metric(task: str) -> str:
    """The metric that picks the best epoch (Megatron-DeepSpeed's gather script): CoLA mcc, STS-B Spearman,
    otherwise accuracy (also for QQP and MRPC, whose F1 is reported beside it)."""
    return {"COLA": "mcc", "STSB": "spearman"}.get(task, "accuracy")


def run_glue(ctx: TaskContext) -> TaskResult:
    """Fine-tune on ``--train-data`` and evaluate every ``--valid-data`` file after each epoch (see
    :func:`megatron.tasks.finetune.run_finetune`)."""
    task = ctx.task.task
    if task not in GLUE_FORMATS:
        raise ValueError(f"run_glue got task {task!r}; GLUE tasks are {', '.join(GLUE_FORMATS)}")

    def read(paths: Sequence[str]) -> PackedDataset:
        return PackedDataset.concat([build_glue_dataset(task, path, ctx.tokenizer, ctx.seq_length,
                                                        ctx.task.max_examples) for path in paths])

    spec = FinetuneTask(name=task, num_classes=GLUE_FORMATS[task].num_classes, read=read,
                        metrics=lambda pred, gold: glue_metrics(task, pred, gold), primary_metric=primary_metric(task))
    return run_finetune(ctx, spec)

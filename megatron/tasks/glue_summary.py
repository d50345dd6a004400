"""Megatron-DeepSpeed's GLUE aggregation (``ds_finetune_gather_result.py``) over a directory of results files:
per run the best epoch, per task the ``median_high`` over seeds (with the sample stdev), and the single GLUE score,
the mean of nine numbers: MNLI-m, MNLI-mm, QQP, QNLI, SST-2, CoLA, STS-B, MRPC, RTE (all x100).

Results files are what ``tasks/main.py --results-file`` writes for a GLUE task; the naming convention of the
recipes is ``DIR/{TASK}_lr{LR}_seed{SEED}.json`` (``MNLI_lr2e-5_seed1234.json``). The task, learning rate and seed
are read from the file (``task``, ``details.lr``, ``details.seed``); the name is only consulted for files that
lack them (hand-made ones). Files of other tasks, or without a ``task`` key, are skipped.

Metrics: the best epoch is picked by accuracy (MNLI: pooled over matched + mismatched, then m and mm are read at
that epoch), CoLA by Matthews correlation, STS-B by Spearman correlation. QQP and MRPC are averaged by accuracy,
as Megatron-DeepSpeed does; ``qqp_mrpc_metric="f1"`` uses F1 instead, as the BERT paper's average does.
"""

from __future__ import annotations

import json
import math
import re
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

__all__ = ["RESULTS_NAME", "AVERAGE_ENTRIES", "RunResult", "read_runs", "summarize", "summarize_dir",
           "format_summary", "results_name"]

RESULTS_NAME = "{task}_lr{lr}_seed{seed}.json"
"""Results file name of one run (``task`` as --task spells it: MNLI QQP QNLI SST2 COLA STSB MRPC RTE)."""
_NAME = re.compile(r"^(?P<task>[A-Za-z0-9-]+)_lr(?P<lr>[0-9.]+(?:[eE][+-]?[0-9]+)?)_seed(?P<seed>[0-9]+)\.json$")
_GLUE = ("MNLI", "QQP", "QNLI", "SST2", "COLA", "STSB", "MRPC", "RTE")
AVERAGE_ENTRIES = ("MNLI-m", "MNLI-mm", "QQP", "QNLI", "SST2", "COLA", "STSB", "MRPC", "RTE")
"""The nine numbers of the GLUE score, in the paper's column order."""
PairMetric = Literal["accuracy", "f1"]


def results_name(task: str, lr: str, seed: int) -> str:
    """``{task}_lr{lr}_seed{seed}.json``."""
    return RESULTS_NAME.format(task=task, lr=lr, seed=seed)


@dataclass
class RunResult:
    """One fine-tuning run: its task, learning rate, seed and per-epoch records (``details["epochs"]``)."""

    task: str
    lr: float
    seed: int
    path: str
    epochs: list[dict[str, Any]] = field(default_factory=list)


def read_runs(directory: str | Path) -> list[RunResult]:
    """Every GLUE results file (``*.json``) directly in ``directory``, sorted by name.

    Raises:
        ValueError: a file that is not JSON, or a GLUE result whose lr/seed is neither inside nor in its name.
    """
    if not Path(directory).is_dir():
        raise ValueError(f"{directory} is not a directory of results files")
    runs = []
    for path in sorted(Path(directory).glob("*.json")):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}: not valid JSON ({exc})") from None
        task = data.get("task") if isinstance(data, dict) else None
        if task not in _GLUE:
            continue
        details = data.get("details") or {}
        lr, seed = details.get("lr"), details.get("seed")
        if lr is None or seed is None:
            m = _NAME.match(path.name)
            if m is None:
                raise ValueError(f"{path}: no details.lr/details.seed and the name does not follow "
                                 f"{RESULTS_NAME}; rename it (e.g. {results_name(task, '2e-5', 1234)})")
            lr, seed = float(m["lr"]), int(m["seed"])
        epochs = details.get("epochs") or [{"epoch": None, "metrics": data.get("metrics", {}),
                                            "per_file": data.get("per_file", {})}]
        runs.append(RunResult(task, float(lr), int(seed), str(path), list(epochs)))
    return runs


def _selection_metric(task: str, pair_metric: PairMetric) -> str:
    return {"COLA": "mcc", "STSB": "spearman", "QQP": pair_metric, "MRPC": pair_metric}.get(task, "accuracy")


def _value(record: dict[str, Any], metric: str, where: str) -> float:
    if metric not in record.get("metrics", {}):
        raise ValueError(f"{where}: epoch {record.get('epoch')} has no {metric!r} metric "
                         f"(has {sorted(record.get('metrics', {}))})")
    value = float(record["metrics"][metric])
    return value if math.isfinite(value) else -math.inf


def _mnli_parts(record: dict[str, Any], where: str) -> tuple[float, float]:
    """MNLI-m and MNLI-mm accuracy of an epoch, from the files whose names hold "matched" / "mismatched"."""
    per_file = record.get("per_file") or {}
    mm = [v for k, v in per_file.items() if "mismatched" in k.lower()]
    m = [v for k, v in per_file.items() if "matched" in k.lower() and "mismatched" not in k.lower()]
    if len(m) != 1 or len(mm) != 1:
        raise ValueError(f"{where}: MNLI needs one dev_matched and one dev_mismatched file in per_file, found "
                         f"{sorted(per_file)}; evaluate on both (--valid-data dev_matched.tsv dev_mismatched.tsv)")
    return m[0]["accuracy"], mm[0]["accuracy"]


def summarize(runs: list[RunResult], pair_metric: PairMetric = "accuracy") -> dict[str, Any]:
    """Aggregate runs of one learning rate: ``{"tasks": {task: ...}, "entries": {name: x100}, "average"}``.

    ``average`` is None unless all nine entries are present (``missing`` lists the absent ones).
    """
    tasks: dict[str, Any] = {}
    entries: dict[str, float] = {}
    by_task: dict[str, list[RunResult]] = {}
    for run in runs:
        by_task.setdefault(run.task, []).append(run)
    for task in _GLUE:
        if task not in by_task:
            continue
        metric = _selection_metric(task, pair_metric)
        per_seed = []
        for run in sorted(by_task[task], key=lambda r: r.seed):
            best = max(run.epochs, key=lambda rec: _value(rec, metric, run.path))  # first of equal epochs
            per_seed.append((run, best, 100.0 * _value(best, metric, run.path)))
        scores = [s for _, _, s in per_seed]
        median = statistics.median_high(scores)
        run, best, _ = next(p for p in per_seed if p[2] == median)
        tasks[task] = {
            "metric": metric, "median": median, "stdev": statistics.stdev(scores) if len(scores) > 1 else 0.0,
            "seeds": [r.seed for r, _, _ in per_seed], "scores": scores,
            "best_epochs": [b.get("epoch") for _, b, _ in per_seed], "median_seed": run.seed,
        }
        if task == "MNLI":
            m, mm = _mnli_parts(best, run.path)
            entries["MNLI-m"], entries["MNLI-mm"] = 100.0 * m, 100.0 * mm
        else:
            entries[task] = median
    missing = [name for name in AVERAGE_ENTRIES if name not in entries]
    return {"pair_metric": pair_metric, "tasks": tasks, "entries": entries, "missing": missing,
            "average": None if missing else sum(entries[n] for n in AVERAGE_ENTRIES) / len(AVERAGE_ENTRIES)}


def summarize_dir(directory: str | Path, lr: float | None = None,
                  pair_metric: PairMetric = "accuracy") -> dict[str, dict[str, Any]]:
    """``{lr: summary}`` for ``lr`` only, or for every learning rate found in ``directory``."""
    runs = read_runs(directory)
    if not runs:
        raise ValueError(f"{directory}: no GLUE results files (*.json with a GLUE \"task\")")
    found = sorted({r.lr for r in runs})
    lrs = found if lr is None else [x for x in found if math.isclose(x, lr, rel_tol=1e-9)]
    if not lrs:
        raise ValueError(f"{directory}: no runs at lr {lr:g} (found {', '.join(f'{x:g}' for x in found)}); "
                         "change --lr")
    return {f"{x:g}": summarize([r for r in runs if r.lr == x], pair_metric) for x in lrs}


def format_summary(lr: str, summary: dict[str, Any]) -> str:
    """A markdown table: one row per task (median x100 +- stdev over seeds), the nine entries and the score."""
    lines = [f"### GLUE, lr {lr} (QQP/MRPC by {summary['pair_metric']})", "",
             "| task | metric | median x100 | stdev | seeds | best epoch per seed |", "|---|---|---|---|---|---|"]
    for task, t in summary["tasks"].items():
        lines.append(f"| {task} | {t['metric']} | {t['median']:.2f} | {t['stdev']:.2f} | {len(t['seeds'])} | "
                     f"{', '.join(str(e) for e in t['best_epochs'])} |")
    lines += ["", "| " + " | ".join(AVERAGE_ENTRIES) + " | average |", "|---" * (len(AVERAGE_ENTRIES) + 1) + "|"]
    cells = [f"{summary['entries'][n]:.2f}" if n in summary["entries"] else "-" for n in AVERAGE_ENTRIES]
    avg = f"{summary['average']:.2f}" if summary["average"] is not None else "n/a"
    lines.append("| " + " | ".join(cells) + f" | {avg} |")
    if summary["missing"]:
        lines.append(f"\nno average: missing {', '.join(summary['missing'])}")
    return "\n".join(lines)

"""Average zero-/few-shot accuracies over a directory of results files, as the paper's "Avg." over 19 tasks.

Reads every ``*.json`` under ``--results-dir`` (recursively) and prints a markdown table, one row per task plus the
mean, in percent::

    python tools/average_task_results.py --results-dir results/0shot --output results/0shot/average.md

Two layouts are understood:

* ``tasks/main.py --results-file DIR/NAME.json``: ``{"task": ..., "metrics": {...}}``; the task is the file name
  (``hellaswag.json`` -> hellaswag), the metric ``accuracy_norm`` or ``accuracy``;
* lm-evaluation-harness output (``lm_eval ... --output_path DIR``): ``{"results": {task: {"acc,none": ...}}}``.

The metric per task follows the Megatron-DeepSpeed data-efficiency evaluation: acc_norm for hellaswag, piqa,
arc_challenge, arc_easy and openbookqa; f1 for record; exact_match for triviaqa and webqs; accuracy otherwise.
Files without such a metric (e.g. WikiText perplexity) are listed as skipped, not averaged.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path
from typing import Any, Optional

from megatron.config import add_dataclass_arguments, dataclass_from_namespace

PAPER_TASKS = ("hellaswag", "lambada", "triviaqa", "webqs", "winogrande", "piqa", "arc_challenge", "arc_easy",
               "openbookqa", "race", "boolq", "copa", "rte", "wsc", "multirc", "record", "anli_r1", "anli_r2",
               "anli_r3")
"""The 19 tasks of the paper's average (Megatron-DeepSpeed's ds_evalharness_gather_result "Avg. 0-18")."""
# Task -> metric names to look for, best first: ours (tasks/main.py), then lm-eval's.
NORM_TASKS = ("hellaswag", "piqa", "arc_challenge", "arc_easy", "openbookqa")
_METRICS = {**{t: ("accuracy_norm", "acc_norm") for t in NORM_TASKS}, "record": ("f1",),
            "triviaqa": ("exact_match",), "webqs": ("exact_match",)}
_DEFAULT = ("accuracy", "acc")
# lm-eval names its LAMBADA variants; the paper's "lambada" is lambada_openai.
_ALIASES = {"lambada_openai": "lambada"}


@dataclasses.dataclass(kw_only=True)
class AverageConfig:
    """Where the results files are and where the table goes."""

    results_dir: str
    """Directory searched recursively for *.json results files."""
    output: Optional[str] = None
    """Also write the markdown table to this file."""


def _metric(task: str, metrics: dict[str, Any]) -> tuple[str, float] | None:
    """``(name, value)`` of the metric the paper averages for ``task``; lm-eval's ``"acc,none"`` keys match by the
    name before the comma."""
    plain = {key.split(",")[0]: value for key, value in metrics.items() if isinstance(value, (int, float))}
    for name in _METRICS.get(task, _DEFAULT):
        if name in plain:
            return name, float(plain[name])
    return None


def collect(results_dir: str) -> tuple[dict[str, tuple[str, float, str]], list[str]]:
    """``({task: (metric, value, file)}, skipped files)`` over every JSON file under ``results_dir``.

    Raises:
        ValueError: a file is not valid JSON, or two files report the same task.
    """
    found: dict[str, tuple[str, float, str]] = {}
    skipped = []
    for path in sorted(Path(results_dir).rglob("*.json")):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}: not valid JSON ({exc.msg}); remove it from {results_dir}") from None
        if isinstance(data, dict) and isinstance(data.get("results"), dict):  # lm-eval
            entries = [(_ALIASES.get(t, t), m, path) for t, m in data["results"].items() if isinstance(m, dict)]
        elif isinstance(data, dict) and isinstance(data.get("metrics"), dict):  # tasks/main.py
            entries = [(_ALIASES.get(path.stem.lower(), path.stem.lower()), data["metrics"], path)]
        else:
            skipped.append(str(path))
            continue
        for task, metrics, source in entries:
            metric = _metric(task, metrics)
            if metric is None:
                skipped.append(f"{source} ({task})")
            elif task in found:
                raise ValueError(f"task {task} is reported twice: {found[task][2]} and {source}; keep one")
            else:
                found[task] = (*metric, str(source))
    return found, skipped


def markdown_table(found: dict[str, tuple[str, float, str]]) -> str:
    """One row per task (paper tasks first, in the paper's order) and the mean, values in percent."""
    order = [t for t in PAPER_TASKS if t in found] + sorted(t for t in found if t not in PAPER_TASKS)
    lines = ["| task | metric | value |", "|---|---|---|"]
    lines += [f"| {t} | {found[t][0]} | {100 * found[t][1]:.2f} |" for t in order]
    mean = 100 * sum(v for _, v, _ in found.values()) / len(found)
    lines.append(f"| **average ({len(found)} tasks)** | | **{mean:.2f}** |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Average task accuracies (markdown table).")
    add_dataclass_arguments(parser, AverageConfig, title="average")
    args = parser.parse_args(argv)
    if not hasattr(args, "results_dir"):
        parser.error("the following arguments are required: --results-dir")
    cfg = dataclass_from_namespace(AverageConfig, args)
    try:
        found, skipped = collect(cfg.results_dir)
        if not found:
            raise ValueError(f"no accuracy results under {cfg.results_dir}; pass the --results-file directory")
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    table = markdown_table(found)
    missing = [t for t in PAPER_TASKS if t not in found]
    notes = []
    if missing:
        notes.append(f"{19 - len(missing)} of the paper's 19 tasks present; missing: {', '.join(missing)}")
    if skipped:
        notes.append(f"not averaged (no accuracy metric): {', '.join(skipped)}")
    text = table + "".join(f"\n\n{n}" for n in notes) + "\n"
    print(text, end="")
    if cfg.output:
        Path(cfg.output).parent.mkdir(parents=True, exist_ok=True)
        Path(cfg.output).write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())

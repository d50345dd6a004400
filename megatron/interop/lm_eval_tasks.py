"""lm-evaluation-harness task definitions over local files: the YAML of a multiple-choice task whose rows are a
local JSONL file, so an exported model is scored by lm-eval without downloading a benchmark."""

from __future__ import annotations

import json
from typing import Sequence

__all__ = ["multiple_choice_task_yaml"]


def multiple_choice_task_yaml(task: str, data_file: str, doc_to_text: str, doc_to_choice: str = "choices",
                              doc_to_target: str = "gold", metrics: Sequence[str] = ("acc",)) -> str:
    """lm-eval 0.4's YAML for ``task``: rows of the JSONL ``data_file`` (its test split), the prompt the Jinja
    template ``doc_to_text`` (e.g. ``"{{context}}"``), the choices the list field ``doc_to_choice``, the gold index
    the field ``doc_to_target``, and each of ``metrics`` (``acc``, ``acc_norm``) averaged, higher is better."""
    lines = [f"task: {task}", "dataset_path: json", "dataset_kwargs:", "  data_files:", f"    test: {data_file}",
             "test_split: test", "output_type: multiple_choice", f"doc_to_text: {json.dumps(doc_to_text)}",
             f"doc_to_choice: {doc_to_choice}", f"doc_to_target: {doc_to_target}", "metric_list:"]
    for metric in metrics:
        lines += [f"  - metric: {metric}", "    aggregation: mean", "    higher_is_better: true"]
    return "\n".join(lines) + "\n"

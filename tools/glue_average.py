"""The single GLUE score of a grid of fine-tuning runs (Megatron-DeepSpeed's ``ds_finetune_gather_result.py``).
Thin CLI over ``megatron.tasks.glue_summary``::

    python tools/glue_average.py runs/glue                     # every learning rate found, QQP/MRPC by accuracy
    python tools/glue_average.py runs/glue --lr 2e-5 --qqp-mrpc-metric f1 --output runs/glue/summary.json

Reads the ``--results-file`` JSON files of ``tasks/main.py`` in the directory (named ``{TASK}_lr{LR}_seed{SEED}.json``
by the recipes). Per run the best epoch, per task the median_high over seeds (+- sample stdev), MNLI m/mm of the
median seed, and the mean of nine numbers: MNLI-m, MNLI-mm, QQP, QNLI, SST-2, CoLA (Matthews), STS-B (Spearman),
MRPC, RTE, all x100. QQP and MRPC count their accuracy, as Megatron-DeepSpeed does (``--qqp-mrpc-metric f1`` for
the BERT paper's choice). Prints a markdown table per learning rate and writes them as JSON (``--output``,
default ``DIR/glue_average.json``).
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass
from typing import Literal, Optional

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from megatron.config import add_dataclass_arguments, dataclass_from_namespace  # noqa: E402
from megatron.tasks.common import write_json_atomic  # noqa: E402
from megatron.tasks.glue_summary import format_summary, summarize_dir  # noqa: E402


@dataclass(kw_only=True)
class GlueAverageConfig:
    """Which runs to aggregate and how."""

    results_dir: str
    """Directory of results files ({TASK}_lr{LR}_seed{SEED}.json)."""
    lr: Optional[float] = None
    """Aggregate only the runs of this learning rate (default: each learning rate found, one table each)."""
    qqp_mrpc_metric: Literal["accuracy", "f1"] = "accuracy"
    """Metric of QQP and MRPC in the best-epoch choice and the average (Megatron-DeepSpeed: accuracy)."""
    output: Optional[str] = None
    """JSON summary to write (default RESULTS_DIR/glue_average.json)."""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results_dir", help="directory of results files ({TASK}_lr{LR}_seed{SEED}.json)")
    add_dataclass_arguments(parser, GlueAverageConfig, title="aggregation", exclude=("results_dir",))
    ns = parser.parse_args(argv)
    cfg = dataclass_from_namespace(GlueAverageConfig, ns)
    try:
        summaries = summarize_dir(cfg.results_dir, cfg.lr, cfg.qqp_mrpc_metric)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print("\n\n".join(format_summary(lr, s) for lr, s in summaries.items()))
    output = cfg.output or os.path.join(cfg.results_dir, "glue_average.json")
    write_json_atomic(output, summaries)
    print(f"\nsummary written to {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

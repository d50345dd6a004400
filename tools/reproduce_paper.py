#!/usr/bin/env python
"""Reproduce the DeepSpeed Data Efficiency tables at small scale, in one command.

    python tools/reproduce_paper.py --tables 1 2 3 4 6 7 --scale cpu --seeds 2 --output-dir runs/paper
    python tools/reproduce_paper.py --tables 7 --scale tiny --seeds 1 --output-dir runs/smoke   # seconds per case
    python tools/reproduce_paper.py --tables 7 --scale cpu --dry-run                             # the plan only
    python tools/reproduce_paper.py --tables 1 --input my_docs.jsonl --output-dir runs/mine      # your documents

Every case is an ordinary run of pretrain_gpt.py / pretrain_bert.py / tasks/main.py; the harness prints each
command line and stores it in ``DIR/runs/<run>/seed<s>/commands.sh``. Rerunning the same command skips finished
cases and resumes an interrupted one from its checkpoint. Outputs: ``DIR/tables.md`` (the paper's tables with the
measured numbers beside the paper's, and the claims), ``DIR/results.json`` and PNG plots in ``DIR``.
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from megatron.reproduce.harness import Harness, HarnessOptions  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tables", type=int, nargs="+", default=[1, 2, 3, 4, 6, 7],
                   help="paper tables to reproduce (1, 2, 3, 4, 6, 7)")
    p.add_argument("--scale", default="cpu", choices=("tiny", "cpu", "gpu"),
                   help="tiny: seconds per case (smoke runs); cpu: two cores, Table 7 within an hour; gpu: 125M")
    p.add_argument("--seeds", type=int, default=2, help="seeds per case (the spread over seeds is the noise)")
    p.add_argument("--output-dir", default=None, help="where data, runs and the report go (required unless "
                   "--dry-run)")
    p.add_argument("--input", nargs="+", default=None, metavar="F.jsonl",
                   help="train on these JSONL documents ({\"text\": ...} per line) instead of the installed corpora")
    p.add_argument("--cases", nargs="+", default=None, metavar="TABLE.CASE",
                   help="only these cases of the tables, e.g. 7.1 7.8 (default: all)")
    p.add_argument("--dry-run", action="store_true", help="print the plan (runs, steps, tokens, time) and exit")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.output_dir is None and not args.dry_run:
        build_parser().error("--output-dir is required (or pass --dry-run)")
    try:
        harness = Harness(HarnessOptions(tables=args.tables, scale=args.scale, seeds=args.seeds,
                                         output_dir=args.output_dir or "", inputs=args.input,
                                         dry_run=args.dry_run, cases=args.cases))
        print(harness.plan())
        if args.dry_run:
            return 0
        results = harness.run_all()
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    failed = [f"{key} seed {s}" for key, r in results["runs"].items() for s, v in r["seeds"].items()
              if v.get("status") == "failed"]
    print(f"\nreport: {os.path.join(args.output_dir, 'tables.md')}; results: "
          f"{os.path.join(args.output_dir, 'results.json')}")
    if failed:
        print(f"failed: {', '.join(failed)} (see their train.log / eval.log; rerun to retry)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

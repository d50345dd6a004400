"""Merging ``.bin/.idx`` pairs (``tools/merge_datasets.py``): find the pairs in a folder, concatenate them.

The format itself is ``megatron.data.indexed_dataset``'s; this is the offline tool's library code over its builder.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from megatron.data.indexed_dataset import IndexedDataset, IndexedDatasetBuilder, get_bin_path, get_idx_path

__all__ = ["find_dataset_prefixes", "merge_datasets"]


def find_dataset_prefixes(directory: str | os.PathLike) -> list[str]:
    """Prefixes of all ``.bin/.idx`` pairs in ``directory`` (not recursive), sorted by name.

    Raises:
        ValueError: a ``.bin`` without its ``.idx`` or the reverse (a half-written or half-copied pair).
    """
    directory = os.fspath(directory)
    if not os.path.isdir(directory):
        raise ValueError(f"{directory!r} is not a directory")
    names = [n for n in os.listdir(directory) if not n.startswith(".")]
    stems = {ext: {n[: -len(ext)] for n in names if n.endswith(ext)} for ext in (".bin", ".idx")}
    unpaired = sorted((stems[".bin"] ^ stems[".idx"]))
    if unpaired:
        detail = ", ".join(f"{s}.bin" if s in stems[".bin"] else f"{s}.idx" for s in unpaired)
        raise ValueError(f"{directory}: files without their .bin/.idx partner: {detail}")
    return [os.path.join(directory, s) for s in sorted(stems[".bin"])]


def merge_datasets(input_prefixes: Sequence[str | os.PathLike], output_prefix: str | os.PathLike) -> IndexedDataset:
    """Concatenate pairs (sequences and documents, in the given order) into ``{output_prefix}.bin/.idx``.

    Raises:
        ValueError: no inputs, or their dtypes differ (the message names both).
    """
    prefixes = [os.fspath(p) for p in input_prefixes]
    if not prefixes:
        raise ValueError("merge_datasets: no input datasets given")
    out = os.fspath(output_prefix)
    first = IndexedDataset(prefixes[0])
    with IndexedDatasetBuilder(get_bin_path(out), dtype=first.dtype) as builder:
        for prefix in prefixes:
            builder.add_index(prefix)
        builder.finalize(get_idx_path(out))
    return IndexedDataset(out)

"""Where the analyzer's index files live and how they are read: the one reader that the sampler, the analyzer
and the tools share.

The analyzer writes DeepSpeed's files under ``{save_path}/{metric}/{metric}_{suffix}`` (``.bin/.idx`` pairs through
``megatron.data.indexed_dataset``) plus a reduce marker (JSON) beside them; this module names those paths and reads
them back, so the curriculum sampler needs nothing of the analyzer's map/reduce machinery.
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np

from megatron.data.indexed_dataset import IndexedDataset, get_bin_path

__all__ = ["output_prefix", "reduce_marker", "reduce_marker_path", "read_json", "read_flat", "load_metric_value"]


def output_prefix(save_path: str, metric: str, suffix: str) -> str:
    """``{save_path}/{metric}/{metric}_{suffix}``, e.g. suffix ``index_to_sample_percentile_merged``."""
    return os.path.join(save_path, metric, f"{metric}_{suffix}")


def reduce_marker(save_path: str, metric: str) -> str:
    """The JSON marker the reduce step writes last for ``metric`` (fingerprint, sample count, split identity)."""
    return os.path.join(save_path, metric, f"{metric}_reduce.done.json")


def reduce_marker_path(index_prefix: str) -> str:
    """The reduce marker beside an output prefix ``{save_path}/{metric}/{metric}_{suffix}`` (it records the
    fingerprint, the sample count and, from tools/analyze_data.py, the identity of the analyzed split)."""
    metric_dir = os.path.dirname(os.path.abspath(index_prefix))
    return reduce_marker(os.path.dirname(metric_dir), os.path.basename(metric_dir))


def read_json(path: str) -> dict[str, Any] | None:
    """A marker's JSON object, or None when the file does not exist (yet)."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        return None


def read_flat(path_prefix: str) -> tuple[np.ndarray, np.ndarray]:
    """All values of a ``.bin/.idx`` pair as one read-only array, and the per-row lengths (int64).

    The pair is opened (and validated) by ``IndexedDataset``; the values are the ``.bin`` contents, which the
    format defines as the rows concatenated, mapped without splitting them into per-row arrays (index_to_sample
    can have one row per sample).
    """
    ds = IndexedDataset(path_prefix)
    lengths = np.asarray(ds.sequence_lengths, dtype=np.int64)
    if ds.num_tokens == 0:
        return np.empty(0, dtype=ds.dtype), lengths
    values = np.memmap(get_bin_path(path_prefix), dtype=ds.dtype, mode="r", shape=(ds.num_tokens,))
    return values, lengths


def load_metric_value(save_path: str, metric: str, fingerprint: str | None = None) -> np.ndarray:
    """The reduced vector of an accumulated metric (int64), after checking its reduce marker."""
    marker = read_json(reduce_marker(save_path, metric))
    if marker is None:
        raise ValueError(f"{os.path.join(save_path, metric)}: no reduced {metric} output; analyze {metric} first "
                         "(map and reduce)")
    if fingerprint is not None and marker.get("fingerprint") != fingerprint:
        raise ValueError(f"{reduce_marker(save_path, metric)}: {metric} was computed on another dataset "
                         f"(fingerprint {marker.get('fingerprint')} != {fingerprint}); re-run it on this one")
    values, _ = read_flat(output_prefix(save_path, metric, "metric_value"))
    return np.asarray(values, dtype=np.int64)

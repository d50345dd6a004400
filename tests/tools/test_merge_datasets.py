"""Tests for ``tools/merge_datasets.py``: merging shards equals preprocessing their concatenation; clear errors."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
from data.conftest import REPO, kjv_chapters, run_preprocess_data, write_jsonl  # noqa: F401 - fixture

from megatron.data.indexed_dataset import IndexedDataset, write_dataset

MERGE_TOOL = REPO / "tools" / "merge_datasets.py"


def _merge(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(MERGE_TOOL), *map(str, args)], capture_output=True, text=True,
                          timeout=120)


def _pair_bytes(prefix) -> tuple[bytes, bytes]:
    return open(f"{prefix}.bin", "rb").read(), open(f"{prefix}.idx", "rb").read()


def test_merge_equals_preprocessing_concatenated_input(tmp_path, run_preprocess_data):
    """Shards preprocessed separately and merged (--input DIR, sorted by prefix) are byte-identical to
    preprocessing the concatenated input, at sentence level (documents of several sequences)."""
    docs = kjv_chapters(9)
    (tmp_path / "shards").mkdir()
    for i, part in enumerate((docs[:3], docs[3:7], docs[7:])):
        shard = write_jsonl(tmp_path / f"s{i}.jsonl", part)
        run_preprocess_data(["--input", shard, "--output-prefix", tmp_path / "shards" / f"s{i}",
                             "--split-sentences", "--append-eod"])
    run_preprocess_data(["--input", tmp_path / "s0.jsonl", tmp_path / "s1.jsonl", tmp_path / "s2.jsonl",
                         "--output-prefix", tmp_path / "whole", "--split-sentences", "--append-eod"])
    proc = _merge("--input", tmp_path / "shards", "--output-prefix", tmp_path / "shards" / "merged")
    assert proc.returncode == 0, proc.stderr
    assert "merged 3 datasets" in proc.stdout
    assert _pair_bytes(tmp_path / "shards" / "merged") == _pair_bytes(tmp_path / "whole_text_sentence")
    # Re-running with the output inside DIR must not merge the previous output into itself.
    proc = _merge("--input", tmp_path / "shards", "--output-prefix", tmp_path / "shards" / "merged")
    assert proc.returncode == 0 and "merged 3 datasets" in proc.stdout


def test_merge_datasets_flag_keeps_given_order(tmp_path):
    """--datasets merges in the order given, appending sequences and shifting document indices."""
    write_dataset(tmp_path / "a", [[1, 2], [3]], np.int32, document_boundaries=[0, 2])
    write_dataset(tmp_path / "b", [[4], [5, 6]], np.int32)
    proc = _merge("--datasets", tmp_path / "b", tmp_path / "a", "--output-prefix", tmp_path / "ba")
    assert proc.returncode == 0, proc.stderr
    ds = IndexedDataset(tmp_path / "ba")
    assert [ds[i].tolist() for i in range(len(ds))] == [[4], [5, 6], [1, 2], [3]]
    assert ds.document_indices.tolist() == [0, 1, 2, 4]


def test_merge_errors_name_the_problem(tmp_path):
    """Mixed dtypes, a half pair in DIR and an empty selection fail with exit code 2 and no output pair."""
    write_dataset(tmp_path / "a", [[1]], np.int32)
    write_dataset(tmp_path / "b", [[1]], np.uint16)
    proc = _merge("--datasets", tmp_path / "a", tmp_path / "b", "--output-prefix", tmp_path / "o")
    assert proc.returncode == 2 and "same dtype" in proc.stderr
    assert not IndexedDataset.exists(tmp_path / "o")
    (tmp_path / "lonely.bin").write_bytes(b"")
    proc = _merge("--input", tmp_path, "--output-prefix", tmp_path / "o")
    assert proc.returncode == 2 and "lonely.bin" in proc.stderr
    (tmp_path / "empty").mkdir()
    proc = _merge("--input", tmp_path / "empty", "--output-prefix", tmp_path / "o")
    assert proc.returncode == 2 and "holds no .bin/.idx pair" in proc.stderr

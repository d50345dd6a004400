"""Byte compatibility of our ``.bin/.idx`` files with megatron-core 0.16 in both directions, including documents of
zero sequences (what Megatron-LM's preprocessing writes for an empty document) and zero-length sequences.

megatron-core's ``megatron`` namespace collides with ours, so it runs in a subprocess with
``PYTHONPATH=.venv/mcore`` and a working directory outside the repository.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from megatron.data.indexed_dataset import IndexedDataset, IndexedDatasetBuilder

REPO = Path(__file__).resolve().parents[2]
MCORE = REPO / ".venv" / "mcore"

pytestmark = pytest.mark.skipif(
    not (MCORE / "megatron" / "core").is_dir(),
    reason=f"megatron-core side install not found at {MCORE.relative_to(REPO)} (see scripts/install.sh)",
)

# Runs under megatron-core: dumps what it reads from our pairs, then writes its own pairs for us to read.
MCORE_SCRIPT = textwrap.dedent(
    """
    import json, sys, warnings
    warnings.simplefilter("ignore")
    import numpy, torch
    from megatron.core.datasets.indexed_dataset import IndexedDataset, IndexedDatasetBuilder
    out = {}
    for prefix in sys.argv[1:]:
        ds = IndexedDataset(prefix)
        out[prefix] = {
            "lengths": ds.sequence_lengths.tolist(),
            "docs": ds.document_indices.tolist(),
            "tokens": [ds[i].tolist() for i in range(len(ds))],
            "get": ds.get(len(ds) - 1, offset=1, length=2).tolist(),
            "dtype": str(ds[0].dtype),
        }
    seqs = [[1, 2, 3], [4, 5], [6, 7, 8, 9], [60000]]
    for name, dtype in (("theirs_u16", numpy.uint16), ("theirs_i32", numpy.int32)):
        b = IndexedDatasetBuilder(name + ".bin", dtype=dtype)
        b.add_document([], [])  # what Megatron-LM's preprocess_data.py writes for an empty document
        b.add_document(torch.tensor(seqs[0] + seqs[1]), [3, 2])
        b.add_item(torch.tensor(seqs[2]))
        b.add_item(torch.tensor([], dtype=torch.int64))
        b.end_document()
        b.add_document([], [])
        b.add_item(torch.tensor(seqs[3]))
        b.end_document()
        b.add_document([], [])
        b.finalize(name + ".idx")
    print(json.dumps(out))
    """
)


def _ours(prefix: Path, dtype) -> dict:
    rng = np.random.default_rng(0)
    seqs = [rng.integers(0, 50257, size=int(n)) for n in rng.integers(1, 40, size=25)]
    seqs[7] = seqs[7][:0]  # a zero-length sequence inside a document
    b = IndexedDatasetBuilder(str(prefix) + ".bin", dtype=dtype)
    b.add_document([], [])  # documents of zero sequences: first, between others, last
    for start in range(0, 25, 5):  # 5 documents of 5 sequences (sentence-level layout)
        chunk = seqs[start : start + 5]
        b.add_document(np.concatenate(chunk), [len(s) for s in chunk])
        if start == 10:
            b.add_documents([], [], [0, 0])
    b.add_document([], [])
    b.finalize(str(prefix) + ".idx")
    return {"lengths": [len(s) for s in seqs], "docs": [0, 0, 5, 10, 15, 15, 15, 20, 25, 25],
            "tokens": [s.tolist() for s in seqs]}


def test_megatron_core_reads_ours_and_we_read_theirs(tmp_path):
    """megatron-core reads our uint16/int32 pairs with identical lengths, doc indices and tokens, and we read
    pairs written by its IndexedDatasetBuilder with identical contents; zero-sequence documents (repeated
    document_indices entries, at the start, middle and end) and zero-length sequences included."""
    expected = {str(tmp_path / name): _ours(tmp_path / name, dt) for name, dt in (("ours_u16", np.uint16),
                                                                                  ("ours_i32", np.int32))}
    env = {**os.environ, "PYTHONPATH": str(MCORE)}
    proc = subprocess.run(
        [sys.executable, "-c", MCORE_SCRIPT, *expected], cwd=tmp_path, env=env, capture_output=True, text=True,
        timeout=120,
    )
    assert proc.returncode == 0, f"megatron-core subprocess failed:\n{proc.stderr[-3000:]}"
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    for prefix, want in expected.items():
        seen = got[prefix]
        assert seen["lengths"] == want["lengths"]
        assert seen["docs"] == want["docs"]
        assert seen["tokens"] == want["tokens"]
        assert seen["get"] == want["tokens"][-1][1:3]
        assert seen["dtype"] == ("uint16" if prefix.endswith("u16") else "int32")

    for name, dtype in (("theirs_u16", np.uint16), ("theirs_i32", np.int32)):
        ds = IndexedDataset(tmp_path / name)
        assert ds.dtype == dtype
        assert [ds[i].tolist() for i in range(len(ds))] == [[1, 2, 3], [4, 5], [6, 7, 8, 9], [], [60000]]
        assert ds.sequence_lengths.tolist() == [3, 2, 4, 0, 1]
        assert ds.document_indices.tolist() == [0, 0, 2, 4, 4, 5, 5]

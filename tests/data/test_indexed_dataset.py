"""Tests for the MMIDIDX ``.bin/.idx`` format: round trips, exact bytes, validation on open, atomic writes."""

from __future__ import annotations

import gc
import os
import pickle
import struct

import numpy as np
import pytest
import torch

from megatron.data.indexed_dataset import (
    DType,
    IndexedDataset,
    IndexedDatasetBuilder,
    optimal_dtype,
    write_dataset,
)

SEQS = [[1, 2, 3], [4, 5], [], [6, 7, 8, 9]]


def _write(prefix, seqs=SEQS, dtype=np.uint16, docs=None):
    write_dataset(prefix, [np.asarray(s) for s in seqs], dtype, document_boundaries=docs)
    return str(prefix)


@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int16, np.int32, np.int64, np.uint16, np.float32, np.float64])
def test_round_trip_every_dtype(tmp_path, dtype):
    """Every supported dtype round-trips values, lengths, pointers and document index, with the right code byte."""
    prefix = _write(tmp_path / "rt", dtype=dtype, docs=[0, 2, 4])
    ds = IndexedDataset(prefix)
    assert ds.dtype == np.dtype(dtype)
    assert len(ds) == 4 and ds.num_documents == 2 and ds.num_tokens == 9
    assert ds.sequence_lengths.tolist() == [3, 2, 0, 4] and ds.sizes is ds.sequence_lengths
    item = np.dtype(dtype).itemsize
    assert ds.sequence_pointers.tolist() == [0, 3 * item, 5 * item, 5 * item]
    assert ds.document_indices.tolist() == [0, 2, 4]
    assert [ds[i].tolist() for i in range(4)] == SEQS
    assert all(ds[i].dtype == np.dtype(dtype) for i in range(4))
    with open(prefix + ".idx", "rb") as f:
        assert f.read(18)[17] == DType.from_numpy(dtype)


def test_exact_bytes_match_reference_layout(tmp_path):
    """The .idx is exactly header(34) + int32 lengths + int64 byte pointers + int64 doc index, little-endian."""
    prefix = _write(tmp_path / "b", seqs=[[1, 2, 3], [4, 5], [6, 7, 8, 9]])
    idx = open(prefix + ".idx", "rb").read()
    expected = (
        b"MMIDIDX\x00\x00" + struct.pack("<QBQQ", 1, 8, 3, 4)
        + struct.pack("<3i", 3, 2, 4) + struct.pack("<3q", 0, 6, 10) + struct.pack("<4q", 0, 1, 2, 3)
    )
    assert idx == expected and len(idx) == 102
    assert open(prefix + ".bin", "rb").read() == np.arange(1, 10, dtype="<u2").tobytes()


def test_dtype_codes_and_optimal_dtype():
    """Codes follow megatron-core's table and the token dtype rule is uint16 below 65500, else int32."""
    assert [(m.name, int(m)) for m in DType] == [
        ("uint8", 1), ("int8", 2), ("int16", 3), ("int32", 4), ("int64", 5), ("float64", 6), ("float32", 7),
        ("uint16", 8),
    ]
    assert DType.from_numpy(np.uint16) is DType.uint16 and DType.int32.to_numpy() == np.int32
    assert optimal_dtype(50257) == np.uint16 and optimal_dtype(65499) == np.uint16
    assert optimal_dtype(65500) == np.int32 and optimal_dtype(None) == np.int32
    with pytest.raises(ValueError, match="uint32"):
        DType.from_numpy(np.uint32)


def test_get_slices_and_index_errors(tmp_path):
    """get() honours offset/length, slices return contiguous sequences, negatives wrap, bad ranges raise."""
    ds = IndexedDataset(_write(tmp_path / "g"))
    assert ds.get(3, offset=1, length=2).tolist() == [7, 8]
    assert ds.get(3, offset=2).tolist() == [8, 9]
    assert ds.get(0, offset=3).tolist() == []
    assert [a.tolist() for a in ds[1:4]] == SEQS[1:]
    assert ds[-1].tolist() == [6, 7, 8, 9] and ds[5:9] == []
    with pytest.raises(IndexError, match="out of range"):
        ds[4]
    with pytest.raises(ValueError, match="outside sequence"):
        ds.get(3, offset=2, length=3)
    with pytest.raises(ValueError, match="contiguous"):
        ds[0:4:2]


def test_arrays_outlive_dataset_and_pickle(tmp_path):
    """Returned arrays stay valid (and read-only) after close()/GC; a pickled dataset re-opens by path."""
    prefix = _write(tmp_path / "life")
    ds = IndexedDataset(prefix)
    a, b = ds[3], ds.get(0, 1)
    ds2 = pickle.loads(pickle.dumps(ds))
    ds.close()
    with pytest.raises(ValueError, match="is closed"):
        ds[0]
    del ds
    gc.collect()
    assert a.tolist() == [6, 7, 8, 9] and b.tolist() == [2, 3] and not a.flags.writeable
    assert ds2[0].tolist() == [1, 2, 3] and ds2.num_tokens == 9


def test_builder_documents_tensors_and_add_index(tmp_path):
    """add_document/end_document/add_item with tensors build the document index; add_index appends a pair."""
    other = _write(tmp_path / "other", seqs=[[10], [11, 12]], docs=[0, 2])
    b = IndexedDatasetBuilder(tmp_path / "m.bin", dtype=np.uint16)
    b.add_document(torch.tensor([1, 2, 3, 4]), [1, 3])
    b.add_item(torch.tensor([5]))
    b.add_item(np.array([6, 7], dtype=np.int64))
    b.end_document()
    b.add_index(other)
    b.add_item([13])  # open trailing document is closed by finalize
    b.finalize(tmp_path / "m.idx")
    ds = IndexedDataset(tmp_path / "m")
    assert [x.tolist() for x in ds[0:len(ds)]] == [[1], [2, 3, 4], [5], [6, 7], [10], [11, 12], [13]]
    assert ds.document_indices.tolist() == [0, 2, 4, 6, 7]


def test_builder_rejects_bad_values_and_mixed_dtypes(tmp_path):
    """Out-of-range or fractional values and a dtype mismatch in add_index raise ValueError naming the problem."""
    other = _write(tmp_path / "i32", dtype=np.int32)
    with IndexedDatasetBuilder(tmp_path / "x.bin", dtype=np.uint16) as b:
        with pytest.raises(ValueError, match="do not fit uint16"):
            b.add_item(np.array([70000]))
        with pytest.raises(ValueError, match="non-integer"):
            b.add_item(np.array([1.5]))
        with pytest.raises(ValueError, match="same dtype"):
            b.add_index(other)
        with pytest.raises(ValueError, match="lengths sum to 3"):
            b.add_document([1, 2], [3])
    assert not IndexedDataset.exists(tmp_path / "x")
    assert sorted(os.listdir(tmp_path)) == ["i32.bin", "i32.idx"], "aborted builder left temporaries behind"


def test_failed_build_leaves_no_pair(tmp_path):
    """An exception inside the builder context removes the temporary .bin; no output pair appears."""
    with pytest.raises(RuntimeError, match="boom"):
        with IndexedDatasetBuilder(tmp_path / "crash.bin", dtype=np.int32) as b:
            b.add_item([1, 2, 3])
            raise RuntimeError("boom")
    assert os.listdir(tmp_path) == []


def test_overwrite_replaces_pair(tmp_path):
    """Finalizing over an existing pair replaces both files consistently."""
    _write(tmp_path / "o", seqs=[[1] * 100])
    _write(tmp_path / "o", seqs=[[2, 3]])
    ds = IndexedDataset(tmp_path / "o")
    assert len(ds) == 1 and ds[0].tolist() == [2, 3]
    assert sorted(os.listdir(tmp_path)) == ["o.bin", "o.idx"]


def test_empty_dataset(tmp_path):
    """A dataset with no sequences (empty .bin) writes and opens."""
    ds = IndexedDataset(_write(tmp_path / "e", seqs=[]))
    assert len(ds) == 0 and ds.num_tokens == 0 and ds.document_indices.tolist() == [0]


def _corrupt(path, offset=None, data=None, truncate=None):
    with open(path, "r+b") as f:
        if truncate is not None:
            f.truncate(truncate)
        if data is not None:
            f.seek(offset)
            f.write(data)


@pytest.mark.parametrize(
    "suffix, kwargs, message",
    [
        (".bin", dict(truncate=10), r"c\.bin: 10 bytes, but its index lists 9 tokens"),
        (".idx", dict(truncate=101), r"c\.idx: index size 101 bytes does not match"),
        (".idx", dict(truncate=20), r"c\.idx: truncated index: 20 bytes"),
        (".idx", dict(offset=0, data=b"XXIDIDX"), r"c\.idx: bad magic"),
        (".idx", dict(offset=9, data=struct.pack("<Q", 2)), r"c\.idx: unsupported index version 2"),
        (".idx", dict(offset=17, data=b"\x09"), r"c\.idx: unknown dtype code 9"),
        (".idx", dict(offset=17, data=b"\x04"), r"c\.bin: 18 bytes, but its index lists 9 tokens of int32"),
        (".idx", dict(offset=17, data=b"\x06"), r"DeepSpeed"),
        (".idx", dict(offset=34 + 12 * 3 + 8, data=struct.pack("<q", 5)), r"non-decreasing near entry 0"),
        (".idx", dict(offset=34 + 12 * 3 + 24, data=struct.pack("<q", 2)), r"start at 0 and end at N=3"),
        (".idx", dict(offset=34 + 12 + 8, data=struct.pack("<q", 8)), r"sequence 1 points at byte 8, expected 6"),
    ],
)
def test_corrupt_pairs_raise_clear_errors(tmp_path, suffix, kwargs, message):
    """Truncation, bad magic/version/dtype, bad document index and bad pointers raise ValueError naming the file."""
    prefix = _write(tmp_path / "c", seqs=[[1, 2, 3], [4, 5], [6, 7, 8, 9]])
    _corrupt(prefix + suffix, **kwargs)
    with pytest.raises(ValueError, match=message):
        IndexedDataset(prefix)


def test_missing_file_and_exists(tmp_path):
    """exists() needs both files; opening a half pair raises FileNotFoundError naming the missing file."""
    prefix = _write(tmp_path / "h")
    assert IndexedDataset.exists(prefix)
    os.remove(prefix + ".bin")
    assert not IndexedDataset.exists(prefix)
    with pytest.raises(FileNotFoundError, match=r"h\.bin"):
        IndexedDataset(prefix)


def test_token_total_uses_int64(tmp_path):
    """Token totals and pointers are accumulated in int64 (lengths summing past 2**31 do not wrap)."""
    # A sparse .bin keeps this cheap: three sequences of 2**30 uint8 tokens = 3 GiB logical, no disk blocks.
    n, length = 3, 1 << 30
    idx = (
        b"MMIDIDX\x00\x00" + struct.pack("<QBQQ", 1, 1, n, n + 1) + struct.pack(f"<{n}i", *[length] * n)
        + struct.pack(f"<{n}q", *[i * length for i in range(n)]) + struct.pack(f"<{n + 1}q", *range(n + 1))
    )
    (tmp_path / "big.idx").write_bytes(idx)
    with open(tmp_path / "big.bin", "wb") as f:
        f.truncate(n * length)
    ds = IndexedDataset(tmp_path / "big")
    assert ds.num_tokens == 3 * 2**30 and int(ds.sequence_pointers[-1]) == 2**31
    assert ds.get(2, offset=length - 2).tolist() == [0, 0]

"""Sole owner of the Megatron ``MMIDIDX`` token format: a ``.bin`` of concatenated sequences plus an ``.idx`` index.

``IndexedDataset`` memory-maps both files and validates them on open; ``IndexedDatasetBuilder`` writes them under
temporary names and renames them into place only when complete. Files are byte-compatible both ways with
Megatron-LM / megatron-core (dtype code table of megatron-core; see ``DType`` for the DeepSpeed clash).

``.idx`` layout (little-endian): ``b"MMIDIDX\\x00\\x00"``, u64 version (1), u8 dtype code, u64 N (sequences),
u64 D (document index length = documents + 1), int32[N] sequence lengths in tokens, int64[N] byte pointers into
``.bin``, int64[D] document index (first 0, last N, non-decreasing).
"""

from __future__ import annotations

import array
import enum
import mmap
import os
import shutil
import struct
import uuid
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from megatron.logging import get_logger

__all__ = [
    "DType",
    "optimal_dtype",
    "IndexedDataset",
    "IndexedDatasetBuilder",
    "write_dataset",
    "get_bin_path",
    "get_idx_path",
]

logger = get_logger(__name__)

_MAGIC = b"MMIDIDX\x00\x00"
_VERSION = 1
_HEADER = struct.Struct("<9sQBQQ")  # magic, version, dtype code, N, D: 34 bytes, no padding
_CHUNK = 1 << 22  # elements per chunk when validating huge index arrays (bounded temporary memory)
_COPY_CHUNK = 64 << 20  # bytes per read when appending another .bin in add_index


class DType(enum.IntEnum):
    """Element type codes stored in byte 17 of the ``.idx`` header (megatron-core's table).

    DeepSpeed's ``MMapIndexedDataset`` uses a different table for codes 6-8 (6 = uint16, 7 = uint32,
    8 = uint64); codes 1-5 agree. A DeepSpeed uint16 file therefore reads here as float64 and fails the
    size check on open with a hint; write int32 tokens when both libraries must read a file.
    """

    uint8 = 1
    int8 = 2
    int16 = 3
    int32 = 4
    int64 = 5
    float64 = 6
    float32 = 7
    uint16 = 8

    def to_numpy(self) -> np.dtype:
        """Little-endian numpy dtype for this code."""
        return np.dtype(self.name).newbyteorder("<")

    @classmethod
    def from_numpy(cls, dtype: Any) -> DType:
        """Code of a numpy dtype (or anything ``np.dtype`` accepts); ValueError if the format cannot store it."""
        dt = np.dtype(dtype)
        try:
            return cls[dt.name]
        except KeyError:
            supported = ", ".join(m.name for m in cls)
            raise ValueError(f"dtype {dt} cannot be stored in a .bin/.idx pair; use one of: {supported}") from None

    @property
    def itemsize(self) -> int:
        """Bytes per element."""
        return self.to_numpy().itemsize


def optimal_dtype(vocab_size: int | None) -> np.dtype:
    """Token dtype for a vocabulary: uint16 if ``vocab_size < 65500`` else int32 (Megatron's rule, margin kept)."""
    if vocab_size is not None and vocab_size < 65500:
        return np.dtype(np.uint16)
    return np.dtype(np.int32)


def get_bin_path(path_prefix: str) -> str:
    """``{prefix}.bin``."""
    return str(path_prefix) + ".bin"


def get_idx_path(path_prefix: str) -> str:
    """``{prefix}.idx``."""
    return str(path_prefix) + ".idx"


def _map_readonly(path: str) -> mmap.mmap | bytes:
    """Read-only mapping of a file; ``mmap`` refuses empty files, so those become ``b""``."""
    with open(path, "rb") as f:
        if os.fstat(f.fileno()).st_size == 0:
            return b""
        return mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)


def _check_chunked(values: np.ndarray, check, n: int) -> None:
    """Run ``check(start, chunk)`` over ``values[:n]`` in bounded chunks (index arrays can be GBs)."""
    for start in range(0, n, _CHUNK):
        check(start, values[start : start + _CHUNK])


class IndexedDataset:
    """Read-only view of a ``.bin/.idx`` pair; ``ds[i]`` is sequence ``i`` as a 1-D array of ``dtype``.

    Both files are memory-mapped, nothing is loaded. Returned arrays are read-only views that hold their own
    reference to the mapping, so they stay valid after the dataset is closed or garbage-collected (DeepSpeed's
    reader unmaps in ``__del__`` and segfaults there). Picklable (re-opens by path), so it can go to DataLoader
    workers.

    Attributes:
        path_prefix: the prefix, without ``.bin``/``.idx``.
        dtype: numpy dtype of the tokens.
        sequence_lengths: int32[N], tokens per sequence (alias ``sizes``).
        sequence_pointers: int64[N], byte offset of each sequence in ``.bin``.
        document_indices: int64[D], sequence boundaries of documents: document ``d`` is sequences
            ``document_indices[d]:document_indices[d+1]``.
        num_tokens: total tokens in ``.bin``.
    """

    def __init__(self, path_prefix: str | os.PathLike) -> None:
        self._open(os.fspath(path_prefix), validate_arrays=True)

    def _open(self, path_prefix: str, validate_arrays: bool) -> None:
        self.path_prefix = path_prefix
        idx_path, bin_path = get_idx_path(path_prefix), get_bin_path(path_prefix)
        for path in (idx_path, bin_path):
            if not os.path.isfile(path):
                raise FileNotFoundError(f"{path}: no such file (dataset prefix {path_prefix!r})")
        self._idx_buffer = _map_readonly(idx_path)
        code, n, d = self._read_header(idx_path)
        self.dtype = DType(code).to_numpy()
        self._code = DType(code)
        buf = self._idx_buffer
        self.sequence_lengths = np.frombuffer(buf, dtype="<i4", count=n, offset=_HEADER.size)
        self.sequence_pointers = np.frombuffer(buf, dtype="<i8", count=n, offset=_HEADER.size + 4 * n)
        self.document_indices = np.frombuffer(buf, dtype="<i8", count=d, offset=_HEADER.size + 12 * n)
        self._bin_buffer = _map_readonly(bin_path)
        self.num_tokens = self._count_tokens(n)
        self._check_bin_size(bin_path)
        if validate_arrays:
            self._validate_arrays(idx_path)

    def _read_header(self, idx_path: str) -> tuple[int, int, int]:
        buf = self._idx_buffer
        if len(buf) < _HEADER.size:
            raise ValueError(
                f"{idx_path}: truncated index: {len(buf)} bytes, the header alone needs {_HEADER.size}; "
                "re-run the preprocessing that wrote it"
            )
        magic, version, code, n, d = _HEADER.unpack_from(buf, 0)
        if magic != _MAGIC:
            raise ValueError(f"{idx_path}: bad magic {magic!r}, expected {_MAGIC!r}; not a Megatron MMIDIDX index")
        if version != _VERSION:
            raise ValueError(f"{idx_path}: unsupported index version {version}, only version {_VERSION} exists")
        if code not in DType._value2member_map_:
            raise ValueError(f"{idx_path}: unknown dtype code {code}; known codes {[int(m) for m in DType]}")
        expected = _HEADER.size + 12 * n + 8 * d
        # megatron-core multimodal indices append int8[N] sequence modes; tokens are readable without them.
        if len(buf) not in (expected, expected + n):
            raise ValueError(
                f"{idx_path}: index size {len(buf)} bytes does not match its header (N={n} sequences, "
                f"D={d} document entries need {expected} bytes); the file is truncated or corrupt"
            )
        if d < 1:
            raise ValueError(f"{idx_path}: empty document index (D=0); a valid index has at least [0]")
        return code, n, d

    def _count_tokens(self, n: int) -> int:
        # int64 accumulation: Megatron summed int32 lengths and overflowed beyond 2**31 tokens.
        total = 0
        for start in range(0, n, _CHUNK):
            total += int(self.sequence_lengths[start : start + _CHUNK].sum(dtype=np.int64))
        return total

    def _check_bin_size(self, bin_path: str) -> None:
        expected = self.num_tokens * self.dtype.itemsize
        if len(self._bin_buffer) != expected:
            hint = ""
            if self._code in (DType.float64, DType.float32, DType.uint16):
                hint = (
                    f" (dtype code {int(self._code)} means {self._code.name} in megatron-core but "
                    "uint16/uint32/uint64 for codes 6/7/8 in DeepSpeed; a DeepSpeed file must be rewritten)"
                )
            raise ValueError(
                f"{bin_path}: {len(self._bin_buffer)} bytes, but its index lists {self.num_tokens} tokens of "
                f"{self.dtype.name} = {expected} bytes; the pair is truncated or mismatched{hint}"
            )

    def _validate_arrays(self, idx_path: str) -> None:
        n, lengths, pointers, docs = len(self), self.sequence_lengths, self.sequence_pointers, self.document_indices
        itemsize = self.dtype.itemsize
        if docs[0] != 0 or docs[-1] != n:
            raise ValueError(
                f"{idx_path}: document index must start at 0 and end at N={n}, got first={int(docs[0])}, "
                f"last={int(docs[-1])}"
            )

        def check_docs(start: int, chunk: np.ndarray) -> None:
            prev = docs[start - 1] if start else chunk[0]
            if np.any(np.diff(chunk, prepend=prev) < 0):
                raise ValueError(f"{idx_path}: document index is not non-decreasing near entry {start}")

        offset = [0]

        def check_seqs(start: int, chunk: np.ndarray) -> None:
            if np.any(chunk < 0):
                bad = start + int(np.argmax(chunk < 0))
                raise ValueError(f"{idx_path}: negative length {int(lengths[bad])} for sequence {bad}")
            ends = np.cumsum(chunk, dtype=np.int64) * itemsize + offset[0]
            starts = np.concatenate(([offset[0]], ends[:-1]))
            if not np.array_equal(starts, pointers[start : start + len(chunk)]):
                bad = start + int(np.argmax(starts != pointers[start : start + len(chunk)]))
                raise ValueError(
                    f"{idx_path}: sequence {bad} points at byte {int(pointers[bad])}, expected "
                    f"{int(starts[bad - start])} (pointers must be the running sum of length * {itemsize})"
                )
            offset[0] = int(ends[-1])

        _check_chunked(docs, check_docs, len(docs))
        _check_chunked(lengths, check_seqs, n)

    def __len__(self) -> int:
        return len(self.sequence_lengths)

    @property
    def sizes(self) -> np.ndarray:
        """Alias of ``sequence_lengths`` (Megatron-DeepSpeed spelling)."""
        return self.sequence_lengths

    @property
    def num_documents(self) -> int:
        """Number of documents (``len(document_indices) - 1``)."""
        return len(self.document_indices) - 1

    def token_range(self) -> tuple[int, int] | None:
        """``(smallest, largest)`` token id in ``.bin`` (None when it holds no tokens).

        A streaming reduction over the memory-mapped tokens in chunks of ``_CHUNK`` elements: memory stays bounded
        and the cost is one read of the file (0.25 ms for the 1M-token KJV corpus once its pages are cached).
        """
        if self.num_tokens == 0:
            return None
        tokens = self._read(0, self.num_tokens)
        low, high = None, None
        for start in range(0, self.num_tokens, _CHUNK):
            chunk = tokens[start : start + _CHUNK]
            lo, hi = int(chunk.min()), int(chunk.max())
            low, high = lo if low is None else min(low, lo), hi if high is None else max(high, hi)
        return low, high

    def _index(self, idx: int) -> int:
        n = len(self)
        i = int(idx)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(f"sequence index {idx} out of range for {n} sequences in {self.path_prefix}")
        return i

    def _read(self, byte_offset: int, count: int) -> np.ndarray:
        if self._bin_buffer is None:
            raise ValueError(f"IndexedDataset({self.path_prefix!r}) is closed")
        if count == 0:
            return np.empty(0, dtype=self.dtype)
        return np.frombuffer(self._bin_buffer, dtype=self.dtype, count=count, offset=byte_offset)

    def __getitem__(self, idx: int | slice) -> np.ndarray | list[np.ndarray]:
        """Sequence ``idx`` (1-D array), or for a step-1 slice the list of its sequences (one read)."""
        if isinstance(idx, slice):
            start, stop, step = idx.indices(len(self))
            if step != 1:
                raise ValueError(f"slices of an IndexedDataset must be contiguous (step 1), got step {step}")
            if start >= stop:
                return []
            lengths = self.sequence_lengths[start:stop]
            flat = self._read(int(self.sequence_pointers[start]), int(lengths.sum(dtype=np.int64)))
            return np.split(flat, np.cumsum(lengths[:-1], dtype=np.int64))
        if isinstance(idx, (int, np.integer)):
            i = self._index(idx)
            return self._read(int(self.sequence_pointers[i]), int(self.sequence_lengths[i]))
        raise TypeError(f"IndexedDataset indices must be int or slice, not {type(idx).__name__}")

    def get(self, idx: int, offset: int = 0, length: int | None = None) -> np.ndarray:
        """Tokens ``[offset, offset + length)`` of sequence ``idx`` (to its end if ``length`` is None)."""
        i = self._index(idx)
        size = int(self.sequence_lengths[i])
        if length is None:
            length = size - offset
        if offset < 0 or length < 0 or offset + length > size:
            raise ValueError(
                f"get({idx}, offset={offset}, length={length}) is outside sequence {i} of {size} tokens "
                f"in {self.path_prefix}"
            )
        return self._read(int(self.sequence_pointers[i]) + offset * self.dtype.itemsize, length)

    def close(self) -> None:
        """Stop reading tokens. The mappings are never unmapped explicitly: arrays already returned (and the index
        arrays) hold their own references and stay valid; the OS mapping goes away with the last of them."""
        self._bin_buffer = None

    def __enter__(self) -> IndexedDataset:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __getstate__(self) -> dict[str, str]:
        return {"path_prefix": self.path_prefix}

    def __setstate__(self, state: dict[str, str]) -> None:
        # Validated when first opened; workers re-check the header and sizes only.
        self._open(state["path_prefix"], validate_arrays=False)

    def __repr__(self) -> str:
        return (
            f"IndexedDataset({self.path_prefix!r}, sequences={len(self)}, documents={self.num_documents}, "
            f"tokens={self.num_tokens}, dtype={self.dtype.name})"
        )

    @staticmethod
    def exists(path_prefix: str | os.PathLike) -> bool:
        """True if both ``{prefix}.idx`` and ``{prefix}.bin`` exist (says nothing about their validity)."""
        p = os.fspath(path_prefix)
        return os.path.isfile(get_idx_path(p)) and os.path.isfile(get_bin_path(p))


def temp_path_beside(final_path: str) -> str:
    """Create an empty, uniquely named file beside ``final_path`` whose name never forms a ``.bin/.idx`` pair.

    Opened with ``"xb"`` rather than ``mkstemp`` so the final file gets the usual umask permissions, not 0600.
    """
    directory, base = os.path.split(os.path.abspath(final_path))
    while True:
        path = os.path.join(directory, f".{base}.{os.getpid()}.{uuid.uuid4().hex[:12]}.tmp")
        try:
            with open(path, "xb"):
                return path
        except FileExistsError:  # pragma: no cover - 48 random bits
            continue


class IndexedDatasetBuilder:
    """Streams sequences into a ``.bin`` and writes the ``.idx`` on ``finalize``.

    Data goes to a temporary file beside ``bin_path``; ``finalize`` writes the index the same way, then renames
    both into place (index last, after removing any stale index), so a crash at any point never leaves a
    complete-looking new pair. Use as a context manager (or call ``abort``) to delete the temporaries on error.

    Args:
        bin_path: final ``.bin`` path.
        dtype: element dtype; anything ``DType.from_numpy`` accepts.
    """

    def __init__(self, bin_path: str | os.PathLike, dtype: Any = np.int32) -> None:
        self.bin_path = os.fspath(bin_path)
        self.dtype = DType.from_numpy(dtype).to_numpy()
        self._tmp_bin = temp_path_beside(self.bin_path)
        self._file = open(self._tmp_bin, "wb")  # noqa: SIM115 - closed by finalize/abort
        self._lengths = array.array("i")  # int32 lengths: 4 bytes per sequence, not a Python int list
        self._doc_index = array.array("q", [0])
        self._finished = False

    @property
    def num_sequences(self) -> int:
        """Sequences added so far."""
        return len(self._lengths)

    def _coerce(self, values: Any) -> np.ndarray:
        if hasattr(values, "detach"):  # torch.Tensor, without importing torch here
            values = values.detach().cpu().numpy()
        arr = np.asarray(values)
        if arr.ndim != 1:
            arr = arr.reshape(-1)
        if arr.dtype == self.dtype:
            return arr
        if self.dtype.kind in "iu":
            if arr.dtype.kind not in "iub":
                if arr.size and not np.array_equal(arr, np.round(arr)):
                    raise ValueError(f"cannot store non-integer values of dtype {arr.dtype} as {self.dtype.name}")
            info = np.iinfo(self.dtype)
            if arr.size and (arr.min() < info.min or arr.max() > info.max):
                raise ValueError(
                    f"values in [{arr.min()}, {arr.max()}] do not fit {self.dtype.name} [{info.min}, {info.max}]; "
                    "choose a wider dtype"
                )
        return arr.astype(self.dtype)

    def _write(self, arr: np.ndarray) -> None:
        self._check_open()
        self._file.write(np.ascontiguousarray(arr).data)

    def _check_open(self) -> None:
        if self._finished:
            raise RuntimeError(f"builder for {self.bin_path} is already finalized or aborted")

    def _check_no_open_document(self, what: str) -> None:
        pending = len(self._lengths) - self._doc_index[-1]
        if pending:
            raise ValueError(f"{pending} sequences added before {what} are not closed by end_document()")

    def add_item(self, values: Any) -> None:
        """Append one sequence (1-D array, list or tensor); it joins the currently open document."""
        arr = self._coerce(values)
        self._write(arr)
        self._append_lengths([len(arr)])

    def _append_lengths(self, lengths: Sequence[int] | np.ndarray) -> None:
        lens = np.asarray(lengths, dtype=np.int64)
        if lens.size and (lens.min() < 0 or lens.max() > np.iinfo(np.int32).max):
            raise ValueError(f"sequence lengths must be in [0, 2**31 - 1] (int32 in the index), got {lens.max()}")
        self._lengths.frombytes(lens.astype("<i4").tobytes())

    def add_document(self, values: Any, lengths: Sequence[int] | np.ndarray) -> None:
        """Append one whole document: ``values`` are its sequences concatenated, ``lengths`` their sizes."""
        arr = self._coerce(values)
        lens = np.asarray(lengths, dtype=np.int64)
        if int(lens.sum()) != len(arr):
            raise ValueError(f"document lengths sum to {int(lens.sum())} but {len(arr)} values were given")
        self._write(arr)
        self._append_lengths(lens)
        self.end_document()

    def add_documents(
        self, values: Any, lengths: Sequence[int] | np.ndarray, sequences_per_document: Sequence[int] | np.ndarray
    ) -> None:
        """Append many whole documents at once (the fast path of preprocessing).

        Args:
            values: all their tokens concatenated, 1-D.
            lengths: tokens per sequence; sums to ``len(values)``.
            sequences_per_document: sequences per document; sums to ``len(lengths)``.
        """
        arr = self._coerce(values)
        lens = np.asarray(lengths, dtype=np.int64)
        per_doc = np.asarray(sequences_per_document, dtype=np.int64)
        if int(lens.sum()) != len(arr) or int(per_doc.sum()) != len(lens) or (per_doc.size and per_doc.min() < 0):
            raise ValueError(
                f"inconsistent documents: {len(arr)} values, lengths sum to {int(lens.sum())}; {len(lens)} "
                f"sequences, sequences_per_document sums to {int(per_doc.sum())}"
            )
        self._check_open()
        self._check_no_open_document("add_documents()")
        self._write(arr)
        base = len(self._lengths)
        self._append_lengths(lens)
        self._doc_index.frombytes((np.cumsum(per_doc, dtype=np.int64) + base).astype("<i8").tobytes())

    def end_document(self) -> None:
        """Close the current document: the sequences added since the previous boundary form one document."""
        self._check_open()
        self._doc_index.append(len(self._lengths))

    def add_index(self, path_prefix: str | os.PathLike) -> None:
        """Append every sequence and document of another pair (same dtype required), copying its bytes."""
        self._check_open()
        other = IndexedDataset(path_prefix)
        if other.dtype != self.dtype:
            raise ValueError(
                f"cannot merge {other.path_prefix} ({other.dtype.name}) into {self.bin_path} ({self.dtype.name}); "
                "all merged datasets need the same dtype"
            )
        self._check_no_open_document(f"add_index({other.path_prefix})")
        base = len(self._lengths)
        self._lengths.frombytes(other.sequence_lengths.astype("<i4").tobytes())
        self._doc_index.frombytes((other.document_indices[1:] + base).astype("<i8").tobytes())
        with open(get_bin_path(other.path_prefix), "rb") as src:
            shutil.copyfileobj(src, self._file, _COPY_CHUNK)

    def finalize(self, idx_path: str | os.PathLike) -> None:
        """Write the index and atomically move both files into place; an open trailing document is closed."""
        self._check_open()
        idx_path = os.fspath(idx_path)
        if self._doc_index[-1] != len(self._lengths):
            self.end_document()
        tmp_idx = temp_path_beside(idx_path)
        try:
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
            self._write_index(tmp_idx)
            # Remove a stale index first: between the two renames only an index-less .bin can exist.
            if os.path.exists(idx_path):
                os.remove(idx_path)
            os.replace(self._tmp_bin, self.bin_path)
            os.replace(tmp_idx, idx_path)
        except BaseException:
            for path in (tmp_idx, self._tmp_bin):
                if os.path.exists(path):
                    os.remove(path)
            self._finished = True
            raise
        self._finished = True

    def _write_index(self, path: str) -> None:
        lengths = np.frombuffer(self._lengths, dtype="<i4") if self._lengths else np.empty(0, "<i4")
        n = len(lengths)
        pointers = np.zeros(n, dtype="<i8")
        if n > 1:
            np.cumsum(lengths[:-1], dtype=np.int64, out=pointers[1:])
            pointers *= self.dtype.itemsize
        docs = np.frombuffer(self._doc_index, dtype="<i8")
        with open(path, "wb") as f:
            f.write(_HEADER.pack(_MAGIC, _VERSION, int(DType.from_numpy(self.dtype)), n, len(docs)))
            f.write(lengths.data)
            f.write(pointers.data)
            f.write(docs.data)
            f.flush()
            os.fsync(f.fileno())

    def abort(self) -> None:
        """Discard everything written so far (deletes the temporary ``.bin``); idempotent."""
        if not self._file.closed:
            self._file.close()
        if os.path.exists(self._tmp_bin) and not self._finished:
            os.remove(self._tmp_bin)
        self._finished = True

    def __enter__(self) -> IndexedDatasetBuilder:
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        if exc_type is not None or not self._finished:
            self.abort()


def write_dataset(
    path_prefix: str | os.PathLike,
    sequences: Iterable[Any],
    dtype: Any,
    document_boundaries: Sequence[int] | np.ndarray | None = None,
) -> None:
    """Write ``{prefix}.bin/.idx`` from an iterable of 1-D sequences.

    Args:
        path_prefix: output prefix.
        sequences: 1-D arrays/lists/tensors, one per sequence.
        dtype: element dtype (e.g. ``np.int64`` for metric files, codes 1-5 are DeepSpeed-compatible).
        document_boundaries: the document index ``[0, ..., N]`` (non-decreasing); None makes every sequence
            its own document.
    """
    prefix = os.fspath(path_prefix)
    with IndexedDatasetBuilder(get_bin_path(prefix), dtype=dtype) as builder:
        for seq in sequences:
            builder.add_item(seq)
            if document_boundaries is None:
                builder.end_document()
        if document_boundaries is not None:
            docs = np.asarray(document_boundaries, dtype=np.int64)
            n = builder.num_sequences
            if docs.ndim != 1 or len(docs) < 1 or docs[0] != 0 or docs[-1] != n or np.any(np.diff(docs) < 0):
                raise ValueError(
                    f"document_boundaries must be a non-decreasing [0, ..., N] with N={n} sequences, got "
                    f"{len(docs)} entries starting {docs[:3].tolist()} ending {docs[-3:].tolist()}"
                )
            builder._doc_index = array.array("q", docs.tobytes())
        builder.finalize(get_idx_path(prefix))

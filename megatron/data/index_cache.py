"""On-disk cache of dataset index arrays (document/sample/shuffle indices, blending indices).

A cache entry is ``{hash}-{kind}-{split}-{name}.npy`` per array plus ``{hash}-{kind}-{split}-description.json``,
where ``hash`` is the md5 of a JSON of every parameter that determines the arrays. Arrays are written under
temporary names and renamed; the description, written last, records each file's shape, dtype, size and crc32,
so a half-written or damaged entry is detected and rebuilt. Global rank 0 builds, every rank then memory-maps.
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
import zlib
from collections.abc import Callable
from typing import Any, Optional

import numpy as np

from megatron.logging import get_logger

__all__ = ["IndexCache", "describe", "fingerprint_lengths", "load_or_build_indices"]

logger = get_logger(__name__)

_CRC_BLOCK = 64 << 20  # bytes per zlib.crc32 call


def describe(params: dict[str, Any]) -> tuple[str, str]:
    """Canonical JSON of ``params`` (sorted keys) and its md5 hex digest (the cache key)."""
    text = json.dumps(params, sort_keys=True, indent=2)
    return text, hashlib.md5(text.encode("utf-8"), usedforsecurity=False).hexdigest()


def fingerprint_lengths(lengths: np.ndarray) -> str:
    """md5 of a sequence-length array: the only property of a dataset file the indices depend on."""
    data = np.ascontiguousarray(lengths, dtype="<i4")
    return hashlib.md5(memoryview(data).cast("B"), usedforsecurity=False).hexdigest()


def _crc32(path: str) -> int:
    crc = 0
    with open(path, "rb") as f:
        while block := f.read(_CRC_BLOCK):
            crc = zlib.crc32(block, crc)
    return crc


def _atomic_write(path: str, write: Callable[[Any], None]) -> None:
    tmp = f"{path}.tmp-{uuid.uuid4().hex}"
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


class IndexCache:
    """One cache entry: the files of ``{hash}-{kind}-{split}`` in ``directory``.

    Args:
        directory: cache directory (created on save).
        kind: dataset class name, e.g. ``"GPTDataset"``.
        split: ``"train"``, ``"valid"`` or ``"test"``.
        params: every parameter that determines the arrays (JSON-serializable).
        names: the array names, e.g. ``("doc_index", "sample_index", "shuffle_index")``.
    """

    def __init__(self, directory: str, kind: str, split: str, params: dict[str, Any], names: tuple[str, ...]):
        self.directory, self.names = directory, names
        self.description, self.key = describe(params)
        self.stem = f"{self.key}-{kind}-{split}"

    def path(self, name: str) -> str:
        """Path of array ``name`` (or ``"description"`` for the JSON)."""
        suffix = "description.json" if name == "description" else f"{name}.npy"
        return os.path.join(self.directory, f"{self.stem}-{suffix}")

    def save(self, arrays: dict[str, np.ndarray]) -> None:
        """Write every array, then the description that vouches for them (each file atomically)."""
        os.makedirs(self.directory, exist_ok=True)
        files = {}
        for name in self.names:
            path = self.path(name)
            _atomic_write(path, lambda f, a=arrays[name]: np.save(f, a, allow_pickle=False))
            arr = arrays[name]
            files[name] = {
                "shape": list(arr.shape), "dtype": arr.dtype.str, "bytes": os.path.getsize(path), "crc32": _crc32(path),
            }
        record = {"params": json.loads(self.description), "files": files}
        text = json.dumps(record, indent=2, sort_keys=True).encode("utf-8")
        _atomic_write(self.path("description"), lambda f: f.write(text))

    def load(self, verify: bool) -> Optional[dict[str, np.ndarray]]:
        """Memory-map the arrays, or None when the entry is missing, stale or damaged.

        ``verify`` also checks each file's crc32 (rank 0 does it once before the others load).
        """
        try:
            with open(self.path("description"), "rb") as f:
                record = json.loads(f.read().decode("utf-8"))
            if record.get("params") != json.loads(self.description):
                logger.warning("index cache %s: description does not match the parameters; rebuilding", self.stem)
                return None
            arrays = {}
            for name in self.names:
                path, meta = self.path(name), record["files"][name]
                if os.path.getsize(path) != meta["bytes"] or (verify and _crc32(path) != meta["crc32"]):
                    raise ValueError(f"{path}: size or checksum differs from the description")
                arr = np.load(path, mmap_mode="r", allow_pickle=False)
                if list(arr.shape) != meta["shape"] or arr.dtype.str != meta["dtype"]:
                    raise ValueError(f"{path}: shape {arr.shape} / dtype {arr.dtype} differ from the description")
                arrays[name] = arr
            return arrays
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError, json.JSONDecodeError) as err:
            logger.warning("index cache %s is damaged (%s); rebuilding", self.stem, err)
            return None


def _dist_rank() -> tuple[int, bool]:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), True
    return 0, False


def _broadcast_status(status: Optional[str]) -> Optional[str]:
    """Rank 0's build outcome (None = ok, else its error) to every rank; doubles as the barrier."""
    import torch.distributed as dist

    box = [status]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def load_or_build_indices(
    cache: Optional[IndexCache], build: Callable[[], dict[str, np.ndarray]]
) -> tuple[dict[str, np.ndarray], bool]:
    """Return the arrays of ``cache``, building and saving them on global rank 0 if needed.

    Without ``torch.distributed`` (or with ``cache=None``) this process does everything itself. With it, rank 0
    verifies or builds and saves, all ranks synchronize, then every rank memory-maps the files. A rank that
    cannot see rank 0's files (node-local cache directories) builds in memory, which is deterministic.

    Returns:
        The arrays and whether this process built them.
    """
    rank, distributed = _dist_rank()
    if cache is None:
        return build(), True
    built = False
    status: Optional[str] = None
    if rank == 0:
        try:
            arrays = cache.load(verify=True)
            if arrays is None:
                built = True
                arrays = _build_and_save(cache, build)
        except Exception as err:  # noqa: BLE001 - reported to the other ranks, then re-raised
            status = f"{type(err).__name__}: {err}"
            if distributed:
                _broadcast_status(status)
            raise
    if distributed:
        status = _broadcast_status(status)
        if status is not None:
            raise RuntimeError(f"global rank 0 failed to build the dataset indices {cache.stem}: {status}")
    if rank != 0:
        arrays = cache.load(verify=False)
        if arrays is None:
            logger.warning("index cache %s not visible on rank %d; building in memory", cache.stem, rank)
            arrays, built = build(), True
    return arrays, built


def _build_and_save(cache: IndexCache, build: Callable[[], dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    arrays = build()
    try:
        cache.save(arrays)
    except OSError as err:
        logger.warning(
            "cannot write the index cache in %s (%s); using in-memory indices (set data_cache_path to a writable "
            "directory to reuse them)", cache.directory, err,
        )
        return arrays
    reloaded = cache.load(verify=False)
    assert reloaded is not None, f"index cache {cache.stem} unreadable right after writing it"
    return reloaded

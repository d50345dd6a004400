"""Micro-batches for this rank: sampler -> dataset reads -> collate, with worker prefetching and one read per
tensor-parallel group.

Only tensor-parallel rank 0 of each group reads the dataset, in the training process or in ``num_workers`` DataLoader
worker processes that prefetch ahead (pinned memory when CUDA is present); it broadcasts every micro-batch to the
other ranks of its group (:func:`broadcast_batch`: a header with the keys, dtypes and shapes first, then one flat
tensor per dtype, as Megatron's ``broadcast_data``). Every rank still iterates the sampler - index arithmetic only -
so the sampler state each rank checkpoints is the same. What is checkpointed is the position of the micro-batches
handed to training, never the prefetcher's: each micro-batch's position (``MicroBatchIndices.info``) is kept in
order beside the loader and applied when that batch comes out.
"""

from __future__ import annotations

import collections
import logging
import multiprocessing
import sys
from typing import Any, Callable, Iterator

import torch
import torch.distributed as dist

from megatron.logging import get_logger, log_rank0

__all__ = ["DataStream", "broadcast_batch"]

logger = get_logger(__name__)

Batch = dict[str, Any]


class _Reader(torch.utils.data.Dataset):
    """A map-style dataset whose items are whole micro-batches: ``reader[indices] = collate(samples)``."""

    def __init__(self, dataset: Any, collate_fn: Callable[[list], Batch]) -> None:
        self.dataset, self.collate_fn = dataset, collate_fn

    def __getitem__(self, indices: list[int]) -> Batch:
        return self.collate_fn([self.dataset[int(i)] for i in indices])


def _as_is(batch: Batch) -> Batch:
    return batch


def _worker_context() -> str | None:
    """Workers are forked on Linux, as Megatron's loaders are by default there: nothing (the memory-mapped dataset,
    the entry script's collate function) has to be pickled, whatever the interpreter's default start method is
    (spawn in processes started by spawn, forkserver from Python 3.14). Workers touch no CUDA state."""
    return "fork" if sys.platform.startswith("linux") else None


class _Indices:
    """The sampler's micro-batches as plain index lists; each one's ``info`` is queued in the order handed out
    (a DataLoader returns batches in the order it took their indices)."""

    def __init__(self, sampler: Any, infos: collections.deque) -> None:
        self.sampler, self.infos = sampler, infos

    def __iter__(self) -> Iterator[list[int]]:
        for indices in self.sampler:
            self.infos.append(getattr(indices, "info", None) or {})
            yield [int(i) for i in indices]


class DataStream:
    """Micro-batches for this rank from a batch sampler (an iterable of index lists).

    Args:
        dataset: map-style dataset; read only where ``reads``.
        sampler: yields this rank's micro-batch index lists (``MicroBatchIndices`` carry their position). Worker
            processes may run it ahead only if it says so (``prefetch_safe``) and does not commit by itself;
            otherwise it is read in the training process.
        collate_fn: samples -> batch dict.
        num_workers: DataLoader worker processes (0: read in this process).
        reads: this rank reads (tensor-parallel rank 0); the others receive by broadcast.
        tp_group, tp_src: the tensor-parallel group and the global rank that reads for it; None: no broadcast.
        device: where broadcast batches land (the collective's device).
    """

    def __init__(self, dataset: Any, sampler: Any, collate_fn: Callable[[list], Batch], *, num_workers: int = 0,
                 reads: bool = True, tp_group: Any = None, tp_src: int = 0,
                 device: torch.device = torch.device("cpu")) -> None:
        self.dataset, self.sampler = dataset, sampler
        self._infos: collections.deque = collections.deque()
        self._position: dict | None = None
        self._broadcast = None if tp_group is None else {"src": tp_src, "group": tp_group, "device": device}
        indices = _Indices(sampler, self._infos)
        self._loader_it = self._index_it = None
        if not reads:
            self._index_it = iter(indices)
            return
        workers = num_workers if self.prefetches(sampler) else 0
        if num_workers and not workers:
            log_rank0(logger, "--num-workers %d: this sampler (%s) does not report the position of each micro-batch, "
                      "so it is read in the training process without prefetching", num_workers,
                      type(sampler).__name__, level=logging.WARNING)
        elif workers and multiprocessing.current_process().daemon:
            workers = 0
            log_rank0(logger, "--num-workers %d: this process is a daemon (started by a multiprocessing pool or "
                      "harness), which may not start worker processes; reading in the training process", num_workers,
                      level=logging.WARNING)
        loader = torch.utils.data.DataLoader(
            _Reader(dataset, collate_fn), sampler=indices, batch_size=None, collate_fn=_as_is, num_workers=workers,
            pin_memory=torch.cuda.is_available(), multiprocessing_context=_worker_context() if workers else None,
            # Its own generator: the loader's base seed must not draw from the global RNG (dropout would change).
            generator=torch.Generator(),
        )
        self._loader_it = iter(loader)

    @staticmethod
    def prefetches(sampler: Any) -> bool:
        """Whether worker processes may run ``sampler`` ahead of training without losing the trained position."""
        return bool(getattr(sampler, "prefetch_safe", False)) and not getattr(sampler, "auto_commit", False)

    def next(self) -> Batch | None:
        """The next micro-batch, or None when the sampler is exhausted (on every rank of the group alike)."""
        if self._loader_it is not None:
            batch = next(self._loader_it, None)
            info = self._infos.popleft() if batch is not None else None
            if batch is not None:
                batch.update(info.get("batch", {}))  # e.g. the curriculum step and difficulties it was drawn under
        else:
            info = self._infos.popleft() if next(self._index_it, None) is not None else None
            batch = None
        if self._broadcast is not None:
            batch = broadcast_batch(batch, **self._broadcast)
            if (batch is None) != (info is None):
                raise RuntimeError("the tensor-parallel ranks' samplers disagree on the end of the data; every rank "
                                   "of a tensor-parallel group must build the same sampler")
        if info is not None:
            self._trained(info)
        return batch

    def _trained(self, info: dict[str, Any]) -> None:
        """The micro-batch described by ``info`` goes to training now: move the checkpointed position to it."""
        if info.get("commit"):
            self.sampler.commit()
        if "consumed_samples" in info:
            self._position = {"consumed_samples": int(info["consumed_samples"])}

    def state_dict(self) -> dict | None:
        """The sampler position after the last micro-batch handed to training (not after what was prefetched)."""
        if hasattr(self.sampler, "commit"):
            return self.sampler.state_dict()
        if self._position is not None:
            return dict(self._position)
        return self.sampler.state_dict() if hasattr(self.sampler, "state_dict") else None

    def close(self) -> None:
        """Stop the worker processes (dropping the last reference to the loader's iterator shuts them down)."""
        self._loader_it = self._index_it = None


# ---- tensor-parallel broadcast ---------------------------------------------------------------------------------------
def _compact(t: torch.Tensor) -> torch.Tensor:
    """``t`` without its broadcast dimensions (stride 0, e.g. a causal mask expanded over the batch)."""
    for d in range(t.dim()):
        if t.stride(d) == 0 and t.shape[d] > 1:
            t = t.narrow(d, 0, 1)
    return t.contiguous()


def _header(batch: Batch) -> list[tuple]:
    """``("tensor", key, dtype, sent shape, full shape)`` or ``("value", key, value)`` per entry, in order."""
    out: list[tuple] = []
    for key, value in batch.items():
        if isinstance(value, torch.Tensor):
            out.append(("tensor", key, value.dtype, tuple(_compact(value).shape), tuple(value.shape)))
        else:
            out.append(("value", key, value))
    return out


def _wire(dtype: torch.dtype) -> torch.dtype:
    return torch.uint8 if dtype == torch.bool else dtype  # bool travels as bytes (not every backend reduces bool)


def broadcast_batch(batch: Batch | None, *, src: int, group: Any, device: torch.device) -> Batch | None:
    """Send ``batch`` from global rank ``src`` to every rank of ``group``; the others pass None and receive it.

    Sizes first (one small header object: keys, dtypes, shapes and the non-tensor values such as the curriculum
    difficulties), then the tensors flattened into one buffer per dtype. Tensors arrive on ``device``; a broadcast
    dimension (stride 0) is sent once and expanded again. A None batch (data exhausted) reaches every rank as None.
    """
    header = [_header(batch) if dist.get_rank() == src and batch is not None else None]
    dist.broadcast_object_list(header, src=src, group=group, device=device if device.type == "cuda" else None)
    entries = header[0]
    if entries is None:
        return None
    tensors = [e for e in entries if e[0] == "tensor"]
    received: dict[str, torch.Tensor] = {}
    for dtype in dict.fromkeys(_wire(e[2]) for e in tensors):
        group_entries = [e for e in tensors if _wire(e[2]) == dtype]
        numels = [torch.Size(e[3]).numel() for e in group_entries]
        if dist.get_rank() == src:
            flat = torch.cat([_compact(batch[e[1]]).reshape(-1).to(dtype) for e in group_entries]).to(device)
        else:
            flat = torch.empty(sum(numels), dtype=dtype, device=device)
        if flat.numel():
            dist.broadcast(flat, src=src, group=group)
        for e, part in zip(group_entries, torch.split(flat, numels)):
            received[e[1]] = part.view(e[3]).to(e[2]).expand(e[4])
    return {e[1]: received[e[1]] if e[0] == "tensor" else e[2] for e in entries}

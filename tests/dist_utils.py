"""Run a test body in several processes, each a rank of a freshly initialized ``torch.distributed`` group.

Our own small replacement for ``torch.testing._internal``'s multi-process test case: ``run_distributed`` starts
``world_size`` processes, joins them into one process group (gloo by default; ``backend="nccl"`` on a GPU box), calls
the body on every rank and returns each rank's result in rank order. A failure on any rank is re-raised in the
parent with the child's traceback, and ranks left waiting in a collective are terminated instead of hanging.
"""

from __future__ import annotations

import os
import pickle
import queue
import socket
import time
import traceback
from datetime import timedelta
from typing import Any, Callable

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

__all__ = ["run_distributed", "free_port", "RemoteTraceback", "all_gather_cat"]

_HOST = "127.0.0.1"
# Seconds the parent waits for the other ranks once one rank has failed: they are usually stuck in a collective
# with the dead rank, so waiting for the full timeout would only make a failing test slow.
_GRACE_AFTER_FAILURE_S = 2.0


class RemoteTraceback(Exception):
    """Carries a child's formatted traceback; attached as ``__cause__`` of the re-raised exception."""

    def __init__(self, rank: int, tb: str):
        super().__init__(f"\n--- traceback of rank {rank} ---\n{tb}")
        self.rank = rank
        self.tb = tb

    def __str__(self) -> str:
        return self.args[0]


def free_port() -> int:
    """A TCP port on localhost that was free a moment ago (for code under test that reads ``MASTER_PORT``)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((_HOST, 0))
        return s.getsockname()[1]


def _child(
    rank: int, world_size: int, backend: str, port: int, init_group: bool, threads: int, timeout_s: float,
    payload: bytes, results: Any,
) -> None:
    """Body of one spawned rank: init the group, run ``fn``, report ``("ok", value)`` or ``("err", exc, tb)``."""
    torch.set_num_threads(threads)
    os.environ.update(
        RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world_size), MASTER_ADDR=_HOST, MASTER_PORT=str(port),
    )
    try:
        fn, args, kwargs = pickle.loads(payload)
        if init_group:
            if backend == "nccl":
                torch.cuda.set_device(rank % torch.cuda.device_count())
            # The parent hosts the store (it bound the port), so no rank races for it.
            store = dist.TCPStore(_HOST, port, world_size, is_master=False, timeout=timedelta(seconds=timeout_s))
            dist.init_process_group(
                backend, store=store, rank=rank, world_size=world_size, timeout=timedelta(seconds=timeout_s)
            )
        value = fn(rank, world_size, *args, **kwargs)
        results.put((rank, "ok", pickle.dumps(value)))
    except BaseException as exc:  # noqa: BLE001 - everything must reach the parent
        tb = traceback.format_exc()
        try:
            blob = pickle.dumps(exc)
            pickle.loads(blob)
        except Exception:  # noqa: BLE001 - unpicklable exceptions travel as text only
            blob = None
        results.put((rank, "err", (blob, tb)))
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def _raise_child_error(rank: int, blob: bytes | None, tb: str) -> None:
    remote = RemoteTraceback(rank, tb)
    exc = pickle.loads(blob) if blob is not None else None
    if isinstance(exc, Exception):
        raise exc from remote
    raise RuntimeError(f"rank {rank} failed") from remote


def _context():
    """A forkserver context that has imported torch once: each rank is then a cheap fork of a clean, single-threaded
    server instead of a fresh interpreter importing torch (seconds per rank on a busy two-core CI machine). The
    server never runs torch ops, so forking it is safe (no OpenMP pools or CUDA contexts to inherit)."""
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(["torch", "torch.distributed"])
    return ctx


def run_distributed(
    fn: Callable[..., Any],
    world_size: int,
    *args: Any,
    backend: str = "gloo",
    timeout_s: float = 120,
    init_process_group: bool = True,
    threads_per_rank: int = 1,
    **kwargs: Any,
) -> list:
    """Run ``fn(rank, world_size, *args, **kwargs)`` in ``world_size`` new processes and collect the results.

    Args:
        fn: a module-level (picklable) function; it runs with the default process group initialized.
        world_size: number of ranks (processes).
        backend: ``"gloo"`` (CPU) or ``"nccl"`` (rank r uses GPU ``r % device_count``).
        timeout_s: wall-clock limit for the whole run; also the collective timeout inside the children.
        init_process_group: when False the children only get ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
            ``MASTER_ADDR`` and ``MASTER_PORT`` in their environment and ``fn`` initializes the group itself (for
            testing code that does its own ``init_process_group``).
        threads_per_rank: intra-op threads per child (CI has two cores; oversubscription only slows tests down).

    Returns:
        The (picklable) return values of ``fn``, in rank order.

    Raises:
        The first failing rank's exception (its remote traceback chained as ``__cause__``), or ``TimeoutError``
        naming the ranks that did not finish within ``timeout_s``.
    """
    if world_size < 1:
        raise ValueError(f"world_size must be >= 1, got {world_size}")
    ctx = _context()
    results = ctx.Queue()
    store = None
    if init_process_group:
        # Bind port 0 in the parent: the OS picks a free port atomically, so concurrent test runs cannot collide.
        store = dist.TCPStore(_HOST, 0, world_size, is_master=True, timeout=timedelta(seconds=timeout_s),
                              wait_for_workers=False)
        port = store.port
    else:
        port = free_port()
    payload = pickle.dumps((fn, args, kwargs))
    procs = [
        ctx.Process(
            target=_child,
            args=(rank, world_size, backend, port, init_process_group, threads_per_rank, timeout_s, payload, results),
            daemon=True,
        )
        for rank in range(world_size)
    ]
    for p in procs:
        p.start()
    try:
        return _collect(procs, results, world_size, timeout_s)
    finally:
        for p in procs:
            if p.is_alive():
                p.terminate()
            p.join(timeout=10)
        results.close()
        del store


def _collect(procs: list, results: Any, world_size: int, timeout_s: float) -> list:
    """Read one report per rank; re-raise the first error, or time out naming the silent ranks."""
    deadline = time.monotonic() + timeout_s
    values: dict[int, Any] = {}
    reported: set[int] = set()
    first_error: tuple[int, bytes | None, str] | None = None
    while len(reported) < world_size:
        now = time.monotonic()
        if first_error is not None:
            deadline = min(deadline, now + _GRACE_AFTER_FAILURE_S)
        if now >= deadline:
            break
        try:
            rank, status, data = results.get(timeout=min(1.0, deadline - now))
        except queue.Empty:
            dead = [r for r, p in enumerate(procs) if r not in reported and p.exitcode not in (0, None)]
            for r in dead:
                reported.add(r)
                if first_error is None:
                    first_error = (r, None, f"process exited with code {procs[r].exitcode} without reporting")
            continue
        reported.add(rank)
        if status == "ok":
            values[rank] = pickle.loads(data)
        elif first_error is None:
            first_error = (rank, *data)
        # Later failures are usually consequences of the first one; only the first is re-raised.
    if first_error is not None:
        _raise_child_error(*first_error)
    if len(values) < world_size:
        missing = sorted(set(range(world_size)) - set(values))
        raise TimeoutError(f"ranks {missing} did not finish within {timeout_s} s (world_size={world_size})")
    return [values[r] for r in range(world_size)]


def all_gather_cat(tensor: torch.Tensor, dim: int, group: dist.ProcessGroup | None) -> torch.Tensor:
    """Concatenate every rank's ``tensor`` along ``dim`` in group-rank order (re-assembles a TP-sharded tensor)."""
    if group is None or dist.get_world_size(group) == 1:
        return tensor
    parts = [torch.empty_like(tensor) for _ in range(dist.get_world_size(group))]
    dist.all_gather(parts, tensor.contiguous(), group=group)
    return torch.cat(parts, dim=dim)

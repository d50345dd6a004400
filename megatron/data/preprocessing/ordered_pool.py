"""An ordered process pool that survives its workers being killed at any instant.

``multiprocessing.Pool`` shares one task pipe among all workers, guarded by a cross-process lock that an idle worker
holds while it waits for the next task. A signal sent to the whole process group (a scheduler's ``kill -TERM -PGID``,
``timeout``, Slurm) can kill a worker while it holds that lock; ``Pool.terminate`` (also run by its ``with`` block
and at interpreter exit) then waits for the lock forever, so the parent never exits. Here each worker has its own
task queue and its own result pipe, no lock is shared between processes, and a dead worker is seen through its
sentinel instead of waited for: shutting down after an error or a signal is a kill and a join, never a wait on
state a dead process left behind.
"""

from __future__ import annotations

import collections
import os
import queue as queue_module
import signal
import traceback
from multiprocessing.connection import wait
from typing import Any, Callable, Iterable, Iterator

_ORPHAN_POLL_S = 2.0  # how often an idle worker checks that its parent is still alive


def _worker_main(setup: Callable[..., Callable[[Any], Any]], setup_args: tuple, tasks, results, parent: int) -> None:
    # Ctrl-C reaches the whole foreground group: the parent handles it and kills the workers. SIGTERM kills a
    # worker outright, whatever handler it inherited from the parent.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    fn = setup(*setup_args)
    while True:
        try:
            item = tasks.get(timeout=_ORPHAN_POLL_S)
        except queue_module.Empty:
            if os.getppid() != parent:  # the parent was SIGKILLed: nobody will send work or read results
                return
            continue
        if item is None:
            return
        try:
            results.send(("ok", fn(item)))
        except Exception:  # noqa: BLE001 - the parent re-raises it with this traceback
            results.send(("error", traceback.format_exc()))


class WorkerError(RuntimeError):
    """A worker process died or raised; the message names the worker and carries its traceback or exit code."""


class OrderedPool:
    """``workers`` processes applying ``setup(*setup_args)``'s returned function to items, results in input order.

    Items go round-robin to the workers, at most ``depth`` outstanding per worker, so memory stays bounded however
    long the input (``Pool.imap`` reads the whole input ahead). Use as a context manager: leaving the block normally
    stops the workers; leaving it by an exception (including ``KeyboardInterrupt`` or a signal turned into one)
    kills them and never blocks.
    """

    def __init__(self, ctx, workers: int, setup: Callable[..., Callable[[Any], Any]], setup_args: tuple = (),
                 depth: int = 2) -> None:
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        self.depth = depth
        self._tasks, self._results, self._procs = [], [], []
        try:
            for _ in range(workers):
                tasks = ctx.Queue()  # put() hands the item to a feeder thread: the parent never blocks on a pipe
                reader, writer = ctx.Pipe(duplex=False)
                proc = ctx.Process(target=_worker_main, args=(setup, setup_args, tasks, writer, os.getpid()),
                                   daemon=True)
                proc.start()
                writer.close()  # the worker's end; closing ours lets a worker's death read as EOF
                self._tasks.append(tasks)
                self._results.append(reader)
                self._procs.append(proc)
        except BaseException:
            self._kill()
            raise

    def imap(self, items: Iterable[Any]) -> Iterator[Any]:
        """Results of the function for ``items``, in order; a worker's exception or death is a WorkerError."""
        n = len(self._procs)
        pending: collections.deque[int] = collections.deque()
        for k, item in enumerate(items):
            self._tasks[k % n].put(item)
            pending.append(k % n)
            if len(pending) >= self.depth * n:
                yield self._receive(pending.popleft())
        while pending:
            yield self._receive(pending.popleft())

    def _receive(self, w: int) -> Any:
        conn, proc = self._results[w], self._procs[w]
        ready = wait([conn, proc.sentinel])
        try:
            if conn not in ready:
                raise EOFError
            kind, payload = conn.recv()
        except EOFError:
            proc.join(timeout=1.0)
            signal_hint = " (killed by a signal, e.g. the out-of-memory killer)" if (proc.exitcode or 0) < 0 else ""
            raise WorkerError(f"worker process {w} died (exit code {proc.exitcode}){signal_hint}") from None
        if kind == "error":
            raise WorkerError(f"worker process {w} failed:\n{payload}")
        return payload

    def _stop(self) -> None:
        for tasks in self._tasks:
            tasks.put(None)
        for proc in self._procs:
            proc.join()
        self._close_queues()

    def _kill(self) -> None:
        for proc in self._procs:
            if proc.is_alive():
                proc.kill()
        for proc in self._procs:
            proc.join()
        for tasks in self._tasks:
            tasks.cancel_join_thread()  # items still in a feeder thread have no reader any more
        self._close_queues()

    def _close_queues(self) -> None:
        for tasks in self._tasks:
            tasks.close()
        for conn in self._results:
            conn.close()

    def __enter__(self) -> "OrderedPool":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self._stop()
        else:
            self._kill()

"""Named wall-clock timers owned by the training loop (not a global registry).

On CUDA, a timer synchronizes the device when it stops so that the time covers the queued kernels; on CPU the
work is synchronous already.
"""

from __future__ import annotations

import time

import torch

__all__ = ["Timers"]


class _Timer:
    def __init__(self, sync_cuda: bool) -> None:
        self._sync = sync_cuda
        self._start: float | None = None
        self.elapsed_s = 0.0

    def start(self) -> None:
        assert self._start is None, "timer started twice without stop()"
        self._start = time.perf_counter()

    def stop(self) -> None:
        assert self._start is not None, "timer stopped without start()"
        if self._sync:
            torch.cuda.synchronize()
        self.elapsed_s += time.perf_counter() - self._start
        self._start = None


class Timers:
    """A set of accumulating timers: ``timers("forward-backward").start()`` ... ``.stop()``.

    ``pop(name)`` returns the accumulated seconds and resets that timer; the loop pops them once per log interval.
    """

    def __init__(self, sync_cuda: bool | None = None) -> None:
        self._sync = torch.cuda.is_available() if sync_cuda is None else sync_cuda
        self._timers: dict[str, _Timer] = {}

    def __call__(self, name: str) -> _Timer:
        if name not in self._timers:
            self._timers[name] = _Timer(self._sync)
        return self._timers[name]

    def pop(self, name: str) -> float:
        """Seconds accumulated by ``name`` since the last pop (0 for an unknown timer)."""
        timer = self._timers.get(name)
        if timer is None:
            return 0.0
        elapsed, timer.elapsed_s = timer.elapsed_s, 0.0
        return elapsed

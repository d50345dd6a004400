"""Project logging: per-module loggers and rank-0-only helpers.

The library never calls ``print``; it logs through ``get_logger(__name__)``. ``log_rank0`` logs only on global
rank 0 so that multi-process runs print each line once. Metric sinks live in ``megatron.training.metrics``.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Callable, Sequence

_CONFIGURED = False


def _global_rank() -> int:
    try:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            return dist.get_rank()
    except ImportError:  # pragma: no cover - torch is a hard dependency
        pass
    return int(os.environ.get("RANK", "0"))


def setup_logging(level: int | str = "INFO") -> None:
    """Configure the root ``megatron`` logger once: one line per record on stderr, rank-tagged when distributed."""
    global _CONFIGURED
    root = logging.getLogger("megatron")
    if isinstance(level, str):
        level = logging.getLevelName(level.upper())
    root.setLevel(level)
    if _CONFIGURED:
        return
    handler = logging.StreamHandler(sys.stderr)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    prefix = f"[rank{_global_rank()}] " if world > 1 else ""
    handler.setFormatter(logging.Formatter(f"{prefix}%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S"))
    root.addHandler(handler)
    root.propagate = False
    _CONFIGURED = True


def get_logger(name: str) -> logging.Logger:
    """Logger for a module; pass ``__name__``."""
    return logging.getLogger(name)


def run_entry_point(main: Callable[[Sequence[str]], object], argv: Sequence[str]) -> None:
    """Run an entry script's ``main(argv)``: a user mistake (``ValueError`` / ``NotImplementedError``) prints one
    ``error: ...`` line, on global rank 0 only (under torchrun every rank raises the same error), without a
    traceback, and exits with status 2. ``main`` itself keeps raising for in-process callers."""
    try:
        main(argv)
    except (ValueError, NotImplementedError) as exc:
        if _global_rank() == 0:
            print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)


def log_rank0(logger: logging.Logger, msg: str, *args, level: int = logging.INFO) -> None:
    """Log ``msg`` on global rank 0 only."""
    if _global_rank() == 0:
        logger.log(level, msg, *args)

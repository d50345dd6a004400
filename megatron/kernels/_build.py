"""JIT builder for the CUDA extensions under ``csrc/``: compiled with ``torch.utils.cpp_extension.load`` (ninja) on
first use, cached in the user cache directory, never at import time and never without CUDA.

``MEGATRON_DE_KERNELS`` picks the backend for every op of ``megatron.kernels``: ``auto`` (default: the compiled op
when CUDA is available and the build succeeds, else the PyTorch reference), ``reference`` (never compile), or ``cuda``
(compile or fail loudly).
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from types import ModuleType
from typing import Literal, get_args

import torch

from megatron.logging import get_logger

logger = get_logger(__name__)

KernelMode = Literal["auto", "reference", "cuda"]
KERNELS_ENV = "MEGATRON_DE_KERNELS"
# csrc/ sits beside the megatron package in a source checkout; an installed wheel has none and uses the reference.
CSRC_DIR = Path(__file__).resolve().parents[2] / "csrc"


def kernel_mode() -> KernelMode:
    """The backend requested through ``MEGATRON_DE_KERNELS`` (read on every call, so tests can switch it)."""
    mode = os.environ.get(KERNELS_ENV, "auto").strip().lower() or "auto"
    if mode not in get_args(KernelMode):
        raise ValueError(f"environment variable {KERNELS_ENV}={mode!r} is not one of {get_args(KernelMode)}")
    return mode  # type: ignore[return-value]


def build_directory(name: str) -> Path:
    """Per-extension build dir under the user cache, keyed by torch and CUDA versions so upgrades rebuild cleanly.

    ``TORCH_EXTENSIONS_DIR`` overrides the root, as it does for every torch JIT extension.
    """
    root = os.environ.get("TORCH_EXTENSIONS_DIR")
    if root is None:
        cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
        root = str(cache / "megatron_de" / "torch_extensions")
    tag = f"torch{torch.__version__.split('+')[0]}_cu{(torch.version.cuda or 'none').replace('.', '')}"
    path = Path(root) / tag / name
    path.mkdir(parents=True, exist_ok=True)
    return path


@functools.lru_cache(maxsize=None)
def load_cuda_extension(name: str) -> ModuleType:
    """Compile (or load from the cache) ``csrc/<name>/*.cu|*.cpp`` as the module ``megatron_de_<name>``.

    Raises:
        RuntimeError: CUDA is not available, the sources are missing, or the build fails (message from the compiler).
    """
    if not torch.cuda.is_available():
        raise RuntimeError(f"cannot build the {name} CUDA extension: torch.cuda.is_available() is False")
    src_dir = CSRC_DIR / name
    sources = sorted(str(p) for p in src_dir.glob("*") if p.suffix in (".cu", ".cpp"))
    if not sources:
        raise RuntimeError(f"no CUDA sources for {name!r} under {src_dir} (installed without csrc/?)")
    from torch.utils import cpp_extension  # imported lazily: pulls in setuptools and friends

    logger.info("building CUDA extension %s from %d sources (cached after the first build)", name, len(sources))
    return cpp_extension.load(
        name=f"megatron_de_{name}",
        sources=sources,
        extra_cflags=["-O3", "-std=c++17"],
        extra_cuda_cflags=["-O3", "-std=c++17", "-lineinfo"],
        extra_include_paths=[str(src_dir)],
        build_directory=str(build_directory(name)),
        verbose=False,
    )


@functools.lru_cache(maxsize=None)
def _try_load(name: str) -> ModuleType | None:
    try:
        return load_cuda_extension(name)
    except Exception as exc:  # noqa: BLE001 - any build failure falls back to the reference in "auto" mode
        logger.warning("CUDA extension %s unavailable, using the PyTorch reference: %s", name, exc)
        return None


def cuda_extension_or_none(name: str) -> ModuleType | None:
    """The compiled extension when the mode and the machine allow it, else ``None`` (use the reference).

    In ``cuda`` mode a missing GPU or a failed build raises instead of falling back.
    """
    mode = kernel_mode()
    if mode == "reference":
        return None
    if mode == "cuda":
        return load_cuda_extension(name)
    if not torch.cuda.is_available():
        return None
    return _try_load(name)

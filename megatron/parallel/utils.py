"""Small helpers shared by the parallel layers: TP parameter tags, divisibility checks and shard slicing.

Sharded parameters carry Megatron's attributes ``tensor_model_parallel``, ``partition_dim`` and
``partition_stride`` so that grad clipping, checkpoint conversion and tests can find and re-assemble them.
"""

from __future__ import annotations

import torch

from megatron.parallel.state import ParallelState

__all__ = [
    "divide",
    "ensure_divisibility",
    "set_tensor_model_parallel_attributes",
    "copy_tensor_model_parallel_attributes",
    "param_is_tensor_parallel",
    "param_is_not_tensor_parallel_duplicate",
    "shard_of",
]


def ensure_divisibility(numerator: int, denominator: int, what: str, by: str) -> None:
    """Raise ``ValueError("<what> (n) must be divisible by <by> (d)")`` unless ``denominator`` divides ``numerator``."""
    if denominator <= 0 or numerator % denominator != 0:
        raise ValueError(f"{what} ({numerator}) must be divisible by {by} ({denominator})")


def divide(numerator: int, denominator: int, what: str = "value", by: str = "divisor") -> int:
    """``numerator // denominator`` after :func:`ensure_divisibility`."""
    ensure_divisibility(numerator, denominator, what, by)
    return numerator // denominator


def set_tensor_model_parallel_attributes(param: torch.Tensor, is_parallel: bool, dim: int, stride: int = 1) -> None:
    """Tag ``param`` as split (or not) over the TP group along ``dim``."""
    param.tensor_model_parallel = is_parallel
    param.partition_dim = dim
    param.partition_stride = stride


def copy_tensor_model_parallel_attributes(dst: torch.Tensor, src: torch.Tensor) -> None:
    """Copy the TP tags of ``src`` onto ``dst`` (for tensors derived from a parameter, e.g. fp32 master copies)."""
    set_tensor_model_parallel_attributes(
        dst, param_is_tensor_parallel(src), getattr(src, "partition_dim", -1), getattr(src, "partition_stride", 1)
    )


def param_is_tensor_parallel(param: torch.Tensor) -> bool:
    """True when ``param`` holds only this rank's shard of a larger tensor."""
    return bool(getattr(param, "tensor_model_parallel", False))


def param_is_not_tensor_parallel_duplicate(param: torch.Tensor, parallel_state: ParallelState) -> bool:
    """True for parameters to count once per TP group (grad norms): every shard, and replicated ones on TP rank 0."""
    return param_is_tensor_parallel(param) or parallel_state.tp_rank == 0


def shard_of(full: torch.Tensor, dim: int, tp_rank: int, tp_size: int) -> torch.Tensor:
    """Rank ``tp_rank``'s contiguous chunk of ``full`` along ``dim`` (a view; ``full.size(dim)`` divisible by tp)."""
    size = divide(full.size(dim), tp_size, f"size of dim {dim}", "tensor_model_parallel_size")
    return full.narrow(dim, tp_rank * size, size)

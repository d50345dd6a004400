"""Autograd-aware collectives that move activations into and out of tensor-parallel regions.

Each function is an identity in one direction and a collective in the other (Megatron's table: copy/reduce,
scatter/gather over the last dimension). The group is always explicit; ``None`` or a size-1 group short-circuits
to an identity so single-process code never touches torch.distributed.
"""

from __future__ import annotations

import torch
import torch.distributed as dist

__all__ = [
    "copy_to_tensor_model_parallel_region",
    "reduce_from_tensor_model_parallel_region",
    "scatter_to_tensor_model_parallel_region",
    "gather_from_tensor_model_parallel_region",
    "group_size",
    "group_rank",
]


def group_size(group: dist.ProcessGroup | None) -> int:
    """Number of ranks in ``group`` (1 for ``None``)."""
    return 1 if group is None else dist.get_world_size(group)


def group_rank(group: dist.ProcessGroup | None) -> int:
    """This process's rank inside ``group`` (0 for ``None``)."""
    return 0 if group is None else dist.get_rank(group)


def _all_reduce(x: torch.Tensor, group: dist.ProcessGroup | None) -> torch.Tensor:
    if group_size(group) == 1:
        return x
    # A fresh contiguous buffer: the caller's tensor may be saved for backward by another op.
    out = x.contiguous().clone()
    dist.all_reduce(out, group=group)
    return out


def _split_last_dim(x: torch.Tensor, group: dist.ProcessGroup | None) -> torch.Tensor:
    world = group_size(group)
    if world == 1:
        return x
    last = x.size(-1)
    assert last % world == 0, f"last dim {last} not divisible by group size {world}"
    chunk = last // world
    return x.narrow(-1, group_rank(group) * chunk, chunk).contiguous()


def _gather_last_dim(x: torch.Tensor, group: dist.ProcessGroup | None) -> torch.Tensor:
    world = group_size(group)
    if world == 1:
        return x
    x = x.contiguous()
    parts = [torch.empty_like(x) for _ in range(world)]
    dist.all_gather(parts, x, group=group)
    return torch.cat(parts, dim=-1)


class _CopyToRegion(torch.autograd.Function):
    """Forward identity, backward all-reduce: the input is replicated, each rank's use contributes a partial grad."""

    @staticmethod
    def forward(ctx, x, group):
        ctx.group = group
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return _all_reduce(grad, ctx.group), None


class _ReduceFromRegion(torch.autograd.Function):
    """Forward all-reduce of partial sums, backward identity."""

    @staticmethod
    def forward(ctx, x, group):
        return _all_reduce(x, group)

    @staticmethod
    def backward(ctx, grad):
        return grad, None


class _ScatterToRegion(torch.autograd.Function):
    """Forward keep this rank's chunk of the last dim, backward all-gather."""

    @staticmethod
    def forward(ctx, x, group):
        ctx.group = group
        return _split_last_dim(x, group)

    @staticmethod
    def backward(ctx, grad):
        return _gather_last_dim(grad, ctx.group), None


class _GatherFromRegion(torch.autograd.Function):
    """Forward all-gather along the last dim, backward keep this rank's chunk."""

    @staticmethod
    def forward(ctx, x, group):
        ctx.group = group
        return _gather_last_dim(x, group)

    @staticmethod
    def backward(ctx, grad):
        return _split_last_dim(grad, ctx.group), None


def copy_to_tensor_model_parallel_region(x: torch.Tensor, group: dist.ProcessGroup | None) -> torch.Tensor:
    """Enter a TP region with a replicated input: identity forward, all-reduce of the grad in backward."""
    if group_size(group) == 1:
        return x
    return _CopyToRegion.apply(x, group)


def reduce_from_tensor_model_parallel_region(x: torch.Tensor, group: dist.ProcessGroup | None) -> torch.Tensor:
    """Leave a TP region by summing per-rank partial results: all-reduce forward, identity backward."""
    if group_size(group) == 1:
        return x
    return _ReduceFromRegion.apply(x, group)


def scatter_to_tensor_model_parallel_region(x: torch.Tensor, group: dist.ProcessGroup | None) -> torch.Tensor:
    """``[..., d] -> [..., d/tp]``: keep this rank's chunk forward, all-gather the grad backward."""
    if group_size(group) == 1:
        return x
    return _ScatterToRegion.apply(x, group)


def gather_from_tensor_model_parallel_region(x: torch.Tensor, group: dist.ProcessGroup | None) -> torch.Tensor:
    """``[..., d/tp] -> [..., d]``: all-gather forward, keep this rank's chunk of the grad backward."""
    if group_size(group) == 1:
        return x
    return _GatherFromRegion.apply(x, group)

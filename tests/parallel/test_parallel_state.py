"""Tests of ParallelState (Megatron rank layout, group membership) and of the run_distributed test helper."""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist

from dist_utils import run_distributed
from megatron.parallel.config import ParallelConfig
from megatron.parallel.state import ParallelState


def _layout_body(rank: int, world_size: int, tp: int) -> dict:
    state = ParallelState.build(tp)
    out = {
        "tp_rank": state.tp_rank, "dp_rank": state.dp_rank, "tp_size": state.tp_size, "dp_size": state.dp_size,
        "tp_ranks": state.tp_ranks, "dp_ranks": state.dp_ranks,
        "tp_group_none": state.tp_group is None, "dp_group_none": state.dp_group is None,
    }
    # Sum of global ranks over each group proves the group really contains the ranks we claim.
    for name, group in (("tp_sum", state.tp_group), ("dp_sum", state.dp_group)):
        t = torch.tensor([float(rank)])
        if group is not None:
            dist.all_reduce(t, group=group)
        out[name] = t.item()
    return out


def _tp_equals_world_body(rank: int, world_size: int) -> dict:
    out = _layout_body(rank, world_size, world_size)
    with pytest.raises(ValueError, match=r"world size \(2\) must be divisible by tensor_model_parallel_size \(3\)"):
        ParallelState.build(3)
    return out


def _fail_on_rank1(rank: int, world_size: int) -> int:
    if rank == 1:
        raise KeyError("boom on rank 1")
    dist.barrier()  # rank 0 would wait here forever; the helper must not hang
    return rank


@pytest.mark.distributed
def test_build_megatron_layout_world4():
    """With 4 ranks and TP=2, TP groups are [0,1],[2,3] and DP groups [0,2],[1,3] (Megatron order), and the
    process groups actually contain those ranks."""
    outs = run_distributed(_layout_body, 4, 2)
    for rank, o in enumerate(outs):
        assert (o["tp_rank"], o["dp_rank"]) == (rank % 2, rank // 2)
        assert o["tp_ranks"] == [rank - rank % 2, rank - rank % 2 + 1]
        assert o["dp_ranks"] == [rank % 2, rank % 2 + 2]
        assert o["tp_sum"] == sum(o["tp_ranks"]) and o["dp_sum"] == sum(o["dp_ranks"])
        assert not o["tp_group_none"] and not o["dp_group_none"]


@pytest.mark.distributed
def test_build_size_one_groups_are_none_and_errors_propagate():
    """TP == world gives dp_group None; a non-dividing TP size raises ValueError on every rank; a child's
    exception is re-raised in the parent with its type, and a rank stuck in a collective does not hang the test."""
    outs = run_distributed(_tp_equals_world_body, 2)
    assert all(o["dp_group_none"] and not o["tp_group_none"] and o["dp_size"] == 1 for o in outs)
    with pytest.raises(KeyError, match="boom on rank 1"):
        run_distributed(_fail_on_rank1, 2, timeout_s=60)


def test_single_and_build_without_distributed():
    """Without torch.distributed, build(1) is the single-process state and build(2) is a clear ValueError."""
    assert ParallelState.build(1) == ParallelState.single()
    with pytest.raises(ValueError, match=r"tensor_model_parallel_size \(2\) > 1"):
        ParallelState.build(2)


def test_parallel_config_validation():
    """ParallelConfig rejects a TP size below 1 and resolves the default backend from CUDA availability."""
    with pytest.raises(ValueError, match="tensor_model_parallel_size must be >= 1, got 0"):
        ParallelConfig(tensor_model_parallel_size=0)
    expected = "nccl" if torch.cuda.is_available() else "gloo"
    assert ParallelConfig().resolved_backend() == expected
    assert ParallelConfig(distributed_backend="gloo").resolved_backend() == "gloo"


def _deepcopy_and_self_init_body(rank: int, world_size: int) -> float:
    import copy
    import os

    from megatron.parallel.layers import ColumnParallelLinear, normal_init

    dist.init_process_group("gloo", rank=int(os.environ["RANK"]), world_size=int(os.environ["WORLD_SIZE"]))
    state = ParallelState.build(2)
    layer = ColumnParallelLinear(4, 4, parallel_state=state, init_method=normal_init(0.1), init_seed=0)
    clone = copy.deepcopy(layer)
    assert clone.parallel_state is state and clone.weight is not layer.weight
    t = torch.tensor([1.0])
    dist.all_reduce(t, group=clone.tp_group)
    return t.item()


@pytest.mark.distributed
def test_self_initialized_group_and_deepcopy_of_parallel_layers():
    """With init_process_group=False the body can init from RANK/WORLD_SIZE/MASTER_* itself; a deep-copied parallel
    layer shares the original ParallelState and its groups still work."""
    assert run_distributed(_deepcopy_and_self_init_body, 2, init_process_group=False) == [2.0, 2.0]

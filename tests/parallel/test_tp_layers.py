"""Tensor-parallel mappings and layers against their unsharded equivalents, and TP-independent initialization."""

from __future__ import annotations

import pytest
import torch

from dist_utils import all_gather_cat, run_distributed
from megatron.parallel.layers import ColumnParallelLinear, RowParallelLinear, VocabParallelEmbedding, normal_init
from megatron.parallel.mappings import (
    copy_to_tensor_model_parallel_region,
    gather_from_tensor_model_parallel_region,
    reduce_from_tensor_model_parallel_region,
    scatter_to_tensor_model_parallel_region,
)
from megatron.parallel.state import ParallelState

# fp32 everywhere. The sharded layers sum the same products in a different order (per-rank partial GEMMs, then an
# all-reduce), so results agree to a few ulps of the O(1) outputs; 1e-5 absolute is ~100x that and still far below
# any real bug (a wrong shard or a missing reduction changes values at O(0.1)).
ATOL, RTOL = 1e-5, 1e-5


def _fake_tp_state(tp_rank: int, tp_size: int) -> ParallelState:
    """A TP rank's state for constructing (not running) sharded layers in one process."""
    return ParallelState(world_size=tp_size, rank=tp_rank, tp_size=tp_size, tp_rank=tp_rank, tp_group=None,
                         dp_size=1, dp_rank=0, dp_group=None)


def _build(kind: str, state: ParallelState) -> torch.nn.Module:
    init = dict(parallel_state=state, init_method=normal_init(0.5), init_seed=7)
    if kind == "column":
        return ColumnParallelLinear(6, 8, **init)
    if kind == "column_gather":
        return ColumnParallelLinear(6, 8, gather_output=True, **init)
    if kind == "row":
        return RowParallelLinear(8, 6, input_is_parallel=False, **init)
    return VocabParallelEmbedding(16, 6, **init)


def _mappings_and_layers_body(rank: int, world_size: int) -> None:
    state = ParallelState.build(world_size)
    group = state.tp_group
    gen = torch.Generator().manual_seed(0)
    # Mappings: forward values and the backward collectives.
    x = torch.randn(3, 2, 4, generator=gen, requires_grad=True)
    y = gather_from_tensor_model_parallel_region(scatter_to_tensor_model_parallel_region(x, group), group)
    torch.testing.assert_close(y, x, atol=0, rtol=0)
    (y * (rank + 1)).sum().backward()  # gather's backward keeps the own chunk, scatter's gathers them again
    expected = torch.cat([torch.full((3, 2, 2), float(r + 1)) for r in range(world_size)], dim=-1)
    torch.testing.assert_close(x.grad, expected, atol=0, rtol=0)
    z = torch.ones(2, requires_grad=True)
    w = copy_to_tensor_model_parallel_region(z, group) * (rank + 1)
    reduced = reduce_from_tensor_model_parallel_region(w, group)
    torch.testing.assert_close(reduced, torch.full((2,), 3.0), atol=0, rtol=0)  # 1 + 2
    reduced.sum().backward()
    torch.testing.assert_close(z.grad, torch.full((2,), 3.0), atol=0, rtol=0)  # copy_to all-reduces the grads

    for kind in ("column", "column_gather", "row", "embedding"):
        sharded, full = _build(kind, state), _build(kind, ParallelState.single())
        if kind == "embedding":
            a = b = torch.randint(0, 16, (5, 3), generator=gen)
        else:
            inp = torch.randn(5, 3, full.input_size, generator=gen)
            a, b = inp.clone().requires_grad_(), inp.clone().requires_grad_()
        local_out, out_f = sharded(a), full(b)
        grad_out = torch.randn(out_f.shape, generator=gen)
        if kind == "column":  # output stays split: compare the gathered value, feed each rank its grad slice
            torch.testing.assert_close(all_gather_cat(local_out.detach(), -1, group), out_f, atol=ATOL, rtol=RTOL)
            local_out.backward(grad_out.chunk(world_size, dim=-1)[rank])
        else:
            torch.testing.assert_close(local_out, out_f, atol=ATOL, rtol=RTOL, msg=f"{kind} forward")
            local_out.backward(grad_out)
        out_f.backward(grad_out)
        if kind != "embedding":
            torch.testing.assert_close(a.grad, b.grad, atol=ATOL, rtol=RTOL, msg=f"{kind} input grad")
        for name, p in sharded.named_parameters():
            g = p.grad
            if p.tensor_model_parallel:
                g = all_gather_cat(g, p.partition_dim, group)
            torch.testing.assert_close(g, dict(full.named_parameters())[name].grad, atol=ATOL, rtol=RTOL,
                                       msg=f"{kind}.{name} grad")


@pytest.mark.distributed
def test_tp2_mappings_and_layers_match_unsharded():
    """At TP=2 the four mappings have Megatron's forward/backward collectives, and Column/Row-parallel linear and
    the vocab-parallel embedding give the unsharded layer's outputs, input grads and (re-assembled) weight grads."""
    run_distributed(_mappings_and_layers_body, 2)


@pytest.mark.parametrize("kind", ["column", "row", "embedding"])
def test_initialization_is_tp_size_independent(kind):
    """The TP shards of a layer, concatenated along partition_dim, equal the TP=1 weight from the same seed
    (Megatron's CPU-initialization semantics), and every sharded parameter is tagged with its partition dim."""
    full = _build(kind, ParallelState.single())
    for tp in (2, 4):
        shards = [_build(kind, _fake_tp_state(r, tp)) for r in range(tp)]
        w = shards[0].weight
        assert w.tensor_model_parallel and w.partition_dim == {"column": 0, "row": 1, "embedding": 0}[kind]
        stitched = torch.cat([m.weight for m in shards], dim=w.partition_dim)
        assert torch.equal(stitched, full.weight), f"{kind} tp={tp}"
    assert full.weight.std().item() == pytest.approx(0.5, rel=0.3)


def test_layers_reject_uneven_splits():
    """A size not divisible by the TP size is a ValueError naming the size and the TP size."""
    state = _fake_tp_state(0, 3)
    with pytest.raises(ValueError, match=r"output_size \(8\) must be divisible by tensor_model_parallel_size \(3\)"):
        ColumnParallelLinear(6, 8, parallel_state=state, init_method=normal_init(0.02), init_seed=0)
    with pytest.raises(ValueError, match=r"input_size \(8\) must be divisible by tensor_model_parallel_size \(3\)"):
        RowParallelLinear(8, 6, parallel_state=state, init_method=normal_init(0.02), init_seed=0)
    with pytest.raises(ValueError, match=r"vocab size \(16\) must be divisible by tensor_model_parallel_size \(3\)"):
        VocabParallelEmbedding(16, 6, parallel_state=state, init_method=normal_init(0.02), init_seed=0)

"""Optimizer: weight-decay groups, TP-aware global grad norm and clipping, DP averaging = gradient accumulation,
ZeRO-1 sharding = plain AdamW, bf16 fp32 master weights."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from dist_utils import run_distributed
from megatron.parallel.state import ParallelState
from megatron.training.optimizer import AdamWSettings, MegatronOptimizer, build_param_groups, clip_grad_norm


def _toy_model(dtype: torch.dtype = torch.float32) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 8), nn.LayerNorm(8), nn.GELU(), nn.Linear(8, 3)).to(dtype)


def _batches(n: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(1)
    return [(torch.randn(4, 6, generator=g), torch.randn(4, 3, generator=g)) for _ in range(n)]


def _train(model: nn.Module, opt: MegatronOptimizer, batches: list, steps: int, micro: int) -> list[float]:
    norms = []
    it = iter(batches)
    for _ in range(steps):
        opt.zero_grad()
        for _ in range(micro):
            x, y = next(it)
            loss = ((model(x.to(next(model.parameters()).dtype)).float() - y) ** 2).mean()
            opt.backward(loss / micro)
        for g in opt.param_groups:
            g["lr"] = 1e-2
        norms.append(opt.step().grad_norm)
    return norms


def test_param_groups_exclude_biases_and_norms_from_weight_decay():
    """Matrices get weight decay; biases and 1-D (LayerNorm) parameters get none, as in Megatron."""
    groups = build_param_groups(_toy_model(), 0.1)
    decay, no_decay = groups
    assert decay["weight_decay"] == 0.1 and all(p.dim() == 2 for p in decay["params"])
    assert no_decay["weight_decay"] == 0.0 and len(no_decay["params"]) == 4  # 2 biases + LN weight/bias


def test_clip_matches_naive_norm_single_process():
    """The reported norm equals torch's naive L2 norm over all gradients, and clipping scales to clip_grad."""
    model = _toy_model()
    ref = _toy_model()
    x, y = _batches(1)[0]
    for m in (model, ref):
        ((m(x) - y) ** 2).sum().backward()
    naive = torch.nn.utils.clip_grad_norm_(ref.parameters(), max_norm=0.5)
    params = list(model.parameters())
    norm = clip_grad_norm(params, [p.grad for p in params], 0.5, ParallelState.single())
    assert norm == pytest.approx(float(naive), rel=1e-6)
    for p, r in zip(params, ref.parameters()):
        torch.testing.assert_close(p.grad, r.grad)


def _tp_norm_body(rank: int, world_size: int) -> tuple[float, float]:
    pstate = ParallelState.build(world_size)
    g = torch.Generator().manual_seed(3)
    full = torch.randn(8, 5, generator=g)  # a TP-sharded matrix, split on dim 0
    dup = torch.randn(7, generator=g)  # a TP-duplicated vector (same grad on every TP rank)
    shard = nn.Parameter(torch.zeros(4, 5))
    shard.tensor_model_parallel = True
    rep = nn.Parameter(torch.zeros(7))
    grads = [full.chunk(world_size, 0)[rank].clone(), dup.clone()]
    norm = clip_grad_norm([shard, rep], grads, 1.0, pstate)
    naive = torch.cat([full.flatten(), dup]).norm().item()
    clipped = torch.cat([grads[0].flatten(), grads[1]]).norm().item()
    return norm, naive, clipped


@pytest.mark.distributed
def test_tp_grad_norm_counts_shards_once_and_duplicates_once():
    """With TP=2 the global norm equals the naive norm of the unsharded gradients: sharded parameters contribute
    each shard once, duplicated ones once (not once per rank); clipping uses that norm on every rank."""
    for norm, naive, clipped in run_distributed(_tp_norm_body, 2):
        assert norm == pytest.approx(naive, rel=1e-6)
        # Each rank holds half of the sharded matrix plus the whole duplicate; clipping scaled both by 1/naive.
        assert clipped < norm


def _dp_body(rank: int, world_size: int) -> dict[bool, list]:
    pstate = ParallelState.build(1)
    out = {}
    for distributed_opt in (False, True):
        model = _toy_model()
        opt = MegatronOptimizer(model, AdamWSettings(weight_decay=0.1, clip_grad=0.3), pstate,
                                use_distributed_optimizer=distributed_opt)
        batches = _batches(12)
        # Global batch k = micro-batches [4k, 4k+4); rank r takes [4k + 2r, 4k + 2r + 2), as Megatron's sampler.
        mine = [b for i, b in enumerate(batches) if (i % 4) // 2 == rank]
        _train(model, opt, mine, steps=3, micro=2)
        state = opt.state_dict()  # collective with ZeRO
        out[distributed_opt] = [p.detach().clone() for p in model.parameters()] + [state is not None]
    return out


@pytest.mark.distributed
@pytest.mark.slow
def test_dp2_equals_single_process_with_double_accumulation():
    """Two data-parallel ranks with 2 micro-batches each give the same parameters (after clipping and weight decay)
    as one process accumulating 4 micro-batches, with and without ZeRO-1 optimizer sharding."""
    model = _toy_model()
    opt = MegatronOptimizer(model, AdamWSettings(weight_decay=0.1, clip_grad=0.3), ParallelState.single())
    _train(model, opt, _batches(12), steps=3, micro=4)
    ref = [p.detach() for p in model.parameters()]
    results = run_distributed(_dp_body, 2)
    for distributed_opt in (False, True):
        for rank, by_mode in enumerate(results):
            params = by_mode[distributed_opt]
            has_state = params.pop()
            assert has_state == (rank == 0 or not distributed_opt)
            for got, want in zip(params, ref):
                # fp32 sums in a different order: a few ulps after three Adam steps.
                torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


def test_bf16_keeps_fp32_masters_and_accumulates_in_fp32():
    """A bf16 model trains through fp32 master weights: many tiny updates that bf16 alone would round away
    accumulate in the masters, and the model holds the rounded masters."""
    model = _toy_model(torch.bfloat16)
    opt = MegatronOptimizer(model, AdamWSettings(weight_decay=0.0, clip_grad=0.0), ParallelState.single())
    assert all(p.main_grad.dtype == torch.float32 for p in opt.params)
    start = [m.detach().clone() for m in opt.masters]
    batches = _batches(8)
    for step in range(8):
        opt.zero_grad()
        x, y = batches[step]
        opt.backward(((model(x.bfloat16()).float() - y) ** 2).mean())
        for g in opt.param_groups:
            g["lr"] = 1e-5
        assert opt.step().applied
    for p, m, s in zip(opt.params, opt.masters, start):
        assert m.dtype == torch.float32 and p.dtype == torch.bfloat16
        torch.testing.assert_close(p, m.to(torch.bfloat16), rtol=0, atol=0)
        assert not torch.equal(m, s), "fp32 masters moved"


def test_state_dict_roundtrip_restores_masters_and_adam_state():
    """Loading an optimizer state into a fresh optimizer continues exactly like the original."""
    model_a = _toy_model(torch.bfloat16)
    opt_a = MegatronOptimizer(model_a, AdamWSettings(), ParallelState.single())
    batches = _batches(6)
    _train(model_a, opt_a, batches[:3], steps=3, micro=1)
    state = copy.deepcopy(opt_a.state_dict())  # torch's state_dict shares the live Adam tensors
    model_b = _toy_model(torch.bfloat16)
    model_b.load_state_dict(model_a.state_dict())
    opt_b = MegatronOptimizer(model_b, AdamWSettings(), ParallelState.single())
    opt_b.load_state_dict(state)
    _train(model_a, opt_a, batches[3:], steps=3, micro=1)
    _train(model_b, opt_b, batches[3:], steps=3, micro=1)
    for a, b in zip(opt_a.masters, opt_b.masters):
        torch.testing.assert_close(a, b, rtol=0, atol=0)

"""Vocab-parallel cross entropy against torch.nn.functional.cross_entropy, single rank and split over TP=2."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from dist_utils import run_distributed
from megatron.parallel.cross_entropy import vocab_parallel_cross_entropy
from megatron.parallel.state import ParallelState

V = 24
# fp32 on both sides; the parallel version subtracts a global max and sums exponentials per shard, torch uses one
# fused log-softmax. Differences are rounding-level (~1e-7 relative); 1e-5 leaves room for summation order only.
ATOL, RTOL = 1e-5, 1e-5


def _problem(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(5, 3, V, generator=gen) * 4.0  # [s, b, V]; large spread exercises the max shift
    target = torch.randint(0, V, (5, 3), generator=gen)
    return logits, target


def _reference(logits: torch.Tensor, target: torch.Tensor, alpha: float) -> tuple[torch.Tensor, torch.Tensor]:
    """torch's CE with Megatron's smoothing convention mapped onto torch's (alpha * V / (V - 1)), and its grad."""
    x = logits.clone().requires_grad_()
    loss = F.cross_entropy(x.view(-1, V), target.view(-1), reduction="none",
                           label_smoothing=alpha * V / (V - 1)).view(target.shape)
    weights = torch.linspace(0.5, 1.5, loss.numel()).view(loss.shape)  # non-uniform upstream grad
    (loss * weights).sum().backward()
    return loss.detach(), x.grad


def _ours(logits, target, alpha, group, rank=0, world=1):
    x = logits.chunk(world, dim=-1)[rank].clone().requires_grad_()
    loss = vocab_parallel_cross_entropy(x, target, group, label_smoothing=alpha)
    weights = torch.linspace(0.5, 1.5, loss.numel()).view(loss.shape)
    (loss * weights).sum().backward()
    return loss.detach(), x.grad


@pytest.mark.parametrize("alpha", [0.0, 0.1])
def test_tp1_matches_torch_cross_entropy(alpha):
    """With one rank the loss and its gradient equal torch's cross entropy (label smoothing in Megatron's
    convention: target keeps 1 - alpha), and the loss is fp32 even for bf16 logits."""
    logits, target = _problem()
    ref_loss, ref_grad = _reference(logits, target, alpha)
    loss, grad = _ours(logits, target, alpha, None)
    torch.testing.assert_close(loss, ref_loss, atol=ATOL, rtol=RTOL)
    torch.testing.assert_close(grad, ref_grad, atol=ATOL, rtol=RTOL)
    bf16_loss = vocab_parallel_cross_entropy(logits.bfloat16(), target, None, label_smoothing=alpha)
    assert bf16_loss.dtype == torch.float32
    torch.testing.assert_close(bf16_loss, ref_loss, atol=0.1, rtol=0.02)  # bf16 has 8 mantissa bits


def _tp2_body(rank: int, world_size: int) -> list:
    state = ParallelState.build(world_size)
    logits, target = _problem()
    out = []
    for alpha in (0.0, 0.1):
        ref_loss, ref_grad = _reference(logits, target, alpha)
        loss, grad = _ours(logits, target, alpha, state.tp_group, rank, world_size)
        torch.testing.assert_close(loss, ref_loss, atol=ATOL, rtol=RTOL)
        torch.testing.assert_close(grad, ref_grad.chunk(world_size, dim=-1)[rank], atol=ATOL, rtol=RTOL)
        out.append(loss)
    return out


@pytest.mark.distributed
def test_tp2_matches_torch_cross_entropy():
    """Split over two ranks (targets owned by either rank), each rank gets torch's full loss and its own slice of
    torch's gradient, with and without label smoothing; both ranks return bitwise-identical losses."""
    outs = run_distributed(_tp2_body, 2)
    for a, b in zip(*outs):
        assert torch.equal(a, b)


def test_rejects_bad_arguments():
    """Smoothing outside [0, 1) and mismatched logits/target shapes are ValueErrors with the values."""
    logits, target = _problem()
    with pytest.raises(ValueError, match=r"label_smoothing must be in \[0, 1\), got 1.0"):
        vocab_parallel_cross_entropy(logits, target, None, label_smoothing=1.0)
    with pytest.raises(ValueError, match=r"logits shape \(5, 3, 24\) must be target shape \(3, 5\)"):
        vocab_parallel_cross_entropy(logits, target.T, None)

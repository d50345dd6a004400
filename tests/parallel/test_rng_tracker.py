"""RNG tracker streams (per-TP-rank vs shared), state save/restore, and RNG-preserving recomputation."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from dist_utils import run_distributed
from megatron.parallel.random import (
    DATA_PARALLEL_RNG,
    MODEL_PARALLEL_RNG,
    TOKEN_ROUTING_RNG,
    RNGStatesTracker,
    checkpoint,
    derive_seed,
)
from megatron.parallel.state import ParallelState


def _dropout_masks(rank: int, world_size: int) -> dict:
    state = ParallelState.build(world_size)
    torch.manual_seed(1234)  # the training setup seeds the default stream identically on every rank
    tracker = RNGStatesTracker.build(1234, state)
    ones = torch.ones(64)
    masks = {"outside": F.dropout(ones, 0.5)}
    with tracker.fork(MODEL_PARALLEL_RNG):
        masks["tp_region"] = F.dropout(ones, 0.5)
    with tracker.fork(TOKEN_ROUTING_RNG):
        masks["routing"] = torch.randperm(64)
    masks["outside_after"] = F.dropout(ones, 0.5)
    return masks


@pytest.mark.distributed
def test_tp_region_dropout_differs_across_tp_ranks_and_default_stream_matches():
    """On two TP ranks, dropout under fork(MODEL_PARALLEL_RNG) draws different masks, while the default stream
    (hidden dropout) and the token-routing stream (random-LTD) draw identical ones, before and after a fork."""
    r0, r1 = run_distributed(_dropout_masks, 2)
    assert not torch.equal(r0["tp_region"], r1["tp_region"])
    for key in ("outside", "outside_after", "routing"):
        assert torch.equal(r0[key], r1[key]), key


def test_fork_isolates_streams_and_states_round_trip():
    """A fork neither advances nor is advanced by the default generator; get_states/set_states replays a stream;
    duplicate names or seeds and mismatched state sets are rejected."""
    tracker = RNGStatesTracker()
    tracker.add("a", 5)
    torch.manual_seed(0)
    expected_default = torch.rand(4)
    torch.manual_seed(0)
    saved = tracker.get_states()
    with tracker.fork("a"):
        first = torch.rand(4)
    assert torch.equal(torch.rand(4), expected_default)
    with tracker.fork("a"):
        second = torch.rand(4)
    assert not torch.equal(first, second)  # the stream advanced
    tracker.set_states(saved)
    with tracker.fork("a"):
        assert torch.equal(torch.rand(4), first)
    assert torch.equal(first, torch.rand(4, generator=torch.Generator().manual_seed(5)))
    with pytest.raises(ValueError, match="already exists"):
        tracker.add("a", 6)
    with pytest.raises(ValueError, match="seed 5 for RNG state 'b' is already used by 'a'"):
        tracker.add("b", 5)
    with pytest.raises(ValueError, match="expected"):
        tracker.set_states({})
    with pytest.raises(KeyError):
        with tracker.fork("missing"):
            pass


def test_build_uses_megatron_seed_offsets():
    """build() seeds data-parallel = seed, model-parallel = seed + 2718 + tp_rank, token routing independent of
    tp_rank; derive_seed is deterministic and key-sensitive."""
    def first_draw(tracker, name):
        with tracker.fork(name):
            return torch.rand(3)

    states = [ParallelState(world_size=2, rank=r, tp_size=2, tp_rank=r, tp_group=None, dp_size=1, dp_rank=0,
                            dp_group=None) for r in (0, 1)]
    t0, t1 = (RNGStatesTracker.build(10, s) for s in states)
    assert torch.equal(first_draw(t1, MODEL_PARALLEL_RNG), torch.rand(3, generator=torch.Generator().manual_seed(2729)))
    assert torch.equal(first_draw(t0, DATA_PARALLEL_RNG), torch.rand(3, generator=torch.Generator().manual_seed(10)))
    assert torch.equal(first_draw(t0, TOKEN_ROUTING_RNG), first_draw(t1, TOKEN_ROUTING_RNG))
    assert derive_seed(1, "a", 2) == derive_seed(1, "a", 2) != derive_seed(1, "a", 3)


def _noisy(x: torch.Tensor, w: torch.Tensor, tracker: RNGStatesTracker) -> torch.Tensor:
    h = F.dropout(torch.tanh(x @ w), 0.3)  # default stream
    with tracker.fork(MODEL_PARALLEL_RNG):
        h = F.dropout(h, 0.3)  # tracked stream
    with tracker.fork(TOKEN_ROUTING_RNG):
        h = h[:, torch.randperm(h.size(1))]  # a token-choice-like draw
    return (h @ w.T).sin()


def _run(recompute: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    torch.manual_seed(3)
    tracker = RNGStatesTracker.build(3, ParallelState.single())
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(6, 8, generator=gen, requires_grad=True)
    w = torch.randn(8, 8, generator=gen, requires_grad=True)
    out = checkpoint(_noisy, x, w, tracker, rng_tracker=tracker) if recompute else _noisy(x, w, tracker)
    out = _noisy(out, w, tracker)  # later draws must continue from the same stream positions
    out.square().sum().backward()
    return out.detach(), x.grad, w.grad


def test_checkpoint_replays_default_and_tracker_randomness_bitwise():
    """checkpoint() with dropout in the default stream, dropout in a forked stream and a forked permutation gives
    bitwise the same output and gradients as running without recomputation, and leaves later draws unchanged."""
    plain, recomputed = _run(False), _run(True)
    for a, b in zip(plain, recomputed):
        assert torch.equal(a, b)


def test_checkpoint_without_tracker_state_restore_would_differ():
    """Control for the test above: recomputing with the tracker's post-forward state (no restore) changes the
    gradients, so the equality above really depends on replaying the tracker streams."""
    torch.manual_seed(3)
    tracker = RNGStatesTracker.build(3, ParallelState.single())
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(6, 8, generator=gen, requires_grad=True)
    w = torch.randn(8, 8, generator=gen, requires_grad=True)
    out = checkpoint(_noisy, x, w, tracker)  # torch restores the default stream only
    out = _noisy(out, w, tracker)
    out.square().sum().backward()
    assert not torch.equal(x.grad, _run(False)[1])

"""RNG tracker streams (per-TP-rank vs shared), state save/restore, RNG-preserving recomputation, and dropout from
an explicit stream state (the form torch.compile traces)."""

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
    dropout,
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


def _bits(t: torch.Tensor) -> torch.Tensor:
    return t.view(torch.int32)  # bitwise comparison: tells -0.0 from 0.0


@pytest.mark.parametrize("p", [0.1, 0.3, 0.07])
def test_dropout_from_explicit_state_is_f_dropout_bitwise(p):
    """dropout(x, p, True, rng_state) gives F.dropout's output and gradient bit for bit (fp32 on CPU, signed zeros
    included) from the same generator state, advances the state exactly as F.dropout advances the default
    generator, and leaves the default generator alone; without a state, or in eval mode, it is F.dropout."""
    x = torch.randn(33, 2, 40, generator=torch.Generator().manual_seed(1), requires_grad=True)
    grad = torch.randn(33, 2, 40, generator=torch.Generator().manual_seed(2))
    torch.manual_seed(7)
    expected = F.dropout(x, p, True)
    expected_state = torch.get_rng_state()
    state = {"cpu": torch.Generator().manual_seed(7).get_state()}
    torch.manual_seed(0)
    default_before = torch.get_rng_state()
    out = dropout(x, p, True, state)
    assert torch.equal(torch.get_rng_state(), default_before)
    assert torch.equal(_bits(out), _bits(expected))
    assert torch.equal(state["cpu"], expected_state)
    (g_expected,) = torch.autograd.grad(expected, x, grad)
    (g_out,) = torch.autograd.grad(out, x, grad)
    assert torch.equal(_bits(g_out), _bits(g_expected))
    assert torch.equal(dropout(x, p, False, state), x)
    torch.manual_seed(7)
    assert torch.equal(dropout(x, p, True), expected)


def test_dropout_from_explicit_state_is_unbiased_for_bf16():
    """For bf16 the kept values are x / (1 - p) rounded once: the mean ratio out / x over kept elements is 1 / (1 - p)
    to within 2e-4 (a bf16-rounded scale, 1.109375 for p = 0.1, would be 0.16% low on every element); the keep mask
    is the one drawn for fp32 from the same state."""
    x = torch.randn(8192, generator=torch.Generator().manual_seed(0)).bfloat16()
    out = dropout(x, 0.1, True, {"cpu": torch.Generator().manual_seed(3).get_state()})
    keep = out != 0
    ratio = (out[keep].double() / x[keep].double()).mean().item()
    assert abs(ratio * 0.9 - 1) < 2e-4, ratio
    ref = dropout(x.float(), 0.1, True, {"cpu": torch.Generator().manual_seed(3).get_state()})
    assert torch.equal(keep, ref != 0)


def test_fork_yields_the_outer_state_for_explicit_draws():
    """Inside fork(MODEL_PARALLEL_RNG), dropout from the yielded state draws the masks the default stream would draw
    outside the fork (interleaved with draws from the forked stream), and after the fork the default generator has
    advanced past them: the masks of a layer's hidden dropout do not change when the layer runs inside the fork."""
    x = torch.ones(64)
    tracker = RNGStatesTracker.build(5, ParallelState.single())
    saved = tracker.get_states()
    torch.manual_seed(9)
    first = F.dropout(x, 0.5)
    with tracker.fork(MODEL_PARALLEL_RNG):
        tracked = F.dropout(x, 0.5)
    second, after = F.dropout(x, 0.5), F.dropout(x, 0.5)

    tracker.set_states(saved)
    torch.manual_seed(9)
    with tracker.fork(MODEL_PARALLEL_RNG) as outer:
        assert torch.equal(dropout(x, 0.5, True, outer), first)
        assert torch.equal(F.dropout(x, 0.5), tracked)
        assert torch.equal(dropout(x, 0.5, True, outer), second)
    assert torch.equal(F.dropout(x, 0.5), after)


def test_generator_draws_like_fork_without_touching_the_default_generator():
    """tracker.generator(name, device) hands out the stream as a torch.Generator: its draws equal those under
    fork(name), the stream advances by them, and the default generator is untouched."""
    tracker = RNGStatesTracker.build(5, ParallelState.single())
    saved = tracker.get_states()
    with tracker.fork(TOKEN_ROUTING_RNG):
        expected = [torch.randint(0, 100, (8,)) for _ in range(2)]
    tracker.set_states(saved)
    torch.manual_seed(0)
    default_before = torch.get_rng_state()
    for want in expected:
        with tracker.generator(TOKEN_ROUTING_RNG, "cpu") as gen:
            assert torch.equal(torch.randint(0, 100, (8,), generator=gen), want)
    assert torch.equal(torch.get_rng_state(), default_before)
    with pytest.raises(KeyError):
        with tracker.generator("missing", "cpu"):
            pass


def test_dropout_from_explicit_state_compiles_without_graph_break():
    """torch.compile(fullgraph=True) traces two dropouts of the same tensor from an explicit state (a graph break
    would raise) and reproduces the eager masks, gradient and state advance: the draw is ordered by its state
    argument, never merged with an identical call (CSE) and not recomputed in the backward graph."""
    def two_dropouts(x, state):
        return dropout(x, 0.5, True, state) * 2 + dropout(x, 0.5, True, state)

    torch._dynamo.reset()
    x = torch.randn(16, 8, requires_grad=True)
    results = []
    for fn in (two_dropouts, torch.compile(two_dropouts, backend="aot_eager", fullgraph=True)):
        state = {"cpu": torch.Generator().manual_seed(4).get_state()}
        out = fn(x, state)
        (grad,) = torch.autograd.grad(out.sum(), x)
        results.append((out, grad, state["cpu"]))
    (eager_out, eager_grad, eager_state), (out, grad, state) = results
    assert torch.equal(out, eager_out) and torch.equal(grad, eager_grad) and torch.equal(state, eager_state)
    first = dropout(x, 0.5, True, {"cpu": torch.Generator().manual_seed(4).get_state()})
    assert not torch.equal(out, 3 * first), "the two draws were merged into one"

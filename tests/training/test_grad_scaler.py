"""fp16 loss scaling: dynamic scaler growth, hysteresis backoff, floor, and the optimizer skipping overflowed steps."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from megatron.parallel.state import ParallelState
from megatron.training.grad_scaler import ConstantGradScaler, DynamicGradScaler, build_grad_scaler
from megatron.training.optimizer import AdamWSettings, MegatronOptimizer


def test_growth_after_window_of_clean_steps():
    """The scale doubles after exactly loss_scale_window clean steps, and not before."""
    s = DynamicGradScaler(initial_scale=2.0**10, growth_interval=3, hysteresis=2)
    s.update(False)
    s.update(False)
    assert s.scale == 2.0**10
    s.update(False)
    assert s.scale == 2.0**11


def test_backoff_after_hysteresis_overflows():
    """An overflow spends one unit of hysteresis; the scale halves only once hysteresis is spent, then on every
    further overflow; an overflow also restarts the growth window."""
    s = DynamicGradScaler(initial_scale=2.0**10, growth_interval=3, hysteresis=2)
    s.update(False)
    s.update(False)
    s.update(True)  # resets growth tracker, hysteresis 2 -> 1
    assert s.scale == 2.0**10
    s.update(False)
    s.update(False)
    assert s.scale == 2.0**10, "growth window restarted by the overflow"
    s.update(True)  # hysteresis 1 -> 0: halve
    assert s.scale == 2.0**9
    s.update(True)
    assert s.scale == 2.0**8
    for _ in range(3):
        s.update(False)
    assert s.scale == 2.0**9, "growth refills hysteresis"
    s.update(True)
    assert s.scale == 2.0**9


def test_min_scale_floor_and_state_roundtrip():
    """The scale never drops under min_loss_scale; state_dict restores scale and both trackers."""
    s = DynamicGradScaler(initial_scale=4.0, min_scale=2.0, hysteresis=1)
    for _ in range(5):
        s.update(True)
    assert s.scale == 2.0
    t = DynamicGradScaler(initial_scale=4.0, min_scale=2.0, hysteresis=1)
    t.load_state_dict(s.state_dict())
    assert t.state_dict() == s.state_dict()


def test_build_and_bad_values():
    """bf16/fp32 use no scaler, --loss-scale a constant one; invalid settings name the flag."""
    assert build_grad_scaler(fp16=False, loss_scale=None, initial_loss_scale=1, min_loss_scale=1,
                             loss_scale_window=1, hysteresis=1) is None
    assert isinstance(build_grad_scaler(fp16=True, loss_scale=128.0, initial_loss_scale=1, min_loss_scale=1,
                                        loss_scale_window=1, hysteresis=1), ConstantGradScaler)
    with pytest.raises(ValueError, match="--hysteresis"):
        DynamicGradScaler(hysteresis=0)


def test_optimizer_skips_overflowed_fp16_step():
    """An inf gradient under fp16 leaves parameters and Adam state untouched and lowers the scale (hysteresis 1);
    the next finite step applies with the loss scale divided out exactly."""
    torch.manual_seed(0)
    model = nn.Linear(4, 4).half()
    scaler = DynamicGradScaler(initial_scale=2.0**8, hysteresis=1)
    opt = MegatronOptimizer(model, AdamWSettings(clip_grad=0.0), ParallelState.single(), grad_scaler=scaler)
    for g in opt.param_groups:
        g["lr"] = 1e-2
    before = [p.detach().clone() for p in model.parameters()]
    opt.zero_grad()
    x = torch.full((2, 4), float("inf"), dtype=torch.float16)
    opt.backward(model(x).float().sum())
    result = opt.step()
    assert not result.applied and scaler.scale == 2.0**7
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
    assert not opt.optimizer.state, "no Adam state was created by the skipped step"
    opt.zero_grad()
    x = torch.ones(2, 4, dtype=torch.float16)
    opt.backward(model(x).float().sum())
    # The unscaled fp32 gradient of the weight is 2 (two rows of ones) per element.
    result = opt.step()
    assert result.applied
    assert result.grad_norm == pytest.approx((16 * 4 + 4 * 4) ** 0.5, rel=1e-3)

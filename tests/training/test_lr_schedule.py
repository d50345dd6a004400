"""Learning-rate schedule: golden values in samples and tokens, scheduler stepping, checkpoint consistency."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from megatron.training.lr_schedule import LRScheduleSpec, OptimizerParamScheduler, compute_lr

REPO = Path(__file__).resolve().parents[2]
MCORE = REPO / ".venv" / "mcore"


class _FakeOptimizer:
    def __init__(self) -> None:
        self.param_groups = [{"lr": None}, {"lr": None, "lr_mult": 0.5}]


# (style, samples, expected) for max 1.0, min 0.1, warmup 10 samples, decay 110 samples; values by hand:
# linear r = (s-10)/100 -> 0.1 + 0.9 (1-r); cosine 0.1 + 0.9 * 0.5 (cos(pi r) + 1); inv-sqrt max(0.1, sqrt(10/s)) up to the decay end, then min.
GOLDEN_SAMPLES = [
    ("linear", 0, 0.0), ("linear", 5, 0.5), ("linear", 10, 1.0), ("linear", 60, 0.55), ("linear", 85, 0.325),
    ("linear", 110, 0.1), ("linear", 500, 0.1),
    ("cosine", 35, 0.1 + 0.9 * 0.5 * (math.cos(math.pi / 4) + 1)), ("cosine", 60, 0.55), ("cosine", 110, 0.1),
    ("constant", 7, 0.7), ("constant", 1000, 1.0),
    ("inverse-square-root", 40, 0.5), ("inverse-square-root", 100, 10 ** -0.5), ("inverse-square-root", 111, 0.1),
]


@pytest.mark.parametrize("style,samples,expected", GOLDEN_SAMPLES)
def test_sample_schedule_golden_values(style, samples, expected):
    """Warmup is linear from lr_warmup_init, then each decay style follows Megatron's formula in samples."""
    spec = LRScheduleSpec(max_lr=1.0, min_lr=0.1, decay_style=style, warmup_samples=10, decay_samples=110)
    assert compute_lr(spec, samples, tokens=0) == pytest.approx(expected, rel=1e-12)


def test_warmup_init():
    """Warmup starts at lr_warmup_init, not 0."""
    spec = LRScheduleSpec(max_lr=1.0, warmup_init=0.2, warmup_samples=10, decay_samples=20)
    assert compute_lr(spec, 5, 0) == pytest.approx(0.6)


def test_token_schedule_golden_values():
    """With token lengths the same formulas run on the consumed tokens and ignore samples (MDS)."""
    spec = LRScheduleSpec(max_lr=1.0, min_lr=0.0, decay_style="cosine", warmup_tokens=100, decay_tokens=1100,
                          decay_samples=None)
    assert compute_lr(spec, samples=999, tokens=50) == pytest.approx(0.5)
    assert compute_lr(spec, samples=0, tokens=600) == pytest.approx(0.5)
    assert compute_lr(spec, samples=0, tokens=350) == pytest.approx(0.5 * (math.cos(math.pi / 4) + 1))
    assert compute_lr(spec, samples=0, tokens=2000) == 0.0


def test_sample_warmup_then_token_decay_uses_tokens_at_warmup_end():
    """BERT recipe: warmup by samples, decay by tokens from the token count where warmup ended, even when the
    warmup is not a multiple of the global batch (MDS never records it then)."""
    spec = LRScheduleSpec(max_lr=1.0, warmup_samples=10, decay_tokens=1000)
    opt = _FakeOptimizer()
    sched = OptimizerParamScheduler(opt, spec)
    tokens = 0
    for seqlen in (8, 16, 32):  # 4 samples per step: 4, 8, 12 samples -> warmup ends at the third step
        tokens += 4 * seqlen
        sched.step(4, tokens)
    assert sched.warmup_end_tokens == 4 * (8 + 16 + 32)
    tokens += 4 * 64
    sched.step(4, tokens)
    ratio = (tokens - sched.warmup_end_tokens) / (1000 - sched.warmup_end_tokens)
    assert opt.param_groups[0]["lr"] == pytest.approx(1.0 - ratio)
    assert opt.param_groups[1]["lr"] == pytest.approx(0.5 * (1.0 - ratio)), "lr_mult scales a group"


def test_scheduler_state_roundtrip_and_mismatch():
    """Scheduler state restores the counters; a changed schedule is refused unless overridden."""
    spec = LRScheduleSpec(max_lr=1.0, warmup_samples=10, decay_samples=100)
    sched = OptimizerParamScheduler(_FakeOptimizer(), spec)
    for _ in range(5):
        sched.step(4, 0)
    state = json.loads(json.dumps(sched.state_dict()))  # plain values only
    fresh = OptimizerParamScheduler(_FakeOptimizer(), spec)
    fresh.load_state_dict(state)
    assert fresh.lr == sched.lr and fresh.num_samples == 20
    other = LRScheduleSpec(max_lr=2.0, warmup_samples=10, decay_samples=100)
    with pytest.raises(ValueError, match="max_lr.*--override-opt-param-scheduler"):
        OptimizerParamScheduler(_FakeOptimizer(), other).load_state_dict(state)
    overridden = OptimizerParamScheduler(_FakeOptimizer(), other)
    overridden.load_state_dict(state, override=True)
    assert overridden.spec.max_lr == 2.0 and overridden.num_samples == 20
    kept = OptimizerParamScheduler(_FakeOptimizer(), other)
    kept.load_state_dict(state, use_checkpoint=True)
    assert kept.spec.max_lr == 1.0


@pytest.mark.slow
@pytest.mark.skipif(not (MCORE / "megatron" / "core").is_dir(), reason="megatron-core not side-installed in .venv/mcore")
def test_matches_megatron_core_scheduler(tmp_path):
    """Our sample-based schedule equals megatron-core's OptimizerParamScheduler for every decay style."""
    styles = ["linear", "cosine", "constant", "inverse-square-root"]
    points = [0, 3, 10, 11, 37, 64, 109, 110, 111, 400]
    script = (
        "import json\n"
        "from megatron.core.optimizer_param_scheduler import OptimizerParamScheduler as S\n"
        "class O: param_groups=[{}]\n"
        "out={}\n"
        f"for style in {styles!r}:\n"
        "    s=S(O(), init_lr=0.05, max_lr=1.0, min_lr=0.1, lr_warmup_steps=10, lr_decay_steps=110,"
        " lr_decay_style=style, start_wd=0.01, end_wd=0.01, wd_incr_steps=110, wd_incr_style='constant')\n"
        "    vals=[]\n"
        f"    for n in {points!r}:\n"
        "        s.num_steps=n; vals.append(s.get_lr(O.param_groups[0]))\n"
        "    out[style]=vals\n"
        "print(json.dumps(out))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(MCORE)}
    res = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    theirs = json.loads(res.stdout.strip().splitlines()[-1])
    for style in styles:
        spec = LRScheduleSpec(max_lr=1.0, min_lr=0.1, warmup_init=0.05, decay_style=style, warmup_samples=10,
                              decay_samples=110)
        ours = [compute_lr(spec, n, 0) for n in points]
        assert ours == pytest.approx(theirs[style], rel=1e-12), style

"""Pacing functions: DeepSpeed's golden values, the lower-clamp fix, bounds and custom schedules."""

from __future__ import annotations

import pytest

from megatron.data_efficiency.config import ScheduleConfig
from megatron.data_efficiency.curriculum.scheduler import DifficultySchedule, fixed_root_difficulty


def _sched(kind, lo, hi, custom=None, **sc):
    return DifficultySchedule(min_difficulty=lo, max_difficulty=hi, schedule_type=kind,
                              schedule_config=ScheduleConfig(**sc), custom=custom)


@pytest.mark.parametrize(
    ("kind", "lo", "hi", "cfg", "steps", "expected"),
    [
        # DeepSpeed tests/unit/runtime/test_data_efficiency.py (step = engine global_steps + 1).
        ("fixed_linear", 2, 10, dict(total_curriculum_step=8, difficulty_step=2), range(1, 11),
         [2, 4, 4, 6, 6, 8, 8, 10, 10, 10]),
        ("fixed_discrete", 1, 5, dict(difficulty=[1, 2, 3, 4, 5], max_step=[2, 4, 6, 8]), range(1, 11),
         [1, 1, 2, 2, 3, 3, 4, 4, 5, 5]),
        # DeepSpeed 0.19.8 CurriculumScheduler run on CPU (reference offline-resources 3a).
        ("fixed_linear", 8, 64, dict(total_curriculum_step=100, difficulty_step=8), [0, 25, 50, 100, 200],
         [8, 16, 32, 64, 64]),
        ("fixed_root", 8, 64, dict(total_curriculum_step=100, difficulty_step=8, root_degree=2), [0, 25, 50, 100],
         [8, 32, 40, 64]),
        ("fixed_discrete", 8, 64, dict(difficulty=[8, 32, 64], max_step=[10, 20]), [0, 15, 25], [8, 32, 64]),
        # Paper GPT recipe: seqlen_truncate 80 -> 2048, step 8, linear over 110k steps.
        ("fixed_root", 80, 2048, dict(total_curriculum_step=110_000, difficulty_step=8, root_degree=1),
         [1, 55_000, 110_000], [80, 1064, 2048]),
    ],
)
def test_golden_values(kind, lo, hi, cfg, steps, expected):
    """Our schedules return DeepSpeed's values wherever DeepSpeed stays within [min, max]."""
    s = _sched(kind, lo, hi, **cfg)
    assert [s.difficulty(t) for t in steps] == expected
    assert s.difficulties(list(steps)).tolist() == expected


@pytest.mark.parametrize(
    ("lo", "hi", "step_size", "step", "deepspeed_value", "ours"),
    [(8, 64, 16, 0, 0, 8), (8, 64, 16, 1, 0, 8), (1, 64, 8, 7, 0, 1), (1, 64, 8, 13, 8, 8)],
)
def test_lower_clamp_fix(lo, hi, step_size, step, deepspeed_value, ours):
    """DeepSpeed's floor-to-step can undershoot min_difficulty (0 for min 8 / step 16); ours never does."""
    # DeepSpeed's formula without the clamp, written out to show the difference this test pins down.
    raw = int((step / 100) * (hi - lo) + lo)
    assert raw - raw % step_size == deepspeed_value
    got = fixed_root_difficulty(step, min_difficulty=lo, max_difficulty=hi, total_curriculum_step=100,
                                difficulty_step=step_size)
    assert got == ours


def test_bounds_and_monotone_over_many_configs():
    """For any root config the difficulty stays in [min, max], never decreases, and reaches max."""
    for lo, hi, total, step_size, root in [(1, 100, 37, 1, 2), (5, 97, 50, 8, 3), (80, 2048, 1000, 8, 1.5),
                                           (3, 40, 20, 16, 1), (10, 10, 5, 4, 1)]:
        s = _sched("fixed_root", lo, hi, total_curriculum_step=total, difficulty_step=step_size, root_degree=root)
        values = s.difficulties(range(0, 4 * total))
        assert values.min() >= lo and values.max() == hi
        assert (values[1:] >= values[:-1]).all()
        first = s.final_step()
        assert first is not None and s.difficulty(first) == hi and (first == 0 or s.difficulty(first - 1) < hi)


def test_custom_schedule():
    """A custom callable is used as is, and a value outside [min, max] or not an int is a ValueError."""
    s = _sched("custom", 1, 10, custom=lambda step: min(1 + step // 3, 10))
    assert [s.difficulty(t) for t in (0, 3, 100)] == [1, 2, 10]
    with pytest.raises(ValueError, match="outside"):
        _sched("custom", 1, 10, custom=lambda step: 11).difficulty(1)
    with pytest.raises(ValueError, match="must return an int"):
        _sched("custom", 1, 10, custom=lambda step: 2.5).difficulty(1)
    with pytest.raises(ValueError, match="needs a callable"):
        _sched("custom", 1, 10)


def test_negative_step_rejected():
    """Steps are counts of global batches; a negative step is a caller bug reported as ValueError."""
    with pytest.raises(ValueError, match=">= 0"):
        _sched("fixed_linear", 1, 10, total_curriculum_step=5, difficulty_step=1).difficulty(-1)

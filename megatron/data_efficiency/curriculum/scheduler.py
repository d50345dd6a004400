"""Curriculum pacing functions: the difficulty at a curriculum step, as a pure function of the step.

Reproduces DeepSpeed's ``CurriculumScheduler`` formulas (fixed_linear, fixed_root, fixed_discrete, custom) with
one deliberate difference: the result never drops below ``min_difficulty`` (see ``fixed_root_difficulty``). No
state: resuming needs only the step, so the scheduler is trivially checkpoint-safe.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from megatron.data_efficiency.config import (
    CurriculumMetricConfig,
    LegacyCurriculumConfig,
    ScheduleConfig,
    ScheduleType,
)
from megatron.logging import get_logger

__all__ = ["CustomSchedule", "DifficultySchedule", "fixed_root_difficulty", "fixed_discrete_difficulty"]

logger = get_logger(__name__)

CustomSchedule = Callable[[int], int]
"""A user pacing function: curriculum step -> difficulty (an int within [min_difficulty, max_difficulty])."""


def fixed_root_difficulty(
    step: int, *, min_difficulty: int, max_difficulty: int, total_curriculum_step: int, difficulty_step: int,
    root_degree: float = 1.0,
) -> int:
    """``floor((step / total)^(1/root) * (max - min) + min)``, rounded down to a multiple of ``difficulty_step``.

    The Data Efficiency paper (arXiv 2212.03597, section 3.1) paces with this root function; root_degree 1 is
    fixed_linear. Evaluated with the same float expression as DeepSpeed so both give identical values, then clamped
    to [min_difficulty, max_difficulty]. DeepSpeed's 2022 code had no lower clamp: rounding down to the step can
    undershoot min (min 8 with step 16 gives 0, a zero-length sequence) - fixed upstream in 2026 by DeepSpeed
    PR #8334. We clamp to ``min_difficulty`` itself, the start the config asked for.

    Args:
        step: curriculum step (>= 0); the sampler's first global batch is step 1.
    """
    ratio = (float(step) / total_curriculum_step) ** (1.0 / root_degree)
    d = math.floor(ratio * (max_difficulty - min_difficulty) + min_difficulty)
    d -= d % difficulty_step
    return max(min(d, max_difficulty), min_difficulty)


def fixed_discrete_difficulty(step: int, *, difficulty: list[int], max_step: list[int]) -> int:
    """``difficulty[i]`` for the first ``i`` with ``step <= max_step[i]``, else the last difficulty."""
    for d, last in zip(difficulty, max_step):
        if step <= last:
            return d
    return difficulty[-1]


@dataclass(frozen=True)
class DifficultySchedule:
    """Difficulty of one curriculum metric (or of the legacy seqlen warm-up) as a function of the step.

    Attributes:
        min_difficulty / max_difficulty: bounds; every returned difficulty lies within them.
        schedule_type: fixed_linear, fixed_root, fixed_discrete or custom.
        schedule_config: parameters of the pacing function (already validated by the config).
        custom: the callable of a ``custom`` schedule.
    """

    min_difficulty: int
    max_difficulty: int
    schedule_type: ScheduleType
    schedule_config: ScheduleConfig
    custom: CustomSchedule | None = None

    def __post_init__(self) -> None:
        if self.schedule_type == "custom" and self.custom is None:
            raise ValueError("schedule_type 'custom' needs a callable: pass custom=f where f(step) -> difficulty")
        if self.schedule_type != "custom" and self.custom is not None:
            raise ValueError(f"a custom callable was given but schedule_type is {self.schedule_type!r}")

    @classmethod
    def from_config(
        cls, cfg: CurriculumMetricConfig | LegacyCurriculumConfig, custom: CustomSchedule | None = None
    ) -> DifficultySchedule:
        """Schedule of a metric config (or the legacy block); ``custom`` is required for schedule_type custom."""
        sc = cfg.schedule_config
        if cfg.schedule_type in ("fixed_linear", "fixed_root") and sc.difficulty_step % 8 != 0:
            logger.debug("difficulty_step %d is not a multiple of 8; for seqlen metrics tensor cores prefer "
                         "multiples of 8 (fp16) or 16 (int8)", sc.difficulty_step)
        return cls(min_difficulty=cfg.min_difficulty, max_difficulty=cfg.max_difficulty,
                   schedule_type=cfg.schedule_type, schedule_config=sc, custom=custom)

    def difficulty(self, step: int) -> int:
        """Difficulty at curriculum ``step`` (>= 0; step 1 = the first global batch)."""
        if step < 0:
            raise ValueError(f"curriculum step must be >= 0, got {step}")
        sc = self.schedule_config
        if self.schedule_type == "fixed_discrete":
            return fixed_discrete_difficulty(step, difficulty=sc.difficulty, max_step=sc.max_step)
        if self.schedule_type in ("fixed_linear", "fixed_root"):
            root = 1.0 if self.schedule_type == "fixed_linear" else sc.root_degree
            return fixed_root_difficulty(
                step, min_difficulty=self.min_difficulty, max_difficulty=self.max_difficulty,
                total_curriculum_step=sc.total_curriculum_step, difficulty_step=sc.difficulty_step, root_degree=root,
            )
        return self._custom_difficulty(step)

    def _custom_difficulty(self, step: int) -> int:
        value = self.custom(step)
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
            raise ValueError(f"custom curriculum schedule returned {value!r} at step {step}; it must return an int")
        if not self.min_difficulty <= value <= self.max_difficulty:
            raise ValueError(
                f"custom curriculum schedule returned {int(value)} at step {step}, outside [min_difficulty, "
                f"max_difficulty] = [{self.min_difficulty}, {self.max_difficulty}]"
            )
        return int(value)

    def difficulties(self, steps: np.ndarray | list[int]) -> np.ndarray:
        """``difficulty`` at each of ``steps`` (int64 array), e.g. for plotting the pacing curve."""
        return np.fromiter((self.difficulty(int(s)) for s in steps), dtype=np.int64, count=len(steps))

    def final_step(self, limit: int = 10_000_000) -> int | None:
        """First step at which max_difficulty is reached (None for custom schedules or beyond ``limit``)."""
        sc = self.schedule_config
        if self.schedule_type == "fixed_discrete":
            return next((0 if i == 0 else sc.max_step[i - 1] + 1 for i, d in enumerate(sc.difficulty)
                         if d == self.max_difficulty), None)
        if self.schedule_type == "custom":
            return None
        # Rounding down to difficulty_step can keep max unreached at total_curriculum_step (max not a multiple of
        # the step); the root keeps growing past 1, so search beyond it.
        lo, hi = 0, sc.total_curriculum_step
        while self.difficulty(hi) < self.max_difficulty:
            if hi >= limit:
                return None
            hi = min(2 * hi, limit)
        while lo < hi:  # difficulty is non-decreasing in step
            mid = (lo + hi) // 2
            lo, hi = (mid + 1, hi) if self.difficulty(mid) < self.max_difficulty else (lo, mid)
        return lo

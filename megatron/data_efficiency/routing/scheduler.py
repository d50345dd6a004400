"""Random-LTD keep schedule and layer-token accounting.

The number of kept tokens is a pure function of the optimizer step (``kept_tokens_fixed_linear``);
``RandomLTDScheduler`` wraps it with the current value and the consumed layer-token counter, the only state a
checkpoint must carry. Its settings are the ``data_routing.random_ltd`` JSON block itself
(``data_efficiency.config.RandomLTDConfig``; random-LTD paper, arXiv 2211.11586, section 3: linear growth of the
kept length, first and last layers full).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from megatron.data_efficiency.config import RandomLTDConfig
from megatron.logging import get_logger

__all__ = ["RandomLTDScheduler", "kept_tokens_fixed_linear"]

logger = get_logger(__name__)


def kept_tokens_fixed_linear(
    step: int, *, min_value: int, max_value: int, require_steps: int, seq_per_step: int
) -> int:
    """Kept tokens per sample after ``step`` optimizer steps (0 for the first step).

    ``floor(min + (max - min) * step / require_steps)``, rounded down to a multiple of ``seq_per_step``, then clamped
    to ``[min_value, max_value]``. Integer arithmetic, so exact where DeepSpeed's float formula can land one below an
    integer before the floor. DeepSpeed has no lower clamp: min 8 with seq_per_step 16 rounds down to 0 kept tokens
    (open DeepSpeed PR #8529); we never go below min_value (which may then not be a multiple of seq_per_step).
    """
    if step < 0:
        raise ValueError(f"random-LTD schedule step must be >= 0, got {step}")
    progress = min(step, require_steps)
    value = min_value + (max_value - min_value) * progress // require_steps
    value -= value % seq_per_step
    return min(max(value, min_value), max_value)


@dataclass
class RandomLTDScheduler:
    """Current kept length and consumed layer tokens of a random-LTD run.

    ``update(step)`` is called once per optimizer step with the number of steps already taken; ``consume`` adds the
    layer tokens of the step's global batch. Layer tokens count one token through one layer: a sample of length S
    costs ``S * (L - n) + min(r, S) * n`` (DeepSpeed uses max_value for S, which overcounts under curriculum
    truncation; we take the actual length). ``effective_tokens`` is that divided by L, the token count that drives
    the LR schedule and stop condition in the Megatron-DeepSpeed recipes.
    """

    config: RandomLTDConfig
    current_step: int = 0
    consumed_layer_tokens: int = 0
    current_value: int = field(init=False)

    def __post_init__(self) -> None:
        if not self.config.enabled:
            raise ValueError("data_efficiency.data_routing.random_ltd.enabled is false; there is no schedule to build")
        self.current_value = self.kept_tokens(self.current_step)

    def kept_tokens(self, step: int, seq_length: int | None = None) -> int:
        """Kept tokens per sample at ``step``; capped at ``seq_length`` (r >= S means the layer keeps everything)."""
        sched = self.config.random_ltd_schedule
        value = kept_tokens_fixed_linear(
            step,
            min_value=sched.min_value,
            max_value=sched.max_value,
            require_steps=sched.schedule_config.require_steps,
            seq_per_step=sched.schedule_config.seq_per_step,
        )
        return value if seq_length is None else min(value, seq_length)

    def update(self, step: int) -> int:
        """Move to ``step`` (optimizer steps taken so far) and return its kept tokens per sample."""
        self.current_step = step
        self.current_value = self.kept_tokens(step)
        return self.current_value

    def layer_tokens(self, seq_length: int, num_samples: int) -> int:
        """Layer tokens of ``num_samples`` samples of length ``seq_length`` at the current kept length."""
        total, n = self.config.total_layer_num, self.config.random_ltd_layer_num
        kept = min(self.current_value, seq_length)
        return num_samples * (seq_length * (total - n) + kept * n)

    def effective_tokens(self, seq_length: int, num_samples: int) -> int:
        """Layer-averaged tokens ``num_samples * ((S * (L - n) + r * n) // L)`` (Megatron-DeepSpeed's rounding)."""
        total, n = self.config.total_layer_num, self.config.random_ltd_layer_num
        kept = min(self.current_value, seq_length)
        return num_samples * ((seq_length * (total - n) + kept * n) // total)

    def consume(self, seq_length: int, num_samples: int) -> int:
        """Add this step's layer tokens to ``consumed_layer_tokens`` and return them."""
        tokens = self.layer_tokens(seq_length, num_samples)
        self.consumed_layer_tokens += tokens
        return tokens

    def state_dict(self) -> dict[str, Any]:
        """Checkpoint state: plain ints (loads with ``torch.load(weights_only=True)``)."""
        sched = self.config.random_ltd_schedule
        return {
            "current_step": self.current_step,
            "consumed_layer_tokens": self.consumed_layer_tokens,
            "min_value": sched.min_value,
            "max_value": sched.max_value,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the step and counter; the kept length is recomputed from the (possibly changed) schedule."""
        missing = {"current_step", "consumed_layer_tokens"} - state.keys()
        if missing:
            raise ValueError(f"random-LTD scheduler state is missing keys {sorted(missing)}; got {sorted(state)}")
        sched = self.config.random_ltd_schedule
        saved = (state.get("min_value", sched.min_value), state.get("max_value", sched.max_value))
        if saved != (sched.min_value, sched.max_value):
            logger.warning(
                "random-LTD schedule changed on resume: checkpoint min/max %s, config %s; using the config",
                saved, (sched.min_value, sched.max_value),
            )
        self.current_step = int(state["current_step"])
        self.consumed_layer_tokens = int(state["consumed_layer_tokens"])
        self.current_value = self.kept_tokens(self.current_step)


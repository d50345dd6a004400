"""Learning-rate schedule (Megatron's OptimizerParamScheduler), counted in samples or in tokens.

The learning rate is a pure function of the consumed samples and tokens of the *applied* optimizer steps plus a
frozen :class:`LRScheduleSpec`; the scheduler object only keeps those counters (and the token count at the end of
a sample-based warmup) so that it can be checkpointed and checked for consistency on resume.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Literal

__all__ = ["LRDecayStyle", "LRScheduleSpec", "compute_lr", "OptimizerParamScheduler"]

LRDecayStyle = Literal["constant", "linear", "cosine", "inverse-square-root"]


@dataclass(frozen=True, kw_only=True)
class LRScheduleSpec:
    """Resolved schedule: every length is in samples or tokens (never iterations).

    Token-based decay (``decay_tokens`` set) follows Megatron-DeepSpeed: the tokens are the ones counted from the
    actual batches, so a curriculum that shortens sequences stretches the schedule in steps.
    """

    max_lr: float
    """Peak learning rate."""
    min_lr: float = 0.0
    """Floor reached at the end of decay."""
    warmup_init: float = 0.0
    """Learning rate at step 0 of the warmup."""
    decay_style: LRDecayStyle = "linear"
    """Shape of the decay after warmup."""
    warmup_samples: int = 0
    """Warmup length in samples (ignored when ``warmup_tokens`` is set)."""
    decay_samples: int | None = None
    """Decay length in samples (used when ``decay_tokens`` is None)."""
    warmup_tokens: int | None = None
    """Warmup length in tokens; takes precedence over ``warmup_samples``."""
    decay_tokens: int | None = None
    """Decay length in tokens; switches the decay to token counting."""

    def __post_init__(self) -> None:
        if self.decay_tokens is None and self.decay_samples is None and self.decay_style != "constant":
            raise ValueError(f"lr decay style {self.decay_style!r} needs decay_samples or decay_tokens")
        if self.min_lr > self.max_lr:
            raise ValueError(f"min_lr ({self.min_lr}) must not exceed lr ({self.max_lr})")
        if self.decay_samples is not None and self.decay_samples < self.warmup_samples and self.warmup_tokens is None:
            raise ValueError(
                f"lr decay length ({self.decay_samples} samples) is shorter than warmup ({self.warmup_samples} samples)"
            )


def _decay_coeff(style: LRDecayStyle, ratio: float) -> float:
    # Linear and cosine decays of Loshchilov & Hutter (SGDR) as used by Megatron: 1 -> 0 over ratio 0 -> 1.
    if style == "linear":
        return 1.0 - ratio
    if style == "cosine":
        return 0.5 * (math.cos(math.pi * ratio) + 1.0)
    raise AssertionError(f"unexpected decay style {style!r}")


def compute_lr(spec: LRScheduleSpec, samples: int, tokens: int, warmup_end_tokens: int | None = None) -> float:
    """Learning rate after ``samples`` samples / ``tokens`` tokens of applied optimizer steps.

    Args:
        spec: the resolved schedule.
        samples: samples consumed by successful (not skipped) steps so far.
        tokens: tokens consumed so far (Megatron-DeepSpeed passes the running total, skipped steps included).
        warmup_end_tokens: with sample-based warmup and token-based decay, the token count at which the warmup
            ended (MDS sets it at the step that lands exactly on the warmup; we take the first step at or past
            it, because MDS never sets it when the warmup is not a multiple of the global batch and then fails).
    """
    if spec.warmup_tokens is not None:
        if spec.warmup_tokens > 0 and tokens <= spec.warmup_tokens:
            return spec.warmup_init + (spec.max_lr - spec.warmup_init) * tokens / spec.warmup_tokens
        warmup_tok = spec.warmup_tokens
    else:
        if spec.warmup_samples > 0 and samples <= spec.warmup_samples:
            return spec.warmup_init + (spec.max_lr - spec.warmup_init) * samples / spec.warmup_samples
        warmup_tok = warmup_end_tokens or 0
    if spec.decay_style == "constant":
        return spec.max_lr
    if spec.decay_tokens is not None:
        if tokens > spec.decay_tokens:
            return spec.min_lr
        done, total = tokens - warmup_tok, spec.decay_tokens - warmup_tok
    else:
        assert spec.decay_samples is not None, "LRScheduleSpec.__post_init__ guarantees decay_samples"
        if samples > spec.decay_samples:
            return spec.min_lr
        done, total = samples - spec.warmup_samples, spec.decay_samples - spec.warmup_samples
    if spec.decay_style == "inverse-square-root":
        # Vaswani et al.: lr ~ 1/sqrt(step) after warmup, continuous at its end; min_lr past the decay length
        # like every other style (Megatron checks the decay end first).
        w, n = (max(warmup_tok, 1), max(tokens, 1)) if spec.decay_tokens is not None else (
            max(spec.warmup_samples, 1), max(samples, 1))
        return max(spec.min_lr, spec.max_lr * math.sqrt(w) / math.sqrt(n))
    ratio = min(max(done / total, 0.0), 1.0) if total > 0 else 1.0
    return spec.min_lr + _decay_coeff(spec.decay_style, ratio) * (spec.max_lr - spec.min_lr)


# Fields of the spec that must agree between the checkpoint and the command line unless overridden.
_CHECKED_FIELDS = ("max_lr", "min_lr", "warmup_init", "decay_style", "warmup_samples", "decay_samples",
                   "warmup_tokens", "decay_tokens")


class OptimizerParamScheduler:
    """Sets ``lr`` on every param group of an optimizer from the consumed samples/tokens.

    Call :meth:`step` once per *applied* optimizer step (Megatron does not advance the schedule on a skipped
    fp16 step). ``param_groups`` may carry ``lr_mult`` (default 1).
    """

    def __init__(self, optimizer: Any, spec: LRScheduleSpec) -> None:
        self.optimizer = optimizer
        self.spec = spec
        self.num_samples = 0
        self.num_tokens = 0
        # With no sample warmup, token decay starts at token 0.
        self.warmup_end_tokens: int | None = 0 if spec.warmup_samples == 0 else None
        self._apply()

    @property
    def lr(self) -> float:
        """The learning rate the next optimizer step will use."""
        return compute_lr(self.spec, self.num_samples, self.num_tokens, self.warmup_end_tokens)

    def _apply(self) -> None:
        lr = self.lr
        for group in self.optimizer.param_groups:
            group["lr"] = lr * group.get("lr_mult", 1.0)

    def step(self, samples_increment: int, consumed_tokens: int) -> None:
        """Advance by one applied step of ``samples_increment`` samples; ``consumed_tokens`` is the new total.

        MDS passes the token total from *before* the step while the sample count already includes it, so its token
        schedule lags one step behind its sample schedule; we pass the total including the step, like samples.
        """
        self.num_samples += samples_increment
        self.num_tokens = consumed_tokens
        if self.warmup_end_tokens is None and self.num_samples >= self.spec.warmup_samples:
            self.warmup_end_tokens = consumed_tokens
        self._apply()

    def state_dict(self) -> dict[str, Any]:
        """Counters plus the spec (plain values) for the consistency check on load."""
        return {
            "num_samples": self.num_samples,
            "num_tokens": self.num_tokens,
            "warmup_end_tokens": self.warmup_end_tokens,
            "spec": dataclasses.asdict(self.spec),
        }

    def load_state_dict(self, state: dict[str, Any], *, override: bool = False, use_checkpoint: bool = False) -> None:
        """Restore counters; the saved schedule must match the current one.

        Args:
            override: keep the current (command line) schedule whatever the checkpoint says
                (``--override-opt-param-scheduler``).
            use_checkpoint: adopt the checkpoint's schedule (``--use-checkpoint-opt-param-scheduler``).
        """
        saved = state["spec"]
        if use_checkpoint and not override:
            self.spec = LRScheduleSpec(**saved)
        elif not override:
            for name in _CHECKED_FIELDS:
                if saved.get(name) != getattr(self.spec, name):
                    raise ValueError(
                        f"learning-rate schedule differs from the checkpoint: {name} is {getattr(self.spec, name)!r}"
                        f" now but {saved.get(name)!r} in the checkpoint; pass --override-opt-param-scheduler to"
                        " use the new schedule or --use-checkpoint-opt-param-scheduler to keep the saved one"
                    )
        self.num_samples = int(state["num_samples"])
        self.num_tokens = int(state["num_tokens"])
        wet = state.get("warmup_end_tokens")
        self.warmup_end_tokens = None if wet is None else int(wet)
        self._apply()


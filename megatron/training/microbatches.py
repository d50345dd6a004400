"""The global batch size of every iteration: constant, or ramped up as Megatron's ``--rampup-batch-size``.

``BatchSizeSchedule`` is a pure function of the consumed samples (Megatron's ``RampupBatchsizeNumMicroBatches``
rule): with ``--rampup-batch-size START INCREMENT SAMPLES`` the global batch starts at START and grows by INCREMENT
each time another ``SAMPLES / ((GLOBAL - START) / INCREMENT)`` samples have been consumed, and is GLOBAL once more
than SAMPLES samples were consumed. Because it depends on the consumed samples alone, a run resumed from a
checkpoint continues the ramp exactly. The schedule also answers the questions whose answer the ramp changes: the
samples consumed after N iterations, the iterations that fit into a sample budget, and the step boundary at which a
sample count is first reached.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Sequence

from megatron.config import flag_name

__all__ = ["BatchSizeSchedule", "check_rampup"]

_FLAG = flag_name("rampup_batch_size")


def check_rampup(rampup: Sequence[int], global_batch_size: int, micro_batch_size: int, dp_size: int) -> None:
    """Megatron's checks of ``--rampup-batch-size START INCREMENT SAMPLES`` (before any process group exists).

    Every batch size the ramp reaches must be a multiple of micro batch x data-parallel size (Megatron asserts this
    at the iteration that reaches it; here it fails at start). Raises ValueError naming the flag and values.
    """
    shown = f"{_FLAG} {' '.join(map(str, rampup))}"
    if len(rampup) != 3:
        raise ValueError(f"{shown}: expected three values, START INCREMENT SAMPLES (e.g. {_FLAG} 16 16 5859375)")
    start, increment, samples = (int(v) for v in rampup)
    if start < 1 or increment < 1 or samples < 0:
        raise ValueError(f"{shown}: START ({start}) and INCREMENT ({increment}) must be >= 1 and SAMPLES ({samples}) "
                         ">= 0")
    diff = global_batch_size - start
    if diff <= 0:
        raise ValueError(f"{shown}: START ({start}) must be smaller than the global batch size ({global_batch_size}, "
                         "--global-batch-size or the DeepSpeed config's train_batch_size) it ramps up to; lower START "
                         f"or drop {_FLAG}")
    if diff % increment:
        raise ValueError(f"{shown}: the global batch size ({global_batch_size}) minus START ({start}) = {diff} must be "
                         f"divisible by INCREMENT ({increment}); change START, INCREMENT or --global-batch-size")
    unit = micro_batch_size * dp_size
    for name, value in (("START", start), ("INCREMENT", increment)):
        if value % unit:
            raise ValueError(
                f"{shown}: {name} ({value}) must be a multiple of micro_batch_size ({micro_batch_size}) x data-parallel "
                f"size ({dp_size}) = {unit}, so that every global batch of the ramp is whole micro-batches on every "
                f"data-parallel rank; change {_FLAG} or --micro-batch-size"
            )


@dataclass(frozen=True)
class BatchSizeSchedule:
    """Global batch size as a function of consumed samples.

    Attributes:
        global_batch_size: the final (and, without a ramp, the only) global batch size.
        micro_batch_size: samples per micro-batch per data-parallel rank.
        dp_size: data-parallel size.
        rampup: ``(START, INCREMENT, SAMPLES)`` or None for a constant batch.
    """

    global_batch_size: int
    micro_batch_size: int
    dp_size: int
    rampup: tuple[int, int, int] | None = None

    def __post_init__(self) -> None:
        if self.rampup is not None:
            check_rampup(self.rampup, self.global_batch_size, self.micro_batch_size, self.dp_size)
            object.__setattr__(self, "rampup", tuple(int(v) for v in self.rampup))

    @property
    def _samples_per_increment(self) -> float:
        start, increment, samples = self.rampup
        # Megatron divides in floating point and truncates the quotient below; kept so the steps fall where its do.
        return samples / ((self.global_batch_size - start) // increment)

    def at(self, consumed_samples: int) -> int:
        """Global batch size of the iteration that starts after ``consumed_samples`` samples."""
        if self.rampup is None:
            return self.global_batch_size
        start, increment, samples = self.rampup
        if consumed_samples > samples or samples == 0:  # Megatron divides by zero for SAMPLES 0: no ramp at all
            return self.global_batch_size
        steps = int(consumed_samples / self._samples_per_increment)
        return min(start + steps * increment, self.global_batch_size)

    def num_microbatches(self, consumed_samples: int) -> int:
        """Micro-batches per data-parallel rank of the iteration that starts after ``consumed_samples`` samples."""
        return self.at(consumed_samples) // (self.micro_batch_size * self.dp_size)

    def _stretches(self) -> Iterator[tuple[int, int, int | None]]:
        """``(consumed, batch, iterations)``: runs of iterations with one batch size, from the start of training;
        the last run (the final batch) has ``iterations`` None (unbounded)."""
        consumed = 0
        while True:
            batch = self.at(consumed)
            if batch == self.global_batch_size:
                yield consumed, batch, None
                return
            # The batch is non-decreasing in the consumed samples: find the last iteration j that still has it.
            lo, hi = 0, (self.rampup[2] - consumed) // batch + 1
            while lo < hi:
                mid = (lo + hi + 1) // 2
                if self.at(consumed + mid * batch) == batch:
                    lo = mid
                else:
                    hi = mid - 1
            yield consumed, batch, lo + 1
            consumed += (lo + 1) * batch

    def samples_after(self, iterations: int) -> int:
        """Samples consumed by the first ``iterations`` iterations."""
        for consumed, batch, count in self._stretches():
            if count is None or iterations <= count:
                return consumed + iterations * batch
            iterations -= count
        raise AssertionError("the last stretch is unbounded")

    def iterations_within(self, samples: int) -> int:
        """Whole iterations whose samples fit in ``samples`` (``--train-samples``: training never goes past it).

        Megatron's count during a ramp can take one iteration past ``--train-samples``; this one stops before.
        """
        done = 0
        for consumed, batch, count in self._stretches():
            fit = max(samples - consumed, 0) // batch
            if count is None or fit < count:
                return done + fit
            done += count
        raise AssertionError("the last stretch is unbounded")

    def samples_reaching(self, samples: int) -> int:
        """Consumed samples at the first iteration boundary at or past ``samples``."""
        for consumed, batch, count in self._stretches():
            need = max(-(-(samples - consumed) // batch), 0)
            if count is None or need <= count:
                return consumed + need * batch
        raise AssertionError("the last stretch is unbounded")

    def describe(self) -> str:
        """One line for the log: the constant batch, or the ramp."""
        if self.rampup is None:
            return f"constant global batch size {self.global_batch_size} ({self.num_microbatches(0)} micro-batches)"
        start, increment, samples = self.rampup
        return (f"global batch size ramps up from {start} by {increment} every {self._samples_per_increment:.1f} "
                f"samples to {self.global_batch_size} after {samples} samples ({self.iterations_within(samples)} "
                "iterations of the ramp)")

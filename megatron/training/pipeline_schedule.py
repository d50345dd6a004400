"""One training step's forward and backward over M micro-batches through this rank's pipeline stages.

:class:`PipelineEngine` drives :mod:`torch.distributed.pipelining`: each :class:`GPTStage` is wrapped in a
``PipelineStage`` with static shapes (no shape-inference forward, which would draw random numbers and advance the
random-LTD stream) and run by ``ScheduleGPipe``, ``Schedule1F1B`` or ``ScheduleInterleaved1F1B``. Stages and
schedules are cached per (micro-batches, micro-batch shape, train/eval), a few at a time (each holds receive
buffers for every micro-batch): curriculum learning's growing sequence length and a batch-size ramp-up build new
ones when the shape changes and drop the oldest.

The loss is the unpipelined loop's: each micro-batch contributes its masked token mean divided by the number of
micro-batches (times the fp16 loss scale) to the backward pass, and ``scale_grads`` is off (our optimizer moves
``.grad`` into ``main_grad`` after every accumulation, and dividing the loss keeps the arithmetic of the
unpipelined loop). The unscaled per-micro-batch losses are broadcast from the last stage to the whole pipeline.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, Literal, Sequence

import torch
import torch.distributed as dist
from torch.distributed.pipelining import PipelineStage, Schedule1F1B, ScheduleGPipe, ScheduleInterleaved1F1B

from megatron.model.language_model import masked_token_mean
from megatron.parallel.pipeline_state import PipelineParallelState
from megatron.training.pipeline import GPTStage

__all__ = ["ScheduleKind", "PipelineEngine"]

ScheduleKind = Literal["gpipe", "1f1b", "interleaved_1f1b"]
"""``gpipe``: all forwards, then all backwards (for tests); ``1f1b``: Megatron's default schedule;
``interleaved_1f1b``: several model chunks per rank (``num_layers_per_virtual_pipeline_stage``)."""

Batch = dict[str, Any]

_MAX_CACHED_SCHEDULES = 4
"""Schedules kept alive: the current training shape, the evaluation shape, and the previous ones of each."""


class PipelineEngine:
    """Forward + backward of one step through ``stages`` (this rank's chunks, in chunk order).

    Every rank of a pipeline calls :meth:`train_step` with the same number of micro-batches of the same shape.
    Micro-batch dicts hold ``tokens`` (read on the rank of stage 0), ``labels`` and ``loss_mask`` (the last stage's
    rank), ``position_ids`` and optionally ``attention_mask`` (every rank).

    Args:
        stages: from :func:`build_gpt_stages`, on ``device``.
        pstate: the process groups; ``pp_group`` carries the activations.
        schedule: see :data:`ScheduleKind`; ``interleaved_1f1b`` needs two or more chunks per rank, the others one.
        device: where the stages run (activations are received into buffers there).

    Raises:
        ValueError: a schedule that does not fit the number of chunks.
    """

    def __init__(
        self, stages: Sequence[GPTStage], pstate: PipelineParallelState, schedule: ScheduleKind,
        device: torch.device | str = "cpu",
    ) -> None:
        self.stages, self.pstate, self.schedule = list(stages), pstate, schedule
        self.device = torch.device(device)
        chunks = len(self.stages)
        if schedule not in ("gpipe", "1f1b", "interleaved_1f1b"):
            raise ValueError(f"pipeline schedule must be gpipe, 1f1b or interleaved_1f1b, got {schedule!r}")
        if (schedule == "interleaved_1f1b") != (chunks > 1):
            raise ValueError(
                f"the {schedule} schedule got {chunks} model chunk(s) per rank: interleaved_1f1b needs "
                "num_layers_per_virtual_pipeline_stage (two or more chunks per rank), gpipe and 1f1b need it unset"
            )
        self.num_stages = self.stages[0].num_stages
        self._cache: OrderedDict[tuple, Any] = OrderedDict()
        self._records: list[torch.Tensor] = []
        self._loss_scale: float | None = None
        self._num_microbatches = 0

    @property
    def holds_first(self) -> bool:
        """Whether this rank runs stage 0 (and needs the micro-batches' ``tokens``)."""
        return self.stages[0].is_first

    @property
    def holds_last(self) -> bool:
        """Whether this rank runs the last stage (and needs ``labels`` and ``loss_mask``)."""
        return self.stages[-1].is_last

    # ---- the step -----------------------------------------------------------------------------------------------
    def train_step(self, microbatches: Sequence[Batch], *, loss_scale: float | None = None) -> torch.Tensor:
        """Forward and backward over ``microbatches``; gradients accumulate into the stages' parameters.

        Args:
            microbatches: M micro-batches of equal shape ``[b, s]``.
            loss_scale: the fp16 loss scale the backward pass multiplies by (None: no scaling).

        Returns:
            fp32 ``[M]``: each micro-batch's masked token mean (unscaled), on every rank of the pipeline.
        """
        self._loss_scale = loss_scale
        return self._run(microbatches, train=True)

    @torch.no_grad()
    def eval_step(self, microbatches: Sequence[Batch]) -> torch.Tensor:
        """Forward only; returns the ``[M]`` masked token means on every rank of the pipeline."""
        return self._run(microbatches, train=False)

    def _run(self, microbatches: Sequence[Batch], train: bool) -> torch.Tensor:
        m = len(microbatches)
        if m == 0:
            raise ValueError("a pipeline step needs at least one micro-batch")
        b, s = _shape_of(microbatches)
        self._num_microbatches = m
        for stage in self.stages:
            stage.train(train)
        self._records = []
        if self.pstate.pp_size == 1:
            self._run_unpipelined(microbatches, train)
        else:
            schedule = self._schedule(m, b, s, train)
            args, kwargs, target = self._inputs(microbatches)
            if train:
                schedule.step(*args, target=target, return_outputs=False, **kwargs)
            else:
                schedule.eval(*args, target=target, return_outputs=False, **kwargs)
        return self._broadcast_losses(m)

    def _loss_fn(self, per_token: torch.Tensor, loss_mask: torch.Tensor) -> torch.Tensor:
        """The schedule's loss: record the micro-batch's mean, return what the backward pass starts from."""
        loss = masked_token_mean(per_token, loss_mask)
        self._records.append(loss.detach())
        if not torch.is_grad_enabled():
            return loss
        # The unpipelined loop's arithmetic: (loss / M) * scale (MegatronOptimizer.backward).
        scaled = loss / self._num_microbatches
        return scaled if self._loss_scale is None else scaled * self._loss_scale

    def _run_unpipelined(self, microbatches: Sequence[Batch], train: bool) -> None:
        """One stage holds the whole model: the training loop's micro-batch loop."""
        (stage,) = self.stages
        for mb in microbatches:
            per_token = stage(mb["tokens"], position_ids=mb.get("position_ids"),
                              attention_mask=mb.get("attention_mask"), labels=mb["labels"])
            loss = self._loss_fn(per_token, mb["loss_mask"])
            if train:
                loss.backward()

    def _inputs(self, microbatches: Sequence[Batch]) -> tuple[tuple, dict[str, torch.Tensor], torch.Tensor | None]:
        """Concatenate the micro-batches (the schedule splits them back along dim 0, as views of the same values)."""

        def cat(key: str) -> torch.Tensor:
            return torch.cat([mb[key] for mb in microbatches], dim=0)

        args = (cat("tokens"),) if self.holds_first else ()
        kwargs = {"position_ids": cat("position_ids")}
        if microbatches[0].get("attention_mask") is not None:
            kwargs["attention_mask"] = cat("attention_mask")
        target = None
        if self.holds_last:
            kwargs["labels"] = cat("labels")
            target = cat("loss_mask")
        return args, kwargs, target

    def _broadcast_losses(self, m: int) -> torch.Tensor:
        if self.holds_last:
            assert len(self._records) == m, f"last stage recorded {len(self._records)} losses for {m} micro-batches"
            losses = torch.stack(self._records).float()
        else:
            losses = torch.empty(m, dtype=torch.float32, device=self.device)
        if self.pstate.pp_group is not None:
            dist.broadcast(losses, src=self.pstate.pp_ranks[-1], group=self.pstate.pp_group)
        return losses

    # ---- stages and schedules ----------------------------------------------------------------------------------
    def _schedule(self, m: int, b: int, s: int, train: bool) -> Any:
        key = (m, b, s, train)
        if key not in self._cache:
            self._check_microbatches(m)
            pipe_stages = [self._pipeline_stage(stage, b, s) for stage in self.stages]
            loss_fn = self._loss_fn
            if self.schedule == "gpipe":
                sched = ScheduleGPipe(pipe_stages[0], m, loss_fn=loss_fn, scale_grads=False)
            elif self.schedule == "1f1b":
                sched = Schedule1F1B(pipe_stages[0], m, loss_fn=loss_fn, scale_grads=False)
            else:
                sched = ScheduleInterleaved1F1B(pipe_stages, m, loss_fn=loss_fn, scale_grads=False)
            self._cache[key] = sched
            while len(self._cache) > _MAX_CACHED_SCHEDULES:
                self._cache.popitem(last=False)
        self._cache.move_to_end(key)
        return self._cache[key]

    def _check_microbatches(self, m: int) -> None:
        pp = self.pstate.pp_size
        if self.schedule == "1f1b" and m < pp:
            raise ValueError(
                f"the 1f1b pipeline schedule needs at least pipeline_model_parallel_size ({pp}) micro-batches per "
                f"step, got {m}; raise global_batch_size or lower micro_batch_size"
            )
        if self.schedule == "interleaved_1f1b" and m % pp != 0:
            raise ValueError(
                f"the interleaved pipeline schedule needs a multiple of pipeline_model_parallel_size ({pp}) "
                f"micro-batches per step (Megatron's rule), got {m}; change global_batch_size or micro_batch_size"
            )

    def _pipeline_stage(self, stage: GPTStage, b: int, s: int) -> PipelineStage:
        """A ``PipelineStage`` with static input/output shapes (meta tensors) for micro-batches of ``[b, s]``."""
        cfg = stage.config
        hidden = torch.empty(s, b, cfg.hidden_size, dtype=cfg.torch_params_dtype, device="meta")
        if stage.is_first:
            inputs = torch.empty(b, s, dtype=torch.long, device="meta")
        else:
            inputs = hidden.clone().requires_grad_(True)
        if stage.is_last:
            outputs = torch.empty(b, s, dtype=torch.float32, device="meta").requires_grad_(True)
        else:
            outputs = hidden.clone().requires_grad_(True)
        return PipelineStage(stage, stage.stage_index, stage.num_stages, self.device, input_args=inputs,
                             output_args=outputs, group=self.pstate.pp_group)


def _shape_of(microbatches: Sequence[Batch]) -> tuple[int, int]:
    """The common ``[b, s]`` of the micro-batches (from ``position_ids``, which every rank holds)."""
    shapes = {tuple(mb["position_ids"].shape) for mb in microbatches}
    if len(shapes) != 1:
        raise ValueError(f"pipeline micro-batches of one step must have one shape, got {sorted(shapes)}")
    (shape,) = shapes
    if len(shape) != 2:
        raise ValueError(f"position_ids must be [b, s], got shape {shape}")
    return shape

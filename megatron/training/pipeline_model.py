"""The model object the training loop holds when ``--pipeline-model-parallel-size`` > 1: this rank's GPT chunks.

:class:`PipelinedGPT` is an ``nn.Module`` over this rank's :class:`~megatron.training.pipeline.GPTStage` chunks, so
the optimizer, ``train()``/``eval()`` and ``.to(device)`` treat it like the unpipelined model. It adds what the loop
needs from a pipeline: :meth:`train_step` / :meth:`eval_step` through a :class:`PipelineEngine` (built on first
use, on the device the chunks then live on), :meth:`finish_grads` (the tied-embedding gradient sum before the
optimizer), the chunks' RNG trackers as one checkpointable object, Megatron's checkpoint entries (``model``, or
``model0``, ``model1`` ... with virtual stages) and random-LTD wrapping per stage.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import nn

from megatron.data_efficiency.config import ModelType
from megatron.data_efficiency.routing.random_ltd import RandomLTDController
from megatron.data_efficiency.routing.scheduler import RandomLTDScheduler
from megatron.model.config import TransformerConfig
from megatron.parallel.pipeline_state import PipelineParallelState
from megatron.parallel.random import RNGStatesTracker
from megatron.training.pipeline import (
    GPTStage,
    StageRandomLTDController,
    allreduce_tied_embedding_grads,
    build_gpt_stages,
    wrap_stage_layers,
)
from megatron.training.pipeline_schedule import PipelineEngine, ScheduleKind

__all__ = ["PipelinedGPT", "ChunkRNGTrackers", "PipelineRandomLTDController"]

Batch = dict[str, Any]


class ChunkRNGTrackers:
    """The RNG trackers of several model chunks as one object with ``get_states``/``set_states`` (checkpoints)."""

    def __init__(self, trackers: Sequence[RNGStatesTracker]) -> None:
        self.trackers = list(trackers)

    def get_states(self) -> dict[str, Any]:
        return {f"chunk{i}": t.get_states() for i, t in enumerate(self.trackers)}

    def set_states(self, states: dict[str, Any]) -> None:
        """Raises ValueError when the checkpoint holds another number of chunks."""
        want = {f"chunk{i}" for i in range(len(self.trackers))}
        if set(states) != want:
            raise ValueError(f"checkpoint RNG states are for chunks {sorted(states)}, this run has {sorted(want)}; "
                             "resume with the same --num-layers-per-virtual-pipeline-stage")
        for i, t in enumerate(self.trackers):
            t.set_states(states[f"chunk{i}"])


class PipelineRandomLTDController(RandomLTDController):
    """Random-LTD's schedule and layer-token accounting on a pipeline rank, fanning ``set_step`` out to the stage
    controllers that draw kept tokens (none on a rank without random-LTD layers, which still counts tokens).

    It never draws itself: the wrapped layers hold the stage controllers (:func:`wrap_stage_layers`), which share
    this controller's scheduler, so the accounting and checkpoint state are those of the unpipelined controller.
    """

    def __init__(self, scheduler: RandomLTDScheduler, rng_tracker: RNGStatesTracker, layer_ids: Sequence[int],
                 num_layers: int, model_type: ModelType, stage_controllers: Sequence[StageRandomLTDController]) -> None:
        super().__init__(scheduler, rng_tracker, layer_ids, num_layers, model_type)
        self.stage_controllers = list(stage_controllers)

    def set_step(self, step: int, seq_length: int | None = None) -> int:
        for controller in self.stage_controllers:
            controller.set_step(step, seq_length)
        return super().set_step(step, seq_length)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        for controller in self.stage_controllers:
            controller._draws.clear()
            controller.last_indices = None


class PipelinedGPT(nn.Module):
    """This pipeline rank's chunks of a GPT, driven by a ``torch.distributed.pipelining`` schedule.

    Args:
        config, pstate, vocab_size, seed: as for ``GPTModel`` (every parameter equals the full model's of the same
            name, whatever the split).
        num_layers_per_virtual_stage: layers per chunk of the interleaved schedule; None for one chunk.
        schedule: ``1f1b`` (default), ``interleaved_1f1b`` (with virtual stages) or ``gpipe``.
    """

    loss_metric = "loss/lm"
    """The metric name of the per-micro-batch loss in the log line (as ``pretrain_gpt.forward_step``'s aux)."""

    def __init__(self, config: TransformerConfig, pstate: PipelineParallelState, vocab_size: int, *, seed: int,
                 num_layers_per_virtual_stage: int | None = None, schedule: ScheduleKind | None = None) -> None:
        super().__init__()
        self.config, self.pstate = config, pstate
        self.chunks = nn.ModuleList(build_gpt_stages(config, pstate, vocab_size, seed=seed,
                                                     num_layers_per_virtual_stage=num_layers_per_virtual_stage))
        self.schedule: ScheduleKind = schedule or ("1f1b" if num_layers_per_virtual_stage is None
                                                   else "interleaved_1f1b")
        trackers = [chunk.rng_tracker for chunk in self.chunks]
        self.rng_tracker = trackers[0] if len(trackers) == 1 else ChunkRNGTrackers(trackers)
        self._engine: PipelineEngine | None = None

    @property
    def stages(self) -> list[GPTStage]:
        return list(self.chunks)

    @property
    def engine(self) -> PipelineEngine:
        """The schedule runner, on the device the chunks live on (built on first use, after ``.to(device)``)."""
        if self._engine is None:
            device = next(self.parameters()).device
            self._engine = PipelineEngine(self.stages, self.pstate, self.schedule, device=device)
        return self._engine

    def forward(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        raise RuntimeError("a pipelined model runs through train_step / eval_step (its stages live on several ranks)")

    # ---- the loop's calls ---------------------------------------------------------------------------------------
    def train_step(self, microbatches: Sequence[Batch], loss_scale: float | None = None) -> torch.Tensor:
        """Forward and backward of one step's micro-batches; returns their ``[M]`` masked token means (every rank
        of the pipeline holds them: broadcast from the last stage)."""
        return self.engine.train_step(microbatches, loss_scale=loss_scale)

    def eval_step(self, microbatches: Sequence[Batch]) -> torch.Tensor:
        """Forward only; ``[M]`` masked token means on every rank of the pipeline."""
        return self.engine.eval_step(microbatches)

    def finish_grads(self) -> None:
        """After the last backward of a step: sum the tied word embedding's gradients of the first and last stage."""
        allreduce_tied_embedding_grads(self.stages, self.pstate)

    # ---- checkpoints --------------------------------------------------------------------------------------------
    def checkpoint_entries(self) -> dict[str, dict[str, torch.Tensor]]:
        """Megatron's payload keys: ``model`` (one chunk) or ``model0``, ``model1``, ... (virtual stages), each a
        chunk's ``state_dict()`` with its layers numbered locally."""
        if len(self.chunks) == 1:
            return {"model": self.chunks[0].state_dict()}
        return {f"model{i}": chunk.state_dict() for i, chunk in enumerate(self.chunks)}

    def load_checkpoint_entries(self, payload: dict[str, Any]) -> None:
        """Inverse of :meth:`checkpoint_entries` (strict).

        Raises:
            ValueError: the payload lacks an entry of this rank's chunks.
        """
        entries = self.checkpoint_entries()
        missing = [k for k in entries if k not in payload]
        if missing:
            raise ValueError(f"checkpoint lacks model entries {missing} of this pipeline rank's chunks; resume with "
                             "the same --num-layers-per-virtual-pipeline-stage or convert the checkpoint")
        for i, key in enumerate(entries):
            self.chunks[i].load_state_dict(payload[key], strict=True)

    def global_names(self) -> dict[int, str]:
        """``id(parameter) -> full-model name`` (as ``GPTModel.state_dict()``) of this rank's parameters."""
        out = {}
        for chunk in self.chunks:
            by_ptr = {t.data_ptr(): k for k, t in chunk.state_dict(keep_vars=True).items()}
            for p in chunk.parameters():
                out[id(p)] = chunk.global_name(by_ptr[p.data_ptr()])
        return out

    # ---- random-LTD -----------------------------------------------------------------------------------------------
    def wrap_random_ltd(self, layer_ids: Sequence[int], scheduler: RandomLTDScheduler,
                        model_type: ModelType = "decoder") -> PipelineRandomLTDController:
        """Wrap this rank's random-LTD layers (global ids) and return the controller the extension drives."""
        stage_controllers = wrap_stage_layers(self.stages, list(layer_ids), scheduler, model_type=model_type)
        return PipelineRandomLTDController(scheduler, self.chunks[0].rng_tracker, list(layer_ids),
                                           self.config.num_layers, model_type, stage_controllers)

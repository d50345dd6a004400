"""The pretraining loop: train step, evaluation, logging, checkpoints and exit conditions.

``pretrain(cfg, model_provider, datasets_provider, forward_step, collate_fn=...)`` is the one entry point for
GPT and BERT scripts. The data efficiency library plugs in through :class:`TrainerExtension` objects (no flags
inside the loop): an extension may (a) replace the training batch sampler, (b) post-process each training batch
(sequence-length truncation changes ``s``), (c) wrap model layers and receive ``on_step_begin(iteration)``,
(d) adjust the token count, (e) add metrics, (f) keep state in checkpoints under its ``name``, and (g) record the
settings that define it, which a resume must keep. The global batch of each iteration comes from the config's
``BatchSizeSchedule`` (constant, or ramped up by ``--rampup-batch-size``); evaluation always uses the full one.
A pipeline rank's model (``training.pipeline_model.PipelinedGPT``) runs each step's micro-batches through its
pipeline schedule instead of one ``forward_step`` each, then sums its tied embedding's gradients.
"""

from __future__ import annotations

import math
import signal
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Mapping, Protocol, Sequence

import torch
import torch.distributed as dist
from torch import nn

from megatron.logging import get_logger, log_rank0
from megatron.parallel.state import ParallelState
from megatron.training.checkpointing import read_tracker, save_checkpoint
from megatron.training.data_loading import DataStream
from megatron.training.metrics import MetricsWriter
from megatron.training.timers import Timers

__all__ = ["TrainerExtension", "Stateful", "ForwardStep", "TrainResult", "Trainer"]

logger = get_logger(__name__)

Batch = dict[str, Any]
ForwardStep = Callable[[nn.Module, Batch], "tuple[torch.Tensor, dict[str, torch.Tensor]]"]
"""``forward_step(model, batch) -> (loss, aux)``: ``loss`` is the micro-batch's masked token mean (fp32 scalar);
``aux`` maps metric names (e.g. ``loss/lm``) to detached scalars that are averaged and logged."""


class Stateful(Protocol):
    def state_dict(self) -> dict: ...
    def load_state_dict(self, state: dict) -> None: ...


class TrainerExtension:
    """Hooks through which a library (curriculum learning, random-LTD) changes training without loop flags.

    Every hook has a no-op default; override what you need. Hooks run in list order on every rank.
    ``name`` keys the extension's ``state_dict()`` in the checkpoint's ``extra_state``.
    """

    name: str = "extension"

    def build_train_sampler(
        self, dataset: Any, *, consumed_samples: int, micro_batch_size: int, global_batch_size: int,
        dp_rank: int, dp_size: int,
    ) -> Iterator[list[int]] | None:
        """(a) Return an iterator of this DP rank's micro-batch index lists, or None to keep the default.

        The loop pulls ``global_batch_size // (micro_batch_size * dp_size)`` lists per iteration, so iteration
        ``k`` (1-based) consumes the ``k``-th global batch; the sampler may count global batches itself. During a
        batch-size ramp-up ``global_batch_size`` is the final size and the loop pulls the current batch's count
        (``PretrainConfig.batch_schedule()``), which a sampler that draws whole global batches must follow. It is
        built after :meth:`load_state_dict`, so a resumed sampler continues where the checkpoint left it. Worker
        processes prefetch from it only if it is ``prefetch_safe`` (see ``training.data_loading``).
        """
        return None

    def wrap_model(self, model: nn.Module) -> None:
        """(c) Transform the model in place before the optimizer is built (e.g. wrap ``model.layers``)."""

    def on_step_begin(self, iteration: int) -> None:
        """(c) Called before the forward passes of iteration ``iteration`` (1-based)."""

    def process_batch(self, batch: Batch, iteration: int) -> Batch:
        """(b) Post-process one training micro-batch before it moves to the device (it is already there when it
        arrived by tensor-parallel broadcast). Values the sampler attached travel in it (the curriculum's
        ``curriculum_step`` and ``difficulties``)."""
        return batch

    def adjust_tokens(self, tokens: int, iteration: int) -> int:
        """(d) Tokens the LR schedule and ``--train-tokens`` count for this iteration (default: the data tokens,
        ``b * s`` summed over micro-batches and DP ranks; random-LTD returns its layer-averaged count). The reported
        ``consumed_tokens`` always stays the data tokens."""
        return tokens

    def metrics(self) -> dict[str, float]:
        """(e) Extra values for the log line and metric sinks, e.g. ``data_efficiency/difficulty``."""
        return {}

    def state_dict(self) -> dict | None:
        """(f) Plain-container state for the checkpoint (None: nothing to save)."""
        return None

    def load_state_dict(self, state: dict) -> None:
        """(f) Restore what :meth:`state_dict` returned."""

    def run_config(self) -> dict | None:
        """(g) JSON-ready settings that define this extension's training, saved with each checkpoint; a resume
        with other settings (or without the extension) is refused (None: nothing to record)."""
        return None


@dataclass
class TrainResult:
    """What a finished (or exited) run reports; losses are global (DP-averaged) per iteration of this process."""

    iteration: int
    consumed_samples: int
    consumed_tokens: int
    train_losses: dict[int, float] = field(default_factory=dict)
    val_losses: dict[int, float] = field(default_factory=dict)
    test_loss: float | None = None
    exit_reason: str = "finished"


def _to_device(batch: Batch, device: torch.device) -> Batch:
    return {k: (v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v) for k, v in batch.items()}


@dataclass
class _Interval:
    """Accumulators between two log lines."""

    iters: int = 0
    applied: int = 0
    skipped: int = 0
    nan: int = 0
    loss_sum: float = 0.0
    aux_sums: dict[str, float] = field(default_factory=dict)
    tokens: int = 0
    flops: float = 0.0
    grad_norm: float | None = None
    start: float = field(default_factory=time.perf_counter)


class Trainer:
    """Holds the run's objects and counters; :meth:`train` is the loop, :meth:`train_step` one iteration."""

    def __init__(
        self, *, cfg: Any, pstate: ParallelState, model: nn.Module, optimizer: Any, scheduler: Any,
        forward_step: ForwardStep, train_stream: DataStream | None, valid_stream: DataStream | None,
        test_stream: DataStream | None, writer: MetricsWriter, device: torch.device,
        flops_fn: Callable[[int, int], float], extensions: Sequence[TrainerExtension] = (),
        extra_stateful: Mapping[str, Stateful] | None = None, rng_tracker: Any | None = None,
        run_record: Mapping[str, Any] | None = None,
    ) -> None:
        self.cfg, self.t = cfg, cfg.training
        self.run_record = dict(run_record) if run_record is not None else cfg.to_dict()  # saved as "config"
        self.pstate, self.model, self.optimizer, self.scheduler = pstate, model, optimizer, scheduler
        self.forward_step, self.device, self.flops_fn = forward_step, device, flops_fn
        self.train_stream, self.valid_stream, self.test_stream = train_stream, valid_stream, test_stream
        self.writer, self.extensions = writer, list(extensions)
        self.extra_stateful = dict(extra_stateful or {})
        self.rng_tracker = rng_tracker
        self.timers = Timers()
        self.start_time = time.time()  # --exit-duration-in-mins counts from setup, as Megatron
        self.batches = cfg.batch_schedule()
        self.num_microbatches = cfg.num_microbatches  # of the full global batch (evaluation's)
        self.gbs = cfg.global_batch_size
        self.current_gbs: int | None = None  # of the latest training iteration
        self.iteration = 0
        self.consumed_samples = 0
        self.consumed_tokens = 0
        self.schedule_tokens = 0  # what the LR schedule and --train-tokens count (see TrainerExtension.adjust_tokens)
        self.consumed_valid_samples = 0
        self.skipped_iterations = 0
        self.result = TrainResult(0, 0, 0)
        self._sigterm = False

    # ---- counters and checkpoint state ------------------------------------------------------------------------
    def train_state(self) -> dict[str, int]:
        return {"iteration": self.iteration, "consumed_train_samples": self.consumed_samples,
                "consumed_train_tokens": self.consumed_tokens, "schedule_tokens": self.schedule_tokens,
                "consumed_valid_samples": self.consumed_valid_samples,
                "skipped_iterations": self.skipped_iterations}

    def restore_train_state(self, state: Mapping[str, int], iteration: int) -> None:
        self.iteration = iteration
        self.consumed_samples = int(state.get("consumed_train_samples", 0))
        self.consumed_tokens = int(state.get("consumed_train_tokens", 0))
        self.schedule_tokens = int(state.get("schedule_tokens", self.consumed_tokens))
        self.consumed_valid_samples = int(state.get("consumed_valid_samples", 0))
        self.skipped_iterations = int(state.get("skipped_iterations", 0))

    def extra_state(self) -> dict[str, dict]:
        out = {name: obj.state_dict() for name, obj in self.extra_stateful.items()}
        for ext in self.extensions:
            state = ext.state_dict()
            if state is not None:
                assert ext.name not in out, f"two stateful objects are named {ext.name!r}"
                out[ext.name] = state
        return out

    def save(self) -> None:
        sampler_state = self.train_stream.state_dict() if self.train_stream is not None else None
        save_checkpoint(
            self.t.save, self.iteration, model=self.model, optimizer=self.optimizer, scheduler=self.scheduler,
            pstate=self.pstate, train_state=self.train_state(), sampler_state=sampler_state,
            extra_state=self.extra_state(), config=self.run_record, rng_tracker=self.rng_tracker,
            overwrite=self.t.overwrite_checkpoints,
        )

    # ---- one iteration ----------------------------------------------------------------------------------------
    def _reduce_dp(self, values: list[float]) -> list[float]:
        """Sum ``values`` over the data-parallel group (one small all-reduce)."""
        if self.pstate.dp_group is None:
            return values
        buf = torch.tensor(values, dtype=torch.float64, device=self.device)
        dist.all_reduce(buf, group=self.pstate.dp_group)
        return buf.tolist()

    def train_step(self, num_microbatches: int | None = None
                   ) -> tuple[bool, float, dict[str, float], int, float, float | None] | None:
        """Forward/backward ``num_microbatches`` micro-batches (default: the full global batch's), then one
        optimizer step.

        Returns ``(applied, loss, aux, tokens, flops, grad_norm)`` with global (DP-reduced) loss/aux means, token
        and FLOP totals; None if the training data ran out before the first micro-batch.
        """
        num_microbatches = num_microbatches or self.num_microbatches
        self.model.train()
        self.optimizer.zero_grad()
        loss_sum, tokens, flops = 0.0, 0, 0.0
        aux_sums: dict[str, float] = {}
        pipelined = _is_pipelined(self.model)
        microbatches: list[Batch] = []
        self.timers("forward-backward").start()
        for micro in range(num_microbatches):
            batch = self.train_stream.next()
            if batch is None:
                self.timers("forward-backward").stop()
                if micro == 0:
                    return None
                raise RuntimeError(
                    f"training data ran out in the middle of iteration {self.iteration + 1}; build more samples"
                )
            for ext in self.extensions:
                batch = ext.process_batch(batch, self.iteration + 1)
            b, s = batch["tokens"].shape
            tokens += b * s
            flops += self.flops_fn(b, s)
            batch = _to_device(batch, self.device)
            if pipelined:  # the schedule runs all micro-batches of the step at once
                microbatches.append(batch)
                continue
            loss, aux = self.forward_step(self.model, batch)
            # Megatron semantics: each micro-batch contributes its masked token mean / num_microbatches.
            self.optimizer.backward(loss / num_microbatches)
            loss_sum += float(loss.detach())
            for k, v in aux.items():
                aux_sums[k] = aux_sums.get(k, 0.0) + float(v)
        if pipelined:
            loss_sum, aux_sums = self._pipeline_forward_backward(microbatches)
        self.timers("forward-backward").stop()
        self.timers("optimizer").start()
        result = self.optimizer.step()
        self.timers("optimizer").stop()
        keys = sorted(aux_sums)
        reduced = self._reduce_dp([loss_sum, float(tokens), flops, *(aux_sums[k] for k in keys)])
        denom = num_microbatches * self.pstate.dp_size
        loss = reduced[0] / denom
        if self.t.check_for_nan_in_loss_and_grad and not self.t.fp16 and not math.isfinite(loss):
            raise FloatingPointError(f"loss is {loss} at iteration {self.iteration + 1}")
        aux_mean = {k: v / denom for k, v in zip(keys, reduced[3:])}
        return result.applied, loss, aux_mean, int(reduced[1]), reduced[2], result.grad_norm

    def _pipeline_forward_backward(self, microbatches: list[Batch]) -> tuple[float, dict[str, float]]:
        """One step's micro-batches through the pipeline schedule (same loss arithmetic as the micro-batch loop:
        each contributes its masked token mean / M, times the fp16 loss scale), then the tied-embedding gradient
        sum. Returns the summed micro-batch losses (known on every rank: broadcast from the last stage)."""
        scale = self.optimizer.loss_scale if getattr(self.optimizer, "grad_scaler", None) is not None else None
        losses = self.model.train_step(microbatches, loss_scale=scale).tolist()
        self.model.finish_grads()
        loss_sum = 0.0
        for value in losses:  # summed in the micro-batch loop's order, so PP=1 and PP>1 log the same float
            loss_sum += value
        return loss_sum, {self.model.loss_metric: loss_sum}

    # ---- the loop ---------------------------------------------------------------------------------------------
    def _train_iters(self) -> int | None:
        if self.t.train_iters is not None:
            return self.t.train_iters
        if self.t.train_samples is not None:
            return self.batches.iterations_within(self.t.train_samples)
        return None

    def _next_batch_size(self) -> int:
        """Global batch of the coming iteration; logs each change of a ramp-up, as Megatron does."""
        gbs = self.batches.at(self.consumed_samples)
        if gbs != self.current_gbs and self.batches.rampup is not None:
            if self.current_gbs is None:
                log_rank0(logger, "> %s; iteration %d starts at global batch size %d", self.batches.describe(),
                          self.iteration + 1, gbs)
            else:
                log_rank0(logger, "ramping up global batch size from %d to %d at iteration %d (%d consumed samples)",
                          self.current_gbs, gbs, self.iteration + 1, self.consumed_samples)
        self.current_gbs = gbs
        return gbs

    def _done(self) -> bool:
        n = self._train_iters()
        if n is not None and self.iteration >= n:
            return True
        return self.t.train_tokens is not None and self.schedule_tokens >= self.t.train_tokens

    def train(self) -> TrainResult:
        """Run iterations until a stop or exit condition; evaluate, log and save on their intervals."""
        interval = _Interval()
        previous_handler = self._install_signal_handler()
        # A resume that has nothing left to train must not write its starting checkpoint again.
        resumed_here = self.iteration > 0 and self.t.save and read_tracker(self.t.save) == self.iteration
        saved_at = self.iteration if resumed_here else -1
        try:
            while not self._done():
                for ext in self.extensions:
                    ext.on_step_begin(self.iteration + 1)
                gbs = self._next_batch_size()
                out = self.train_step(gbs // (self.t.micro_batch_size * self.pstate.dp_size))
                if out is None:
                    log_rank0(logger, "training data exhausted after %d iterations; stopping", self.iteration)
                    self.result.exit_reason = "data_exhausted"
                    break
                applied, loss, aux, tokens, flops, grad_norm = out
                self.iteration += 1
                self.consumed_samples += gbs
                schedule_tokens = tokens
                for ext in self.extensions:
                    schedule_tokens = ext.adjust_tokens(schedule_tokens, self.iteration)
                self.consumed_tokens += tokens
                self.schedule_tokens += schedule_tokens
                if applied:
                    self.scheduler.step(gbs, self.schedule_tokens)
                else:
                    self.skipped_iterations += 1
                self.result.train_losses[self.iteration] = loss
                self._accumulate(interval, applied, loss, aux, tokens, flops, grad_norm)
                if self.iteration % self.t.log_interval == 0:
                    self._log(interval)
                    interval = _Interval()
                paused = time.perf_counter()
                if self.t.eval_iters > 0 and self.valid_stream is not None and (
                        self.iteration % self.t.eval_interval == 0):
                    self.evaluate("valid")
                if self.t.save and self.t.save_interval and self.iteration % self.t.save_interval == 0:
                    self.save()
                    saved_at = self.iteration
                # Step time and throughput cover training only (Megatron stops its interval timer here too).
                interval.start += time.perf_counter() - paused
                reason = self._exit_reason()
                if reason is not None:
                    if self.t.save and saved_at != self.iteration:
                        self.save()
                    self.result.exit_reason = reason
                    log_rank0(logger, "exiting at iteration %d (%s)", self.iteration, reason)
                    break
            else:
                if self.t.save and saved_at != self.iteration and self.iteration > 0:
                    self.save()
        finally:
            self._restore_signal_handler(previous_handler)
        self.result.iteration, self.result.consumed_samples = self.iteration, self.consumed_samples
        self.result.consumed_tokens = self.consumed_tokens
        return self.result

    def _accumulate(self, interval: _Interval, applied: bool, loss: float, aux: dict[str, float], tokens: int,
                    flops: float, grad_norm: float | None) -> None:
        # Skipped steps (fp16 overflow while the loss scale settles) still report their forward loss: the step is
        # marked by skipped_iterations, not by a nan loss.
        interval.iters += 1
        interval.tokens += tokens
        interval.flops += flops
        interval.loss_sum += loss
        interval.nan += not math.isfinite(loss)
        for k, v in aux.items():
            interval.aux_sums[k] = interval.aux_sums.get(k, 0.0) + v
        if not applied:
            interval.skipped += 1
            return
        interval.applied += 1
        interval.grad_norm = grad_norm

    # ---- exit conditions --------------------------------------------------------------------------------------
    def _install_signal_handler(self) -> Any:
        if not self.t.exit_signal_handler:
            return None

        def handler(signum: int, frame: Any) -> None:
            self._sigterm = True

        return signal.signal(signal.SIGTERM, handler)

    def _restore_signal_handler(self, previous: Any) -> None:
        if self.t.exit_signal_handler and previous is not None:
            signal.signal(signal.SIGTERM, previous)

    def _any_rank(self, flag: bool) -> bool:
        """True if ``flag`` is set on any rank, so that all ranks save and exit together."""
        if not (dist.is_available() and dist.is_initialized()):
            return flag
        t = torch.tensor([1.0 if flag else 0.0], device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item())

    def _exit_reason(self) -> str | None:
        if self.t.exit_signal_handler and self._any_rank(self._sigterm):
            return "signal"
        if self.t.exit_interval and self.iteration % self.t.exit_interval == 0:
            return "exit_interval"
        if self.t.exit_duration_in_mins is not None:
            if self._any_rank((time.time() - self.start_time) / 60.0 > self.t.exit_duration_in_mins):
                return "exit_duration"
        return None

    # ---- logging and evaluation -------------------------------------------------------------------------------
    def _log(self, interval: _Interval) -> None:
        from megatron.training.metrics import peak_device_tflops, peak_memory_gb

        elapsed = time.perf_counter() - interval.start
        m: dict[str, Any] = {
            "iteration": self.iteration, "consumed_samples": self.consumed_samples,
            "consumed_tokens": self.consumed_tokens,
            **({"schedule_tokens": self.schedule_tokens} if self.schedule_tokens != self.consumed_tokens else {}),
            "loss": interval.loss_sum / interval.iters,
            "lr": self.scheduler.lr, "grad_norm": interval.grad_norm, "global_batch_size": self.current_gbs,
            "skipped_iterations": interval.skipped, **({"nan_iterations": interval.nan} if interval.nan else {}),
            "step_time_s": elapsed / interval.iters, "tokens_per_s": interval.tokens / elapsed,
        }
        if self.t.fp16:
            m["loss_scale"] = self.optimizer.loss_scale
        tflops = interval.flops / elapsed / self.pstate.world_size / 1e12
        m["throughput/tflops_per_device"] = tflops
        peak = peak_device_tflops(self.t.peak_tflops)
        if peak:
            m["throughput/mfu"] = tflops / peak
        label, gb = peak_memory_gb()
        m[label] = gb
        for k, v in interval.aux_sums.items():
            m[k] = v / interval.iters
        for ext in self.extensions:
            m.update(ext.metrics())
        self.writer.log_train(m)

    @torch.no_grad()
    def evaluate(self, split: str) -> float | None:
        """Mean loss over ``eval_iters`` global batches of ``split`` (``valid`` or ``test``), logged and returned."""
        stream = self.valid_stream if split == "valid" else self.test_stream
        if stream is None or self.t.eval_iters == 0:
            return None
        self.model.eval()
        total, count = 0.0, 0
        aux_totals: dict[str, float] = {}
        if _is_pipelined(self.model):
            total, count = self._pipeline_evaluate(stream)
            aux_totals = {self.model.loss_metric: total}
        for _ in range(0 if _is_pipelined(self.model) else self.t.eval_iters * self.num_microbatches):
            batch = stream.next()
            if batch is None:
                break
            loss, aux = self.forward_step(self.model, _to_device(batch, self.device))
            total += float(loss)
            count += 1
            for name, value in aux.items():  # the same keys every micro-batch (e.g. BERT's loss/lm, loss/sop)
                aux_totals[name] = aux_totals.get(name, 0.0) + float(value)
        self.model.train()
        if split == "valid":
            self.consumed_valid_samples += self.gbs * self.t.eval_iters
        names = sorted(aux_totals)
        total, count, *aux_sums = self._reduce_dp([total, float(count), *(aux_totals[n] for n in names)])
        if count == 0:
            log_rank0(logger, "%s split has no batches left; skipping evaluation", split)
            return None
        loss = total / count
        if split == "valid":
            self.result.val_losses[self.iteration] = loss
        else:
            self.result.test_loss = loss
        extra = {name: value / count for name, value in zip(names, aux_sums)}
        self.writer.log_eval(self.iteration, loss, "valid" if split == "valid" else "test", extra)
        return loss

    def _pipeline_evaluate(self, stream: DataStream) -> tuple[float, int]:
        """``eval_iters`` forward-only pipeline steps of full global batches: (summed losses, micro-batch count). A
        split that runs out stops at the last whole step (a pipeline schedule runs a fixed micro-batch count)."""
        total, count = 0.0, 0
        for _ in range(self.t.eval_iters):
            microbatches = []
            for _ in range(self.num_microbatches):
                batch = stream.next()
                if batch is None:
                    break
                microbatches.append(_to_device(batch, self.device))
            if len(microbatches) < self.num_microbatches:
                break
            for value in self.model.eval_step(microbatches).tolist():
                total += value
                count += 1
        return total, count


def _is_pipelined(model: nn.Module) -> bool:
    """Whether ``model`` is one pipeline rank's stages (``training.pipeline_model.PipelinedGPT``), which run a whole
    step's micro-batches through a schedule instead of one ``forward_step`` each."""
    return callable(getattr(model, "finish_grads", None))

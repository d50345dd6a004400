"""The fine-tuning loop of the BERT tasks (Megatron's ``tasks/finetune_utils.py``), shared by GLUE and RACE.

Order: read the datasets, derive ``train_iters = epochs x batches per epoch`` (so warmup and decay span exactly the
epochs), build BERT with a new head and load the pretrained weights (or resume a fine-tuning checkpoint from
``--load``), then per epoch: train on a permutation seeded by ``seed + epoch``, evaluate every ``--valid-data`` file,
save. The optimizer, fp16 loss scaler and clipping are pretraining's. Unlike Megatron, evaluation covers every
example exactly once at any data-parallel size, ``--global-batch-size`` may exceed micro x DP (gradient
accumulation), and ``--epochs 0`` evaluates the loaded model.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from megatron.logging import get_logger, log_rank0
from megatron.model.classification import BertClassifier, BertMultipleChoice
from megatron.tasks.common import TaskContext, TaskResult, checkpoint_config, load_weights
from megatron.training.checkpointing import load_checkpoint, read_tracker, save_checkpoint
from megatron.training.lr_schedule import OptimizerParamScheduler
from megatron.training.metrics import MetricsWriter
from megatron.training.pretrain import _build_optimizer  # the same optimizer and loss scaler as pretraining

__all__ = ["FinetuneTask", "run_finetune", "epoch_batches", "rank_micro_batches", "eval_names"]

logger = get_logger(__name__)

_STATE_KEY = "finetune"  # the checkpoint's extra_state entry of a fine-tuning run


@dataclass(frozen=True)
class FinetuneTask:
    """What the loop needs to know about a task."""

    name: str
    """Task name (``--task``), kept in checkpoints and results."""
    num_classes: int
    """Classes of a classification head; 1 is a regression score (MSE loss)."""
    read: Callable[[Sequence[str]], Any]
    """Paths -> one packed dataset of all their examples (``len``, ``[i]``, ``collate``, ``labels``; see
    ``glue.PackedDataset``)."""
    metrics: Callable[[np.ndarray, np.ndarray], dict[str, float]]
    """``(predictions, labels) -> {name: value}`` (predicted class ids, or scores for regression)."""
    primary_metric: str
    """The metric whose best epoch is reported (``details["best_epoch"]``)."""
    num_choices: int = 0
    """> 0: a multiple-choice task with this many sequences per example (RACE: 4)."""

    @property
    def regression(self) -> bool:
        return self.num_choices == 0 and self.num_classes == 1


# ---- data order ---------------------------------------------------------------------------------------------------
def epoch_batches(num_examples: int, epoch: int, seed: int, global_batch_size: int,
                  keep_last: bool) -> list[np.ndarray]:
    """The global batches of epoch ``epoch`` (0-based): a permutation seeded by ``seed + epoch`` cut into
    ``global_batch_size`` chunks; the last, partial chunk is dropped unless ``keep_last``. Independent of the
    parallel layout, so every TP/DP size sees the same batches."""
    perm = torch.randperm(num_examples, generator=torch.Generator().manual_seed(seed + epoch)).numpy()
    full = num_examples // global_batch_size
    batches = [perm[i * global_batch_size:(i + 1) * global_batch_size] for i in range(full)]
    if keep_last and num_examples % global_batch_size:
        batches.append(perm[full * global_batch_size:])
    return batches


def rank_micro_batches(batch: np.ndarray, dp_rank: int, dp_size: int, micro_batch_size: int) -> list[np.ndarray]:
    """This data-parallel rank's micro-batches of a global batch: its contiguous slice (the slices differ by at
    most one example for a partial batch) cut into ``micro_batch_size`` chunks. One process with gradient
    accumulation gets the same chunks, one after the other."""
    mine = np.array_split(batch, dp_size)[dp_rank]
    return [mine[i:i + micro_batch_size] for i in range(0, len(mine), micro_batch_size)]


def eval_names(paths: Sequence[str], task: str) -> list[str]:
    """Megatron's names of evaluation files: the path after the task's directory (else the file name), without
    ``.tsv``, ``_`` -> ``-`` (``MNLI/dev_matched.tsv`` -> ``dev-matched``); whole paths when two would clash."""
    keys = {task.lower(), {"SST2": "sst-2", "COLA": "cola", "STSB": "sts-b"}.get(task, task).lower()}
    names = []
    for path in paths:
        parts = Path(path).parts
        cut = max((i for i, p in enumerate(parts) if p.lower() in keys), default=len(parts) - 2)
        tail = "/".join(parts[cut + 1:]) or Path(path).name
        names.append(tail.removesuffix(".tsv").replace("_", "-"))
    if len(set(names)) < len(names):
        names = [str(p) for p in paths]
    return names


def _to_device(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


def _describe(metrics: dict[str, float]) -> str:
    """``correct / total = C / T = P %`` (classification) and then every other metric."""
    parts = []
    if "correct" in metrics:
        parts.append(f"correct / total = {int(metrics['correct'])} / {int(metrics['total'])} = "
                     f"{100 * metrics['accuracy']:.4f} %")
    parts += [f"{k} = {v:.4f}" for k, v in metrics.items() if k not in ("correct", "total", "accuracy")]
    if "correct" not in metrics and "total" in metrics:
        parts.append(f"total = {int(metrics['total'])}")
    return ", ".join(parts)


# ---- the run ------------------------------------------------------------------------------------------------------
class Finetuner:
    """One fine-tuning run: model, optimizer, schedule, counters and the per-epoch history."""

    def __init__(self, ctx: TaskContext, spec: FinetuneTask, train: Any | None, valid: list[tuple[str, Any]],
                 epochs: int) -> None:
        self.ctx, self.spec, self.train, self.valid, self.epochs = ctx, spec, train, valid, epochs
        self.pstate = ctx.pstate
        t = ctx.cfg.training
        self.gbs, self.micro = ctx.cfg.global_batch_size, t.micro_batch_size
        self.batches_per_epoch = 0
        if epochs > 0:
            n = len(train)
            self.batches_per_epoch = -(-n // self.gbs) if ctx.task.keep_last else n // self.gbs
            if self.batches_per_epoch == 0:
                raise ValueError(f"--train-data has {n} examples, fewer than one global batch ({self.gbs}); lower "
                                 "--global-batch-size / --micro-batch-size or pass --keep-last")
        self.train_iters = epochs * self.batches_per_epoch
        if t.train_iters is not None and t.train_iters != self.train_iters:
            log_rank0(logger, "--train-iters %d ignored: fine-tuning runs %d epochs x %d batches = %d iterations",
                      t.train_iters, epochs, self.batches_per_epoch, self.train_iters, level=logging.WARNING)
        # The resolved length goes into the schedule (and the saved config).
        self.cfg = dataclasses.replace(ctx.cfg, training=dataclasses.replace(
            t, train_iters=self.train_iters or None, train_samples=None, train_tokens=None))
        self.resume_root = self._resume_root()
        self.model = self._build_model(load_pretrained=self.resume_root is None)
        self.optimizer = self.scheduler = None
        if epochs > 0:
            self.optimizer = _build_optimizer(self.cfg, self.model, self.pstate)
            self.scheduler = OptimizerParamScheduler(self.optimizer, self.cfg.lr_schedule_spec())
        self.epoch = self.iteration = self.consumed_samples = self.consumed_tokens = 0
        self.history: list[dict[str, Any]] = []
        self.writer = MetricsWriter(tensorboard_dir=t.tensorboard_dir, metrics_file=t.metrics_file,
                                    enabled=ctx.is_rank0, train_iters=self.train_iters or None)

    # ---- model and checkpoints ----------------------------------------------------------------------------------
    def _resume_root(self) -> str | None:
        """``--load`` when it holds a checkpoint of this task (resume), else None (start from the pretrained one)."""
        load = self.ctx.cfg.training.load
        if load is None or read_tracker(load) is None:
            return None
        saved = checkpoint_config(load) or {}
        saved_task = ((saved.get("extras") or {}).get("task") or {}).get("task")
        if saved and saved_task != self.spec.name:
            raise ValueError(
                f"--load {load} is not a {self.spec.name} fine-tuning checkpoint (its config.json has task "
                f"{saved_task!r}); pass a pretrained checkpoint as --pretrained-checkpoint and use --load only to "
                "resume a fine-tuning run of the same task")
        return load

    def _build_model(self, load_pretrained: bool) -> nn.Module:
        ctx = self.ctx
        bert = ctx.build_bert(add_binary_head=True)
        if load_pretrained and ctx.checkpoint is None:
            log_rank0(logger, "no --pretrained-checkpoint: fine-tuning a randomly initialized BERT",
                      level=logging.WARNING)
        elif load_pretrained:
            fresh = bert.pooler.weight.detach().clone()
            load_weights(bert, ctx.checkpoint, self.pstate, missing_ok=("pooler.", "binary_head."))
            if torch.equal(fresh, bert.pooler.weight):
                log_rank0(logger, "%s has no pooler weights (pretrained with --bert-no-binary-head?): the pooler "
                          "starts from a random initialization", ctx.checkpoint, level=logging.WARNING)
        seed = ctx.cfg.training.seed
        if self.spec.num_choices:
            model = BertMultipleChoice(bert, seed=seed)
        else:
            model = BertClassifier(bert, self.spec.num_classes, seed=seed)
        return model.to(ctx.device)

    def resume(self) -> None:
        """Restore model, optimizer, schedule, RNG and history from ``--load``; training continues at the next
        epoch exactly as if it had not stopped."""
        t = self.cfg.training
        loaded = load_checkpoint(
            self.resume_root, model=self.model, optimizer=self.optimizer, scheduler=self.scheduler,
            pstate=self.pstate, no_load_optim=t.no_load_optim, no_load_rng=t.no_load_rng,
            override_opt_param_scheduler=t.override_opt_param_scheduler,
            use_checkpoint_opt_param_scheduler=t.use_checkpoint_opt_param_scheduler,
            rng_tracker=self.model.rng_tracker)
        state = loaded.extra_state.get(_STATE_KEY) if loaded is not None else None
        if state is None:
            raise ValueError(f"--load {self.resume_root} holds no fine-tuning state; pass a pretrained checkpoint "
                             "as --pretrained-checkpoint instead")
        if self.train is not None and self.epochs > 0:
            saved = (state["train_examples"], state["batches_per_epoch"])
            if saved != (len(self.train), self.batches_per_epoch):
                raise ValueError(
                    f"--load {self.resume_root} was trained on {saved[0]} examples in {saved[1]} batches per epoch, "
                    f"this run has {len(self.train)} in {self.batches_per_epoch}; resume with the same --train-data, "
                    "--global-batch-size and --keep-last")
        self.epoch, self.history = int(state["epoch"]), list(state["history"])
        self.iteration = loaded.iteration
        self.consumed_samples = int(loaded.train_state.get("consumed_train_samples", 0))
        self.consumed_tokens = int(loaded.train_state.get("consumed_train_tokens", 0))
        log_rank0(logger, "resuming %s fine-tuning after epoch %d (iteration %d)", self.spec.name, self.epoch,
                  self.iteration)

    def save(self) -> None:
        save_checkpoint(
            self.cfg.training.save, self.iteration, model=self.model, optimizer=self.optimizer,
            scheduler=self.scheduler, pstate=self.pstate,
            train_state={"iteration": self.iteration, "consumed_train_samples": self.consumed_samples,
                         "consumed_train_tokens": self.consumed_tokens, "epoch": self.epoch},
            extra_state={_STATE_KEY: {"task": self.spec.name, "epoch": self.epoch, "history": self.history,
                                      "train_examples": len(self.train), "batches_per_epoch": self.batches_per_epoch}},
            config=self.cfg.to_dict(), rng_tracker=self.model.rng_tracker)

    # ---- training -----------------------------------------------------------------------------------------------
    def _loss_sum(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if self.spec.regression:
            return F.mse_loss(logits[:, 0], labels.float(), reduction="sum")
        return F.cross_entropy(logits, labels, reduction="sum")

    def _forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.model(batch["tokens"], batch["padding_mask"], batch["types"])

    def train_step(self, micro_batches: list[dict[str, torch.Tensor]], batch_size: int) -> tuple[bool, float, Any]:
        """Forward/backward this rank's micro-batches of a global batch of ``batch_size`` examples, then one step.

        Each rank backpropagates its summed loss times ``dp_size / batch_size``; the optimizer averages gradients
        over DP, so the step follows the mean loss over the global batch, also for a partial last batch whose
        micro-batches differ in size. Returns ``(applied, mean loss over the global batch, grad norm)``.
        """
        self.model.train()
        self.optimizer.zero_grad()
        scale = self.pstate.dp_size / batch_size
        loss_sum, tokens = 0.0, 0
        for batch in micro_batches:
            tokens += int(batch["padding_mask"].sum())
            batch = _to_device(batch, self.ctx.device)
            total = self._loss_sum(self._forward(batch), batch["labels"])
            self.optimizer.backward(total * scale)
            loss_sum += float(total.detach())
        result = self.optimizer.step()
        loss_sum, tokens = self.ctx.all_reduce_sum([loss_sum, tokens])
        self.consumed_tokens += int(tokens)
        loss = loss_sum / batch_size
        t = self.cfg.training
        if t.check_for_nan_in_loss_and_grad and not t.fp16 and not math.isfinite(loss):
            raise FloatingPointError(f"loss is {loss} at iteration {self.iteration + 1}; lower --lr")
        return result.applied, loss, result.grad_norm

    def train_epoch(self) -> float:
        """Train one epoch (``self.epoch`` is the 0-based index); returns its mean training loss."""
        t, ds = self.cfg.training, self.train
        batches = epoch_batches(len(ds), self.epoch, t.seed, self.gbs, self.ctx.task.keep_last)
        log_rank0(logger, "working on epoch %d of %d (%d iterations) ...", self.epoch + 1, self.epochs,
                  len(batches))
        epoch_losses, window = [], {"loss": 0.0, "applied": 0, "skipped": 0, "start": time.perf_counter()}
        for global_batch in batches:
            ids = rank_micro_batches(global_batch, self.pstate.dp_rank, self.pstate.dp_size, self.micro)
            micro = [ds.collate([ds[int(i)] for i in idx]) for idx in ids]
            lr = self.optimizer.param_groups[0]["lr"]
            applied, loss, grad_norm = self.train_step(micro, len(global_batch))
            self.iteration += 1
            self.consumed_samples += len(global_batch)
            if applied:
                self.scheduler.step(self.gbs, self.consumed_tokens)
                epoch_losses.append(loss)
                window["loss"] += loss
                window["applied"] += 1
            else:
                window["skipped"] += 1
            if self.iteration % t.log_interval == 0:
                self._log(window, lr, grad_norm)
                window = {"loss": 0.0, "applied": 0, "skipped": 0, "start": time.perf_counter()}
        return float(np.mean(epoch_losses)) if epoch_losses else float("nan")

    def _log(self, window: dict[str, Any], lr: float, grad_norm: float | None) -> None:
        iters = window["applied"] + window["skipped"]
        metrics = {"iteration": self.iteration, "consumed_samples": self.consumed_samples, "lr": lr,
                   "loss": window["loss"] / window["applied"] if window["applied"] else float("nan"),
                   "grad_norm": grad_norm, "skipped_iterations": window["skipped"],
                   "step_time_s": (time.perf_counter() - window["start"]) / max(iters, 1), "epoch": self.epoch + 1}
        if self.cfg.training.fp16:
            metrics["loss_scale"] = self.optimizer.loss_scale
        self.writer.log_train(metrics)

    # ---- evaluation ---------------------------------------------------------------------------------------------
    @torch.no_grad()
    def predict(self, dataset: Any, desc: str = "") -> np.ndarray:
        """Predictions (class ids, or scores for regression) of every example, each computed once on one DP
        rank and gathered to all."""
        self.model.eval()
        mine, size = self.ctx.shard(len(dataset)), self.ctx.eval_micro_batch_size
        chunks = [mine[i:i + size] for i in range(0, len(mine), size)]
        out = []
        for idx in self.ctx.progress(chunks, total=len(chunks), desc=desc):
            logits = self._forward(_to_device(dataset.collate([dataset[i] for i in idx]), self.ctx.device))
            out.append(logits[:, 0] if self.spec.regression else logits.argmax(-1))
        local = torch.cat(out).double() if out else torch.zeros(0, dtype=torch.float64, device=self.ctx.device)
        return self._gather(local, len(dataset))

    def _gather(self, local: torch.Tensor, n: int) -> np.ndarray:
        """Rank r holds examples r, r + dp, ... (``ctx.shard``); put every rank's values back in order."""
        dp, group = self.pstate.dp_size, self.pstate.dp_group
        if group is None:
            return local.cpu().numpy()
        buf = torch.zeros(-(-n // dp), dtype=torch.float64, device=self.ctx.device)
        buf[: len(local)] = local
        parts = [torch.empty_like(buf) for _ in range(dp)]
        dist.all_gather(parts, buf, group=group)
        out = np.empty(n, dtype=np.float64)
        for r, part in enumerate(parts):
            out[r::dp] = part[: len(range(r, n, dp))].cpu().numpy()
        return out

    def evaluate(self) -> dict[str, Any]:
        """Metrics of every ``--valid-data`` file and pooled over them, logged Megatron-style (``|epoch: E|`` is
        Megatron's 0-based index of the epoch just trained, -1 before training)."""
        per_file, preds, golds = {}, [], []
        e = self.epoch - 1
        for name, ds in self.valid:
            start = time.perf_counter()
            pred = self.predict(ds, desc=f"eval {name}")
            per_file[name] = self.spec.metrics(pred, ds.labels)
            log_rank0(logger, " > |epoch: %d| metrics for %s: %s, elapsed time (sec): %.2f", e, name,
                      _describe(per_file[name]), time.perf_counter() - start)
            preds.append(pred)
            golds.append(ds.labels)
        pooled = self.spec.metrics(np.concatenate(preds), np.concatenate(golds))
        log_rank0(logger, " >> |epoch: %d| overall: %s", e, _describe(pooled))
        return {"epoch": self.epoch, "iteration": self.iteration, "metrics": pooled, "per_file": per_file}

    # ---- the whole run ------------------------------------------------------------------------------------------
    def run(self) -> TaskResult:
        """Train the remaining epochs (evaluating and saving after each) and collect the results."""
        try:
            if self.resume_root is not None:
                self.resume()
            trained = 0
            while self.epoch < self.epochs:
                loss = self.train_epoch()
                self.epoch += 1
                trained += 1
                record = self.evaluate()
                record["train_loss"] = loss
                self.history.append(record)
                if self.cfg.training.save:
                    self.save()
            if not trained and self.epochs > 0:
                log_rank0(logger, "all %d epochs already trained in %s; evaluating the loaded model", self.epochs,
                          self.resume_root)
            final = self.history[-1] if trained else self.evaluate()
            if not self.history:
                self.history.append(final)
        finally:
            self.writer.close()
        return self._result(final)

    def _result(self, final: dict[str, Any]) -> TaskResult:
        key = self.spec.primary_metric

        def score(record: dict[str, Any]) -> float:
            value = record["metrics"].get(key, float("nan"))
            return value if math.isfinite(value) else -math.inf

        best = max(self.history, key=score)
        t = self.cfg.training
        details = {
            "epochs": self.history, "best_epoch": best["epoch"], "best_metrics": best["metrics"],
            "primary_metric": key, "seed": t.seed, "lr": t.lr, "iterations": self.iteration,
            "train_examples": len(self.train) if self.train is not None else 0,
            "global_batch_size": self.gbs,
        }
        return TaskResult(metrics=dict(final["metrics"]), per_file=dict(final["per_file"]), details=details)


def run_finetune(ctx: TaskContext, spec: FinetuneTask) -> TaskResult:
    """Fine-tune ``spec`` as configured by ``ctx`` and return the last epoch's metrics (pooled over the
    evaluation files, and per file), with every epoch's metrics and the best epoch in ``details``."""
    task = ctx.task
    if task.epochs is None:
        raise ValueError(f"--epochs is required for {spec.name} (0 evaluates the loaded model without training)")
    if not task.valid_data:
        raise ValueError(f"{spec.name} needs --valid-data FILE [FILE ...]: the metrics are computed on it")
    if task.epochs > 0:
        if not task.train_data:
            raise ValueError(f"--epochs {task.epochs} needs --train-data FILE [FILE ...] (or pass --epochs 0)")
        if ctx.cfg.training.lr is None:
            raise ValueError("learning rate missing: pass --lr (e.g. --lr 2e-5)")
    valid = [(name, spec.read([path])) for name, path in zip(eval_names(task.valid_data, spec.name),
                                                              task.valid_data)]
    train = None
    if task.epochs > 0:
        train = spec.read(task.train_data)
        log_rank0(logger, "%s: %d training examples, %s", spec.name, len(train),
                  ", ".join(f"{name} {len(ds)}" for name, ds in valid))
    return Finetuner(ctx, spec, train, valid, task.epochs).run()

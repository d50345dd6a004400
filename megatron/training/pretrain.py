"""``pretrain()``: validate the config, start the processes, build every piece from its room, then run the loop.

The entry scripts (``pretrain_gpt.py``) supply the model-specific providers; this module owns the order of
construction (Megatron's): validate -> process groups -> seeds -> tokenizer/padded vocab -> model -> extensions
wrap it -> optimizer and LR schedule -> checkpoint load (guarded by ``resume``) -> datasets and samplers (resumed
from the consumed samples) -> data streams (``--num-workers`` prefetching on each tensor-parallel group's reading
rank, broadcast to the others) -> train -> validation (unless the last iteration was just evaluated) -> test.
"""

from __future__ import annotations

import logging
import os
from typing import Any, Callable, Mapping, Sequence

import torch
import torch.distributed as dist
from torch import nn

from megatron.data.builder import EmptySplitError
from megatron.data.config import Split
from megatron.data.samplers import MegatronPretrainingRandomSampler, MegatronPretrainingSampler
from megatron.data.tokenizers.build import build_tokenizer
from megatron.data.tokenizers.config import padded_vocab_size
from megatron.logging import get_logger, log_rank0, setup_logging
from megatron.model.config import num_floating_point_operations
from megatron.parallel.state import ParallelState
from megatron.training.checkpointing import load_checkpoint, read_tracker
from megatron.training.compat import ignored_flags_note
from megatron.training.config import PretrainConfig, format_config
from megatron.training.grad_scaler import build_grad_scaler
from megatron.training.initialize import current_device, initialize_distributed, set_random_seeds
from megatron.training.data_loading import DataStream
from megatron.training.loop import Batch, ForwardStep, Stateful, Trainer, TrainerExtension, TrainResult
from megatron.training.lr_schedule import OptimizerParamScheduler
from megatron.training.metrics import MetricsWriter
from megatron.training.optimizer import AdamWSettings, MegatronOptimizer
from megatron.training.resume import check_resume, check_save_target, missing_checkpoint_error, run_record

__all__ = ["pretrain", "ModelProvider", "DatasetsProvider", "CollateFn"]

logger = get_logger(__name__)

ModelProvider = Callable[[PretrainConfig, ParallelState, int], nn.Module]
"""``model_provider(cfg, pstate, padded_vocab_size) -> model`` (on CPU; the loop moves it to the device)."""
DatasetsProvider = Callable[[PretrainConfig, Any, tuple[int, int, int]], tuple[Any, Any, Any]]
"""``datasets_provider(cfg, tokenizer, (n_train, n_valid, n_test)) -> (train, valid, test)``; any may be None."""
CollateFn = Callable[[list, PretrainConfig, Any], Batch]
"""``collate_fn(samples, cfg, tokenizer) -> batch`` with at least ``tokens`` ``[b, s]``."""


def _build_optimizer(cfg: PretrainConfig, model: nn.Module, pstate: ParallelState) -> MegatronOptimizer:
    t = cfg.training
    settings = AdamWSettings(
        weight_decay=t.weight_decay, adam_beta1=t.adam_beta1, adam_beta2=t.adam_beta2, adam_eps=t.adam_eps,
        clip_grad=t.clip_grad, check_for_nan=t.check_for_nan_in_loss_and_grad,
    )
    scaler = build_grad_scaler(
        fp16=t.fp16, loss_scale=t.loss_scale, initial_loss_scale=t.initial_loss_scale,
        min_loss_scale=t.min_loss_scale, loss_scale_window=t.loss_scale_window, hysteresis=t.hysteresis,
    )
    return MegatronOptimizer(model, settings, pstate, grad_scaler=scaler,
                             use_distributed_optimizer=cfg.parallel.use_distributed_optimizer)


def _num_samples(cfg: PretrainConfig) -> tuple[int, int, int]:
    """Samples to build per split, as Megatron: validation covers every evaluation of the run. A split the run
    does not use gets 0 (the builder then skips it, even if ``--split`` gives it no documents): validation with
    ``--eval-iters 0``, the test split with ``--skip-test`` as well. Evaluation batches are full global batches, also
    during a batch-size ramp-up."""
    t, gbs, batches = cfg.training, cfg.global_batch_size, cfg.batch_schedule()
    n_train = t.total_train_samples(batches, cfg.data.seq_length)
    evals = t.total_train_iters(batches, cfg.data.seq_length) // t.eval_interval + 1
    return n_train, evals * t.eval_iters * gbs, 0 if t.skip_test else t.eval_iters * gbs


_WHY_USED = {
    Split.train: "",
    Split.valid: " (validation runs whenever --eval-iters > 0; --eval-iters 0 or a valid share of 0 turns it off)",
    Split.test: " (the test split is evaluated after training unless --skip-test or a test share of 0)",
}


def _build_datasets(cfg: PretrainConfig, provider: DatasetsProvider, tokenizer: Any) -> tuple[Any, Any, Any]:
    # Every rank calls the provider at once: the data room's index cache has rank 0 verify or build the files while
    # the others wait in its status broadcast, then all ranks memory-map them. (Serializing the calls here as well
    # deadlocked: rank 0 sat in that broadcast while the others sat in a barrier.)
    try:
        return provider(cfg, tokenizer, _num_samples(cfg))
    except EmptySplitError as err:
        raise ValueError(
            f"--split {cfg.data.split!r} gives the {err.split.name} split none of the {err.num_documents} documents "
            f"of {err.path_prefix}, but this run uses it{_WHY_USED[err.split]}; give it a larger share in --split "
            "(e.g. --split 90,8,2 for a small dataset) or use more data"
        ) from None


def _train_sampler(cfg: PretrainConfig, dataset: Any, pstate: ParallelState, consumed: int,
                   extensions: Sequence[TrainerExtension]) -> Any:
    t = cfg.training
    for ext in extensions:
        sampler = ext.build_train_sampler(
            dataset, consumed_samples=consumed, micro_batch_size=t.micro_batch_size,
            global_batch_size=cfg.global_batch_size, dp_rank=pstate.dp_rank, dp_size=pstate.dp_size,
        )
        if sampler is not None:
            return sampler
    if getattr(dataset, "exhaustive", False):
        log_rank0(
            logger, "train_data_exact_num_epochs with a weighted blend and no curriculum sampler: every sample of "
            "every component is read once per epoch, in proportion to the component sizes, so the blend weights %s "
            "do not apply; drop --train-data-exact-num-epochs to sample by weight", dataset.weights,
            level=logging.WARNING,
        )
    kind = MegatronPretrainingRandomSampler if cfg.data.dataloader_type == "cyclic" else MegatronPretrainingSampler
    return kind(
        total_samples=len(dataset), consumed_samples=consumed, micro_batch_size=t.micro_batch_size,
        data_parallel_rank=pstate.dp_rank, data_parallel_size=pstate.dp_size,
    )


def _stream(cfg: PretrainConfig, dataset: Any, sampler: Any, pstate: ParallelState, collate: Callable[[list], Batch],
            device: torch.device) -> DataStream:
    """Tensor-parallel rank 0 reads (with ``--num-workers`` prefetching workers) and broadcasts to its group."""
    return DataStream(dataset, sampler, collate, num_workers=cfg.data.num_workers, reads=pstate.tp_rank == 0,
                      tp_group=pstate.tp_group if pstate.tp_size > 1 else None, tp_src=pstate.tp_src_rank,
                      device=device)


def _eval_stream(cfg: PretrainConfig, dataset: Any, pstate: ParallelState, consumed: int,
                 collate: Callable[[list], Batch], device: torch.device) -> DataStream | None:
    if dataset is None or len(dataset) == 0 or cfg.training.eval_iters == 0:
        return None
    sampler = MegatronPretrainingSampler(
        total_samples=len(dataset), consumed_samples=consumed % len(dataset),
        micro_batch_size=cfg.training.micro_batch_size, data_parallel_rank=pstate.dp_rank,
        data_parallel_size=pstate.dp_size,
    )
    return _stream(cfg, dataset, sampler, pstate, collate, device)


def _checkpoint_to_load(cfg: PretrainConfig) -> tuple[str, bool]:
    """``(directory, finetune)``: ``--load`` as given, except that a ``--finetune`` run whose own ``--save``
    directory already holds a checkpoint resumes that one in full (the fine-tuning run's progress, optimizer and
    data position) instead of starting over from the pretrained weights, so an interrupted fine-tuning continues
    exactly (Megatron's tasks load the pretrained checkpoint only when ``--load`` holds none)."""
    t = cfg.training
    if (t.finetune and t.save and os.path.abspath(t.save) != os.path.abspath(t.load)
            and read_tracker(t.save) is not None):
        log_rank0(logger, "--finetune: %s already holds this fine-tuning run's checkpoint; resuming it instead of "
                  "loading the pretrained weights of %s", t.save, t.load)
        return t.save, False
    return t.load, t.finetune


def _first_run_of_resumable(cfg: PretrainConfig, root: str) -> bool:
    """``--load`` and ``--save`` name the same directory, which does not exist yet or is empty: the first run of a
    recipe that always resumes from its own output (Megatron-DeepSpeed's pass the same path to both). A mistyped
    ``--load`` names another directory, so it still fails; ``--exit-on-missing-checkpoint`` keeps the error."""
    t = cfg.training
    if t.exit_on_missing_checkpoint or t.save is None or os.path.abspath(t.save) != os.path.abspath(root):
        return False
    return not os.path.exists(root) or (os.path.isdir(root) and not os.listdir(root))


def _load(cfg: PretrainConfig, trainer: Trainer, extensions: Sequence[TrainerExtension],
          extra_stateful: Mapping[str, Stateful]) -> None:
    t = cfg.training
    root, finetune = _checkpoint_to_load(cfg)
    if read_tracker(root) is None:
        if _first_run_of_resumable(cfg, root):
            log_rank0(logger, "--load %s is the --save directory and holds nothing yet: training from scratch (the "
                      "first run of a resumable recipe)", root)
            return
        if not t.allow_missing_checkpoint:
            raise missing_checkpoint_error(root)
        log_rank0(logger, "--load %s holds no checkpoint: training from scratch (--allow-missing-checkpoint)", root)
        return
    consumers = [*extra_stateful, *(e.name for e in extensions)]

    def validate(payload: dict, tag: int | str) -> None:
        check_resume(payload.get("config"), trainer.run_record, extra_state_names=list(payload["extra_state"] or {}),
                     consumers=consumers, finetune=finetune or tag == "release",
                     override=t.override_checkpoint_args, where=f"checkpoint {root} (iteration {tag})")

    loaded = load_checkpoint(
        root, model=trainer.model, optimizer=trainer.optimizer, scheduler=trainer.scheduler,
        pstate=trainer.pstate, no_load_optim=t.no_load_optim, no_load_rng=t.no_load_rng, finetune=finetune,
        override_opt_param_scheduler=t.override_opt_param_scheduler,
        use_checkpoint_opt_param_scheduler=t.use_checkpoint_opt_param_scheduler, rng_tracker=trainer.rng_tracker,
        validate=validate,
    )
    assert loaded is not None, f"{root} lost its checkpoint while loading"
    trainer.restore_train_state(loaded.train_state, loaded.iteration)
    for name, obj in {**extra_stateful, **{e.name: e for e in extensions}}.items():
        if name in loaded.extra_state:
            obj.load_state_dict(loaded.extra_state[name])


def _set_threads(cfg: PretrainConfig) -> None:
    """Pin the CPU intra-op thread count if asked, and log it: on CPU it decides bit-reproducibility (LayerNorm
    weight gradients and large reductions sum per-thread partial results)."""
    if cfg.training.torch_num_threads is not None:
        torch.set_num_threads(cfg.training.torch_num_threads)
    log_rank0(logger, "> torch intra-op threads: %d%s", torch.get_num_threads(),
              "" if cfg.training.torch_num_threads is not None else " (not pinned: --torch-num-threads N)")


def _finish(cfg: PretrainConfig, trainer: Trainer, result: TrainResult) -> None:
    """After a finished run: the validation split (unless the last iteration was just evaluated), then the test
    split, as Megatron does."""
    if result.exit_reason != "finished":
        return
    if trainer.iteration not in result.val_losses:
        trainer.evaluate("valid")
    if not cfg.training.skip_test:
        trainer.evaluate("test")


def _report_outputs(cfg: PretrainConfig, result: TrainResult) -> None:
    """The run's last lines: where its checkpoints, metrics and TensorBoard events are (rank 0)."""
    t = cfg.training
    if t.save:
        latest = read_tracker(t.save) if os.path.isdir(t.save) else None
        saved = f"latest iteration {latest}" if latest is not None else "no checkpoint saved"
        checkpoints = f"{os.path.abspath(t.save)} ({saved})"
    else:
        checkpoints = "none (no --save)"
    metrics = os.path.abspath(t.metrics_file) if t.metrics_file else "none (no --metrics-file)"
    tensorboard = os.path.abspath(t.tensorboard_dir) if t.tensorboard_dir else "none (no --tensorboard-dir)"
    how = "finished" if result.exit_reason == "finished" else f"stopped ({result.exit_reason})"
    log_rank0(logger, "> training %s at iteration %d; outputs:\n    checkpoints: %s\n    metrics:     %s\n"
              "    tensorboard: %s", how, result.iteration, checkpoints, metrics, tensorboard)


def pretrain(
    cfg: PretrainConfig, model_provider: ModelProvider, datasets_provider: DatasetsProvider,
    forward_step: ForwardStep, *, collate_fn: CollateFn, extensions: Sequence[TrainerExtension] = (),
    extra_stateful: Mapping[str, Stateful] | None = None,
) -> TrainResult:
    """Train a model as configured; returns counters and per-iteration losses of this process.

    Launch with ``python`` (one process) or ``torchrun`` (reads RANK/WORLD_SIZE/...). A process group created
    here is destroyed before returning; one that already existed (tests) is left alone.

    Args:
        cfg: the parsed config; validated here before any process group exists.
        model_provider, datasets_provider, forward_step, collate_fn: see the type aliases of this module.
        extensions: data efficiency hooks (:class:`TrainerExtension`).
        extra_stateful: further ``{name: object}`` with ``state_dict``/``load_state_dict`` kept in checkpoints.
    """
    setup_logging()
    owns_group = not (dist.is_available() and dist.is_initialized())
    cfg.validate(world_size=dist.get_world_size() if not owns_group else None)
    pstate = initialize_distributed(cfg.parallel)
    writer = trainer = None
    threads = torch.get_num_threads()  # restored on return: --torch-num-threads must not leak into the caller
    try:
        log_rank0(logger, "%s", format_config(cfg))
        note = ignored_flags_note(cfg.compat, rope=cfg.model.position_embedding_type == "rope",
                                  num_attention_heads=cfg.model.num_attention_heads)
        if note is not None:
            log_rank0(logger, "%s", note)
        _set_threads(cfg)
        set_random_seeds(cfg.training.seed, pstate)
        device = current_device()
        tokenizer = build_tokenizer(cfg.tokenizer)
        vocab = padded_vocab_size(tokenizer.vocab_size, cfg.tokenizer.make_vocab_size_divisible_by, pstate.tp_size)
        log_rank0(logger, "> padded vocab (size: %d) with %d dummy tokens (new size: %d)", tokenizer.vocab_size,
                  vocab - tokenizer.vocab_size, vocab)
        model = model_provider(cfg, pstate, vocab).to(device)
        for ext in extensions:
            ext.wrap_model(model)
        optimizer = _build_optimizer(cfg, model, pstate)
        scheduler = OptimizerParamScheduler(optimizer, cfg.lr_schedule_spec())
        writer = MetricsWriter(tensorboard_dir=cfg.training.tensorboard_dir, metrics_file=cfg.training.metrics_file,
                               enabled=pstate.rank == 0, train_iters=cfg.training.train_iters)
        trainer = Trainer(
            cfg=cfg, pstate=pstate, model=model, optimizer=optimizer, scheduler=scheduler,
            forward_step=forward_step, train_stream=None, valid_stream=None, test_stream=None, writer=writer,
            device=device, flops_fn=lambda b, s: num_floating_point_operations(cfg.model, b, s, vocab),
            extensions=extensions, extra_stateful=extra_stateful, rng_tracker=getattr(model, "rng_tracker", None),
            run_record=run_record(cfg, extensions),
        )
        if cfg.training.load:
            _load(cfg, trainer, extensions, extra_stateful or {})
        if cfg.training.save:
            check_save_target(cfg.training.save, trainer.iteration, cfg.training.overwrite_checkpoints)
        train_ds, valid_ds, test_ds = _build_datasets(cfg, datasets_provider, tokenizer)

        def collate(samples: list) -> Batch:
            return collate_fn(samples, cfg, tokenizer)

        sampler = _train_sampler(cfg, train_ds, pstate, trainer.consumed_samples, extensions)
        trainer.train_stream = _stream(cfg, train_ds, sampler, pstate, collate, device)
        trainer.valid_stream = _eval_stream(cfg, valid_ds, pstate, trainer.consumed_valid_samples, collate, device)
        trainer.test_stream = _eval_stream(cfg, test_ds, pstate, 0, collate, device)
        result = trainer.train()
        _finish(cfg, trainer, result)
        _report_outputs(cfg, result)
        return result
    finally:
        torch.set_num_threads(threads)
        for stream in (trainer.train_stream, trainer.valid_stream, trainer.test_stream) if trainer else ():
            if stream is not None:
                stream.close()
        if writer is not None:
            writer.close()
        if owns_group and dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()

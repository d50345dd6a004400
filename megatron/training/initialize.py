"""Process start-up: torch.distributed from the torchrun environment, the device, and the random seeds.

``initialize_distributed`` reads ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``
(set by ``torchrun``); a plain ``python pretrain_gpt.py`` without them runs as a single process with no process
group at all. ``set_random_seeds`` seeds python/numpy/torch with Megatron's offsets and builds the
model-parallel RNG tracker.
"""

from __future__ import annotations

import os
import random
from datetime import timedelta

import numpy as np
import torch
import torch.distributed as dist

from megatron.logging import get_logger, log_rank0
from megatron.parallel.config import ParallelConfig
from megatron.parallel.random import RNGStatesTracker
from megatron.parallel.pipeline_state import PipelineParallelState
from megatron.parallel.state import ParallelState

__all__ = ["initialize_distributed", "set_random_seeds", "current_device", "destroy_distributed"]

logger = get_logger(__name__)


def current_device() -> torch.device:
    """The device this rank computes on: its CUDA device when CUDA is available, else the CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def initialize_distributed(cfg: ParallelConfig) -> PipelineParallelState:
    """Join the torchrun process group (if any) and build the tensor, pipeline and data-parallel groups.

    With CUDA the rank's device is ``LOCAL_RANK`` and the backend defaults to NCCL; on CPU it is gloo. Without
    ``WORLD_SIZE`` > 1 in the environment and no existing group, no process group is created and a single-process
    :class:`ParallelState` is returned. An already initialized default group (e.g. in tests) is reused.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if torch.cuda.is_available():
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local_rank % torch.cuda.device_count())
    if not dist.is_initialized() and world_size > 1:
        missing = [k for k in ("RANK", "MASTER_ADDR", "MASTER_PORT") if k not in os.environ]
        if missing:
            raise ValueError(
                f"WORLD_SIZE={world_size} but {', '.join(missing)} not set; launch with torchrun "
                "(e.g. torchrun --nproc-per-node N pretrain_gpt.py ...)"
            )
        backend = cfg.resolved_backend()
        dist.init_process_group(
            backend=backend, init_method="env://", world_size=world_size, rank=int(os.environ["RANK"]),
            timeout=timedelta(minutes=cfg.distributed_timeout_minutes),
        )
        log_rank0(logger, "initialized torch.distributed: backend %s, world size %d", backend, world_size)
    return PipelineParallelState.build(cfg.tensor_model_parallel_size, cfg.pipeline_model_parallel_size)


def set_random_seeds(seed: int, pstate: ParallelState) -> RNGStatesTracker:
    """Seed python, numpy and torch; return a fresh RNG tracker for this rank.

    Megatron seeds every rank with ``seed + 100 * pipeline_rank`` (ranks of one stage share it: TP ranks must draw
    identical hidden-dropout masks). Streams that must differ per TP rank live in the tracker
    (``seed + 2718 + tp_rank``); a model that owns its tracker (``GPTModel.rng_tracker``, or a pipeline stage's,
    offset per stage likewise) is the one the loop checkpoints. Random-LTD's token-routing stream has no pipeline
    offset, so every stage keeps the tokens the unpipelined model keeps.
    """
    if seed <= 0:
        raise ValueError(f"seed ({seed}) must be positive; change --seed")
    pipeline_rank = getattr(pstate, "pp_rank", 0)
    seed = seed + 100 * pipeline_rank
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed(seed)
    return RNGStatesTracker.build(seed, pstate)


def destroy_distributed() -> None:
    """Tear down the default process group if this process created one."""
    if dist.is_initialized():
        dist.destroy_process_group()

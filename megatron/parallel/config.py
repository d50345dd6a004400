"""Configuration of the parallel room: tensor- and pipeline-parallel sizes, collective backend, optimizer sharding.

``ParallelConfig`` is turned into Megatron's flags (``--tensor-model-parallel-size``,
``--pipeline-model-parallel-size`` ...) by ``megatron.config``. Cross-room rules (heads divisible by the TP size,
world size divisible by TP x PP, layers by the stages) live in the top-level validation;
this module only checks what it can see on its own.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

__all__ = ["ParallelConfig", "DistributedBackend"]

DistributedBackend = Literal["nccl", "gloo"]


@dataclass(kw_only=True)
class ParallelConfig:
    """How the model and data are split over processes (tensor x pipeline x data parallel)."""

    tensor_model_parallel_size: int = 1
    """Number of ranks a layer's weights are split over (Megatron's TP degree). World size must be divisible by it."""
    pipeline_model_parallel_size: int = 1
    """Number of pipeline stages the transformer layers are split over (Megatron's PP degree); the data-parallel
    size is world size / (TP x PP). Embeddings live on the first stage, the loss on the last."""
    num_layers_per_virtual_pipeline_stage: int | None = None
    """Layers per model chunk of the interleaved 1F1B schedule (several chunks per pipeline rank); None: one chunk
    per rank and the plain 1F1B schedule."""
    distributed_backend: DistributedBackend | None = None
    """Collective backend; None picks nccl when CUDA is available, else gloo."""
    use_distributed_optimizer: bool = False
    """Shard optimizer state over the data-parallel ranks (ZeRO-1 style)."""
    distributed_timeout_minutes: int = 10
    """Timeout of collectives before a stuck rank raises, in minutes."""

    def __post_init__(self) -> None:
        if self.tensor_model_parallel_size < 1:
            raise ValueError(
                f"tensor_model_parallel_size must be >= 1, got {self.tensor_model_parallel_size}"
            )
        if self.pipeline_model_parallel_size < 1:
            raise ValueError(
                f"pipeline_model_parallel_size must be >= 1, got {self.pipeline_model_parallel_size}"
            )
        if self.distributed_timeout_minutes < 1:
            raise ValueError(
                f"distributed_timeout_minutes must be >= 1, got {self.distributed_timeout_minutes}"
            )

    def resolved_backend(self) -> DistributedBackend:
        """The backend to pass to ``init_process_group``: the configured one, or nccl if CUDA else gloo."""
        if self.distributed_backend is not None:
            return self.distributed_backend
        return "nccl" if torch.cuda.is_available() else "gloo"

"""Process-group bookkeeping for tensor x data parallelism, passed explicitly to every module that communicates.

``ParallelState`` holds this rank's sizes, ranks and groups; it replaces Megatron's module-level ``parallel_state``
globals. The rank layout is Megatron's: tensor-parallel groups are contiguous blocks of ``tp`` ranks and
data-parallel groups take every ``tp``-th rank (``global_rank = dp_rank * tp + tp_rank``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch.distributed as dist

__all__ = ["ParallelState"]


@dataclass
class ParallelState:
    """This rank's place in the (data, tensor) process grid.

    A group is ``None`` when its size is 1 (or torch.distributed is not initialized): collectives over it are
    no-ops, so single-process code never touches torch.distributed.

    Invariants: ``world_size == tp_size * dp_size`` and ``rank == dp_rank * tp_size + tp_rank``.
    """

    world_size: int
    rank: int
    tp_size: int
    tp_rank: int
    tp_group: dist.ProcessGroup | None
    dp_size: int
    dp_rank: int
    dp_group: dist.ProcessGroup | None

    def __post_init__(self) -> None:
        assert self.world_size == self.tp_size * self.dp_size, (
            f"world_size {self.world_size} != tp_size {self.tp_size} * dp_size {self.dp_size}"
        )
        assert self.rank == self.dp_rank * self.tp_size + self.tp_rank, (
            f"rank {self.rank} != dp_rank {self.dp_rank} * tp_size {self.tp_size} + tp_rank {self.tp_rank}"
        )

    def __deepcopy__(self, memo: dict) -> ParallelState:
        # Process groups are handles to communicators shared by the whole process; a copied model must keep using
        # the same ones (and ProcessGroup objects cannot be copied).
        return self

    @classmethod
    def single(cls) -> ParallelState:
        """A one-process state: every size 1, every rank 0, no groups."""
        return cls(world_size=1, rank=0, tp_size=1, tp_rank=0, tp_group=None, dp_size=1, dp_rank=0, dp_group=None)

    @classmethod
    def build(cls, tensor_model_parallel_size: int) -> ParallelState:
        """Create the TP and DP groups over the initialized default process group.

        Every rank must call this with the same argument (``new_group`` is collective). Without an initialized
        default group this returns :meth:`single` (and requires ``tensor_model_parallel_size == 1``).

        Raises:
            ValueError: if the TP size is < 1, does not divide the world size, or exceeds 1 without
                torch.distributed being initialized.
        """
        tp = tensor_model_parallel_size
        if tp < 1:
            raise ValueError(f"tensor_model_parallel_size must be >= 1, got {tp}")
        if not (dist.is_available() and dist.is_initialized()):
            if tp != 1:
                raise ValueError(
                    f"tensor_model_parallel_size ({tp}) > 1 needs an initialized torch.distributed process group "
                    "(launch with torchrun, or set tensor_model_parallel_size to 1)"
                )
            return cls.single()
        world_size, rank = dist.get_world_size(), dist.get_rank()
        if world_size % tp != 0:
            raise ValueError(
                f"world size ({world_size}) must be divisible by tensor_model_parallel_size ({tp}); "
                "change the number of processes or the TP size"
            )
        dp = world_size // tp
        tp_group = dp_group = None
        # new_group is collective over the whole world: every rank creates every group, in the same order,
        # and keeps the one it belongs to.
        if tp > 1:
            for block in range(dp):
                ranks = list(range(block * tp, (block + 1) * tp))
                group = dist.new_group(ranks)
                if rank in ranks:
                    tp_group = group
        if dp > 1:
            for offset in range(tp):
                ranks = list(range(offset, world_size, tp))
                group = dist.new_group(ranks)
                if rank in ranks:
                    dp_group = group
        return cls(
            world_size=world_size, rank=rank, tp_size=tp, tp_rank=rank % tp, tp_group=tp_group,
            dp_size=dp, dp_rank=rank // tp, dp_group=dp_group,
        )

    @property
    def tp_src_rank(self) -> int:
        """Global rank of TP rank 0 in this rank's TP group (the rank that reads data and broadcasts it)."""
        return self.rank - self.tp_rank

    @property
    def tp_ranks(self) -> list[int]:
        """Global ranks of this rank's TP group, in TP-rank order."""
        return list(range(self.tp_src_rank, self.tp_src_rank + self.tp_size))

    @property
    def dp_ranks(self) -> list[int]:
        """Global ranks of this rank's DP group, in DP-rank order."""
        return list(range(self.tp_rank, self.world_size, self.tp_size))

"""Process groups for pipeline x data x tensor parallelism, and the split of the transformer layers into stages.

:class:`PipelineParallelState` extends :class:`~megatron.parallel.state.ParallelState` with the pipeline (PP),
embedding and model-parallel groups, in Megatron's default rank order ("tp-cp-ep-dp-pp" without context or expert
parallelism): TP varies fastest, then DP, then PP, so ``rank = pp_rank * (tp * dp) + dp_rank * tp + tp_rank``.
Every module that takes a ``ParallelState`` accepts it unchanged: the TP and DP groups mean what they meant, inside
this rank's pipeline stage. :func:`pipeline_layer_ranges` is Megatron's even split of the layers over (virtual)
stages.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch.distributed as dist

from megatron.parallel.state import ParallelState

__all__ = ["PipelineParallelState", "num_virtual_stages", "pipeline_layer_ranges", "stage_indices_of_rank"]


@dataclass
class PipelineParallelState(ParallelState):
    """This rank's place in the (pipeline, data, tensor) process grid.

    Invariants: ``world_size == tp_size * dp_size * pp_size`` and
    ``rank == pp_rank * tp_size * dp_size + dp_rank * tp_size + tp_rank``. With ``pp_size == 1`` its ranks and TP/DP
    groups are those ``ParallelState.build`` creates, its pipeline groups ``None``.

    Groups (``None`` when of size 1, or when this rank is not a member):
        pp_group: the ``pp_size`` ranks with this rank's (dp_rank, tp_rank), stage order; activations and their
            gradients travel over it (``torch.distributed.pipelining`` point-to-point).
        embedding_group: the first and the last rank of this rank's pipeline: the two copies of a tied word
            embedding all-reduce their gradients over it (Megatron's embedding group). Middle stages: ``None``.
        model_parallel_group: the ``tp_size * pp_size`` ranks with this rank's dp_rank, which together hold one
            full model copy: gradient norms and overflow flags are reduced over it.
    """

    pp_size: int = 1
    pp_rank: int = 0
    pp_group: dist.ProcessGroup | None = None
    embedding_group: dist.ProcessGroup | None = None
    model_parallel_group: dist.ProcessGroup | None = None

    def __post_init__(self) -> None:
        stage_size = self.tp_size * self.dp_size
        assert self.world_size == stage_size * self.pp_size, (
            f"world_size {self.world_size} != tp_size {self.tp_size} * dp_size {self.dp_size} * pp_size {self.pp_size}"
        )
        assert self.rank == self.pp_rank * stage_size + self.dp_rank * self.tp_size + self.tp_rank, (
            f"rank {self.rank} != pp_rank {self.pp_rank} * {stage_size} + dp_rank {self.dp_rank} * tp_size "
            f"{self.tp_size} + tp_rank {self.tp_rank}"
        )

    @classmethod
    def build(cls, tensor_model_parallel_size: int, pipeline_model_parallel_size: int = 1) -> PipelineParallelState:
        """Create the TP, DP, PP, embedding and model-parallel groups over the initialized default process group.

        Every rank must call this with the same arguments (``new_group`` is collective). Without an initialized
        default group both sizes must be 1 and the single-process state is returned.

        Raises:
            ValueError: if a size is < 1, ``tp * pp`` does not divide the world size, or a size exceeds 1 without
                torch.distributed being initialized.
        """
        tp, pp = tensor_model_parallel_size, pipeline_model_parallel_size
        for name, value in (("tensor_model_parallel_size", tp), ("pipeline_model_parallel_size", pp)):
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        if not (dist.is_available() and dist.is_initialized()):
            if tp != 1 or pp != 1:
                raise ValueError(
                    f"tensor_model_parallel_size ({tp}) and pipeline_model_parallel_size ({pp}) above 1 need an "
                    "initialized torch.distributed process group (launch with torchrun, or set both to 1)"
                )
            return cls.single()
        world_size, rank = dist.get_world_size(), dist.get_rank()
        if world_size % (tp * pp) != 0:
            raise ValueError(
                f"world size ({world_size}) must be divisible by tensor_model_parallel_size ({tp}) x "
                f"pipeline_model_parallel_size ({pp}); change the number of processes or the parallel sizes"
            )
        dp = world_size // (tp * pp)
        stage_size = tp * dp
        pp_rank, in_stage = divmod(rank, stage_size)
        dp_rank, tp_rank = divmod(in_stage, tp)
        groups = _build_groups(world_size, rank, tp, dp, pp)
        return cls(
            world_size=world_size, rank=rank, tp_size=tp, tp_rank=tp_rank, tp_group=groups["tp"],
            dp_size=dp, dp_rank=dp_rank, dp_group=groups["dp"], pp_size=pp, pp_rank=pp_rank, pp_group=groups["pp"],
            embedding_group=groups["embedding"], model_parallel_group=groups["mp"],
        )

    @property
    def dp_ranks(self) -> list[int]:
        """Global ranks of this rank's DP group, in DP-rank order (inside this rank's pipeline stage)."""
        base = self.pp_rank * self.tp_size * self.dp_size + self.tp_rank
        return [base + k * self.tp_size for k in range(self.dp_size)]

    @property
    def pp_ranks(self) -> list[int]:
        """Global ranks of this rank's pipeline, in stage order."""
        stage_size = self.tp_size * self.dp_size
        return [self.rank % stage_size + k * stage_size for k in range(self.pp_size)]

    @property
    def embedding_ranks(self) -> list[int]:
        """Global ranks holding a copy of the word embedding: the first and last stage (one rank if PP = 1)."""
        ranks = self.pp_ranks
        return sorted({ranks[0], ranks[-1]})

    @property
    def is_first_stage(self) -> bool:
        """Whether this rank runs pipeline stage 0 (the embeddings); with virtual stages, its chunk 0 is stage 0."""
        return self.pp_rank == 0

    @property
    def is_last_stage(self) -> bool:
        """Whether this rank runs the last pipeline stage (final norm, output layer, loss)."""
        return self.pp_rank == self.pp_size - 1


def _new_group(ranks: list[int], rank: int, current: dist.ProcessGroup | None) -> dist.ProcessGroup | None:
    """``new_group(ranks)`` (collective: every rank creates every group, in the same order); returns the group if
    this rank is in it, else ``current``."""
    group = dist.new_group(ranks)
    return group if rank in ranks else current


def _build_groups(world_size: int, rank: int, tp: int, dp: int, pp: int) -> dict[str, dist.ProcessGroup | None]:
    """All groups of the tp-dp-pp grid; size-1 groups are not created (their entry stays ``None``)."""
    stage_size = tp * dp
    out: dict[str, dist.ProcessGroup | None] = dict.fromkeys(("tp", "dp", "pp", "embedding", "mp"))
    if tp > 1:
        for block in range(world_size // tp):
            out["tp"] = _new_group(list(range(block * tp, (block + 1) * tp)), rank, out["tp"])
    if dp > 1:
        for stage in range(pp):
            for tp_rank in range(tp):
                base = stage * stage_size + tp_rank
                out["dp"] = _new_group([base + k * tp for k in range(dp)], rank, out["dp"])
    if pp > 1:
        for first in range(stage_size):
            ranks = [first + k * stage_size for k in range(pp)]
            out["pp"] = _new_group(ranks, rank, out["pp"])
            out["embedding"] = _new_group([ranks[0], ranks[-1]], rank, out["embedding"])
    if pp == 1:
        out["mp"] = out["tp"]  # one stage: the model-parallel ranks are the TP ranks
    else:
        for dp_rank in range(dp):
            ranks = [s * stage_size + dp_rank * tp + t for s in range(pp) for t in range(tp)]
            out["mp"] = _new_group(ranks, rank, out["mp"])
    return out


def num_virtual_stages(num_layers: int, pp_size: int, num_layers_per_virtual_stage: int | None) -> int:
    """Model chunks per pipeline rank: 1 without interleaving, else ``num_layers / pp_size /
    num_layers_per_virtual_stage`` (Megatron's virtual pipeline size).

    Raises:
        ValueError: naming the fields when ``num_layers`` does not split evenly over the stages and chunks.
    """
    if pp_size < 1:
        raise ValueError(f"pipeline_model_parallel_size must be >= 1, got {pp_size}")
    if num_layers % pp_size != 0:
        raise ValueError(
            f"num_layers ({num_layers}) must be divisible by pipeline_model_parallel_size ({pp_size}): every "
            "stage holds the same number of layers; change one of them"
        )
    if num_layers_per_virtual_stage is None:
        return 1
    per_rank = num_layers // pp_size
    if num_layers_per_virtual_stage < 1 or per_rank % num_layers_per_virtual_stage != 0:
        raise ValueError(
            f"num_layers_per_virtual_pipeline_stage ({num_layers_per_virtual_stage}) must divide the layers per "
            f"pipeline stage, num_layers / pipeline_model_parallel_size = {num_layers} / {pp_size} = {per_rank}"
        )
    if pp_size == 1:
        raise ValueError(
            "num_layers_per_virtual_pipeline_stage needs pipeline_model_parallel_size > 1 (interleaving model "
            "chunks over one stage gains nothing); unset it or raise the pipeline size"
        )
    return per_rank // num_layers_per_virtual_stage


def pipeline_layer_ranges(
    num_layers: int, pp_size: int, num_layers_per_virtual_stage: int | None = None
) -> list[tuple[int, int]]:
    """``[start, end)`` global layer indices of every (virtual) stage, in stage order.

    Stage ``k`` of ``pp_size * v`` runs on pipeline rank ``k % pp_size`` as its chunk ``k // pp_size`` (Megatron's
    interleaved assignment), and holds layers ``[k * n, (k + 1) * n)`` with ``n = num_layers / (pp_size * v)``.
    """
    v = num_virtual_stages(num_layers, pp_size, num_layers_per_virtual_stage)
    n = num_layers // (pp_size * v)
    return [(k * n, (k + 1) * n) for k in range(pp_size * v)]


def stage_indices_of_rank(pp_rank: int, pp_size: int, num_chunks: int) -> list[int]:
    """Global stage indices that pipeline rank ``pp_rank`` runs, chunk order: ``pp_rank + c * pp_size``."""
    return [pp_rank + c * pp_size for c in range(num_chunks)]

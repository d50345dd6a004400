"""Tensor-parallel linear and embedding layers (Megatron's ColumnParallelLinear, RowParallelLinear,
VocabParallelEmbedding).

Weights are initialized TP-independently, as Megatron's ``--use-cpu-initialization`` does: every rank draws the full
fp32 master weight from a CPU generator seeded for that parameter and keeps its own chunk, so the same seed gives
the same full weights at any TP size. Activations are sequence-first (``[s, b, h]``); only the last dimension is
ever split.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from megatron.parallel.mappings import (
    copy_to_tensor_model_parallel_region,
    gather_from_tensor_model_parallel_region,
    reduce_from_tensor_model_parallel_region,
    scatter_to_tensor_model_parallel_region,
)
from megatron.parallel.random import derive_seed
from megatron.parallel.state import ParallelState
from megatron.parallel.utils import divide, set_tensor_model_parallel_attributes, shard_of

__all__ = [
    "InitMethod",
    "normal_init",
    "scaled_normal_init",
    "init_master_weight",
    "ColumnParallelLinear",
    "RowParallelLinear",
    "VocabParallelEmbedding",
]

InitMethod = Callable[[torch.Tensor, torch.Generator], None]
"""Fills a full (unsharded) fp32 master weight in place, drawing only from the given generator."""


def normal_init(std: float) -> InitMethod:
    """N(0, std) initializer (Megatron ``init_method_normal``)."""

    def init(weight: torch.Tensor, generator: torch.Generator) -> None:
        weight.normal_(0.0, std, generator=generator)

    return init


def scaled_normal_init(std: float, num_layers: int) -> InitMethod:
    """N(0, std / sqrt(2 * num_layers)) for the projections that feed the residual stream (GPT-2 / Megatron)."""
    return normal_init(std / math.sqrt(2.0 * num_layers))


@torch.no_grad()
def init_master_weight(
    param: torch.Tensor, full_shape: tuple[int, ...], partition_dim: int, init_method: InitMethod, seed: int,
    parallel_state: ParallelState,
) -> None:
    """Initialize the full fp32 weight of shape ``full_shape`` from ``seed`` and copy this rank's chunk into ``param``.

    ``partition_dim`` < 0 means the parameter is replicated (the full weight is copied).
    """
    master = torch.empty(full_shape, dtype=torch.float32, device="cpu")  # CPU generator, whatever the default device
    init_method(master, torch.Generator().manual_seed(seed))
    if partition_dim >= 0:
        master = shard_of(master, partition_dim, parallel_state.tp_rank, parallel_state.tp_size)
    param.copy_(master)


class _TensorParallelModule(nn.Module):
    parallel_state: ParallelState

    @property
    def tp_group(self):
        """The TP process group (None for a single rank)."""
        return self.parallel_state.tp_group


class ColumnParallelLinear(_TensorParallelModule):
    """``Y = X A^T + b`` with A split along its output dimension: weight ``[out/tp, in]``, bias ``[out/tp]``.

    The input is replicated on all TP ranks (``copy_to`` region: its grad is all-reduced); the output is this rank's
    slice ``[s, b, out/tp]``, or the full ``[s, b, out]`` with ``gather_output=True``.

    Args:
        input_size, output_size: full (unsharded) sizes; ``output_size`` must be divisible by the TP size.
        parallel_state: supplies ``tp_group``, ``tp_rank``, ``tp_size``.
        init_method: initializer of the full master weight.
        init_seed: seed of this layer; weight and bias draw from ``derive_seed(init_seed, name)``.
        bias: add a bias (zeros at init, as in Megatron).
        gather_output: all-gather the output over TP.
        params_dtype: dtype the parameters are stored in (initialized in fp32, then cast).
        stacked: number of equal projections stacked in the output (2 for SwiGLU's gate and up). With
            ``stacked=k > 1`` the weight is ``[k, out/k/tp, in]`` (bias ``[k, out/k/tp]``), split along dim 1: each
            rank holds the matching slice of every projection, and its output ``[s, b, out/tp]`` is their
            concatenation (Megatron's per-rank ``[gate_shard; up_shard]``), while the unsharded weight stays the
            same at every TP size.
    """

    def __init__(
        self, input_size: int, output_size: int, *, parallel_state: ParallelState, init_method: InitMethod,
        init_seed: int, bias: bool = True, gather_output: bool = False, params_dtype: torch.dtype = torch.float32,
        stacked: int = 1,
    ) -> None:
        super().__init__()
        self.input_size, self.output_size = input_size, output_size
        self.parallel_state = parallel_state  # groups are read through it (deepcopy shares them)
        self.gather_output = gather_output
        if gather_output and stacked > 1:
            raise ValueError("gather_output would interleave the stacked projections of the ranks; gather each "
                             "projection instead")
        part = divide(output_size, stacked, "output_size", "stacked")
        part_per_rank = divide(part, parallel_state.tp_size, "output_size" if stacked == 1 else "output_size / stacked",
                               "tensor_model_parallel_size")
        # One stacked projection keeps Megatron's plain [out/tp, in] layout (and its state-dict shapes).
        lead, dim = ((), 0) if stacked == 1 else ((stacked,), 1)
        self.weight = nn.Parameter(torch.empty(*lead, part_per_rank, input_size, dtype=params_dtype))
        set_tensor_model_parallel_attributes(self.weight, True, dim)
        init_master_weight(self.weight, (*lead, part, input_size), dim, init_method,
                           derive_seed(init_seed, "weight"), parallel_state)
        if bias:
            self.bias = nn.Parameter(torch.zeros(*lead, part_per_rank, dtype=params_dtype))
            set_tensor_model_parallel_attributes(self.bias, True, dim)
        else:
            self.register_parameter("bias", None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[s, b, in] -> [s, b, out/tp]`` (or ``[s, b, out]`` with ``gather_output``)."""
        x = copy_to_tensor_model_parallel_region(x, self.tp_group)
        weight, bias = self.weight, self.bias
        if weight.dim() == 3:  # stacked projections: one GEMM over their concatenated rows
            weight, bias = weight.flatten(0, 1), None if bias is None else bias.flatten()
        y = F.linear(x, weight, bias)  # [s, b, out/tp]
        if self.gather_output:
            y = gather_from_tensor_model_parallel_region(y, self.tp_group)
        return y

    def extra_repr(self) -> str:
        out_per_rank = self.weight.size(0) if self.weight.dim() == 2 else self.weight.size(0) * self.weight.size(1)
        return f"in={self.input_size}, out={self.output_size}, out_per_rank={out_per_rank}"


class RowParallelLinear(_TensorParallelModule):
    """``Y = X A^T + b`` with A split along its input dimension: weight ``[out, in/tp]``, bias ``[out]`` (replicated).

    Each rank multiplies its slice of the input features; partial products are all-reduced and the bias is added
    once after the reduction. With ``input_is_parallel=False`` the replicated input is first scattered.

    Args: as :class:`ColumnParallelLinear`, with ``input_size`` divisible by the TP size.
    """

    def __init__(
        self, input_size: int, output_size: int, *, parallel_state: ParallelState, init_method: InitMethod,
        init_seed: int, bias: bool = True, input_is_parallel: bool = True,
        params_dtype: torch.dtype = torch.float32,
    ) -> None:
        super().__init__()
        self.input_size, self.output_size = input_size, output_size
        self.parallel_state = parallel_state  # groups are read through it (deepcopy shares them)
        self.input_is_parallel = input_is_parallel
        in_per_rank = divide(input_size, parallel_state.tp_size, "input_size", "tensor_model_parallel_size")
        self.weight = nn.Parameter(torch.empty(output_size, in_per_rank, dtype=params_dtype))
        set_tensor_model_parallel_attributes(self.weight, True, 1)
        init_master_weight(self.weight, (output_size, input_size), 1, init_method,
                           derive_seed(init_seed, "weight"), parallel_state)
        if bias:
            self.bias = nn.Parameter(torch.zeros(output_size, dtype=params_dtype))
            set_tensor_model_parallel_attributes(self.bias, False, -1)
        else:
            self.register_parameter("bias", None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[s, b, in/tp] -> [s, b, out]`` (input ``[s, b, in]`` when ``input_is_parallel`` is False)."""
        if not self.input_is_parallel:
            x = scatter_to_tensor_model_parallel_region(x, self.tp_group)
        partial = F.linear(x, self.weight)  # [s, b, out], this rank's share of the sum
        y = reduce_from_tensor_model_parallel_region(partial, self.tp_group)
        return y if self.bias is None else y + self.bias

    def extra_repr(self) -> str:
        return f"in={self.input_size}, out={self.output_size}, in_per_rank={self.weight.size(1)}"


class VocabParallelEmbedding(_TensorParallelModule):
    """Embedding table split along the vocabulary: rank r owns rows ``[r*V/tp, (r+1)*V/tp)``.

    Ids outside this rank's range look up row 0 and are zeroed; the all-reduce over TP then leaves every rank with
    the full embedding. ``weight`` doubles as the tied output layer (vocab-parallel logits).

    Args:
        num_embeddings: padded vocabulary size V, divisible by the TP size.
        embedding_dim: hidden size h.
        parallel_state, init_method, init_seed, params_dtype: as :class:`ColumnParallelLinear`.
    """

    def __init__(
        self, num_embeddings: int, embedding_dim: int, *, parallel_state: ParallelState, init_method: InitMethod,
        init_seed: int, params_dtype: torch.dtype = torch.float32,
    ) -> None:
        super().__init__()
        self.num_embeddings, self.embedding_dim = num_embeddings, embedding_dim
        self.parallel_state = parallel_state  # groups are read through it (deepcopy shares them)
        self.tp_size = parallel_state.tp_size
        per_rank = divide(num_embeddings, parallel_state.tp_size, "vocab size", "tensor_model_parallel_size")
        self.vocab_start = parallel_state.tp_rank * per_rank
        self.vocab_end = self.vocab_start + per_rank
        self.weight = nn.Parameter(torch.empty(per_rank, embedding_dim, dtype=params_dtype))
        set_tensor_model_parallel_attributes(self.weight, True, 0)
        init_master_weight(self.weight, (num_embeddings, embedding_dim), 0, init_method,
                           derive_seed(init_seed, "weight"), parallel_state)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """``ids [...]`` (int, in ``[0, V)``) -> ``[..., h]``, identical on all TP ranks."""
        if self.tp_size == 1:
            return F.embedding(ids, self.weight)
        outside = (ids < self.vocab_start) | (ids >= self.vocab_end)
        local_ids = (ids - self.vocab_start).masked_fill(outside, 0)
        out = F.embedding(local_ids, self.weight)  # [..., h], rows of other ranks' ids are garbage
        out = out.masked_fill(outside.unsqueeze(-1), 0.0)
        return reduce_from_tensor_model_parallel_region(out, self.tp_group)

    def extra_repr(self) -> str:
        return f"vocab={self.num_embeddings}, dim={self.embedding_dim}, rows=[{self.vocab_start}, {self.vocab_end})"

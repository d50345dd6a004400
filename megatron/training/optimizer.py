"""Mixed-precision AdamW with fp32 main gradients, data-parallel gradient averaging and global-norm clipping.

One flat fp32 buffer holds the gradient of every trainable parameter (``param.main_grad`` is a view into it):
backward hooks add each micro-batch's gradient into it, so gradient accumulation is fp32 whatever the model dtype.
After the last micro-batch the buffer is averaged over the data-parallel group in buckets, unscaled (fp16),
checked for inf/nan, clipped by the global L2 norm (TP-sharded parameters once per shard, TP-duplicated ones
once) and applied by AdamW to fp32 master parameters, which are copied back into the model. With
``use_distributed_optimizer`` the AdamW state is sharded over data-parallel ranks (ZeRO stage 1) by torch's
``ZeroRedundancyOptimizer``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterable

import torch
import torch.distributed as dist
from torch import nn

from megatron.logging import get_logger
from megatron.parallel.state import ParallelState
from megatron.training.grad_scaler import ConstantGradScaler, DynamicGradScaler

__all__ = [
    "AdamWSettings", "MegatronOptimizer", "StepResult", "build_param_groups", "clip_grad_norm", "global_grad_norm",
]

logger = get_logger(__name__)

# Elements per data-parallel all-reduce (Megatron's default DDP bucket is 40M elements).
_DP_BUCKET_NUMEL = 40_000_000


@dataclass(frozen=True, kw_only=True)
class AdamWSettings:
    """The optimizer knobs the training config resolves (Megatron names and defaults)."""

    weight_decay: float = 0.01
    """Decoupled weight decay for matrices; biases and 1-D parameters get none."""
    adam_beta1: float = 0.9
    """First-moment decay."""
    adam_beta2: float = 0.999
    """Second-moment decay."""
    adam_eps: float = 1e-8
    """Denominator epsilon."""
    clip_grad: float = 1.0
    """Global L2 norm limit; 0 disables clipping."""
    check_for_nan: bool = True
    """Raise on a non-finite gradient norm in bf16/fp32 instead of skipping the step."""


@dataclass
class StepResult:
    """Outcome of one optimizer step."""

    applied: bool
    """False when the step was skipped (fp16 overflow, or a non-finite norm with checks off)."""
    grad_norm: float | None
    """Global gradient L2 norm before clipping (None when skipped)."""


def build_param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Two AdamW groups: decayed matrices, and undecayed biases and 1-D parameters (norm weights), as Megatron."""
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        (no_decay if name.endswith("bias") or param.dim() == 1 else decay).append(param)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]


def _counts_once(param: torch.Tensor, tp_rank: int) -> bool:
    """TP-sharded parameters contribute their shard on every rank; duplicated ones only on TP rank 0. The last
    pipeline stage's copy of a tied word embedding (``shared_embedding``) is counted on the first stage only."""
    if getattr(param, "shared_embedding", False):
        return False
    return bool(getattr(param, "tensor_model_parallel", False)) or tp_rank == 0


def _model_parallel_group(pstate: ParallelState) -> dist.ProcessGroup | None:
    """The ranks holding one model copy together: TP x PP (``PipelineParallelState``), else the TP group."""
    return getattr(pstate, "model_parallel_group", pstate.tp_group)


def global_grad_norm(
    params: Iterable[torch.Tensor], grads: Iterable[torch.Tensor], pstate: ParallelState
) -> torch.Tensor:
    """Global L2 norm of ``grads`` (fp32 scalar tensor), reduced over the model-parallel group (TP x PP).

    ``params[i]`` carries the ``tensor_model_parallel`` tag of ``grads[i]``. The result is the norm of the
    gradient of the *unsharded*, unpipelined model, identical on every rank of the model-parallel group.
    """
    chosen = [g.detach().float() for p, g in zip(params, grads) if _counts_once(p, pstate.tp_rank)]
    if chosen:
        sq = torch.stack([torch.linalg.vector_norm(g) for g in chosen]).square().sum()
    else:
        sq = torch.zeros((), dtype=torch.float32, device=next(iter(grads)).device)
    group = _model_parallel_group(pstate)
    if group is not None:
        dist.all_reduce(sq, op=dist.ReduceOp.SUM, group=group)
    return sq.sqrt()


def clip_grad_norm(
    params: list[torch.Tensor], grads: list[torch.Tensor], max_norm: float, pstate: ParallelState
) -> float:
    """Scale ``grads`` in place so that their global norm is at most ``max_norm``; returns the norm before.

    Megatron's rule: coefficient ``max_norm / (norm + 1e-6)`` applied only when below 1. ``max_norm <= 0`` only
    measures.
    """
    norm = float(global_grad_norm(params, grads, pstate))
    if max_norm > 0 and math.isfinite(norm):
        coeff = max_norm / (norm + 1e-6)
        if coeff < 1.0:
            torch._foreach_mul_(grads, coeff)
    return norm


class MegatronOptimizer:
    """AdamW over fp32 master parameters fed by a flat fp32 gradient buffer.

    Usage per iteration: ``zero_grad()``; for each micro-batch ``backward(loss)``; then ``step()``. The LR
    scheduler writes ``lr`` into :attr:`param_groups` before ``step()``.

    Args:
        model: the (possibly bf16/fp16) model; its trainable parameters get a ``main_grad`` attribute.
        settings: AdamW and clipping knobs.
        pstate: process groups for DP averaging and TP norm reduction.
        grad_scaler: a loss scaler for fp16, else None.
        use_distributed_optimizer: shard AdamW state over the DP group (ZeRO-1).
    """

    def __init__(
        self, model: nn.Module, settings: AdamWSettings, pstate: ParallelState,
        grad_scaler: ConstantGradScaler | DynamicGradScaler | None = None, use_distributed_optimizer: bool = False,
    ) -> None:
        self.settings, self.pstate, self.grad_scaler = settings, pstate, grad_scaler
        groups = build_param_groups(model, settings.weight_decay)
        self.params: list[nn.Parameter] = [p for g in groups for p in g["params"]]
        assert self.params, "model has no trainable parameters"
        device = self.params[0].device
        total = sum(p.numel() for p in self.params)
        self.grad_buffer = torch.zeros(total, dtype=torch.float32, device=device)
        offset = 0
        self._hooks = []
        for p in self.params:
            p.main_grad = self.grad_buffer[offset : offset + p.numel()].view_as(p)
            offset += p.numel()
            self._hooks.append(p.register_post_accumulate_grad_hook(_accumulate_main_grad))
        # fp32 parameters are their own masters; half-precision ones get an fp32 copy.
        self._half = any(p.dtype != torch.float32 for p in self.params)
        self.masters = [p if p.dtype == torch.float32 else p.detach().float() for p in self.params]
        master_of = {id(p): m for p, m in zip(self.params, self.masters)}
        master_groups = [{**g, "params": [master_of[id(p)] for p in g["params"]]} for g in groups]
        kwargs: dict[str, Any] = dict(
            lr=0.0, betas=(settings.adam_beta1, settings.adam_beta2), eps=settings.adam_eps,
            weight_decay=settings.weight_decay,
        )
        # The fused CUDA kernel is torch's fastest AdamW; on CPU the multi-tensor (foreach) path is.
        kwargs["fused" if device.type == "cuda" else "foreach"] = True
        self.distributed = use_distributed_optimizer and pstate.dp_group is not None
        if self.distributed:
            from torch.distributed.optim import ZeroRedundancyOptimizer

            self.optimizer = ZeroRedundancyOptimizer(
                master_groups, optimizer_class=torch.optim.AdamW, process_group=pstate.dp_group, **kwargs
            )
        else:
            self.optimizer = torch.optim.AdamW(master_groups, **kwargs)

    @property
    def param_groups(self) -> list[dict[str, Any]]:
        return self.optimizer.param_groups

    @property
    def loss_scale(self) -> float:
        return self.grad_scaler.scale if self.grad_scaler is not None else 1.0

    def zero_grad(self) -> None:
        """Clear the fp32 gradient buffer (and any stray ``.grad``) before the first micro-batch."""
        self.grad_buffer.zero_()
        for p, m in zip(self.params, self.masters):
            p.grad = None
            m.grad = None

    def backward(self, loss: torch.Tensor) -> None:
        """Backpropagate one micro-batch's loss (times the fp16 loss scale) into the fp32 buffer."""
        (loss * self.loss_scale if self.grad_scaler is not None else loss).backward()

    def _allreduce_dp(self) -> None:
        # Average, then sum: dividing first keeps fp32 sums of large DP sizes in range.
        if self.pstate.dp_group is None:
            return
        self.grad_buffer.div_(self.pstate.dp_size)
        for start in range(0, self.grad_buffer.numel(), _DP_BUCKET_NUMEL):
            dist.all_reduce(self.grad_buffer[start : start + _DP_BUCKET_NUMEL], group=self.pstate.dp_group)

    def _found_inf(self) -> bool:
        flag = (~torch.isfinite(self.grad_buffer).all()).float()
        # Ranks of a TP group (and the stages of a pipeline) hold different parameters; one overflow anywhere must
        # skip the step everywhere.
        group = _model_parallel_group(self.pstate)
        if group is not None:
            dist.all_reduce(flag, op=dist.ReduceOp.MAX, group=group)
        return bool(flag.item())

    def step(self) -> StepResult:
        """Reduce, unscale, check, clip and apply the accumulated gradients."""
        self._allreduce_dp()
        if self.grad_scaler is not None:
            self.grad_buffer.mul_(self.grad_scaler.inv_scale)
            found_inf = self._found_inf()
            self.grad_scaler.update(found_inf)
            if found_inf:
                return StepResult(applied=False, grad_norm=None)
        grads = [p.main_grad for p in self.params]
        norm = clip_grad_norm(self.params, grads, self.settings.clip_grad, self.pstate)
        if not math.isfinite(norm):
            if self.settings.check_for_nan:
                raise FloatingPointError(
                    f"gradient norm is {norm} on rank {self.pstate.rank}; the loss or gradients hold inf/nan "
                    "(lower --lr, use --fp16 loss scaling or --bf16, or pass --no-check-for-nan-in-loss-and-grad "
                    "to skip such steps)"
                )
            return StepResult(applied=False, grad_norm=None)
        for p, m in zip(self.params, self.masters):
            m.grad = p.main_grad
        self.optimizer.step()
        for p, m in zip(self.params, self.masters):
            m.grad = None  # an fp32 param's .grad must not alias the buffer during the next backward
        if self._half:
            self._copy_masters_to_model()
        return StepResult(applied=True, grad_norm=norm)

    @torch.no_grad()
    def _copy_masters_to_model(self) -> None:
        for p, m in zip(self.params, self.masters):
            if p is not m:
                p.copy_(m)

    @torch.no_grad()
    def reload_model_params(self) -> None:
        """Refresh fp32 masters from the model (after loading model weights without optimizer state)."""
        for p, m in zip(self.params, self.masters):
            if p is not m:
                m.copy_(p.float())

    def state_dict(self) -> dict[str, Any] | None:
        """AdamW state (consolidated on DP rank 0 for ZeRO; collective then), fp32 masters and the loss scaler.

        Returns None on ranks that do not hold the consolidated state (ZeRO, DP rank > 0).
        """
        if self.distributed:
            self.optimizer.consolidate_state_dict(to=0)
            if self.pstate.dp_rank != 0:
                return None
        return {
            "optimizer": self.optimizer.state_dict(),
            "fp32_master_params": [m.detach().clone() for m in self.masters] if self._half else None,
            "grad_scaler": self.grad_scaler.state_dict() if self.grad_scaler is not None else None,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` saved (every DP rank passes the full state)."""
        impl = {k: self.param_groups[0].get(k) for k in ("fused", "foreach")}
        self.optimizer.load_state_dict(state["optimizer"])
        for group in self.param_groups:  # a CPU checkpoint must not switch a GPU run off the fused kernel
            group.update(impl)
        masters = state.get("fp32_master_params")
        if self._half and masters is not None:
            if len(masters) != len(self.masters):
                raise ValueError(
                    f"checkpoint holds {len(masters)} fp32 master parameters but the model has {len(self.masters)}"
                )
            with torch.no_grad():
                for m, saved in zip(self.masters, masters):
                    m.copy_(saved)
            self._copy_masters_to_model()
        elif self._half:
            self.reload_model_params()
        if self.grad_scaler is not None and state.get("grad_scaler") is not None:
            self.grad_scaler.load_state_dict(state["grad_scaler"])


def _accumulate_main_grad(param: torch.Tensor) -> None:
    """Post-accumulate-grad hook: move this micro-batch's gradient into the fp32 buffer."""
    param.main_grad.add_(param.grad)
    param.grad = None

"""Cross entropy over vocabulary-parallel logits, without ever gathering the full vocabulary on one rank.

Each TP rank holds logits for its contiguous vocab slice ``[r*V/tp, (r+1)*V/tp)``. The softmax normalizer needs
only three all-reduces of per-token scalars (max, target logit, sum of exponentials); the backward is written by
hand (softmax minus the smoothed one-hot) from the saved softmax. Everything is computed in fp32.
"""

from __future__ import annotations

import torch
import torch.distributed as dist

from megatron.parallel.mappings import group_rank, group_size

__all__ = ["vocab_parallel_cross_entropy"]


def _all_reduce(x: torch.Tensor, op: dist.ReduceOp, group: dist.ProcessGroup | None) -> torch.Tensor:
    if group_size(group) > 1:
        dist.all_reduce(x, op=op, group=group)
    return x


class _VocabParallelCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits, target, group, label_smoothing):
        # logits: [..., V/tp] fp32; target: [...] int in [0, V).
        part = logits.size(-1)
        vocab_size = part * group_size(group)
        start = group_rank(group) * part

        row_max = logits.max(dim=-1, keepdim=True).values
        _all_reduce(row_max, dist.ReduceOp.MAX, group)
        z = logits - row_max  # [..., V/tp], <= 0 after the global max: exp never overflows

        outside = (target < start) | (target >= start + part)
        local_target = (target - start).masked_fill(outside, 0)
        target_z = z.gather(-1, local_target.unsqueeze(-1)).squeeze(-1).masked_fill(outside, 0.0)
        _all_reduce(target_z, dist.ReduceOp.SUM, group)  # only the owning rank contributed

        softmax = z.exp()
        sum_exp = softmax.sum(dim=-1)
        _all_reduce(sum_exp, dist.ReduceOp.SUM, group)
        log_sum_exp = sum_exp.log()
        loss = log_sum_exp - target_z  # [...]

        if label_smoothing > 0:
            # Megatron's convention: the target keeps 1 - alpha and the other V-1 classes share alpha, i.e. a
            # uniform mixture with weight s = alpha * V / (V - 1):  loss = (1 - s) * nll - s * mean_j log p_j.
            smoothing = label_smoothing * vocab_size / (vocab_size - 1)
            sum_z = z.sum(dim=-1)
            _all_reduce(sum_z, dist.ReduceOp.SUM, group)
            mean_log_p = sum_z / vocab_size - log_sum_exp
            loss = (1.0 - smoothing) * loss - smoothing * mean_log_p
        else:
            smoothing = 0.0

        softmax.div_(sum_exp.unsqueeze(-1))
        ctx.save_for_backward(softmax, local_target, outside)
        ctx.smoothing, ctx.vocab_size, ctx.backward_done = smoothing, vocab_size, False
        return loss

    @staticmethod
    def backward(ctx, grad_loss):
        if ctx.backward_done:
            raise RuntimeError("vocab_parallel_cross_entropy reuses its saved softmax; backward can run only once")
        ctx.backward_done = True
        softmax, local_target, outside = ctx.saved_tensors
        # d loss / d logit_j = p_j - (1 - s) [j == target] - s / V
        grad = softmax  # the saved buffer is dead after this call: reuse it instead of allocating [..., V/tp]
        on_target = (~outside).to(grad.dtype) * (1.0 - ctx.smoothing)
        grad.scatter_add_(-1, local_target.unsqueeze(-1), -on_target.unsqueeze(-1))
        if ctx.smoothing > 0:
            grad.sub_(ctx.smoothing / ctx.vocab_size)
        grad.mul_(grad_loss.unsqueeze(-1))
        return grad, None, None, None


def vocab_parallel_cross_entropy(
    logits: torch.Tensor, target: torch.Tensor, group: dist.ProcessGroup | None, *, label_smoothing: float = 0.0
) -> torch.Tensor:
    """Per-token cross entropy of vocab-parallel logits.

    Args:
        logits: ``[..., V/tp]``, this rank's vocab slice (any float dtype; computed in fp32).
        target: ``[...]`` token ids in ``[0, V)``, identical on all TP ranks. Out-of-range ids are not checked
            (that would cost a device sync) and give a wrong loss.
        group: the TP group (``None`` for a single rank).
        label_smoothing: alpha in ``[0, 1)``; the target keeps probability ``1 - alpha`` and the other ``V - 1``
            classes share ``alpha`` (Megatron's definition; ``torch.nn.functional.cross_entropy`` spreads alpha
            over all V classes, so its ``label_smoothing=alpha*V/(V-1)`` gives the same value).

    Returns:
        ``[...]`` fp32 loss per token, identical on all TP ranks. Backward returns ``d loss / d logits`` for this
        rank's slice only.
    """
    if not 0.0 <= label_smoothing < 1.0:
        raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
    if logits.shape[:-1] != target.shape:
        raise ValueError(
            f"logits shape {tuple(logits.shape)} must be target shape {tuple(target.shape)} plus a vocab dimension"
        )
    return _VocabParallelCrossEntropy.apply(logits.float(), target, group, float(label_smoothing))

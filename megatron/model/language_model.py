"""Output-side pieces shared by the GPT and BERT language models: logits through the tied vocab-parallel word
embedding and the per-token cross entropy (vocab-parallel, or one compiled full-vocabulary kernel at TP=1).

Both models hold the word embedding as a :class:`VocabParallelEmbedding` ``[V/tp, h]``; multiplying by it gives each
rank the logits of its own vocabulary slice, which the vocab-parallel cross entropy consumes without a gather.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.distributed as dist
import torch.nn.functional as F

from megatron.model.config import TransformerConfig
from megatron.parallel.cross_entropy import vocab_parallel_cross_entropy
from megatron.parallel.mappings import copy_to_tensor_model_parallel_region
from megatron.parallel.state import ParallelState

__all__ = ["tied_vocab_parallel_logits", "build_compiled_loss", "per_token_cross_entropy", "masked_token_mean"]

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def tied_vocab_parallel_logits(
    hidden: torch.Tensor, word_embedding_weight: torch.Tensor, tp_group: dist.ProcessGroup | None,
    bias: torch.Tensor | None = None,
) -> torch.Tensor:
    """``hidden [..., h]`` (replicated over TP) times this rank's embedding rows ``[V/tp, h]`` -> ``[..., V/tp]``.

    The input enters a TP region (identity forward, all-reduced grad backward): every rank's vocabulary slice
    contributes to ``d hidden``. ``bias`` is this rank's ``[V/tp]`` slice of an output bias, or None.
    """
    hidden = copy_to_tensor_model_parallel_region(hidden, tp_group)
    return F.linear(hidden, word_embedding_weight, bias)


def _full_vocab_cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per-token fp32 cross entropy over the whole vocabulary (TP=1): compiled, it fuses the fp32 upcast,
    log-softmax and gather into a few passes over the ``[b, s, V]`` logits instead of one kernel per step."""
    loss = torch.nn.functional.cross_entropy(logits.float().flatten(0, -2), labels.flatten(), reduction="none")
    return loss.view_as(labels)


def build_compiled_loss(config: TransformerConfig, parallel_state: ParallelState) -> LossFn | None:
    """The compiled full-vocabulary loss when ``config.torch_compile`` is set at TP=1, else None (vocab-parallel)."""
    if config.torch_compile and parallel_state.tp_size == 1:
        return torch.compile(_full_vocab_cross_entropy)
    return None


def per_token_cross_entropy(
    logits: torch.Tensor, labels: torch.Tensor, tp_group: dist.ProcessGroup | None, compiled_loss: LossFn | None,
) -> torch.Tensor:
    """``logits [b, s, V/tp]``, ``labels [b, s]`` in ``[0, V)`` -> fp32 loss ``[b, s]``, identical on all TP ranks.

    ``compiled_loss`` is :func:`build_compiled_loss`'s result (None: the vocab-parallel cross entropy).
    """
    if compiled_loss is not None:
        return compiled_loss(logits, labels)
    return vocab_parallel_cross_entropy(logits, labels, tp_group)


def masked_token_mean(per_token: torch.Tensor, loss_mask: torch.Tensor) -> torch.Tensor:
    """Megatron's ``loss_func``: ``sum(loss * mask) / sum(mask)`` over one micro-batch. A micro-batch whose tokens
    are all masked contributes 0 instead of Megatron's 0/0 = nan."""
    mask = loss_mask.to(per_token.dtype)
    return (per_token * mask).sum() / mask.sum().clamp(min=1.0)

"""Sequence-length curriculum for BERT batches: truncate to the difficulty, or trim the padding.

BERT samples are padded to ``seq_length``; under curriculum learning Megatron-DeepSpeed's ``pretrain_bert.py``
shortens every micro-batch: to the ``seqlen_truncate`` difficulty when that metric is configured, otherwise to the
longest real (non-pad) sample of the batch - maximum over data-parallel ranks, which the training room supplies -
rounded up to a multiple of 8. Both cut every per-position field alike; the functions here are pure.
"""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["BERT_POSITION_KEYS", "PAD_TRIM_MULTIPLE", "bert_truncate", "longest_real_length", "padded_length"]

BERT_POSITION_KEYS = ("tokens", "types", "labels", "loss_mask", "padding_mask")
"""The ``[b, s]`` fields of a BERT batch (``megatron.data.batch.build_bert_batch``); the others are per sample."""

PAD_TRIM_MULTIPLE = 8
"""Trimmed lengths are rounded up to this multiple (Megatron-DeepSpeed's choice: tensor-core friendly shapes)."""


def longest_real_length(padding_mask: torch.Tensor) -> int:
    """Length of the shortest prefix holding every real token of the batch: last real position + 1 (0 if none).

    Args:
        padding_mask: ``[b, s]``, nonzero at real tokens (BERT's real tokens are a prefix of each row).
    """
    if padding_mask.dim() != 2:
        raise ValueError(f"padding_mask must be [b, s], got shape {tuple(padding_mask.shape)}")
    real = padding_mask != 0
    if not bool(real.any()):
        return 0
    positions = torch.arange(1, real.shape[1] + 1, device=real.device)
    return int((real * positions).max())


def padded_length(real_length: int, seq_length: int, multiple: int = PAD_TRIM_MULTIPLE) -> int:
    """``real_length`` rounded up to ``multiple``, at least ``multiple`` and at most ``seq_length``."""
    rounded = max(-(-real_length // multiple) * multiple, multiple)
    return min(rounded, seq_length)


def bert_truncate(batch: dict[str, Any], seqlen: int) -> dict[str, Any]:
    """Keep the first ``seqlen`` positions of every ``[b, s]`` field (``BERT_POSITION_KEYS``).

    Returns:
        A new dict (contiguous copies of the cut fields; per-sample fields shared); ``batch`` itself when
        ``seqlen >= s``.

    Raises:
        ValueError: ``seqlen < 1``.
    """
    s = batch["tokens"].shape[1]
    if seqlen >= s:
        return batch
    if seqlen < 1:
        raise ValueError(f"BERT curriculum sequence length must be >= 1, got {seqlen}")
    out = dict(batch)
    for key in BERT_POSITION_KEYS:
        if batch.get(key) is not None:
            out[key] = batch[key][:, :seqlen].contiguous()
    return out

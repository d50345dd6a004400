"""Collate samples into training batches: GPT (inputs, labels, loss mask, position ids, optional attention mask)
and BERT (``build_bert_batch``: the dataset's arrays stacked).

``build_gpt_batch`` follows Megatron's ``get_ltor_masks_and_position_ids`` (``--eod-mask-loss``,
``--reset-position-ids``, ``--reset-attention-mask``) but is vectorised over the batch: the start of each
token's document segment is a running maximum of end-of-document positions, no loop over EOD tokens.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Optional

import numpy as np
import torch

from megatron.data.config import DataConfig

__all__ = ["build_bert_batch", "build_gpt_batch", "segment_starts"]


def segment_starts(tokens: torch.Tensor, eod_token: int) -> torch.Tensor:
    """For every position ``t``: one past the last EOD strictly before ``t`` (0 if none). [b, s] int64.

    Tokens from there to ``t`` form ``t``'s document segment; an EOD token belongs to the segment it ends.
    """
    b, s = tokens.shape
    after_eod = torch.zeros((b, s), dtype=torch.int64)
    positions = torch.arange(1, s, dtype=torch.int64).expand(b, s - 1)
    after_eod[:, 1:] = torch.where(tokens[:, :-1] == eod_token, positions, 0)
    return torch.cummax(after_eod, dim=1).values


def build_gpt_batch(
    samples: Sequence[dict[str, Any]], eod_token: int, cfg: DataConfig
) -> dict[str, Optional[torch.Tensor]]:
    """Stack samples (each ``tokens``: int64 [s + 1]) into a left-to-right LM batch.

    Returns:
        ``tokens`` [b, s] int64 (inputs), ``labels`` [b, s] int64 (next tokens), ``loss_mask`` [b, s] float32
        (0 at EOD inputs with ``eod_mask_loss``), ``position_ids`` [b, s] int64 (restarting after each EOD with
        ``reset_position_ids``), ``attention_mask`` [b, 1, s, s] bool with True = masked out (causal, plus
        blocked across EODs with ``reset_attention_mask``) when ``cfg.attention_mask_needed`` else None (a
        broadcast view when it is the same for every sample), ``dataset_id`` [b] and
        ``dataset_sample_index`` [b] int64.
    """
    if not samples:
        raise ValueError("build_gpt_batch needs at least one sample")
    text = torch.from_numpy(np.stack([np.asarray(x["tokens"], dtype=np.int64) for x in samples]))
    tokens, labels = text[:, :-1].contiguous(), text[:, 1:].contiguous()
    b, s = tokens.shape
    loss_mask = torch.ones((b, s), dtype=torch.float32)
    if cfg.eod_mask_loss:
        loss_mask[tokens == eod_token] = 0.0
    arange = torch.arange(s, dtype=torch.int64)
    starts = segment_starts(tokens, eod_token) if cfg.reset_position_ids or cfg.reset_attention_mask else None
    position_ids = arange - starts if cfg.reset_position_ids else arange.expand(b, s).clone()
    attention_mask = None
    if cfg.attention_mask_needed:
        future = arange[None, :] > arange[:, None]  # [s, s]: key after query
        if cfg.reset_attention_mask:
            # key u is visible from query t iff starts[t] <= u <= t
            earlier = arange[None, None, :] < starts[:, :, None]  # [b, s, s]
            attention_mask = (future[None] | earlier)[:, None]
        else:
            attention_mask = future.expand(b, 1, s, s)
    return {
        "tokens": tokens,
        "labels": labels,
        "loss_mask": loss_mask,
        "position_ids": position_ids,
        "attention_mask": attention_mask,
        "dataset_id": torch.tensor([int(x["dataset_id"]) for x in samples], dtype=torch.int64),
        "dataset_sample_index": torch.tensor([int(x["dataset_sample_index"]) for x in samples], dtype=torch.int64),
    }


def build_bert_batch(samples: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
    """Stack BERT samples (``BertDataset`` items) into a batch.

    Returns:
        ``tokens``, ``types``, ``labels`` (-1 where not predicted), ``padding_mask`` (1 = real token) [b, s]
        int64; ``loss_mask`` [b, s] float32 (1 where predicted); ``is_random``, ``dataset_id`` and
        ``dataset_sample_index`` [b] int64.
    """
    if not samples:
        raise ValueError("build_bert_batch needs at least one sample")

    def stack(key: str, dtype: Any) -> torch.Tensor:
        return torch.from_numpy(np.stack([np.asarray(x[key], dtype=dtype) for x in samples]))

    def column(key: str) -> torch.Tensor:
        return torch.tensor([int(x[key]) for x in samples], dtype=torch.int64)

    return {
        "tokens": stack("tokens", np.int64),
        "types": stack("types", np.int64),
        "labels": stack("labels", np.int64),
        "loss_mask": stack("loss_mask", np.float32),
        "padding_mask": stack("padding_mask", np.int64),
        "is_random": column("is_random"),
        "dataset_id": column("dataset_id"),
        "dataset_sample_index": column("dataset_sample_index"),
    }

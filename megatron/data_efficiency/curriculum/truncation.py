"""Sequence-length curriculum: shorten GPT batches to the current difficulty (truncate or reshape).

``seqlen_truncate`` keeps the first c+1 tokens of every sample (c inputs, c labels); ``seqlen_reshape`` cuts the
samples into rows of c+1 tokens so no token is thrown away (Megatron-DeepSpeed's ``data_post_process``).
``SeqlenCurriculum`` picks the mode from the config - the ``seqlen_truncate``/``seqlen_reshape`` curriculum metric,
or the legacy top-level ``curriculum_learning`` seqlen warm-up - and reports the tokens actually in the batch so
the loop counts tokens right. The length is the batch's own difficulty: the curriculum sampler computes every
metric's difficulty (the seqlen one included) with the batch it draws, so a seqlen metric has one schedule, the
sampler's; only the legacy warm-up, whose batches no curriculum sampler draws, paces itself.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import torch

from megatron.data_efficiency.config import DataEfficiencyConfig
from megatron.data_efficiency.curriculum.scheduler import CustomSchedule, DifficultySchedule

__all__ = ["SeqlenMode", "LEGACY_SEQLEN", "seqlen_truncate", "seqlen_reshape", "SeqlenCurriculum"]

SeqlenMode = Literal["truncate", "reshape"]

GPTBatch = dict[str, Any]
"""``tokens``/``labels``/``position_ids`` int64 [b, s], ``loss_mask`` float [b, s], ``attention_mask`` bool
[1 or b, 1, s, s] (True = masked) or None."""


def _count(batch: GPTBatch) -> int:
    return int(batch["tokens"].numel())


def seqlen_truncate(batch: GPTBatch, seqlen: int) -> tuple[GPTBatch, int]:
    """Keep the first ``seqlen`` positions of every sample (its first seqlen+1 tokens).

    Returns:
        The new batch (views of the old tensors; other keys unchanged) and its number of input tokens (b x c).
    """
    s = batch["tokens"].shape[1]
    if seqlen >= s:
        return batch, _count(batch)
    if seqlen < 1:
        raise ValueError(f"curriculum sequence length must be >= 1, got {seqlen}")
    out = dict(batch)
    for key in ("tokens", "labels", "loss_mask", "position_ids"):
        if batch.get(key) is not None:
            out[key] = batch[key][:, :seqlen].contiguous()
    if batch.get("attention_mask") is not None:
        # A causal (or document-block) mask restricted to the first c positions is the mask of the first c tokens.
        out["attention_mask"] = batch["attention_mask"][..., :seqlen, :seqlen].contiguous()
    return out, _count(out)


def _rows(text: torch.Tensor, width: int, num_rows: int) -> torch.Tensor:
    """Megatron-DeepSpeed's row cut: full ``width`` chunks of every sample, then every sample's last chunk."""
    usable = (text.shape[1] // width) * width
    rows = torch.cat((text[:, :usable].reshape(-1, width), text[:, -width:]), dim=0)
    return rows[:num_rows]


def seqlen_reshape(batch: GPTBatch, seqlen: int) -> tuple[GPTBatch, int]:
    """Cut every sample's s+1 tokens into rows of ``seqlen``+1 tokens whose positions restart at 0.

    As in Megatron-DeepSpeed: rows are all full chunks of each sample followed by each sample's last (overlapping)
    chunk, keeping the first ``ceil(b (s+1) / (c+1))`` rows (minus one if that is odd and > 1), so the batch keeps
    about as many tokens as before with ~(s+1)/(c+1) times more rows. The loss mask follows its tokens.

    Returns:
        The new batch (``attention_mask`` becomes the causal [1, 1, c, c] corner) and its number of input tokens.

    Raises:
        NotImplementedError: per-sample attention masks (reset-attention-mask): rows would mix documents.
    """
    tokens, labels = batch["tokens"], batch["labels"]
    b, s = tokens.shape
    if seqlen >= s:
        return batch, _count(batch)
    if seqlen < 1:
        raise ValueError(f"curriculum sequence length must be >= 1, got {seqlen}")
    mask = batch.get("attention_mask")
    if mask is not None and mask.shape[0] != 1:
        raise NotImplementedError("seqlen_reshape needs a batch-shared causal attention mask [1, 1, s, s]; "
                                  "per-sample masks (reset_attention_mask) are not supported, use seqlen_truncate")
    width = seqlen + 1
    num_rows = math.ceil(b * (s + 1) / width)
    num_rows = min(num_rows, b * ((s + 1) // width) + b)
    if num_rows > 1 and num_rows % 2:
        num_rows -= 1  # Megatron-DeepSpeed keeps an even row count
    text = torch.cat((tokens, labels[:, -1:]), dim=1)  # the s+1 tokens of each sample
    rows = _rows(text, width, num_rows)
    out = dict(batch)
    out["tokens"], out["labels"] = rows[:, :-1].contiguous(), rows[:, 1:].contiguous()
    if batch.get("loss_mask") is not None:
        lm = batch["loss_mask"]
        # loss_mask[i] belongs to label text[i + 1]: shift it onto the token grid and cut it the same way.
        lm_text = torch.cat((torch.zeros_like(lm[:, :1]), lm), dim=1)
        out["loss_mask"] = _rows(lm_text, width, num_rows)[:, 1:].contiguous()
    if batch.get("position_ids") is not None:
        pos = torch.arange(seqlen, dtype=batch["position_ids"].dtype, device=tokens.device)
        out["position_ids"] = pos.unsqueeze(0).expand(num_rows, seqlen).contiguous()
    if mask is not None:
        out["attention_mask"] = mask[..., :seqlen, :seqlen].contiguous()
    return out, _count(out)


LEGACY_SEQLEN = "seqlen"
"""Difficulty key of the legacy top-level ``curriculum_learning`` seqlen warm-up (DeepSpeed's curriculum_type)."""


@dataclass(frozen=True)
class SeqlenCurriculum:
    """Sequence-length curriculum of a run: mode, the difficulty that sets the length, the model's seq_length.

    ``apply(batch, difficulties)`` shortens a batch to ``difficulties[metric]``: the difficulties the curriculum
    sampler drew the batch with, or for the legacy warm-up ``{"seqlen": warmup_difficulty(step)}`` at DeepSpeed's
    ``global_steps + 1`` (1 for the first optimizer step).
    """

    mode: SeqlenMode
    metric: str
    """``seqlen_truncate``/``seqlen_reshape`` (the sampler's metric) or ``seqlen`` (the legacy warm-up)."""
    seq_length: int
    warmup: DifficultySchedule | None = None
    """The legacy warm-up's pacing (None for a sampler metric: the sampler owns that schedule)."""

    @classmethod
    def from_config(cls, config: DataEfficiencyConfig, seq_length: int,
                    custom_schedules: Mapping[str, CustomSchedule] | None = None) -> SeqlenCurriculum | None:
        """The run's seqlen curriculum, or None when neither a seqlen metric nor the legacy warm-up is on.

        ``custom_schedules``: the legacy warm-up's pacing function under ``"seqlen"`` when its schedule_type is
        custom (a metric's custom schedule goes to the sampler).
        """
        cl = config.data_sampling.curriculum_learning
        name = cl.seqlen_metric if config.curriculum_enabled else None
        if name is not None:
            mode: SeqlenMode = "truncate" if name == "seqlen_truncate" else "reshape"
            return cls(mode=mode, metric=name, seq_length=seq_length)
        legacy = config.legacy_curriculum
        if legacy.enabled:
            warmup = DifficultySchedule.from_config(legacy, (custom_schedules or {}).get(LEGACY_SEQLEN))
            return cls(mode="truncate", metric=LEGACY_SEQLEN, seq_length=seq_length, warmup=warmup)
        return None

    def warmup_difficulties(self, step: int) -> dict[str, int]:
        """The legacy warm-up's difficulties at ``step``: ``{"seqlen": length}``."""
        if self.warmup is None:
            raise ValueError(f"the {self.metric} curriculum is paced by the curriculum sampler, which draws each "
                             "batch with its difficulties; only the legacy seqlen warm-up paces itself")
        return {LEGACY_SEQLEN: self.warmup.difficulty(step)}

    def seqlen(self, difficulties: Mapping[str, int]) -> int:
        """Sequence length for a batch drawn with ``difficulties`` (never above the model's seq_length)."""
        if self.metric not in difficulties:
            raise KeyError(f"the batch's difficulties {dict(difficulties)} lack the {self.metric!r} curriculum")
        return min(int(difficulties[self.metric]), self.seq_length)

    def apply(self, batch: GPTBatch, difficulties: Mapping[str, int]) -> tuple[GPTBatch, int]:
        """Shorten ``batch`` to its difficulty; returns the batch and its number of input tokens."""
        fn = seqlen_truncate if self.mode == "truncate" else seqlen_reshape
        return fn(batch, self.seqlen(difficulties))

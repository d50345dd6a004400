"""GPT batches: inputs/labels, loss mask, position ids and attention mask against Megatron's per-EOD loop."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from megatron.data.batch import build_gpt_batch
from megatron.data.config import DataConfig

EOD = 7


def megatron_reference(tokens: torch.Tensor, reset_position_ids: bool, reset_attention_mask: bool, eod_mask_loss: bool):
    """Megatron's get_ltor_masks_and_position_ids, one sample at a time with its loop over EOD positions."""
    b, s = tokens.shape
    attention = torch.tril(torch.ones((b, s, s))).view(b, 1, s, s)
    loss_mask = torch.ones((b, s))
    if eod_mask_loss:
        loss_mask[tokens == EOD] = 0.0
    position_ids = torch.arange(s, dtype=torch.long).unsqueeze(0).repeat(b, 1)
    if reset_position_ids or reset_attention_mask:
        for row in range(b):
            eod_index = position_ids[row, tokens[row] == EOD].clone()
            prev = 0
            for i in eod_index.tolist():
                if reset_attention_mask:
                    attention[row, 0, i + 1 :, : i + 1] = 0
                if reset_position_ids:
                    position_ids[row, i + 1 :] -= i + 1 - prev
                    prev = i + 1
    return attention < 0.5, loss_mask, position_ids


def _samples(rng, b, s):
    samples = []
    for k in range(b):
        tokens = rng.integers(0, 12, size=s + 1)
        if k == 0:
            tokens[[0, 3, 4, s - 1]] = EOD  # EOD first, adjacent EODs, EOD as the last input
        samples.append({"tokens": tokens, "dataset_id": k % 2, "dataset_sample_index": 100 + k})
    return samples


@pytest.mark.parametrize("reset_pos, reset_attn, eod_mask", list(itertools.product([False, True], repeat=3)))
def test_matches_megatron_loop(reset_pos, reset_attn, eod_mask):
    """Every combination of eod_mask_loss / reset_position_ids / reset_attention_mask gives the same loss mask,
    position ids and (bool, True = masked) attention mask as Megatron's loop, for samples with EODs anywhere."""
    cfg = DataConfig(eod_mask_loss=eod_mask, reset_position_ids=reset_pos, reset_attention_mask=reset_attn,
                     create_attention_mask_in_dataloader=True, seq_length=24)
    samples = _samples(np.random.default_rng(0), 5, 24)
    batch = build_gpt_batch(samples, EOD, cfg)
    text = torch.tensor(np.stack([x["tokens"] for x in samples]))
    np.testing.assert_array_equal(batch["tokens"], text[:, :-1])
    np.testing.assert_array_equal(batch["labels"], text[:, 1:])
    attention, loss_mask, position_ids = megatron_reference(text[:, :-1], reset_pos, reset_attn, eod_mask)
    assert torch.equal(batch["loss_mask"], loss_mask) and batch["loss_mask"].dtype == torch.float32
    assert torch.equal(batch["position_ids"], position_ids) and batch["position_ids"].dtype == torch.int64
    assert batch["attention_mask"].dtype == torch.bool and batch["attention_mask"].shape == (5, 1, 24, 24)
    assert torch.equal(batch["attention_mask"], attention)
    assert batch["dataset_id"].tolist() == [0, 1, 0, 1, 0]
    assert batch["dataset_sample_index"].tolist() == [100, 101, 102, 103, 104]


def test_attention_mask_only_on_request():
    """Without create_attention_mask_in_dataloader (and without reset_attention_mask) no mask is built; with
    reset_attention_mask one is built even unrequested, since a causal kernel cannot reproduce it."""
    samples = _samples(np.random.default_rng(1), 2, 8)
    assert build_gpt_batch(samples, EOD, DataConfig(seq_length=8))["attention_mask"] is None
    mask = build_gpt_batch(samples, EOD, DataConfig(seq_length=8, reset_attention_mask=True))["attention_mask"]
    assert mask is not None and mask.shape == (2, 1, 8, 8)
    batch = build_gpt_batch(samples, EOD, DataConfig(seq_length=8))
    assert batch["tokens"].dtype == torch.int64 and batch["labels"].shape == (2, 8)


def test_empty_batch_is_rejected():
    """An empty sample list raises ValueError."""
    with pytest.raises(ValueError, match="at least one sample"):
        build_gpt_batch([], EOD, DataConfig())

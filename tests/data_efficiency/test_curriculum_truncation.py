"""Seqlen curriculum: truncate/reshape equal batches built naively from the shortened token rows."""

from __future__ import annotations

import math

import pytest
import torch

from megatron.data_efficiency.config import parse_data_efficiency_config
from megatron.data_efficiency.curriculum.truncation import SeqlenCurriculum, seqlen_reshape, seqlen_truncate

EOD = 3


def _batch_from_text(text: torch.Tensor) -> dict:
    """Megatron's GPT batch of token rows [b, s+1]: causal mask, positions 0..s-1, loss masked at EOD labels."""
    tokens, labels = text[:, :-1], text[:, 1:]
    s = tokens.shape[1]
    return {
        "tokens": tokens.contiguous(),
        "labels": labels.contiguous(),
        "loss_mask": (labels != EOD).float(),
        "position_ids": torch.arange(s).unsqueeze(0).expand_as(tokens).contiguous(),
        "attention_mask": ~torch.tril(torch.ones(1, 1, s, s, dtype=torch.bool)),
    }


def _assert_batches_equal(got: dict, want: dict) -> None:
    assert set(got) == set(want)
    for k in want:
        assert torch.equal(got[k], want[k]), k


@pytest.fixture()
def text():
    g = torch.Generator().manual_seed(0)
    return torch.randint(0, 12, (3, 17), generator=g)  # b=3, s=16


@pytest.mark.parametrize("c", [1, 4, 7, 15])
def test_truncate_equals_batch_of_first_c_plus_1_tokens(text, c):
    """Truncation to c keeps the first c+1 tokens of every sample: same as building the batch from them."""
    got, n = seqlen_truncate(_batch_from_text(text), c)
    _assert_batches_equal(got, _batch_from_text(text[:, : c + 1]))
    assert n == 3 * c


def _naive_reshape_rows(text: torch.Tensor, c: int) -> torch.Tensor:
    """Megatron-DeepSpeed's rule row by row: full (c+1)-chunks of each sample, then each sample's last chunk."""
    b, s1 = text.shape
    w = c + 1
    rows = [text[i, k * w:(k + 1) * w] for i in range(b) for k in range(s1 // w)]
    rows += [text[i, s1 - w:] for i in range(b)]
    n = min(math.ceil(b * s1 / w), len(rows))
    if n > 1 and n % 2:
        n -= 1
    return torch.stack(rows[:n])


@pytest.mark.parametrize("c", [1, 2, 4, 5, 8, 15])
def test_reshape_equals_batch_of_naive_rows(text, c):
    """Reshape gives the batch of the naive row cut: tokens, labels, loss mask follow; positions restart at 0."""
    got, n = seqlen_reshape(_batch_from_text(text), c)
    want = _batch_from_text(_naive_reshape_rows(text, c))
    _assert_batches_equal(got, want)
    assert n == want["tokens"].numel()
    rows = want["tokens"].shape[0]
    assert abs(rows * (c + 1) - text.numel()) <= 2 * (c + 1)  # the rows hold about all of the batch's tokens


def test_full_length_is_a_no_op(text):
    """A difficulty at or above the sequence length leaves the batch untouched."""
    batch = _batch_from_text(text)
    for fn in (seqlen_truncate, seqlen_reshape):
        out, n = fn(batch, 16)
        assert out is batch and n == 48


def test_reshape_rejects_per_sample_masks(text):
    """Per-sample (document-reset) masks would be cut across documents: NotImplementedError, not a wrong mask."""
    batch = _batch_from_text(text)
    batch["attention_mask"] = batch["attention_mask"].expand(3, 1, 16, 16)
    with pytest.raises(NotImplementedError, match="seqlen_truncate"):
        seqlen_reshape(batch, 4)
    truncated, _ = seqlen_truncate(batch, 4)
    assert truncated["attention_mask"].shape == (3, 1, 4, 4)


def _metric(name):
    return {"difficulty_type": "value", "clustering_type": "single_cluster", "min_difficulty": 4,
            "max_difficulty": 32, "schedule_type": "fixed_linear",
            "schedule_config": {"total_curriculum_step": 10, "difficulty_step": 4}}


@pytest.mark.parametrize(("source", "mode"), [("seqlen_truncate", "truncate"), ("seqlen_reshape", "reshape"),
                                              ("legacy", "truncate")])
def test_seqlen_curriculum_from_config(text, source, mode):
    """The metric name (or the legacy block) picks the mode; a metric's length is the difficulty its batch was drawn
    with (one schedule: the sampler's), the legacy warm-up paces itself; lengths are capped at seq_length."""
    if source == "legacy":
        cfg = parse_data_efficiency_config({"curriculum_learning": {"enabled": True, "curriculum_type": "seqlen",
                                            **{k: v for k, v in _metric(source).items() if "type" not in k
                                               or k == "schedule_type"}}})
    else:
        cfg = parse_data_efficiency_config({"enabled": True, "data_sampling": {"enabled": True, "curriculum_learning": {
            "enabled": True, "curriculum_metrics": {source: _metric(source)}}}})
    cur = SeqlenCurriculum.from_config(cfg, seq_length=16)
    assert cur.mode == mode
    if source == "legacy":  # no sampler draws its batches: the warm-up paces itself
        assert [cur.seqlen(cur.warmup_difficulties(t)) for t in (1, 2, 3, 5, 10)] == [4, 8, 12, 16, 16]
    else:  # one schedule, the sampler's: the length is the difficulty the batch was drawn with
        assert cur.warmup is None and cur.metric == source
        with pytest.raises(ValueError, match="paced by the curriculum sampler"):
            cur.warmup_difficulties(1)
    assert [cur.seqlen({cur.metric: d}) for d in (4, 8, 16, 24)] == [4, 8, 16, 16]
    batch, n = cur.apply(_batch_from_text(text), {cur.metric: 8, "vocab_rarity": 3})
    assert batch["tokens"].shape[1] == 8 and n == batch["tokens"].numel()
    with pytest.raises(KeyError, match=cur.metric):
        cur.seqlen({"vocab_rarity": 3})
    assert SeqlenCurriculum.from_config(parse_data_efficiency_config({}), seq_length=16) is None

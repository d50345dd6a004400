"""Fine-tuning heads: shapes, what they keep of BERT, the multiple-choice reshape, ``BertModel.encode``/``pool``
against ``forward``, and TP=2 equal to TP=1 (weights, logits, gradients)."""

from __future__ import annotations

import pytest
import torch

from dist_utils import all_gather_cat, run_distributed
from megatron.model.bert import BertModel
from megatron.model.classification import BertClassifier, BertMultipleChoice
from megatron.model.config import TransformerConfig
from megatron.parallel.state import ParallelState

VOCAB, SEQ = 128, 12
# As tests/model/test_bert_tensor_parallel.py: TP only reorders sums (measured diffs ~1e-6); a wrong shard or a
# missed reduction moves values by >= 1e-3.
ATOL, RTOL = 5e-5, 1e-4


def _config(**overrides) -> TransformerConfig:
    return TransformerConfig.flavor("debug", hidden_dropout=0.0, attention_dropout=0.0, **overrides)


def _inputs(*shape: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Random tokens, a padded tail on every other sequence and types 0 then 1."""
    gen = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, VOCAB, (*shape, SEQ), generator=gen)
    lengths = torch.where(torch.arange(tokens[..., 0].numel()) % 2 == 0, SEQ, SEQ - 5).view(shape)
    mask = (torch.arange(SEQ) < lengths[..., None]).long()
    types = (torch.arange(SEQ) >= 4).long().expand_as(tokens) * mask
    return tokens, mask, types


def test_encode_and_pool_reproduce_forward():
    """``forward``'s binary logits equal ``binary_head(pool(encode(...)))``: the refactor kept BERT's outputs."""
    bert = BertModel(_config(), ParallelState.single(), VOCAB, seed=3)
    tokens, mask, types = _inputs(3)
    _, binary = bert(tokens, mask, types)
    hidden = bert.encode(tokens, mask, types)
    assert hidden.shape == (SEQ, 3, 64)
    torch.testing.assert_close(bert.binary_head(bert.pool(hidden)).float(), binary, rtol=0, atol=0)


def test_classifier_shapes_and_kept_modules():
    """The classifier outputs ``[b, C]`` fp32 (C=1 for regression), drops the LM and binary heads, keeps the pooler
    and needs it; its head is N(0, init_method_std) with a zero bias and depends on the seed."""
    cfg = _config()
    model = BertClassifier(BertModel(cfg, ParallelState.single(), VOCAB, seed=3), 3, seed=7)
    names = {n for n, _ in model.named_parameters()}
    assert not any(n.startswith(("bert.lm_head", "bert.binary_head")) for n in names)
    assert {"bert.pooler.weight", "head.weight", "head.bias"} <= names
    assert model.head.weight.std().item() == pytest.approx(cfg.init_method_std, rel=0.3)
    assert torch.count_nonzero(model.head.bias) == 0
    tokens, mask, types = _inputs(4)
    assert model(tokens, mask, types).shape == (4, 3)
    reg = BertClassifier(BertModel(cfg, ParallelState.single(), VOCAB, seed=3), 1, seed=8)
    assert reg(tokens, mask, types).dtype == torch.float32 and reg(tokens, mask, types).shape == (4, 1)
    assert not torch.equal(reg.head.weight, BertClassifier(BertModel(cfg, ParallelState.single(), VOCAB, seed=3),
                                                           1, seed=9).head.weight)
    with pytest.raises(ValueError, match="add_binary_head=True"):
        BertClassifier(BertModel(cfg, ParallelState.single(), VOCAB, add_binary_head=False), 2)


def test_multiple_choice_scores_each_choice():
    """``[b, 4, s]`` logits equal the head applied to each choice's sequence on its own (the reshape keeps the
    example/choice order)."""
    model = BertMultipleChoice(BertModel(_config(), ParallelState.single(), VOCAB, seed=3), seed=5).eval()
    tokens, mask, types = _inputs(2, 4)
    logits = model(tokens, mask, types)
    assert logits.shape == (2, 4)
    for b in range(2):
        for c in range(4):
            hidden = model.bert.encode(tokens[b, c:c + 1], mask[b, c:c + 1], types[b, c:c + 1])
            one = model.head(model.bert.pool(hidden))[0, 0]
            torch.testing.assert_close(logits[b, c], one, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match=r"\[b, choices, s\]"):
        model(tokens[0], mask[0], types[0])


def _compare(state: ParallelState, kind: str) -> None:
    cfg = _config()

    def build(pstate: ParallelState) -> torch.nn.Module:
        bert = BertModel(cfg, pstate, VOCAB, seed=11)
        return BertClassifier(bert, 3, seed=4) if kind == "classifier" else BertMultipleChoice(bert, seed=4)

    full, shard = build(ParallelState.single()), build(state)
    full_params = dict(full.named_parameters())
    gather = lambda p, t: all_gather_cat(t, p.partition_dim, state.tp_group) if getattr(  # noqa: E731
        p, "tensor_model_parallel", False) else t
    for name, p in shard.named_parameters():
        assert torch.equal(gather(p, p.detach()), full_params[name]), f"{kind}: init of {name}"
    inputs = _inputs(3) if kind == "classifier" else _inputs(2, 4)
    out_full, out_shard = full(*inputs), shard(*inputs)
    torch.testing.assert_close(out_shard, out_full, atol=ATOL, rtol=RTOL)
    labels = torch.tensor([0, 2, 1]) if kind == "classifier" else torch.tensor([3, 1])
    torch.nn.functional.cross_entropy(out_full, labels).backward()
    torch.nn.functional.cross_entropy(out_shard, labels).backward()
    for name, p in shard.named_parameters():
        torch.testing.assert_close(gather(p, p.grad), full_params[name].grad, atol=ATOL, rtol=RTOL,
                                   msg=f"{kind}: grad {name}")


def _tp_body(rank: int, world_size: int) -> None:
    state = ParallelState.build(2)
    for kind in ("classifier", "multiple_choice"):
        _compare(state, kind)


@pytest.mark.distributed
def test_heads_tp2_equal_tp1():
    """At TP=2 both heads start from the same weights as one process, give the same logits and the same gradients
    (the head and pooler are replicated, seeded by name)."""
    run_distributed(_tp_body, 2)

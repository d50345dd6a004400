"""BertModel at TP=2 against the unsharded model built from the same seed: weights, per-token loss, binary logits,
vocab-parallel logits and every gradient."""

from __future__ import annotations

import pytest
import torch

from dist_utils import all_gather_cat, run_distributed
from megatron.model.bert import BertModel
from megatron.model.config import TransformerConfig
from megatron.parallel.state import ParallelState

VOCAB, BATCH, SEQ = 128, 3, 16
CASES = {  # name: (config overrides, BertModel keywords)
    "binary_head": ({}, dict(add_binary_head=True, num_tokentypes=2)),
    "no_binary_head_rope": (dict(position_embedding_type="rope"), dict(add_binary_head=False, num_tokentypes=0)),
}
# fp32, 4 layers. The sharded model computes the same sums split into per-rank partial GEMMs plus all-reduces, so
# it differs from the unsharded one only by summation order: measured max |diff| <= 5e-6 on gradients whose entries
# reach ~10 (about 5e-7 of the largest entry). 5e-5 absolute / 1e-4 relative is >10x that, while a wrong shard, a
# missed reduction or an unsharded output bias moves values by >= 1e-3.
ATOL, RTOL = 5e-5, 1e-4


def _batch() -> dict[str, torch.Tensor]:
    """Random tokens and types, padded tails of 0 / 4 / 9 tokens, labels at about a third of the real positions."""
    gen = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, VOCAB, (BATCH, SEQ), generator=gen)
    padding_mask = (torch.arange(SEQ)[None, :] < torch.tensor([[SEQ], [SEQ - 4], [SEQ - 9]])).long()
    types = torch.randint(0, 2, (BATCH, SEQ), generator=gen) * padding_mask
    predicted = (torch.rand(BATCH, SEQ, generator=gen) < 0.35) & padding_mask.bool()
    labels = torch.where(predicted, torch.randint(0, VOCAB, (BATCH, SEQ), generator=gen), -1)
    return {"tokens": tokens, "padding_mask": padding_mask, "tokentype_ids": types, "lm_labels": labels}


def _gathered(p: torch.Tensor, tensor: torch.Tensor, group) -> torch.Tensor:
    """The full tensor behind ``tensor`` (``p`` itself or its grad) if ``p`` is TP-split, else ``tensor``."""
    return all_gather_cat(tensor, p.partition_dim, group) if getattr(p, "tensor_model_parallel", False) else tensor


def _compare_case(name: str, state: ParallelState) -> None:
    overrides, kwargs = CASES[name]
    cfg = TransformerConfig.flavor("debug", hidden_dropout=0.0, attention_dropout=0.0, **overrides)
    full = BertModel(cfg, ParallelState.single(), VOCAB, seed=5, **kwargs)
    shard = BertModel(cfg, state, VOCAB, seed=5, **kwargs)
    group = state.tp_group
    full_params = dict(full.named_parameters())
    assert full_params.keys() == dict(shard.named_parameters()).keys(), name
    for pname, p in shard.named_parameters():  # TP-independent initialization, exactly
        assert torch.equal(_gathered(p, p.detach(), group), full_params[pname]), f"{name}: init of {pname}"

    batch = _batch()
    if not kwargs["num_tokentypes"]:
        batch["tokentype_ids"] = None
    (loss_full, binary_full), (loss_shard, binary_shard) = full(**batch), shard(**batch)
    torch.testing.assert_close(loss_shard, loss_full, atol=ATOL, rtol=RTOL, msg=f"{name}: loss")
    objective_full = (loss_full * (batch["lm_labels"] >= 0)).sum()  # masked LM sum, as training does
    objective_shard = (loss_shard * (batch["lm_labels"] >= 0)).sum()
    if binary_full is not None:
        torch.testing.assert_close(binary_shard, binary_full, atol=ATOL, rtol=RTOL, msg=f"{name}: binary")
        is_random = torch.tensor([0, 1, 1])
        objective_full = objective_full + torch.nn.functional.cross_entropy(binary_full, is_random)
        objective_shard = objective_shard + torch.nn.functional.cross_entropy(binary_shard, is_random)
    else:
        assert binary_shard is None
    objective_full.backward()
    objective_shard.backward()
    for pname, p in shard.named_parameters():
        torch.testing.assert_close(_gathered(p, p.grad, group), full_params[pname].grad, atol=ATOL, rtol=RTOL,
                                   msg=f"{name}: grad {pname}")

    with torch.no_grad():
        logits, _ = shard(batch["tokens"], batch["padding_mask"], batch["tokentype_ids"])
        assert logits.shape == (BATCH, SEQ, VOCAB // state.tp_size)
        full_logits, _ = full(batch["tokens"], batch["padding_mask"], batch["tokentype_ids"])
        torch.testing.assert_close(all_gather_cat(logits, -1, group), full_logits, atol=ATOL, rtol=RTOL)


def _bert_tp_body(rank: int, world_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    state = ParallelState.build(world_size)
    for name in CASES:
        _compare_case(name, state)
    # With dropout on (default stream for hidden dropout, per-rank streams for attention dropout), both TP ranks
    # must still compute bitwise-identical losses and binary logits.
    torch.manual_seed(99)
    model = BertModel(TransformerConfig.flavor("debug"), state, VOCAB, seed=5)
    loss, binary = model(**_batch())
    return loss.detach(), binary.detach()


@pytest.mark.distributed
def test_bert_tp2_matches_unsharded_model():
    """With and without the binary head, the TP=2 BERT from the same seed has exactly the unsharded weights and
    matches its per-token loss, binary logits, vocab-parallel logits and every re-assembled gradient (the LM-head
    output bias is split over the vocabulary, the replicated heads get identical full grads); with dropout on, both
    TP ranks compute bitwise-identical outputs."""
    (loss0, binary0), (loss1, binary1) = run_distributed(_bert_tp_body, 2)
    assert torch.equal(loss0, loss1) and torch.equal(binary0, binary1)

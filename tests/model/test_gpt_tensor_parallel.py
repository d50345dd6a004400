"""GPTModel at TP=2 against the unsharded model built from the same seed: weights, loss, logits and every gradient."""

from __future__ import annotations

import pytest
import torch

from dist_utils import all_gather_cat, run_distributed
from megatron.model.config import TransformerConfig
from megatron.model.gpt import GPTModel
from megatron.parallel.state import ParallelState

VOCAB, BATCH, SEQ = 128, 2, 16
CASES = {
    "learned_tied": {},
    "rope_untied": dict(position_embedding_type="rope", rotary_percent=0.5, untie_embeddings_and_output_weights=True),
    "explicit_mask_post_ln_no_bias": dict(apply_residual_connection_post_layernorm=True, add_bias_linear=False),
    # Llama-style: RMSNorm, SwiGLU, 2 key/value groups for 4 heads (one per rank), rope, no biases, untied output.
    "llama_gqa": dict(normalization="RMSNorm", swiglu=True, group_query_attention=True, num_query_groups=2,
                      position_embedding_type="rope", add_bias_linear=False, untie_embeddings_and_output_weights=True),
    # SwiGLU's stacked gate/up bias and grouped keys/values shared by explicit repetition (the masked path).
    "explicit_mask_gqa_swiglu_bias": dict(normalization="RMSNorm", swiglu=True, num_query_groups=2),
}
# fp32, 4 layers. The sharded model computes the same sums split into per-rank partial GEMMs plus all-reduces, so
# it differs from the unsharded one only by summation order: measured max |diff| is ~5e-7 on the per-token loss
# (~4.9) and <= 4e-6 on gradients whose entries reach ~10 (about 1e-6 of the largest entry). 5e-5 absolute /
# 1e-4 relative is >10x that, while a wrong shard, a missed reduction or mismatched dropout moves values by >= 1e-3.
ATOL, RTOL = 5e-5, 1e-4


def _batch() -> dict:
    gen = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, VOCAB, (BATCH, SEQ + 1), generator=gen)
    return {"tokens": tokens[:, :-1], "labels": tokens[:, 1:]}


def _document_mask() -> tuple[torch.Tensor, torch.Tensor]:
    """Causal mask and position ids with a document boundary after token 6 (Megatron's reset_attention_mask)."""
    mask = torch.ones(SEQ, SEQ).triu(1).bool().repeat(BATCH, 1, 1, 1)  # [b, 1, s, s], True = masked
    mask[:, :, 7:, :7] = True
    position_ids = torch.cat([torch.arange(7), torch.arange(SEQ - 7)]).repeat(BATCH, 1)
    return mask, position_ids


def _compare_case(name: str, state: ParallelState, device: str = "cpu") -> None:
    cfg = TransformerConfig.flavor("debug", hidden_dropout=0.0, attention_dropout=0.0, **CASES[name])
    full = GPTModel(cfg, ParallelState.single(), VOCAB, seed=5).to(device)
    shard = GPTModel(cfg, state, VOCAB, seed=5).to(device)
    group = state.tp_group
    full_params = dict(full.named_parameters())
    assert full_params.keys() == dict(shard.named_parameters()).keys(), name
    for pname, p in shard.named_parameters():  # TP-independent initialization, exactly
        whole = all_gather_cat(p.detach(), p.partition_dim, group) if getattr(p, "tensor_model_parallel", False) else p
        assert torch.equal(whole, full_params[pname]), f"{name}: init of {pname}"

    batch = _batch()
    if name.startswith("explicit_mask"):
        batch["attention_mask"], batch["position_ids"] = _document_mask()
    batch = {k: v.to(device) for k, v in batch.items()}
    loss_full, loss_shard = full(**batch), shard(**batch)
    torch.testing.assert_close(loss_shard, loss_full, atol=ATOL, rtol=RTOL, msg=f"{name}: loss")
    weights = torch.linspace(0.0, 1.0, BATCH * SEQ, device=device).view(BATCH, SEQ)  # a loss mask-like weighting
    (loss_full * weights).sum().backward()
    (loss_shard * weights).sum().backward()
    for pname, p in shard.named_parameters():
        grad = all_gather_cat(p.grad, p.partition_dim, group) if getattr(p, "tensor_model_parallel", False) else p.grad
        torch.testing.assert_close(grad, full_params[pname].grad, atol=ATOL, rtol=RTOL, msg=f"{name}: grad {pname}")

    with torch.no_grad():
        logits = shard(batch["tokens"])
        assert logits.shape == (BATCH, SEQ, VOCAB // state.tp_size)
        torch.testing.assert_close(all_gather_cat(logits, -1, group), full(batch["tokens"]), atol=ATOL, rtol=RTOL)


def _gpt_tp_body(rank: int, world_size: int) -> torch.Tensor:
    state = ParallelState.build(world_size)
    for name in CASES:
        _compare_case(name, state)
    # With dropout on, hidden dropout (default stream, seeded alike) must keep the replicated residual stream equal
    # on both TP ranks, while attention dropout draws per-rank masks: the losses must still agree bitwise.
    torch.manual_seed(99)
    model = GPTModel(TransformerConfig.flavor("debug"), state, VOCAB, seed=5)
    return model(**_batch()).detach()


@pytest.mark.distributed
def test_gpt_tp2_matches_unsharded_model():
    """For learned/tied, rope/untied, explicit-mask/post-LN/no-bias and Llama-style (RMSNorm, SwiGLU, grouped-query
    attention) GPTs, the TP=2 model from the same seed has exactly the unsharded weights and matches its loss,
    vocab-parallel logits and every re-assembled gradient; with dropout on, both TP ranks compute bitwise-identical
    per-token losses."""
    loss_rank0, loss_rank1 = run_distributed(_gpt_tp_body, 2)
    assert torch.equal(loss_rank0, loss_rank1)


def _gpt_tp_body_cuda(rank: int, world_size: int) -> None:
    _compare_case("learned_tied", ParallelState.build(world_size), device=f"cuda:{rank}")


@pytest.mark.gpu
@pytest.mark.distributed
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs 2 GPUs for NCCL TP=2")
def test_gpt_tp2_matches_unsharded_model_nccl():
    """The TP=2 comparison with the NCCL backend and CUDA tensors (one GPU per rank)."""
    run_distributed(_gpt_tp_body_cuda, 2, backend="nccl")

"""TransformerLayer's shape contract for random-LTD: running on a sorted subset of tokens (with the sliced mask and
rotary angles) equals the full-sequence layer with the dropped tokens masked out."""

from __future__ import annotations

import pytest
import torch

from megatron.model.config import TransformerConfig
from megatron.model.transformer import TransformerLayer, rotary_embedding
from megatron.parallel.random import RNGStatesTracker
from megatron.parallel.state import ParallelState

S, B, KEEP = 12, 3, 7
# fp32. The subset run and the masked full run add the same non-zero terms; masked keys contribute exact zeros but
# change the length (and so the blocking) of the softmax/matmul reductions: rounding-level differences, ~1e-7.
ATOL, RTOL = 1e-5, 1e-5


def _layer(position_embedding_type: str) -> TransformerLayer:
    cfg = TransformerConfig.flavor("debug", position_embedding_type=position_embedding_type)
    state = ParallelState.single()
    layer = TransformerLayer(cfg, state, 1, rng_tracker=RNGStatesTracker.build(1, state), init_seed=3)
    return layer.eval()  # dropout off: the comparison is deterministic


def _kept_indices(gen: torch.Generator) -> torch.Tensor:
    """``[B, KEEP]`` sorted random positions per sample (random-LTD's token choice)."""
    return torch.stack([torch.randperm(S, generator=gen)[:KEEP].sort().values for _ in range(B)])


def _gather_tokens(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """``x [S, B|1, ...]`` -> ``[KEEP, B, ...]`` at per-sample positions ``idx [B, KEEP]``."""
    x = x.expand(S, B, *x.shape[2:])
    gather_idx = idx.T.reshape(KEEP, B, *([1] * (x.dim() - 2))).expand(KEEP, B, *x.shape[2:])
    return x.gather(0, gather_idx)


@pytest.mark.parametrize("pe", ["learned_absolute", "rope"])
@pytest.mark.parametrize("causal", [True, False])
def test_layer_on_token_subset_equals_masked_full_sequence(pe, causal):
    """layer(hidden[kept], rotary[kept], is_causal) equals layer(hidden, mask hiding dropped keys, rotary)[kept],
    for causal and bidirectional attention, learned and rotary positions; and an explicit top-left causal mask slice
    gives the same result as is_causal."""
    gen = torch.Generator().manual_seed(0)
    layer = _layer(pe)
    hidden = torch.randn(S, B, 64, generator=gen)
    idx = _kept_indices(gen)
    rotary = rotary_embedding(torch.arange(S).unsqueeze(0), layer.self_attention.kv_channels) if pe == "rope" else None

    dropped = torch.ones(B, S, dtype=torch.bool)
    dropped[torch.arange(B).unsqueeze(1), idx] = False
    # Hide dropped keys from every query except itself (keeps dropped queries' rows non-empty; they are ignored).
    mask = dropped[:, None, None, :] & ~torch.eye(S, dtype=torch.bool)
    if causal:
        mask = mask | torch.ones(S, S, dtype=torch.bool).triu(1)
    full = layer(hidden, attention_mask=mask, rotary_pos_emb=rotary)
    sub_rotary = None if rotary is None else _gather_tokens(rotary, idx)
    sub = layer(_gather_tokens(hidden, idx), attention_mask=None, rotary_pos_emb=sub_rotary, is_causal=causal)
    assert sub.shape == (KEEP, B, 64)
    torch.testing.assert_close(sub, _gather_tokens(full, idx), atol=ATOL, rtol=RTOL)
    if causal:
        sliced_mask = torch.ones(S, S, dtype=torch.bool).triu(1)[:KEEP, :KEEP].expand(B, 1, KEEP, KEEP)
        explicit = layer(_gather_tokens(hidden, idx), attention_mask=sliced_mask, rotary_pos_emb=sub_rotary)
        torch.testing.assert_close(explicit, sub, atol=ATOL, rtol=RTOL)


def test_layer_rejects_mismatched_rotary_and_mask():
    """Angles or a mask for the full sequence passed with a token subset are a ValueError naming both lengths."""
    layer = _layer("rope")
    hidden = torch.randn(5, 1, 64)
    rotary = rotary_embedding(torch.arange(S).unsqueeze(0), 16)
    with pytest.raises(ValueError, match=r"rotary_pos_emb covers 12 tokens but hidden_states has 5"):
        layer(hidden, rotary_pos_emb=rotary)
    with pytest.raises(ValueError, match=r"attention_mask shape \(1, 1, 12, 12\) does not match 5 tokens"):
        layer(hidden, attention_mask=torch.zeros(1, 1, S, S, dtype=torch.bool))

"""Llama-style options of the model room: RMSNorm, SwiGLU and grouped-query attention.

Pins the config rules (Megatron-LM's SwiGLU ffn size, both projects' spellings, the query-group defaults and the
errors), the FLOP formula with the SwiGLU and GQA terms, the meaning of the fused QKV group layout (a GQA model is an
MHA model whose key/value heads repeat per group), that RMSNorm is torch's and the parameters are what Megatron
holds. TP=2 equality, megatron-core parity, random-LTD and compilation are covered by the neighbouring test files
(``test_gpt_tensor_parallel.py``, ``test_megatron_core_parity.py``, ``tests/data_efficiency/test_random_ltd.py``,
``test_torch_compile.py``), each with a Llama-style case.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from megatron.model.config import TransformerConfig, num_floating_point_operations
from megatron.model.gpt import GPTModel, check_tensor_parallel_divisibility
from megatron.parallel.state import ParallelState

VOCAB = 128
LLAMA = dict(normalization="RMSNorm", swiglu=True, group_query_attention=True, num_query_groups=2,
             position_embedding_type="rope", add_bias_linear=False, untie_embeddings_and_output_weights=True)


def _cfg(**overrides) -> TransformerConfig:
    return TransformerConfig.flavor("debug", hidden_dropout=0.0, attention_dropout=0.0, **overrides)


@pytest.mark.parametrize("hidden,ffn", [(64, 128), (32, 64), (2048, 5440), (4096, 10880)])
def test_swiglu_default_ffn_size_is_megatron_lms(hidden, ffn):
    """Without ffn_hidden_size, SwiGLU uses int(4h * 2/3 / 64) * 64 (Megatron-LM's arguments.py: the parameters of
    a 4h GELU MLP, a multiple of 64); an explicit size wins and GELU keeps 4h."""
    heads = hidden // 16
    cfg = TransformerConfig(num_layers=2, hidden_size=hidden, num_attention_heads=heads, max_position_embeddings=8,
                            swiglu=True)
    assert cfg.ffn_hidden_size == ffn
    assert TransformerConfig(num_layers=2, hidden_size=hidden, num_attention_heads=heads, max_position_embeddings=8,
                             swiglu=True, ffn_hidden_size=11008).ffn_hidden_size == 11008
    assert _cfg(hidden_size=hidden, num_attention_heads=heads).ffn_hidden_size == 4 * hidden


def test_spellings_and_query_group_defaults():
    """Megatron-DeepSpeed's lowercase norm names become Megatron-LM's; group_query_attention alone means one
    key/value head (Megatron-LM's default); a group count alone turns grouped-query attention on (Megatron-DeepSpeed's
    --num-key-value-heads), unless it equals the head count, which is plain attention with no groups recorded."""
    assert _cfg(normalization="rmsnorm").normalization == "RMSNorm"
    assert _cfg(normalization="layernorm").normalization == "LayerNorm"
    mqa = _cfg(group_query_attention=True)
    assert (mqa.num_query_groups, mqa.query_groups) == (1, 1)
    implied = _cfg(num_query_groups=2)
    assert (implied.group_query_attention, implied.query_groups) == (True, 2)
    mha = _cfg(num_query_groups=4)
    assert (mha.group_query_attention, mha.num_query_groups, mha.query_groups) == (False, None, 4)
    # A resolved config rebuilt from its fields (config.json) is the same config.
    resolved = _cfg(**LLAMA)
    assert TransformerConfig(**vars(resolved)) == resolved


@pytest.mark.parametrize("kwargs,message", [
    (dict(group_query_attention=True, num_query_groups=3),
     r"num_query_groups \(3\) must be >= 1 and divide num_attention_heads \(4\)"),
    (dict(group_query_attention=True, num_query_groups=0), r"num_query_groups \(0\) must be >= 1"),
    (dict(swiglu=True, hidden_size=16), r"swiglu derives ffn_hidden_size = int\(4 \* hidden_size \(16\).* = 0; set "
                                        r"ffn_hidden_size explicitly"),
    (dict(normalization="L2Norm"), r"normalization must be LayerNorm or RMSNorm, got 'L2Norm'"),
])
def test_bad_modern_configs_name_the_fields(kwargs, message):
    """Group counts that do not divide the heads, a SwiGLU size that rounds to zero and unknown norms are a
    ValueError naming the field and the values."""
    with pytest.raises(ValueError, match=message):
        _cfg(**kwargs)


def test_query_groups_must_split_over_tensor_parallel_ranks():
    """Each TP rank holds whole key/value groups: TP must divide num_query_groups (checked before any layer is
    built), while heads alone dividing is not enough."""
    cfg = _cfg(group_query_attention=True, num_query_groups=2)
    check_tensor_parallel_divisibility(cfg, VOCAB, 2)
    with pytest.raises(ValueError, match=r"num_query_groups \(2\) must be divisible by tensor_model_parallel_size "
                                         r"\(4\)"):
        check_tensor_parallel_divisibility(cfg, VOCAB, 4)


def test_flops_count_swiglu_and_grouped_query_attention():
    """Megatron-LM's formula 12 B s L h^2 [(1 + g/n + s/h) q/h + 3/2 f/h + V/(2Lh)] for a SwiGLU, GQA model, and
    per-layer token counts (random-LTD) scale each layer's GEMMs linearly and its attention quadratically."""
    cfg = TransformerConfig(num_layers=16, hidden_size=2048, num_attention_heads=32, max_position_embeddings=2048,
                            swiglu=True, ffn_hidden_size=8192, group_query_attention=True, num_query_groups=8)
    B, s, V, L, h, n, g, f = 4, 2048, 128256, 16, 2048, 32, 8, 8192
    closed = 12 * B * s * L * h**2 * ((1 + g / n + s / h) + 1.5 * f / h + V / (2 * L * h))
    assert num_floating_point_operations(cfg, B, s, V) == pytest.approx(closed, rel=1e-12)
    lengths = [s] + [512] * 14 + [s]
    per_layer = [12 * B * (t * h * (h * (1 + g / n) + 1.5 * f) + t * t * h) for t in lengths]
    assert num_floating_point_operations(cfg, B, s, V, lengths) == pytest.approx(sum(per_layer) + 6 * B * s * h * V,
                                                                                  rel=1e-12)


def test_llama_parameters_are_megatrons():
    """RMSNorm layers are torch's (weight only, the configured epsilon); the fused QKV has (n + 2g) * d rows; the
    SwiGLU up projection stacks gate and up; nothing has a bias; the parameter count is Megatron's."""
    cfg = _cfg(**LLAMA, layernorm_epsilon=1e-6)
    model = GPTModel(cfg, ParallelState.single(), VOCAB)
    layer = model.layers[0]
    assert isinstance(layer.input_layernorm, nn.RMSNorm) and layer.input_layernorm.eps == 1e-6
    assert isinstance(model.decoder.final_layernorm, nn.RMSNorm)
    shapes = {n: tuple(p.shape) for n, p in layer.named_parameters()}
    assert shapes == {"input_layernorm.weight": (64,), "self_attention.query_key_value.weight": ((4 + 2 * 2) * 16, 64),
                      "self_attention.dense.weight": (64, 64), "post_attention_layernorm.weight": (64,),
                      "mlp.dense_h_to_4h.weight": (2, 128, 64), "mlp.dense_4h_to_h.weight": (64, 128)}
    h, f, L, kv = 64, 128, 4, 2 * 16
    expected = L * (2 * h + h * (h + 2 * kv) + h * h + 3 * h * f) + h + 2 * VOCAB * h
    assert sum(p.numel() for p in model.parameters()) == expected


def _as_mha_state(gqa: GPTModel, cfg: TransformerConfig) -> dict[str, torch.Tensor]:
    """The GQA model's weights as an MHA model's: per head i the rows [q_i; k_g; v_g] of its group g = i // (n/g)."""
    n, g, d = cfg.num_attention_heads, cfg.num_query_groups, cfg.kv_channels
    state = {}
    for name, t in gqa.state_dict().items():
        if name.endswith("query_key_value.weight"):
            groups = t.view(g, n // g + 2, d, -1)  # per group: its query heads, then k, then v
            q, k, v = groups[:, :n // g], groups[:, n // g:n // g + 1], groups[:, n // g + 1:]
            t = torch.cat([q, k.expand_as(q), v.expand_as(q)], dim=2).reshape(3 * n * d, -1)
        state[name] = t
    return state


@pytest.mark.parametrize("masked", [False, True], ids=["causal", "explicit_mask"])
def test_grouped_query_attention_is_attention_with_shared_key_value_heads(masked):
    """A GQA model computes exactly the MHA model whose query head i reads the keys/values of group i // (n/g): the
    fused QKV rows are laid out per group [q heads; k; v], with SDPA's own GQA (causal) and with explicitly repeated
    key/value heads (masked) alike."""
    gqa_cfg = _cfg(**LLAMA)
    mha_cfg = _cfg(**{**LLAMA, "group_query_attention": False, "num_query_groups": None})
    gqa = GPTModel(gqa_cfg, ParallelState.single(), VOCAB, seed=3).eval()
    with torch.no_grad():
        for p in gqa.parameters():  # large weights, so attention (where the grouping acts) dominates the logits
            p.mul_(10.0)
    mha = GPTModel(mha_cfg, ParallelState.single(), VOCAB, seed=3).eval()
    mha.load_state_dict(_as_mha_state(gqa, gqa_cfg))
    tokens = torch.randint(0, VOCAB, (2, 16), generator=torch.Generator().manual_seed(0))
    mask = torch.ones(16, 16, dtype=torch.bool).triu(1)[None, None] if masked else None
    with torch.no_grad():
        got, expected = gqa(tokens, attention_mask=mask), mha(tokens, attention_mask=mask)
        shuffled = GPTModel(mha_cfg, ParallelState.single(), VOCAB, seed=3).eval()
        state = _as_mha_state(gqa, gqa_cfg)
        for name in [k for k in state if k.endswith("query_key_value.weight")]:  # heads 0 and 3 swap groups
            rows = state[name].view(4, 3, 16, -1).clone()
            rows[[0, 3], 1:] = rows[[3, 0], 1:]
            state[name] = rows.reshape(state[name].shape)
        shuffled.load_state_dict(state)
        control = shuffled(tokens, attention_mask=mask)
    # fp32, the same sums in another kernel order: ~1e-6 here; a wrong group assignment moves logits by > 1e-2.
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)
    assert (control - expected).abs().max() > 1e-2

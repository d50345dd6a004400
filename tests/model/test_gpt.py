"""GPTModel on one process: recomputation is exact, rope vs learned positions, the layer-wrapping hook, half
precision, initialization statistics and configuration errors."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from megatron.model.config import TransformerConfig
from megatron.model.gpt import GPTModel
from megatron.parallel.state import ParallelState

VOCAB = 128


def _batch(b: int = 2, s: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, VOCAB, (b, s + 1), generator=gen)
    return tokens[:, :-1], tokens[:, 1:]


def _model(**overrides) -> GPTModel:
    return GPTModel(TransformerConfig.flavor("debug", **overrides), ParallelState.single(), VOCAB, seed=7)


def _loss_and_grads(model: GPTModel) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    tokens, labels = _batch()
    torch.manual_seed(123)  # default stream (hidden dropout) starts alike for every variant
    loss = model(tokens, labels=labels)
    loss.mean().backward()
    return loss.detach(), {n: p.grad for n, p in model.named_parameters()}


@pytest.mark.parametrize(
    "recompute",
    [dict(recompute_granularity="selective"), dict(recompute_granularity="full"),
     dict(recompute_granularity="full", recompute_num_layers=3),
     dict(recompute_granularity="full", recompute_method="block", recompute_num_layers=2)],
    ids=["selective", "full-uniform-1", "full-uniform-3", "full-block-2"],
)
@pytest.mark.parametrize("pe", ["learned_absolute", "rope"])
def test_recomputation_is_bitwise_identical_with_dropout(recompute, pe):
    """With hidden and attention dropout at 0.3, every recomputation mode reproduces the loss and all gradients of
    the plain model bit for bit (the RNG-aware checkpoint replays the default and model-parallel streams)."""
    drop = dict(hidden_dropout=0.3, attention_dropout=0.3, position_embedding_type=pe)
    ref_loss, ref_grads = _loss_and_grads(_model(**drop))
    loss, grads = _loss_and_grads(_model(**drop, **recompute))
    assert torch.equal(loss, ref_loss)
    for name, grad in ref_grads.items():
        assert torch.equal(grads[name], grad), name
    eval_model = _model(**drop).eval()  # control: dropout really is active in training mode
    assert not torch.equal(eval_model(*_batch()[:1], labels=_batch()[1]).detach(), ref_loss)


def test_rope_depends_on_relative_positions_only():
    """Shifting all position ids by a constant leaves a rope model's loss unchanged (up to rounding of the angles)
    but changes a learned-absolute model's loss."""
    tokens, labels = _batch()
    shifted = torch.arange(16).unsqueeze(0) + 37
    rope = _model(position_embedding_type="rope", hidden_dropout=0.0, attention_dropout=0.0).eval()
    learned = _model(hidden_dropout=0.0, attention_dropout=0.0).eval()
    with torch.no_grad():
        # fp32 angles up to ~52 rad: sin/cos rounding ~1e-6 relative; 1e-4 on a loss of ~4.9 is well above that.
        torch.testing.assert_close(rope(tokens, shifted, labels=labels), rope(tokens, labels=labels), atol=1e-4, rtol=0)
        assert (learned(tokens, shifted, labels=labels) - learned(tokens, labels=labels)).abs().max() > 1e-3
        assert not torch.allclose(rope(tokens, labels=labels), learned(tokens, labels=labels))


class _Recorder(nn.Module):
    """A random-LTD-style wrapper: ``forward(hidden_states, **kwargs)``, records what the block passed."""

    def __init__(self, layer: nn.Module) -> None:
        super().__init__()
        self.layer, self.seen = layer, []

    def forward(self, hidden_states, **kwargs):
        self.seen.append({k: (None if v is None or isinstance(v, bool) else tuple(v.shape)) if k != "is_causal" else v
                          for k, v in kwargs.items()})
        return self.layer(hidden_states, **kwargs)


@pytest.mark.parametrize("recompute", [None, "full"])
def test_layers_can_be_wrapped_from_outside(recompute):
    """model.layers is decoder.layers; replacing an entry by a wrapper taking (hidden_states, **kwargs) works with
    and without full recomputation, receives mask, full-sequence rotary angles and is_causal as keywords, and does
    not change the result."""
    tokens, labels = _batch()
    model = _model(position_embedding_type="rope", hidden_dropout=0.0, attention_dropout=0.0,
                   recompute_granularity=recompute)
    assert model.layers is model.decoder.layers and isinstance(model.layers, nn.ModuleList)
    before = model(tokens, labels=labels)
    model.layers[1] = _Recorder(model.layers[1])
    after = model(tokens, labels=labels)
    after.mean().backward()
    assert torch.equal(before, after)
    call = model.layers[1].seen[0]
    assert call == {"attention_mask": None, "rotary_pos_emb": (16, 1, 1, 16), "is_causal": True}
    assert model.layers[1].layer.self_attention.query_key_value.weight.grad is not None


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_cast(dtype):
    """After .to(dtype) the model runs forward and backward, returns fp32 per-token losses close to the fp32
    model's, and keeps parameters and grads in that dtype."""
    tokens, labels = _batch()
    model = _model(hidden_dropout=0.0, attention_dropout=0.0)
    with torch.no_grad():
        ref = model(tokens, labels=labels)
    half = model.to(dtype)
    loss = half(tokens, labels=labels)
    loss.mean().backward()
    assert loss.dtype == torch.float32 and loss.shape == (2, 16)
    torch.testing.assert_close(loss, ref, atol=0.05, rtol=0.02)  # 8 (bf16) / 11 (fp16) mantissa bits over 4 layers
    assert all(p.dtype == dtype and p.grad.dtype == dtype for p in half.parameters())
    assert half.word_embeddings.weight.tensor_model_parallel  # TP tags survive the cast


def test_initialization_follows_megatron():
    """Embeddings, QKV and fc1 ~ N(0, std); attention output and fc2 ~ N(0, std/sqrt(2L)); biases 0; norms 1;
    different layers get different weights; the same seed gives the same model."""
    model = _model()
    std = model.config.init_method_std
    layer = model.layers[0]
    scaled = std / math.sqrt(2 * model.config.num_layers)
    for weight, expected in [(model.word_embeddings.weight, std), (model.position_embeddings.weight, std),
                             (layer.self_attention.query_key_value.weight, std), (layer.mlp.dense_h_to_4h.weight, std),
                             (layer.self_attention.dense.weight, scaled), (layer.mlp.dense_4h_to_h.weight, scaled)]:
        # >= 4096 samples: the sample std is within ~3% of the true one with overwhelming probability.
        assert weight.std().item() == pytest.approx(expected, rel=0.1)
    assert not layer.self_attention.dense.bias.any() and bool((layer.input_layernorm.weight == 1).all())
    assert not torch.equal(layer.mlp.dense_h_to_4h.weight, model.layers[1].mlp.dense_h_to_4h.weight)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), _model().state_dict().values()))


def test_outputs_shapes_and_configuration_errors():
    """Logits are [b, s, V/tp], losses [b, s] fp32; TP-indivisible heads/vocab and too-long sequences raise
    ValueError with the values."""
    tokens, labels = _batch()
    model = _model().eval()
    assert model(tokens).shape == (2, 16, VOCAB)
    assert model(tokens, labels=labels).dtype == torch.float32
    tp3 = ParallelState(world_size=3, rank=0, tp_size=3, tp_rank=0, tp_group=None, dp_size=1, dp_rank=0, dp_group=None)
    with pytest.raises(ValueError, match=r"num_attention_heads \(4\) must be divisible by tensor_model_parallel_size \(3\)"):
        GPTModel(TransformerConfig.flavor("debug"), tp3, 129)
    tp2 = ParallelState(world_size=2, rank=0, tp_size=2, tp_rank=0, tp_group=None, dp_size=1, dp_rank=0, dp_group=None)
    with pytest.raises(ValueError, match=r"padded vocab_size \(129\) must be divisible by tensor_model_parallel_size \(2\)"):
        GPTModel(TransformerConfig.flavor("debug"), tp2, 129)
    with pytest.raises(ValueError, match=r"sequence length 600 exceeds max_position_embeddings \(512\)"):
        model(torch.zeros(1, 600, dtype=torch.long))

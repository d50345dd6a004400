"""TransformerConfig flavours, derived sizes and validation, its CLI flags, and the FLOP formula."""

from __future__ import annotations

import argparse

import pytest

from megatron.config import add_dataclass_arguments, dataclass_from_namespace
from megatron.model.config import FLAVORS, TransformerConfig, num_floating_point_operations


def test_flavors_fill_unset_fields_and_explicit_values_win():
    """A flavour supplies the architecture; explicitly given fields override it; derived sizes follow h/heads."""
    cfg = TransformerConfig.flavor("gpt-1.3b")
    assert (cfg.num_layers, cfg.hidden_size, cfg.num_attention_heads) == (24, 2048, 16)
    assert (cfg.kv_channels, cfg.ffn_hidden_size, cfg.init_method_std) == (128, 8192, 0.013)
    small = TransformerConfig.flavor("gpt-125m", num_layers=6, init_method_std=0.01)
    assert (small.num_layers, small.hidden_size, small.init_method_std) == (6, 768, 0.01)
    assert TransformerConfig.flavor("bert-large").max_position_embeddings == 512
    assert set(FLAVORS) == {"debug", "gpt-125m", "gpt-350m", "gpt-1.3b", "bert-large"}
    plain = TransformerConfig(num_layers=2, hidden_size=8, num_attention_heads=2, max_position_embeddings=16)
    assert plain.init_method_std == 0.02 and plain.ffn_hidden_size == 32


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(hidden_size=10, num_attention_heads=4), r"hidden_size \(10\) must be divisible by num_attention_heads \(4\)"),
        (dict(model_flavor=None), r"num_layers is required"),
        (dict(hidden_dropout=1.0), r"hidden_dropout must be in \[0, 1\), got 1.0"),
        (dict(position_embedding_type="rope", rotary_percent=0.2), r"kv_channels \(16\) \* rotary_percent \(0.2\) = 3"),
        (dict(recompute_activations=True, recompute_granularity="full"), r"set only one of them"),
        (dict(recompute_method="block"), r"apply only to recompute_granularity='full'"),
        (dict(recompute_granularity="full", recompute_num_layers=9), r"recompute_num_layers must be in \[1, num_layers=4\]"),
    ],
)
def test_bad_configs_raise_value_error_with_values(kwargs, message):
    """Each inconsistent setting raises ValueError naming the field(s) and the offending values."""
    base = dict(model_flavor="debug")
    base.update(kwargs)
    with pytest.raises(ValueError, match=message):
        TransformerConfig(**base)


def test_recompute_resolution():
    """recompute_activations means selective; full defaults to uniform groups of one layer; block defaults to all."""
    assert TransformerConfig.flavor("debug", recompute_activations=True).recompute_granularity == "selective"
    full = TransformerConfig.flavor("debug", recompute_granularity="full")
    assert (full.recompute_method, full.recompute_num_layers) == ("uniform", 1)
    block = TransformerConfig.flavor("debug", recompute_granularity="full", recompute_method="block")
    assert block.recompute_num_layers == 4


def test_cli_flags_round_trip():
    """Megatron flag spellings parse into the config; params_dtype stays off the command line."""
    parser = argparse.ArgumentParser()
    add_dataclass_arguments(parser, TransformerConfig)
    ns = parser.parse_args(["--model-flavor", "gpt-350m", "--num-layers", "3", "--position-embedding-type", "rope",
                            "--no-add-bias-linear", "--recompute-granularity", "full"])
    cfg = dataclass_from_namespace(TransformerConfig, ns)
    assert (cfg.num_layers, cfg.hidden_size, cfg.position_embedding_type, cfg.add_bias_linear) == (3, 1024, "rope", False)
    with pytest.raises(SystemExit):
        parser.parse_args(["--params-dtype", "bfloat16"])


def test_flops_match_megatron_closed_form():
    """Equal per-layer lengths reproduce 72*B*s*L*h^2*(1 + s/(6h) + V/(12*L*h)) (Megatron, q=h, f=4h), and a
    per-layer list counts each layer's GEMMs linearly and its attention quadratically in its own token count."""
    cfg = TransformerConfig.flavor("gpt-125m")
    B, s, V, L, h = 8, 1024, 50304, 12, 768
    closed = 72 * B * s * L * h**2 * (1 + s / (6 * h) + V / (12 * L * h))
    assert num_floating_point_operations(cfg, B, s, V) == pytest.approx(closed, rel=1e-12)
    lengths = [s] + [256] * 10 + [s]
    # Per layer 12*B*(t*h^2*(2q/h + f/h) + t^2*q) with q = h, f = 4h; the logit term 6*B*s*h*V uses the full s.
    expected = sum(12 * B * (t * h * h * 6 + t * t * h) for t in lengths) + 6 * B * s * h * V
    assert num_floating_point_operations(cfg, B, s, V, layer_seq_lengths=lengths) == pytest.approx(expected, rel=1e-12)
    with pytest.raises(ValueError, match=r"layer_seq_lengths has 2 entries, expected num_layers=12"):
        num_floating_point_operations(cfg, B, s, V, layer_seq_lengths=[1, 2])

"""Architecture settings between our ``TransformerConfig`` and the Hugging Face configs of the exported models.

Export refuses what the HF classes cannot compute exactly (post-LayerNorm residuals, ``kv_channels`` other than
``hidden_size / heads`` outside Llama, BERT with rotary positions, RMSNorm / SwiGLU / grouped-query attention
outside Llama, Llama without all of rope, RMSNorm and SwiGLU); import refuses HF settings our layers do not
implement (GPT-2's tanh-approximate ``gelu_new``, GPT-NeoX's parallel residual, scaled RoPE variants, Llama with
biases on only some projections), naming the setting.
Facts the HF config has no field for (vocabulary padding rule, linear biases, tokenizer type) travel in an extra
``megatron_de`` entry of the HF ``config.json``, which transformers keeps and ignores.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from megatron.interop.checkpoint import ModelSpec, ModelType
from megatron.interop.hf_weights import HF_CLASSES, HFArch, hf_arch_for
from megatron.model.config import TransformerConfig

__all__ = ["METADATA_KEY", "HFImport", "check_exportable", "build_hf_config", "parse_hf_config", "dtype_name"]

METADATA_KEY = "megatron_de"
"""Extra HF config entry with what only this code base needs to rebuild the run exactly."""
_DTYPE_NAMES = {torch.float32: "float32", torch.bfloat16: "bfloat16", torch.float16: "float16"}


def dtype_name(dtype: torch.dtype, where: str) -> str:
    """Our ``params_dtype`` spelling of a tensor dtype."""
    if dtype not in _DTYPE_NAMES:
        raise ValueError(f"{where}: weights of dtype {dtype} are not supported; use float32, bfloat16 or float16")
    return _DTYPE_NAMES[dtype]


_HF_NAMES: dict[HFArch, str] = {"gpt2": "GPT2LMHeadModel", "gpt_neox": "GPTNeoXForCausalLM",
                                 "llama": "LlamaForCausalLM", "megatron_bert": "MegatronBert"}


def _check_llama(c: TransformerConfig, where: str) -> None:
    """Llama's layers are exactly rope + RMSNorm + SwiGLU (any number of key/value heads, any head size)."""
    missing = [name for name, ok in (("normalization=RMSNorm", c.normalization == "RMSNorm"), ("swiglu", c.swiglu))
               if not ok]
    if missing:
        raise ValueError(f"{where}: a rotary GPT with RMSNorm, SwiGLU or grouped-query attention exports to "
                         f"LlamaForCausalLM, which also needs {' and '.join(missing)} (normalization="
                         f"{c.normalization}, swiglu={c.swiglu}); GPT-NeoX has LayerNorm, a GELU MLP and one "
                         "key/value head per head, so no Hugging Face class computes this model")
    if c.rotary_percent != 1.0:
        raise ValueError(f"{where}: rotary_percent={c.rotary_percent}; LlamaForCausalLM rotates every channel of a "
                         "head (rotary_percent 1.0)")


def check_exportable(spec: ModelSpec, where: str) -> None:
    """Raise ``ValueError`` if no supported HF class computes exactly what ``spec`` computes."""
    c, arch = spec.config, hf_arch_for(spec)
    if c.apply_residual_connection_post_layernorm:
        raise ValueError(f"{where}: apply_residual_connection_post_layernorm=True (residual taken after the "
                         "LayerNorm) has no Hugging Face equivalent among GPT2 / GPT-NeoX / Llama / MegatronBert")
    if arch == "llama":
        _check_llama(c, where)
        return
    modern = [name for name, on in (("normalization=RMSNorm", c.normalization == "RMSNorm"), ("swiglu", c.swiglu),
                                    ("group_query_attention", c.group_query_attention)) if on]
    if modern:
        raise ValueError(f"{where}: {', '.join(modern)} cannot be exported to {_HF_NAMES[arch]} (LayerNorm, GELU, "
                         "one key/value head per head); only rotary GPTs with RMSNorm and SwiGLU export, to "
                         "LlamaForCausalLM")
    if c.kv_channels * c.num_attention_heads != c.hidden_size:
        raise ValueError(f"{where}: kv_channels ({c.kv_channels}) x num_attention_heads ({c.num_attention_heads}) "
                         f"!= hidden_size ({c.hidden_size}); the HF classes derive the head size from hidden_size")
    if spec.model_type == "BERT" and c.position_embedding_type != "learned_absolute":
        raise ValueError(f"{where}: BERT with {c.position_embedding_type} positions cannot be exported; "
                         "MegatronBert has learned absolute positions only")


def build_hf_config(spec: ModelSpec, special_ids: dict[str, int | None], metadata: dict[str, Any]):
    """The ``transformers`` config (GPT2Config / GPTNeoXConfig / LlamaConfig / MegatronBertConfig) of ``spec``."""
    import transformers

    c, arch = spec.config, hf_arch_for(spec)
    common = dict(vocab_size=spec.vocab_size, initializer_range=c.init_method_std, **{METADATA_KEY: metadata})
    if arch == "gpt2":
        # activation "gelu" is the exact erf GELU (torch's F.gelu), as our MLP; GPT-2's default gelu_new is the tanh
        # approximation.
        return transformers.GPT2Config(
            n_positions=c.max_position_embeddings, n_embd=c.hidden_size, n_layer=c.num_layers,
            n_head=c.num_attention_heads, n_inner=c.ffn_hidden_size, activation_function="gelu",
            resid_pdrop=c.hidden_dropout, embd_pdrop=c.hidden_dropout, attn_pdrop=c.attention_dropout,
            layer_norm_epsilon=c.layernorm_epsilon, tie_word_embeddings=not c.untie_embeddings_and_output_weights,
            bos_token_id=special_ids.get("eod"), eos_token_id=special_ids.get("eod"), **common)
    if arch == "gpt_neox":
        rope = {"rope_type": "default", "rope_theta": float(c.rotary_base), "partial_rotary_factor": c.rotary_percent}
        return transformers.GPTNeoXConfig(
            hidden_size=c.hidden_size, num_hidden_layers=c.num_layers, num_attention_heads=c.num_attention_heads,
            intermediate_size=c.ffn_hidden_size, hidden_act="gelu", hidden_dropout=c.hidden_dropout,
            attention_dropout=c.attention_dropout, max_position_embeddings=c.max_position_embeddings,
            layer_norm_eps=c.layernorm_epsilon, use_parallel_residual=False, rope_parameters=rope,
            attention_bias=c.add_bias_linear, tie_word_embeddings=not c.untie_embeddings_and_output_weights,
            bos_token_id=special_ids.get("eod"), eos_token_id=special_ids.get("eod"), **common)
    if arch == "llama":
        return transformers.LlamaConfig(
            hidden_size=c.hidden_size, num_hidden_layers=c.num_layers, num_attention_heads=c.num_attention_heads,
            num_key_value_heads=c.query_groups, head_dim=c.kv_channels, intermediate_size=c.ffn_hidden_size,
            hidden_act="silu", attention_dropout=c.attention_dropout, max_position_embeddings=c.max_position_embeddings,
            rms_norm_eps=c.layernorm_epsilon,
            rope_parameters={"rope_type": "default", "rope_theta": float(c.rotary_base)},
            attention_bias=c.add_bias_linear, mlp_bias=c.add_bias_linear,
            tie_word_embeddings=not c.untie_embeddings_and_output_weights,
            bos_token_id=special_ids.get("eod"), eos_token_id=special_ids.get("eod"), **common)
    return transformers.MegatronBertConfig(
        hidden_size=c.hidden_size, num_hidden_layers=c.num_layers, num_attention_heads=c.num_attention_heads,
        intermediate_size=c.ffn_hidden_size, hidden_act="gelu", hidden_dropout_prob=c.hidden_dropout,
        attention_probs_dropout_prob=c.attention_dropout, max_position_embeddings=c.max_position_embeddings,
        # A model without token types gets one all-zero row: adding it changes nothing.
        type_vocab_size=max(spec.num_tokentypes, 1), layer_norm_eps=c.layernorm_epsilon,
        pad_token_id=special_ids.get("pad"), tie_word_embeddings=True, **common)


@dataclass
class HFImport:
    """What an HF config says about the model to import."""

    architecture: str
    """``architectures[0]`` of the HF config, a key of ``HF_CLASSES``."""
    model_type: ModelType
    """Our model family."""
    spec: ModelSpec
    """Architecture with ``vocab_size`` = the HF embedding rows (before re-padding for the target TP size)."""
    metadata: dict[str, Any] = field(default_factory=dict)
    """The ``megatron_de`` entry of an exported model (empty for other HF models)."""


def _require(where: str, ok: bool, setting: str, why: str) -> None:
    if not ok:
        raise ValueError(f"{where}: {setting} is not supported: {why}")


def _gpt2_settings(hf: Any, where: str) -> dict[str, Any]:
    _require(where, hf.activation_function == "gelu", f"activation_function={hf.activation_function!r}",
             "our MLP uses the exact erf GELU ('gelu'); GPT-2's 'gelu_new' is the tanh approximation, so the "
             "imported model would compute a (slightly) different function")
    _require(where, hf.scale_attn_weights and not hf.scale_attn_by_inverse_layer_idx,
             "attention score scaling other than 1/sqrt(head_dim)", "our attention always scales by 1/sqrt(d)")
    _require(where, not hf.add_cross_attention, "add_cross_attention=True", "our GPT has no cross-attention")
    return dict(num_layers=hf.n_layer, hidden_size=hf.n_embd, num_attention_heads=hf.n_head,
                ffn_hidden_size=hf.n_inner or 4 * hf.n_embd, max_position_embeddings=hf.n_positions,
                hidden_dropout=float(hf.resid_pdrop), attention_dropout=float(hf.attn_pdrop),
                layernorm_epsilon=hf.layer_norm_epsilon, add_bias_linear=True)


def _neox_settings(hf: Any, where: str) -> dict[str, Any]:
    _require(where, not hf.use_parallel_residual, "use_parallel_residual=True",
             "our layers add attention and MLP sequentially (x + attn, then + mlp)")
    _require(where, hf.hidden_act == "gelu", f"hidden_act={hf.hidden_act!r}", "our MLP uses the exact erf GELU")
    rope, theta = _rope_theta(hf, where)
    return dict(num_layers=hf.num_hidden_layers, hidden_size=hf.hidden_size,
                num_attention_heads=hf.num_attention_heads, ffn_hidden_size=hf.intermediate_size,
                max_position_embeddings=hf.max_position_embeddings, position_embedding_type="rope",
                rotary_percent=float(rope.get("partial_rotary_factor", 1.0)), rotary_base=theta,
                hidden_dropout=float(hf.hidden_dropout), attention_dropout=float(hf.attention_dropout),
                layernorm_epsilon=hf.layer_norm_eps, add_bias_linear=bool(hf.attention_bias))


def _rope_theta(hf: Any, where: str) -> tuple[dict[str, Any], int]:
    rope = dict(hf.rope_parameters or {})
    _require(where, rope.get("rope_type", "default") == "default", f"rope_type={rope.get('rope_type')!r}",
             "our RoPE is the unscaled (default) kind")
    theta = float(rope.get("rope_theta", 10000.0))
    _require(where, theta.is_integer(), f"rope_theta={theta}", "our rotary_base is an integer")
    return rope, int(theta)


def _llama_settings(hf: Any, where: str) -> dict[str, Any]:
    _require(where, hf.hidden_act == "silu", f"hidden_act={hf.hidden_act!r}", "our SwiGLU MLP gates with SiLU")
    _require(where, bool(hf.attention_bias) == bool(hf.mlp_bias),
             f"attention_bias={hf.attention_bias} with mlp_bias={hf.mlp_bias}",
             "one add_bias_linear switch covers the attention and MLP projections here")
    rope, theta = _rope_theta(hf, where)
    _require(where, float(rope.get("partial_rotary_factor", 1.0)) == 1.0,
             f"partial_rotary_factor={rope.get('partial_rotary_factor')}", "Llama rotates every channel")
    heads = hf.num_attention_heads
    groups = hf.num_key_value_heads or heads
    return dict(num_layers=hf.num_hidden_layers, hidden_size=hf.hidden_size, num_attention_heads=heads,
                kv_channels=getattr(hf, "head_dim", None) or hf.hidden_size // heads,
                ffn_hidden_size=hf.intermediate_size, max_position_embeddings=hf.max_position_embeddings,
                position_embedding_type="rope", rotary_base=theta, normalization="RMSNorm", swiglu=True,
                group_query_attention=groups != heads, num_query_groups=groups if groups != heads else None,
                hidden_dropout=0.0, attention_dropout=float(hf.attention_dropout),  # Llama has no hidden dropout
                layernorm_epsilon=hf.rms_norm_eps, add_bias_linear=bool(hf.attention_bias))


def _bert_settings(hf: Any, where: str) -> dict[str, Any]:
    _require(where, hf.hidden_act == "gelu", f"hidden_act={hf.hidden_act!r}", "our MLP uses the exact erf GELU")
    _require(where, not hf.is_decoder, "is_decoder=True", "our BERT is a bidirectional encoder")
    _require(where, hf.tie_word_embeddings, "tie_word_embeddings=False",
             "our BERT computes its masked-LM logits with the word embedding matrix")
    return dict(num_layers=hf.num_hidden_layers, hidden_size=hf.hidden_size,
                num_attention_heads=hf.num_attention_heads, ffn_hidden_size=hf.intermediate_size,
                max_position_embeddings=hf.max_position_embeddings, hidden_dropout=float(hf.hidden_dropout_prob),
                attention_dropout=float(hf.attention_probs_dropout_prob), layernorm_epsilon=hf.layer_norm_eps,
                add_bias_linear=True)


def parse_hf_config(hf: Any, params_dtype: str, where: str) -> HFImport:
    """Our :class:`ModelSpec` from a loaded HF config; ``ValueError`` naming ``where`` for anything unsupported."""
    architectures = list(getattr(hf, "architectures", None) or [])
    arch_name = architectures[0] if architectures else None
    if arch_name not in HF_CLASSES:
        raise ValueError(f"{where}: architecture {arch_name!r} is not supported; supported: {sorted(HF_CLASSES)} "
                         "(what tools/checkpoint/convert.py --saver hf writes)")
    layout, model_type = HF_CLASSES[arch_name]
    settings = {"gpt2": _gpt2_settings, "gpt_neox": _neox_settings, "llama": _llama_settings,
                "megatron_bert": _bert_settings}[layout](hf, where)
    metadata = dict(getattr(hf, METADATA_KEY, None) or {})
    if "add_bias_linear" in metadata:
        settings["add_bias_linear"] = bool(metadata["add_bias_linear"])
    if "hidden_dropout" in metadata:  # LlamaConfig has no field for it
        settings["hidden_dropout"] = float(metadata["hidden_dropout"])
    config = TransformerConfig(
        **settings, init_method_std=float(hf.initializer_range), params_dtype=params_dtype,
        untie_embeddings_and_output_weights=model_type == "GPT" and not hf.tie_word_embeddings)
    num_tokentypes = 0
    if model_type == "BERT":
        num_tokentypes = int(metadata.get("num_tokentypes", hf.type_vocab_size))
    spec = ModelSpec(model_type=model_type, config=config, vocab_size=int(hf.vocab_size),
                     add_binary_head=arch_name == "MegatronBertForPreTraining", num_tokentypes=num_tokentypes)
    return HFImport(architecture=arch_name, model_type=model_type, spec=spec, metadata=metadata)

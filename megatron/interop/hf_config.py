"""Architecture settings between our ``TransformerConfig`` and the Hugging Face configs of the exported models.

Export refuses what the HF classes cannot compute exactly (post-LayerNorm residuals, ``kv_channels`` other than
``hidden_size / heads``, BERT with rotary positions); import refuses HF settings our layers do not implement
(GPT-2's tanh-approximate ``gelu_new``, GPT-NeoX's parallel residual, scaled RoPE variants), naming the setting.
Facts the HF config has no field for (vocabulary padding rule, linear biases, tokenizer type) travel in an extra
``megatron_de`` entry of the HF ``config.json``, which transformers keeps and ignores.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from megatron.interop.checkpoint import ModelSpec, ModelType
from megatron.interop.hf_weights import HF_CLASSES, hf_arch_for
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


def check_exportable(spec: ModelSpec, where: str) -> None:
    """Raise ``ValueError`` if no supported HF class computes exactly what ``spec`` computes."""
    c = spec.config
    if c.apply_residual_connection_post_layernorm:
        raise ValueError(f"{where}: apply_residual_connection_post_layernorm=True (residual taken after the "
                         "LayerNorm) has no Hugging Face equivalent among GPT2 / GPT-NeoX / MegatronBert")
    if c.kv_channels * c.num_attention_heads != c.hidden_size:
        raise ValueError(f"{where}: kv_channels ({c.kv_channels}) x num_attention_heads ({c.num_attention_heads}) "
                         f"!= hidden_size ({c.hidden_size}); the HF classes derive the head size from hidden_size")
    if spec.model_type == "BERT" and c.position_embedding_type != "learned_absolute":
        raise ValueError(f"{where}: BERT with {c.position_embedding_type} positions cannot be exported; "
                         "MegatronBert has learned absolute positions only")


def build_hf_config(spec: ModelSpec, special_ids: dict[str, int | None], metadata: dict[str, Any]):
    """The ``transformers`` config (GPT2Config / GPTNeoXConfig / MegatronBertConfig) of ``spec``."""
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
    rope = dict(hf.rope_parameters or {})
    _require(where, rope.get("rope_type", "default") == "default", f"rope_type={rope.get('rope_type')!r}",
             "our RoPE is the unscaled (default) kind")
    theta = float(rope.get("rope_theta", 10000.0))
    _require(where, theta.is_integer(), f"rope_theta={theta}", "our rotary_base is an integer")
    return dict(num_layers=hf.num_hidden_layers, hidden_size=hf.hidden_size,
                num_attention_heads=hf.num_attention_heads, ffn_hidden_size=hf.intermediate_size,
                max_position_embeddings=hf.max_position_embeddings, position_embedding_type="rope",
                rotary_percent=float(rope.get("partial_rotary_factor", 1.0)), rotary_base=int(theta),
                hidden_dropout=float(hf.hidden_dropout), attention_dropout=float(hf.attention_dropout),
                layernorm_epsilon=hf.layer_norm_eps, add_bias_linear=bool(hf.attention_bias))


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
    settings = {"gpt2": _gpt2_settings, "gpt_neox": _neox_settings, "megatron_bert": _bert_settings}[layout](hf, where)
    metadata = dict(getattr(hf, METADATA_KEY, None) or {})
    if "add_bias_linear" in metadata:
        settings["add_bias_linear"] = bool(metadata["add_bias_linear"])
    config = TransformerConfig(
        **settings, init_method_std=float(hf.initializer_range), params_dtype=params_dtype,
        untie_embeddings_and_output_weights=model_type == "GPT" and not hf.tie_word_embeddings)
    num_tokentypes = 0
    if model_type == "BERT":
        num_tokentypes = int(metadata.get("num_tokentypes", hf.type_vocab_size))
    spec = ModelSpec(model_type=model_type, config=config, vocab_size=int(hf.vocab_size),
                     add_binary_head=arch_name == "MegatronBertForPreTraining", num_tokentypes=num_tokentypes)
    return HFImport(architecture=arch_name, model_type=model_type, spec=spec, metadata=metadata)

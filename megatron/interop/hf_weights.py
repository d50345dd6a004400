"""Tensor-by-tensor correspondence between our unsharded state dicts and the Hugging Face architectures we export
to: ``GPT2LMHeadModel`` (GPT, learned positions), ``GPTNeoXForCausalLM`` (GPT, rotary positions),
``LlamaForCausalLM`` (GPT with rotary positions, RMSNorm and SwiGLU, grouped-query attention or not) and
``MegatronBertForPreTraining`` / ``MegatronBertForMaskedLM`` (BERT with / without the binary head).

One table of :class:`Rule` per architecture drives both directions, so export and import cannot drift apart. The
layouts that differ: our fused QKV rows are grouped per key/value group (``[q heads of group g; k_g; v_g]``, per
head ``[q_i; k_i; v_i]`` without grouped-query attention), which GPT-NeoX shares, while GPT-2's ``c_attn`` holds
all queries, then all keys, then all values, and Megatron-BERT and Llama have three separate projections; our
SwiGLU ``dense_h_to_4h`` stacks Llama's ``gate_proj`` and ``up_proj``; GPT-2's ``Conv1D`` stores weights as
``[in, out]``, the transpose of ``nn.Linear``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from megatron.interop.checkpoint import ModelSpec

__all__ = ["HFArch", "HF_CLASSES", "Rule", "hf_arch_for", "rules_for", "to_hf_state", "from_hf_state"]

HFArch = Literal["gpt2", "gpt_neox", "llama", "megatron_bert"]
HF_CLASSES: dict[str, tuple[HFArch, str]] = {
    "GPT2LMHeadModel": ("gpt2", "GPT"),
    "GPTNeoXForCausalLM": ("gpt_neox", "GPT"),
    "LlamaForCausalLM": ("llama", "GPT"),
    "MegatronBertForPreTraining": ("megatron_bert", "BERT"),
    "MegatronBertForMaskedLM": ("megatron_bert", "BERT"),
}
"""Supported ``architectures[0]`` of an HF ``config.json`` -> (weight layout, our model type)."""

Kind = Literal["same", "t", "qkv_blocks", "qkv_blocks_t", "qkv_split", "stacked"]


@dataclass(frozen=True)
class Rule:
    """Our tensor ``ours`` corresponds to the HF tensors ``hf`` through the layout change ``kind``."""

    ours: str
    hf: tuple[str, ...]
    kind: Kind = "same"
    zero_if_absent: bool = False
    """Our model may lack the tensor while the HF layout always has it (linear biases without
    ``add_bias_linear``, the token-type table of a model without token types): HF then holds zeros."""


def hf_arch_for(spec: ModelSpec) -> HFArch:
    """The HF layout our model exports to (``hf_config.check_exportable`` says whether it computes our function)."""
    c = spec.config
    if spec.model_type == "BERT":
        return "megatron_bert"
    if c.position_embedding_type == "learned_absolute":
        return "gpt2"
    return "llama" if c.normalization == "RMSNorm" or c.swiglu or c.group_query_attention else "gpt_neox"


def _linear(ours: str, hf: str, weight_kind: Kind = "same", bias_kind: Kind = "same") -> list[Rule]:
    return [Rule(f"{ours}.weight", (f"{hf}.weight",), weight_kind),
            Rule(f"{ours}.bias", (f"{hf}.bias",), bias_kind, zero_if_absent=True)]


def _norm(ours: str, hf: str) -> list[Rule]:
    return [Rule(f"{ours}.weight", (f"{hf}.weight",)), Rule(f"{ours}.bias", (f"{hf}.bias",))]


def _rms_norm(ours: str, hf: str) -> list[Rule]:
    return [Rule(f"{ours}.weight", (f"{hf}.weight",))]


def _layer_rules(arch: HFArch, ours: str, hf: str) -> list[Rule]:
    """Rules of one transformer layer: ``ours``/``hf`` are the layer prefixes."""
    att, mlp = f"{ours}.self_attention", f"{ours}.mlp"
    if arch == "gpt2":
        return [
            *_norm(f"{ours}.input_layernorm", f"{hf}.ln_1"),
            *_linear(f"{att}.query_key_value", f"{hf}.attn.c_attn", "qkv_blocks_t", "qkv_blocks"),
            *_linear(f"{att}.dense", f"{hf}.attn.c_proj", "t"),
            *_norm(f"{ours}.post_attention_layernorm", f"{hf}.ln_2"),
            *_linear(f"{mlp}.dense_h_to_4h", f"{hf}.mlp.c_fc", "t"),
            *_linear(f"{mlp}.dense_4h_to_h", f"{hf}.mlp.c_proj", "t"),
        ]
    if arch == "llama":
        qkv = tuple(f"{hf}.self_attn.{p}_proj" for p in ("q", "k", "v"))
        gate_up = tuple(f"{hf}.mlp.{p}_proj" for p in ("gate", "up"))
        return [
            *_rms_norm(f"{ours}.input_layernorm", f"{hf}.input_layernorm"),
            Rule(f"{att}.query_key_value.weight", tuple(f"{p}.weight" for p in qkv), "qkv_split"),
            Rule(f"{att}.query_key_value.bias", tuple(f"{p}.bias" for p in qkv), "qkv_split", zero_if_absent=True),
            *_linear(f"{att}.dense", f"{hf}.self_attn.o_proj"),
            *_rms_norm(f"{ours}.post_attention_layernorm", f"{hf}.post_attention_layernorm"),
            Rule(f"{mlp}.dense_h_to_4h.weight", tuple(f"{p}.weight" for p in gate_up), "stacked"),
            Rule(f"{mlp}.dense_h_to_4h.bias", tuple(f"{p}.bias" for p in gate_up), "stacked", zero_if_absent=True),
            *_linear(f"{mlp}.dense_4h_to_h", f"{hf}.mlp.down_proj"),
        ]
    if arch == "gpt_neox":
        return [
            *_norm(f"{ours}.input_layernorm", f"{hf}.input_layernorm"),
            *_linear(f"{att}.query_key_value", f"{hf}.attention.query_key_value"),
            *_linear(f"{att}.dense", f"{hf}.attention.dense"),
            *_norm(f"{ours}.post_attention_layernorm", f"{hf}.post_attention_layernorm"),
            *_linear(f"{mlp}.dense_h_to_4h", f"{hf}.mlp.dense_h_to_4h"),
            *_linear(f"{mlp}.dense_4h_to_h", f"{hf}.mlp.dense_4h_to_h"),
        ]
    qkv = tuple(f"{hf}.attention.self.{p}" for p in ("query", "key", "value"))
    return [
        *_norm(f"{ours}.input_layernorm", f"{hf}.attention.ln"),
        Rule(f"{att}.query_key_value.weight", tuple(f"{p}.weight" for p in qkv), "qkv_split"),
        Rule(f"{att}.query_key_value.bias", tuple(f"{p}.bias" for p in qkv), "qkv_split", zero_if_absent=True),
        *_linear(f"{att}.dense", f"{hf}.attention.output.dense"),
        *_norm(f"{ours}.post_attention_layernorm", f"{hf}.ln"),
        *_linear(f"{mlp}.dense_h_to_4h", f"{hf}.intermediate.dense"),
        *_linear(f"{mlp}.dense_4h_to_h", f"{hf}.output.dense"),
    ]


def rules_for(spec: ModelSpec) -> list[Rule]:
    """Every rule of ``spec``'s model (rules for tensors our model lacks are kept; callers skip them)."""
    arch, n = hf_arch_for(spec), spec.config.num_layers
    if arch == "gpt2":
        rules = [Rule("word_embeddings.weight", ("transformer.wte.weight",)),
                 Rule("position_embeddings.weight", ("transformer.wpe.weight",)),
                 *_norm("decoder.final_layernorm", "transformer.ln_f")]
        layers = [("decoder.layers", "transformer.h")]
    elif arch == "gpt_neox":
        rules = [Rule("word_embeddings.weight", ("gpt_neox.embed_in.weight",)),
                 *_norm("decoder.final_layernorm", "gpt_neox.final_layer_norm")]
        layers = [("decoder.layers", "gpt_neox.layers")]
    elif arch == "llama":
        rules = [Rule("word_embeddings.weight", ("model.embed_tokens.weight",)),
                 *_rms_norm("decoder.final_layernorm", "model.norm")]
        layers = [("decoder.layers", "model.layers")]
    else:
        rules = [Rule("word_embeddings.weight", ("bert.embeddings.word_embeddings.weight",)),
                 Rule("position_embeddings.weight", ("bert.embeddings.position_embeddings.weight",)),
                 Rule("tokentype_embeddings.weight", ("bert.embeddings.token_type_embeddings.weight",), "same",
                      zero_if_absent=True),
                 *_norm("encoder.final_layernorm", "bert.encoder.ln"),
                 *_linear("lm_head.dense", "cls.predictions.transform.dense"),
                 *_norm("lm_head.layer_norm", "cls.predictions.transform.LayerNorm"),
                 Rule("lm_head.bias", ("cls.predictions.bias",)),
                 *_linear("pooler", "bert.pooler.dense"),
                 *_linear("binary_head", "cls.seq_relationship")]
        # The head, pooler and binary head are plain nn.Linear layers with biases whatever add_bias_linear says.
        rules = [r if r.ours.startswith("tokentype") else Rule(r.ours, r.hf, r.kind) for r in rules]
        layers = [("encoder.layers", "bert.encoder.layer")]
    if arch != "megatron_bert":
        rules.append(Rule("output_layer.weight", ("lm_head.weight",)))
    for ours, hf in layers:
        for i in range(n):
            rules += _layer_rules(arch, f"{ours}.{i}", f"{hf}.{i}")
    return rules


def _contiguous(t: torch.Tensor) -> torch.Tensor:
    # A fresh contiguous copy: safetensors refuses views and tensors that share storage.
    return t.clone(memory_format=torch.contiguous_format)


def _export(t: torch.Tensor, kind: Kind, heads: int, groups: int, d: int) -> list[torch.Tensor]:
    """Our tensor -> the HF tensors of a rule (``groups`` key/value heads for ``heads`` query heads of size d)."""
    rest = t.shape[1:]
    if kind == "same":
        return [t]
    if kind == "t":
        return [t.t()]
    if kind == "stacked":
        return list(t.unbind(0))
    if kind == "qkv_split":
        per_group = t.reshape(groups, heads // groups + 2, d, *rest)  # our rows: [q heads; k; v] per group
        q, k, v = per_group.split([heads // groups, 1, 1], dim=1)
        return [q.reshape(heads * d, *rest), k.reshape(groups * d, *rest), v.reshape(groups * d, *rest)]
    per_head = t.reshape(heads, 3, d, *rest)  # our rows: [q_i; k_i; v_i] per head i
    blocks = per_head.transpose(0, 1).reshape(3 * heads * d, *rest)  # all q, then all k, then all v
    return [blocks.t() if kind == "qkv_blocks_t" else blocks]


def _import(ts: list[torch.Tensor], kind: Kind, heads: int, groups: int, d: int) -> torch.Tensor:
    """Inverse of :func:`_export`."""
    if kind == "same":
        return ts[0]
    if kind == "t":
        return ts[0].t()
    if kind == "stacked":
        return torch.stack(ts)
    if kind == "qkv_split":
        rest = ts[0].shape[1:]
        q, k, v = (t.reshape(groups, -1, d, *rest) for t in ts)
        return torch.cat([q, k, v], dim=1).reshape((heads + 2 * groups) * d, *rest)
    blocks = ts[0].t() if kind == "qkv_blocks_t" else ts[0]
    rest = blocks.shape[1:]
    return blocks.reshape(3, heads, d, *rest).transpose(0, 1).reshape(3 * heads * d, *rest)


def to_hf_state(
    state: dict[str, torch.Tensor], spec: ModelSpec, hf_shapes: dict[str, tuple[int, ...]],
    tied: dict[str, str],
) -> dict[str, torch.Tensor]:
    """Our unsharded ``state`` -> the HF model's state dict.

    Args:
        hf_shapes: the HF model's state-dict names and shapes (from an instance on the meta device).
        tied: ``{tied name: source name}`` of the HF model; each tied entry gets its source's tensor.
    Linear biases our model lacks (``add_bias_linear=False``) but the HF layout always has are written as zeros,
    which computes the same function.
    """
    heads, groups, d = spec.config.num_attention_heads, spec.config.query_groups, spec.config.kv_channels
    out: dict[str, torch.Tensor] = {}
    for rule in rules_for(spec):
        if rule.ours in state:
            for name, t in zip(rule.hf, _export(state[rule.ours], rule.kind, heads, groups, d)):
                out[name] = _contiguous(t)
        elif rule.zero_if_absent:
            for name in rule.hf:
                if name in hf_shapes:
                    out[name] = torch.zeros(hf_shapes[name], dtype=state["word_embeddings.weight"].dtype)
    for name, source in tied.items():
        if name in hf_shapes and name not in out and source in out:
            out[name] = out[source]
    missing, extra = sorted(hf_shapes.keys() - out.keys()), sorted(out.keys() - hf_shapes.keys())
    assert not missing and not extra, f"HF weight map incomplete: missing {missing[:5]}, unexpected {extra[:5]}"
    for name, t in out.items():
        assert tuple(t.shape) == tuple(hf_shapes[name]), f"{name}: {tuple(t.shape)} != {hf_shapes[name]}"
    return out


def from_hf_state(
    hf_state: dict[str, torch.Tensor], spec: ModelSpec, expected: dict[str, tuple[int, ...]], where: str,
) -> dict[str, torch.Tensor]:
    """An HF state dict -> our unsharded state dict with exactly the names/shapes in ``expected``.

    HF tensors that our model has no place for must be zero (biases of ``add_bias_linear=False``, a single
    all-zero token-type row of a model without token types); anything else is an error naming ``where``.
    """
    heads, groups, d = spec.config.num_attention_heads, spec.config.query_groups, spec.config.kv_channels
    out: dict[str, torch.Tensor] = {}
    for rule in rules_for(spec):
        present = [name for name in rule.hf if name in hf_state]
        if rule.ours in expected:
            if len(present) != len(rule.hf):
                raise ValueError(f"{where}: weights {sorted(set(rule.hf) - set(present))} are missing; the "
                                 "checkpoint does not hold a complete model")
            out[rule.ours] = _contiguous(_import([hf_state[n] for n in rule.hf], rule.kind, heads, groups, d))
            continue
        if not rule.zero_if_absent:
            continue  # a tensor our model lacks by design: the tied output layer, a head it was built without
        nonzero = [name for name in present if bool(hf_state[name].any())]
        if nonzero:
            raise ValueError(f"{where}: {nonzero[0]} is non-zero but the converted model has no {rule.ours} "
                             "(no linear biases / no token types); such weights cannot be dropped exactly")
    for name, shape in expected.items():
        if name not in out:
            raise ValueError(f"{where}: no weights found for our {name}")
        if tuple(out[name].shape) != tuple(shape):
            raise ValueError(f"{where}: {name} converts to shape {tuple(out[name].shape)}, expected {tuple(shape)}")
    return out

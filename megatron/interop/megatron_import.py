"""Weights from Megatron-LM and Megatron-DeepSpeed checkpoints, mapped onto our GPT/BERT parameters.

Two layouts are read, weights only:

* ``megatron_lm``: Megatron-LM's legacy torch checkpoints (``--ckpt-format torch``):
  ``<dir>/latest_checkpointed_iteration.txt`` and ``iter_XXXXXXX/mp_rank_XX[_XXX]/model_optim_rng.pt`` whose
  ``model`` is either the legacy nesting (``language_model`` -> ``embedding`` / ``encoder`` (or ``transformer``)
  / ``output_layer``) or a megatron-core model's flat names (``embedding.*``, ``decoder.layers.*``, local or
  Transformer-Engine spec); or its distributed checkpoints (``--ckpt-format torch_dist``, any TP/PP size), read
  whole by :mod:`megatron.interop.torch_dist`;
* ``deepspeed``: Megatron-DeepSpeed's DeepSpeed-engine checkpoints: ``<dir>/latest`` naming ``global_stepN`` and
  ``global_stepN/mp_rank_XX_model_states.pt`` whose ``module`` holds the legacy model's flat state dict.

Every tensor-parallel shard is renamed, its fused QKV rows brought to our per-group ``[q heads; k; v]`` layout
(per head ``[q; k; v]`` without grouped-query attention; already Megatron-LM's and megatron-core's; Megatron-DeepSpeed
since Dec 2024 stores ``[Q | K | V]`` per shard: ``qkv_layout="contiguous"``), its SwiGLU ``[gate; up]`` rows
stacked as our ``[2, ffn/tp, h]``, then the shards are merged by our own layers' partition rules
(:mod:`megatron.interop.checkpoint`). The architecture comes from the checkpoint's ``args`` (an
``argparse.Namespace``).

Files are never fully unpickled: ``torch.load(weights_only=True)`` with ``argparse.Namespace`` allowed (it holds
the architecture), and, for files whose ``args`` or RNG states hold other objects (enums, numpy arrays) that
``weights_only`` refuses, a restricted unpickler that builds only tensors, containers and ``Namespace`` and turns
every other class into an inert placeholder (never importing or calling it).
"""

from __future__ import annotations

import argparse
import io
import pickle
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from megatron.config import dataclass_to_dict
from megatron.data.tokenizers.build import build_tokenizer
from megatron.data.tokenizers.config import TokenizerConfig, padded_vocab_size
from megatron.interop.checkpoint import (
    ModelSpec, ModelType, _check_against_model, build_meta_model, merge_shards, partition_dims, resize_vocab,
    split_shards, staged_output, write_release_checkpoint,
)
from megatron.interop.torch_dist import is_torch_dist_checkpoint, read_torch_dist
from megatron.logging import get_logger
from megatron.model.config import TransformerConfig
from megatron.model.gpt import check_tensor_parallel_divisibility

__all__ = ["LoaderKind", "QKVLayout", "ForeignCheckpoint", "safe_load", "read_foreign_checkpoint", "to_our_names",
           "import_foreign_checkpoint"]

logger = get_logger(__name__)

LoaderKind = Literal["megatron_lm", "deepspeed"]
QKVLayout = Literal["interleaved", "contiguous"]

_ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): __import__("collections").OrderedDict,
    ("argparse", "Namespace"): argparse.Namespace,
    ("torch._utils", "_rebuild_tensor_v2"): torch._utils._rebuild_tensor_v2,
    ("torch._utils", "_rebuild_tensor"): torch._utils._rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): torch._utils._rebuild_parameter,
    ("torch._tensor", "_rebuild_from_type_v2"): torch._tensor._rebuild_from_type_v2,
    ("torch.nn.parameter", "Parameter"): torch.nn.Parameter,
    ("torch", "Tensor"): torch.Tensor,
    ("torch", "Size"): torch.Size,
    ("torch", "device"): torch.device,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("builtins", "slice"): slice,
}


class _Opaque:
    """Stands in for any class the checkpoint names but we do not trust (enums, numpy arrays, DeepSpeed objects):
    it swallows its constructor arguments and state, runs nothing."""

    qualname = "?"

    def __new__(cls, *args: Any, **kwargs: Any) -> "_Opaque":
        return object.__new__(cls)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.args = args

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def __repr__(self) -> str:
        return f"<opaque {self.qualname}>"


class _RestrictedUnpickler(pickle.Unpickler):
    """``find_class`` resolves only :data:`_ALLOWED_GLOBALS` and torch dtypes; anything else is an :class:`_Opaque`."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED_GLOBALS:
            return _ALLOWED_GLOBALS[(module, name)]
        if module == "torch" and isinstance(getattr(torch, name, None), torch.dtype):
            return getattr(torch, name)
        return type(name, (_Opaque,), {"qualname": f"{module}.{name}"})


class _RestrictedPickle:
    """The ``pickle_module`` torch.load is given: only its ``Unpickler`` (and ``load``) are used."""

    Unpickler = _RestrictedUnpickler

    @staticmethod
    def load(file: Any, **kwargs: Any) -> Any:
        return _RestrictedUnpickler(file, **kwargs).load()


def safe_load(path: str | Path) -> dict[str, Any]:
    """A checkpoint file's top-level dict, loaded without running any code it names (see the module docstring)."""
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        logger.info("%s holds objects weights_only refuses (%s); reading it with the restricted unpickler",
                    path, str(err).splitlines()[0][:200])
    with open(path, "rb") as f:
        data = io.BytesIO(f.read())
    return torch.load(data, map_location="cpu", weights_only=False, pickle_module=_RestrictedPickle)


# ---- file layouts --------------------------------------------------------------------------------------------------
def _megatron_lm_files(root: Path, iteration: int | None) -> tuple[str, list[Path]]:
    tracker = root / "latest_checkpointed_iteration.txt"
    if iteration is None:
        if not tracker.is_file():
            raise ValueError(f"--load-dir {root} has no latest_checkpointed_iteration.txt; pass the directory of a "
                             "Megatron-LM --save (or --iteration N)")
        tag = tracker.read_text(encoding="utf-8").strip()
    else:
        tag = str(iteration)
    it_dir = root / ("release" if tag == "release" else f"iter_{int(tag):07d}")
    if is_torch_dist_checkpoint(it_dir):  # --ckpt-format torch_dist: one directory, whole tensors
        return it_dir.name, [it_dir]
    ranks = sorted(it_dir.glob("mp_rank_*"))
    if any(re.fullmatch(r"mp_rank_\d+_\d+", r.name) and not r.name.endswith("_000") for r in ranks):
        raise NotImplementedError(f"{it_dir} holds pipeline-parallel shards (mp_rank_XX_YYY with YYY > 0); merge the "
                                  "pipeline stages first (Megatron-LM's tools/checkpoint/convert.py to PP=1)")
    files = [r / "model_optim_rng.pt" for r in ranks if (r / "model_optim_rng.pt").is_file()]
    if not files:
        raise ValueError(f"{it_dir} holds neither mp_rank_XX/model_optim_rng.pt (--ckpt-format torch) nor a "
                         ".metadata index (--ckpt-format torch_dist); pass the --save directory of a Megatron-LM run")
    return it_dir.name, files


def _deepspeed_files(root: Path, iteration: int | None) -> tuple[str, list[Path]]:
    if iteration is None:
        latest = root / "latest"
        if not latest.is_file():
            raise ValueError(f"--load-dir {root} has no 'latest' file; pass the --save directory of a "
                             "Megatron-DeepSpeed run (or --iteration N)")
        tag = latest.read_text(encoding="utf-8").strip()
    else:
        tag = f"global_step{iteration}"
    step_dir = root / tag
    if any(step_dir.glob("layer_*-model_*-model_states.pt")):
        raise NotImplementedError(f"{step_dir} is a pipeline (PipelineModule) checkpoint; only --no-pipeline-parallel "
                                  "checkpoints (mp_rank_XX_model_states.pt) are read")
    files = sorted(step_dir.glob("mp_rank_*_model_states.pt"))
    if not files:
        raise ValueError(f"{step_dir} holds no mp_rank_XX_model_states.pt files")
    return tag, files


# ---- names ---------------------------------------------------------------------------------------------------------
def _flatten(tree: Any, prefix: str = "") -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_flatten(value, name + "."))
        elif isinstance(value, torch.Tensor):
            out[name] = value
    return out


_LAYER = [  # inside a layer: legacy Megatron and megatron-core spellings -> ours
    (r"\.attention\.", ".self_attention."),
    (r"\.self_attention\.linear_qkv\.layer_norm_", ".input_layernorm."),
    (r"\.mlp\.linear_fc1\.layer_norm_", ".post_attention_layernorm."),
    (r"\.self_attention\.linear_qkv\.", ".self_attention.query_key_value."),
    (r"\.self_attention\.linear_proj\.", ".self_attention.dense."),
    (r"\.pre_mlp_layernorm\.", ".post_attention_layernorm."),
    (r"\.mlp\.linear_fc1\.", ".mlp.dense_h_to_4h."),
    (r"\.mlp\.linear_fc2\.", ".mlp.dense_4h_to_h."),
]
_SKIP = re.compile(r"(_extra_state$|\.inv_freq$|rotary_pos_emb|\.masked_softmax)")


def to_our_names(state: dict[str, torch.Tensor], model_type: ModelType) -> dict[str, torch.Tensor]:
    """Rename one shard's tensors (legacy nested/flat or megatron-core names) to ours, dropping buffers that carry
    no weights (Transformer Engine extra state, RoPE frequencies)."""
    root = "decoder" if model_type == "GPT" else "encoder"
    rules = [
        (r"^(language_model\.)?embedding\.(word|position|tokentype)_embeddings\.", r"\2_embeddings."),
        (r"^language_model\.(encoder|transformer)\.(final_layernorm|final_norm)\.", f"{root}.final_layernorm."),
        (r"^(decoder|encoder)\.(final_layernorm|final_norm)\.", f"{root}.final_layernorm."),
        (r"^language_model\.(encoder|transformer)\.layers\.", f"{root}.layers."),
        (r"^(decoder|encoder)\.layers\.", f"{root}.layers."),
        (r"^(language_model\.)?output_layer\.", "output_layer."),
        (r"^(language_model\.)?pooler\.dense\.", "pooler."),
        (r"^lm_head\.layernorm\.", "lm_head.layer_norm."),
    ]
    if model_type == "BERT":  # megatron-core's BERT keeps the masked-LM output bias in its output layer
        rules.append((r"^output_layer\.bias$", "lm_head.bias"))
    out = {}
    for name, tensor in state.items():
        name = re.sub(r"^(module\.)+", "", name).replace(".random_ltd_layer", "")
        if _SKIP.search(name):
            continue
        new = name
        for pattern, repl in rules:
            new = re.sub(pattern, repl, new)
        if new.startswith(f"{root}.layers."):
            for pattern, repl in _LAYER:
                new = re.sub(pattern, repl, new)
        out[new] = tensor
    return out


def _check_names(shard: dict[str, torch.Tensor], expected: set[str], model_type: ModelType, where: str) -> None:
    extra, missing = sorted(set(shard) - expected), sorted(expected - set(shard))
    if extra or missing:
        raise ValueError(f"{where}: tensors without a counterpart in our {model_type} model: {extra[:6]}; ours "
                         f"missing from the checkpoint: {missing[:6]}. Is --model-type right, and is the model a "
                         "plain GPT/BERT (no MoE)?")


def _interleave_qkv(state: dict[str, torch.Tensor], heads_per_rank: int, groups_per_rank: int) -> None:
    """``[Q | K | V]`` rows of one shard -> per key/value group ``[q heads; k; v]`` (per head ``[q; k; v]`` without
    grouped-query attention), in place."""
    for name in [n for n in state if ".query_key_value." in n]:
        t = state[name]
        hn = t.shape[0] // (heads_per_rank + 2 * groups_per_rank)
        q, k, v = t.split([heads_per_rank * hn, groups_per_rank * hn, groups_per_rank * hn])
        q, k, v = (x.reshape(groups_per_rank, -1, hn, *t.shape[1:]) for x in (q, k, v))
        state[name] = torch.cat([q, k, v], dim=1).reshape(t.shape).contiguous()


def _stack_gate_up(state: dict[str, torch.Tensor]) -> None:
    """SwiGLU: one shard's ``dense_h_to_4h`` rows ``[gate shard; up shard]`` -> our stacked ``[2, ffn/tp, ...]``."""
    for name in [n for n in state if ".mlp.dense_h_to_4h." in n]:
        t = state[name]
        state[name] = t.reshape(2, t.shape[0] // 2, *t.shape[1:])


# ---- architecture --------------------------------------------------------------------------------------------------
def _arg(args: argparse.Namespace, *names: str, default: Any = None) -> Any:
    for name in names:
        value = getattr(args, name, None)
        if value is not None:
            return value
    return default


def _spec_from_args(args: argparse.Namespace, state: dict[str, torch.Tensor], model_type: ModelType,
                    where: str) -> tuple[ModelSpec, dict[str, Any], int]:
    heads = _arg(args, "num_attention_heads")
    groups = _arg(args, "num_query_groups", "num_key_value_heads", default=heads)
    if not _arg(args, "group_query_attention", default=True):
        groups = heads  # Megatron-LM keeps a num_query_groups default without --group-query-attention
    for flag in ("squared_relu", "openai_gelu", "apply_layernorm_1p"):
        if _arg(args, flag, default=False):
            raise NotImplementedError(f"{where}: the checkpoint was trained with --{flag.replace('_', '-')}, which is "
                                      "not implemented here (the MLP is GeLU or SwiGLU, the norm LayerNorm or RMSNorm)")
    normalization = str(_arg(args, "normalization", default="LayerNorm"))
    if normalization.lower() not in ("layernorm", "rmsnorm"):
        raise NotImplementedError(f"{where}: --normalization {normalization} is not implemented (LayerNorm or "
                                  "RMSNorm)")
    experts = _arg(args, "num_experts", default=1)
    if max(experts if isinstance(experts, list) else [experts]) > 1:
        raise NotImplementedError(f"{where}: mixture-of-experts checkpoints are not supported")
    rope = _arg(args, "position_embedding_type") == "rope" or bool(_arg(args, "use_rotary_position_embeddings"))
    prefix = "decoder" if model_type == "GPT" else "encoder"
    config = TransformerConfig(
        num_layers=args.num_layers, hidden_size=args.hidden_size, num_attention_heads=heads,
        ffn_hidden_size=_arg(args, "ffn_hidden_size"), kv_channels=_arg(args, "kv_channels"),
        max_position_embeddings=_arg(args, "max_position_embeddings", "seq_length"),
        normalization=normalization.lower(), swiglu=bool(_arg(args, "swiglu", default=False)),
        group_query_attention=groups != heads, num_query_groups=groups if groups != heads else None,
        position_embedding_type="rope" if rope else "learned_absolute",
        rotary_percent=float(_arg(args, "rotary_percent", default=1.0)),
        rotary_base=int(_arg(args, "rotary_base", "rotary_position_embeddings_theta", default=10000)),
        layernorm_epsilon=float(_arg(args, "norm_epsilon", "layernorm_epsilon", default=1e-5)),
        apply_residual_connection_post_layernorm=bool(_arg(args, "apply_residual_connection_post_layernorm",
                                                           default=False)),
        untie_embeddings_and_output_weights="output_layer.weight" in state,
        add_bias_linear=f"{prefix}.layers.0.self_attention.dense.bias" in state,
        hidden_dropout=float(_arg(args, "hidden_dropout", default=0.1)),
        attention_dropout=float(_arg(args, "attention_dropout", default=0.1)),
        init_method_std=float(_arg(args, "init_method_std", default=0.02)),
    )
    files = {n: _arg(args, n) for n in ("vocab_file", "merge_file", "tokenizer_model")}
    tokenizer = dict(
        tokenizer_type=_arg(args, "tokenizer_type", default="GPT2BPETokenizer" if model_type == "GPT"
                            else "BertWordPieceLowerCase"),
        make_vocab_size_divisible_by=int(_arg(args, "make_vocab_size_divisible_by", default=128)),
        # the run's tokenizer files, where they exist on this machine (the caller may name others)
        **{n: v for n, v in files.items() if isinstance(v, str) and Path(v).exists()},
    )
    if tokenizer["tokenizer_type"] == "NullTokenizer" and _arg(args, "vocab_size") is not None:
        tokenizer["vocab_size"] = int(args.vocab_size)
    spec = ModelSpec(model_type=model_type, config=config, vocab_size=0,
                     add_binary_head="binary_head.weight" in state,
                     num_tokentypes=state["tokentype_embeddings.weight"].shape[0]
                     if "tokentype_embeddings.weight" in state else 0)
    return spec, tokenizer, int(_arg(args, "seq_length", "max_position_embeddings"))


@dataclass
class ForeignCheckpoint:
    """A foreign checkpoint read into our terms: one unsharded state dict with our names and the architecture."""

    spec: ModelSpec
    """Our model for the weights; ``vocab_size`` = the checkpoint's (padded) embedding rows."""
    state: dict[str, torch.Tensor]
    """TP-merged state dict, our names."""
    tokenizer: dict[str, Any]
    """TokenizerConfig fields from the checkpoint's args: type, vocabulary padding, and the files that exist here."""
    seq_length: int
    """The run's --seq-length."""
    source_tp: int
    """Tensor-parallel size the checkpoint was saved with."""
    tag: str
    """The iteration read (``iter``/``release`` or ``global_stepN``)."""


def read_foreign_checkpoint(load_dir: str | Path, loader: LoaderKind, model_type: ModelType, *,
                            qkv_layout: QKVLayout = "interleaved", iteration: int | None = None) -> ForeignCheckpoint:
    """Read the latest (or ``iteration``) checkpoint under ``load_dir``, every TP shard, as one state dict.

    Raises:
        ValueError: a missing file, missing ``args``, unknown tensors or shapes that do not fit the architecture.
        NotImplementedError: pipeline shards or architectures not built here (MoE, squared ReLU, tanh GELU).
    """
    root = Path(load_dir)
    tag, files = (_megatron_lm_files if loader == "megatron_lm" else _deepspeed_files)(root, iteration)
    key = "model" if loader == "megatron_lm" else "module"
    shards, args = [], None
    for path in files:
        payload = read_torch_dist(path, safe_load) if path.is_dir() else safe_load(path)
        if key not in payload:
            raise ValueError(f"{path} has no {key!r} entry (keys: {sorted(payload)[:8]}); is --loader right?")
        version = float(payload.get("checkpoint_version", 3.0) or 0.0)
        if loader == "megatron_lm" and version < 2.0:
            raise NotImplementedError(f"{path}: checkpoint_version {version} orders QKV differently; re-save it "
                                      "with a Megatron-LM of 2021 or later")
        args = args if args is not None else payload.get("args")
        shards.append(to_our_names(_flatten(payload[key]), model_type))
    if not isinstance(args, argparse.Namespace):
        raise ValueError(f"{files[0]} holds no 'args' (the run's argparse.Namespace); the architecture cannot be read")
    tp = len(shards)
    saved_tp = int(_arg(args, "tensor_model_parallel_size", default=tp))
    if saved_tp != tp:
        raise ValueError(f"{root}: args say tensor_model_parallel_size {saved_tp} but {tp} shard files were found")
    spec, tokenizer, seq_length = _spec_from_args(args, shards[0], model_type, str(files[0]))
    heads, groups = spec.config.num_attention_heads, spec.config.query_groups
    for shard in shards:
        if qkv_layout == "contiguous":
            if groups % tp:
                raise NotImplementedError(f"{root}: contiguous [Q|K|V] shards with {groups} key/value groups over "
                                          f"TP={tp} do not hold whole groups; re-save at a TP size dividing {groups}")
            _interleave_qkv(shard, heads // tp, groups // tp)
        if spec.config.swiglu:
            _stack_gate_up(shard)
    spec.vocab_size = sum(s["word_embeddings.weight"].shape[0] for s in shards)
    model = build_meta_model(spec)
    _check_names(shards[0], set(model.state_dict()), model_type, str(files[0]))
    state = merge_shards(shards, partition_dims(model))
    _check_against_model(state, model, str(root / tag))
    logger.info("read %s checkpoint %s (%s, TP=%d): %d layers, hidden %d, vocab rows %d", loader, root / tag,
                model_type, tp, spec.config.num_layers, spec.config.hidden_size, spec.vocab_size)
    return ForeignCheckpoint(spec=spec, state=state, tokenizer=tokenizer, seq_length=seq_length, source_tp=tp, tag=tag)


def import_foreign_checkpoint(
    load_dir: str | Path, save_dir: str | Path, loader: LoaderKind, model_type: ModelType, *, target_tp: int = 1,
    qkv_layout: QKVLayout = "interleaved", iteration: int | None = None,
    tokenizer_overrides: dict[str, str] | None = None,
) -> Path:
    """Write the foreign checkpoint's weights as our ``release`` checkpoint at ``target_tp`` (then
    ``pretrain_gpt.py --load SAVE_DIR --finetune ...`` or ``tasks/main.py``), with a config.json of its architecture.

    The vocabulary is re-padded by the tokenizer's size when the TP size changes or tokenizer files are given
    (Megatron's rule, so it equals what training computes); otherwise the checkpoint's rows are kept.
    """
    ckpt = read_foreign_checkpoint(load_dir, loader, model_type, qkv_layout=qkv_layout, iteration=iteration)
    tokenizer = TokenizerConfig(**{**ckpt.tokenizer, **(tokenizer_overrides or {})})
    rows = ckpt.spec.vocab_size
    if target_tp != ckpt.source_tp or tokenizer_overrides:
        try:
            used = build_tokenizer(tokenizer).vocab_size
        except (ValueError, OSError) as err:
            raise ValueError(f"re-padding the vocabulary for TP={target_tp} needs the run's tokenizer ({err}); pass "
                             "--vocab-file/--merge-file (or --tokenizer-model)") from None
        rows = padded_vocab_size(used, tokenizer.make_vocab_size_divisible_by, target_tp)
        resize_vocab(ckpt.state, rows, used, str(load_dir))
        ckpt.spec.vocab_size = rows
    try:
        check_tensor_parallel_divisibility(ckpt.spec.config, rows, target_tp)
    except ValueError as exc:
        raise ValueError(f"{exc}; choose another --target-tensor-parallel-size") from None
    run_config = {
        "model": dataclass_to_dict(ckpt.spec.config), "tokenizer": dataclass_to_dict(tokenizer),
        "data": {"seq_length": ckpt.seq_length}, "parallel": {"tensor_model_parallel_size": target_tp},
        "imported_from": {"loader": loader, "load_dir": str(Path(load_dir).resolve()), "tag": ckpt.tag,
                          "source_tensor_model_parallel_size": ckpt.source_tp, "qkv_layout": qkv_layout},
    }
    shards = split_shards(ckpt.state, partition_dims(build_meta_model(ckpt.spec)), target_tp)
    with staged_output(save_dir, "--save-dir") as staging:
        write_release_checkpoint(staging, shards, run_config)
    logger.info("wrote %s (TP=%d, vocab %d rows) from %s", save_dir, target_tp, rows, Path(load_dir) / ckpt.tag)
    return Path(save_dir)

"""Hugging Face interop: our GPT/BERT training checkpoints to ``transformers`` directories and back.

Mapping (all exact in fp32: the HF model computes our logits up to float summation order):

* GPT, learned absolute positions -> ``GPT2LMHeadModel`` (``activation_function="gelu"``, the exact erf GELU;
  an untied output layer becomes ``tie_word_embeddings=False``).
* GPT, rotary positions -> ``GPTNeoXForCausalLM`` (sequential residual, ``rotary_pct`` = ``rotary_percent``; its
  fused QKV is per-head interleaved like ours).
* GPT, rotary positions with RMSNorm and SwiGLU (Llama-style, grouped-query attention or not, biases or not) ->
  ``LlamaForCausalLM`` (``num_key_value_heads`` = the query groups, ``head_dim`` = ``kv_channels``; our hidden
  dropout, which Llama has no field for, travels in the ``megatron_de`` entry). Other combinations of these options
  (LayerNorm with SwiGLU, RMSNorm with GELU, GQA with GPT-NeoX, learned positions) have no HF class and are refused.
* BERT -> ``MegatronBertForPreTraining`` (with the binary head: pooler -> ``bert.pooler``, binary head ->
  ``cls.seq_relationship``) or ``MegatronBertForMaskedLM`` (``--bert-no-binary-head``: no pooler). Our BERT is
  Megatron's: pre-LayerNorm layers, a final LayerNorm and no embedding LayerNorm. HF's ``BertForPreTraining`` is
  post-LayerNorm with an embedding LayerNorm, so no choice of its weights reproduces our function;
  ``MegatronBert*`` is exactly Megatron's layer order, which is why it is the export target.

Vocabulary: the HF ``vocab_size`` is our padded vocabulary, so logits match column for column. On import the rows
are re-padded to what ``pretrain_*.py`` computes for the target TP size (zero rows appended, or trailing padding
rows beyond the tokenizer's ids dropped). Outputs are built in a hidden sibling directory and renamed into place,
so a crash never leaves a complete-looking output.
"""

from __future__ import annotations

import json
import os
from dataclasses import MISSING, fields
from pathlib import Path
from typing import Any

import torch

from megatron.config import flag_name
from megatron.data.bert_dataset import BertDataConfig
from megatron.data.config import DataConfig
from megatron.data.tokenizers.build import build_tokenizer
from megatron.data.tokenizers.config import TokenizerConfig, padded_vocab_size
from megatron.interop.checkpoint import (
    ModelSpec, ModelType, build_meta_model, partition_dims, read_megatron_checkpoint, resize_vocab, split_shards,
    staged_output, write_release_checkpoint,
)
from megatron.interop.hf_config import build_hf_config, check_exportable, dtype_name, parse_hf_config
from megatron.interop.hf_tokenizer import export_tokenizer, import_tokenizer
from megatron.interop.hf_weights import HF_CLASSES, from_hf_state, hf_arch_for, to_hf_state
from megatron.logging import get_logger
from megatron.model.config import TransformerConfig
from megatron.model.gpt import check_tensor_parallel_divisibility
from megatron.parallel.config import ParallelConfig
from megatron.training.config import PretrainConfig, TrainingConfig

__all__ = ["megatron_to_hf", "hf_to_megatron", "pretrain_flags"]

logger = get_logger(__name__)


def _special_ids(tokenizer: Any) -> dict[str, int | None]:
    ids: dict[str, int | None] = {}
    for role in ("eod", "pad"):
        try:
            ids[role] = getattr(tokenizer, role) if tokenizer is not None else None
        except NotImplementedError:  # the tokenizer has no such token
            ids[role] = None
    return ids


def megatron_to_hf(
    load_dir: str | os.PathLike, save_dir: str | os.PathLike, model_type: ModelType,
    tokenizer_overrides: dict[str, str] | None = None,
) -> Path:
    """Convert the latest checkpoint under ``load_dir`` (any TP size) into a ``transformers`` directory.

    Writes ``config.json`` + ``model.safetensors`` (``save_pretrained``) and the tokenizer files; returns
    ``save_dir``. ``tokenizer_overrides`` replace the run's ``vocab_file``/``merge_file``/``tokenizer_model``.
    """
    import transformers

    ckpt = read_megatron_checkpoint(load_dir, model_type, tokenizer_overrides)
    spec = ckpt.spec
    check_exportable(spec, f"--load-dir {load_dir}")
    with staged_output(save_dir, "--save-dir") as staging:
        tokenizer = export_tokenizer(ckpt.tokenizer, staging, spec.config.max_position_embeddings)
        if tokenizer is not None and tokenizer.vocab_size > spec.vocab_size:
            raise ValueError(f"the tokenizer has {tokenizer.vocab_size} ids but the checkpoint's embedding only "
                             f"{spec.vocab_size} rows; pass the run's own --vocab-file/--merge-file")
        metadata = {
            "model_type": model_type, "tokenizer_type": ckpt.tokenizer.tokenizer_type,
            "make_vocab_size_divisible_by": ckpt.tokenizer.make_vocab_size_divisible_by,
            "vocab_extra_ids": ckpt.tokenizer.vocab_extra_ids, "add_bias_linear": spec.config.add_bias_linear,
            "hidden_dropout": spec.config.hidden_dropout,
            "num_tokentypes": spec.num_tokentypes, "source_tensor_model_parallel_size": ckpt.source_tp,
            "unpadded_vocab_size": tokenizer.vocab_size if tokenizer is not None else None,
        }
        hf_config = build_hf_config(spec, _special_ids(tokenizer), metadata)
        cls = getattr(transformers, _hf_class_name(spec))
        with torch.device("meta"):
            model = cls(hf_config)
        shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
        hf_state = to_hf_state(ckpt.state, spec, shapes, dict(getattr(model, "_tied_weights_keys", None) or {}))
        model.load_state_dict(hf_state, strict=True, assign=True)
        model.tie_weights()
        model.save_pretrained(str(staging))
    logger.info("wrote %s (%s, vocab %d rows) from %s at TP=%d", save_dir, cls.__name__, spec.vocab_size, load_dir,
                ckpt.source_tp)
    return Path(save_dir)


def _hf_class_name(spec: ModelSpec) -> str:
    if spec.model_type == "BERT":
        return "MegatronBertForPreTraining" if spec.add_binary_head else "MegatronBertForMaskedLM"
    return {"gpt2": "GPT2LMHeadModel", "gpt_neox": "GPTNeoXForCausalLM", "llama": "LlamaForCausalLM"}[hf_arch_for(spec)]


def _read_hf_architecture(hf_dir: Path) -> str | None:
    path = hf_dir / "config.json"
    if not path.is_file():
        raise ValueError(f"--load-dir {hf_dir} has no config.json; pass a directory written by save_pretrained")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} is not valid JSON ({exc})") from None
    architectures = raw.get("architectures") or [None]
    if architectures[0] not in HF_CLASSES:
        raise ValueError(f"{path}: architecture {architectures[0]!r} is not supported; supported: "
                         f"{sorted(HF_CLASSES)} (what --saver hf writes); convert a directory of one of those classes")
    return architectures[0]


def _load_hf_weights(hf_dir: Path, architecture: str) -> dict[str, torch.Tensor]:
    import transformers

    cls = getattr(transformers, architecture)
    model, info = cls.from_pretrained(str(hf_dir), dtype="auto", local_files_only=True, output_loading_info=True)
    missing = sorted(info.get("missing_keys") or [])
    mismatched = list(info.get("mismatched_keys") or [])
    if missing or mismatched:
        raise ValueError(f"{hf_dir}: the weights do not fill {architecture}: missing {missing[:6]}, wrong shapes "
                         f"{mismatched[:3]}; the directory is incomplete or of another architecture")
    return model.state_dict()


def _run_config(spec: ModelSpec, tokenizer: TokenizerConfig, tp: int) -> dict[str, Any]:
    """The ``config.json`` of the written checkpoint: a resolved run config for these weights."""
    dtype = spec.config.params_dtype
    extras = {"bert": BertDataConfig(bert_binary_head=spec.add_binary_head)} if spec.model_type == "BERT" else {}
    cfg = PretrainConfig(model=spec.config, tokenizer=tokenizer,
                         data=DataConfig(seq_length=spec.config.max_position_embeddings),
                         parallel=ParallelConfig(tensor_model_parallel_size=tp),
                         training=TrainingConfig(bf16=dtype == "bfloat16", fp16=dtype == "float16"),
                         extras=extras, world_size=tp)
    return cfg.to_dict()


def hf_to_megatron(
    load_dir: str | os.PathLike, save_dir: str | os.PathLike, model_type: ModelType, target_tp: int = 1,
    tokenizer_overrides: dict[str, str] | None = None, make_vocab_size_divisible_by: int | None = None,
) -> Path:
    """Convert a ``transformers`` directory (one of :data:`HF_CLASSES`) into our ``release`` checkpoint.

    Args:
        target_tp: tensor-parallel size of the written shards (``pretrain_*.py --tensor-model-parallel-size``).
        tokenizer_overrides: tokenizer files to use instead of the directory's.
        make_vocab_size_divisible_by: the padding rule to record (default: the exported run's, else 128).
    Returns:
        ``save_dir``, holding ``release/mp_rank_XX/model_optim_rng.pt``, ``release/config.json``, the tracker and
        ``tokenizer/``. :func:`pretrain_flags` of that config.json lists the flags that load it.
    """
    import transformers

    hf_dir, save_dir = Path(load_dir), Path(save_dir).absolute()  # config.json records absolute tokenizer paths
    if target_tp < 1:
        raise ValueError(f"--target-tensor-parallel-size must be >= 1, got {target_tp}")
    architecture = _read_hf_architecture(hf_dir)
    parsed = parse_hf_config(transformers.AutoConfig.from_pretrained(str(hf_dir), local_files_only=True),
                             "float32", str(hf_dir / "config.json"))
    if parsed.model_type != model_type:
        raise ValueError(f"--model-type {model_type} but {hf_dir} holds a {architecture} ({parsed.model_type}); "
                         f"pass --model-type {parsed.model_type}")
    spec, meta = parsed.spec, parsed.metadata
    hf_state = _load_hf_weights(hf_dir, architecture)
    spec.config.params_dtype = dtype_name(next(iter(hf_state.values())).dtype, str(hf_dir))
    state = from_hf_state(hf_state, spec, _shapes(spec), str(hf_dir))
    del hf_state

    divisible_by = make_vocab_size_divisible_by or int(meta.get("make_vocab_size_divisible_by", 128))
    with staged_output(save_dir, "--save-dir") as staging:
        tok_now, tok_final = import_tokenizer(hf_dir, staging, save_dir, dict(tokenizer_overrides or {}),
                                              meta.get("tokenizer_type"), int(meta.get("vocab_extra_ids", 0)))
        tok_now.make_vocab_size_divisible_by = tok_final.make_vocab_size_divisible_by = divisible_by
        used = build_tokenizer(tok_now).vocab_size
        rows = padded_vocab_size(used, divisible_by, target_tp)
        resize_vocab(state, rows, used, str(hf_dir))
        spec.vocab_size = rows
        try:
            check_tensor_parallel_divisibility(spec.config, rows, target_tp)
        except ValueError as exc:
            raise ValueError(f"{exc}; choose another --target-tensor-parallel-size") from None
        model = build_meta_model(spec)
        shards = split_shards(state, partition_dims(model), target_tp)
        run_config = _run_config(spec, tok_final, target_tp)
        write_release_checkpoint(staging, shards, run_config)
    logger.info("wrote %s (TP=%d, vocab %d rows) from %s; train on with: %s", save_dir, target_tp, rows, hf_dir,
                " ".join(pretrain_flags(run_config)))
    return save_dir


def _shapes(spec: ModelSpec) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in build_meta_model(spec).state_dict().items()}


def _section_flags(cls: type, values: dict[str, Any]) -> list[str]:
    """Command-line flags that reproduce the non-default ``values`` of dataclass ``cls``."""
    out: list[str] = []
    for f in fields(cls):
        if not f.init or f.metadata.get("cli", True) is False or f.name not in values:
            continue
        value = values[f.name]
        if value is None or (f.default is not MISSING and value == f.default):
            continue
        if isinstance(value, bool):
            out.append(flag_name(f.name) if value else "--no-" + f.name.replace("_", "-"))
        elif isinstance(value, list):
            out += [flag_name(f.name), *map(str, value)]
        else:
            out += [flag_name(f.name), str(value)]
    return out


def pretrain_flags(run_config: dict[str, Any]) -> list[str]:
    """The ``pretrain_gpt.py`` / ``pretrain_bert.py`` flags of a checkpoint's architecture, tokenizer, TP size and
    precision: add ``--load DIR --finetune`` plus data and schedule flags to train on from it."""
    flags = _section_flags(TransformerConfig, run_config["model"])
    flags += _section_flags(TokenizerConfig, run_config["tokenizer"])
    flags += _section_flags(ParallelConfig, {"tensor_model_parallel_size":
                                             run_config["parallel"]["tensor_model_parallel_size"]})
    flags += _section_flags(TrainingConfig, {k: run_config["training"][k] for k in ("bf16", "fp16")})
    bert = run_config.get("extras", {}).get("bert")
    if bert is not None and not bert.get("bert_binary_head", True):
        flags.append("--bert-no-binary-head")
    return flags

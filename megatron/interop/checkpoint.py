"""Our side of checkpoint conversion: read a training checkpoint at any TP size as one unsharded state dict, and
write an unsharded state dict back as a ``release`` checkpoint at any TP size.

Which tensors are split, and along which dimension, is read from the model itself: the model is built once at
TP=1 on the meta device and each parameter's ``tensor_model_parallel`` / ``partition_dim`` attributes (set by the
parallel layers) say how training shards it. So merging and splitting follow the layers' own rules (column-parallel
rows, row-parallel columns, vocabulary rows) instead of a second hand-kept table. Files are read and written only
through :mod:`megatron.training.checkpointing`.
"""

from __future__ import annotations

import json
import os
import shutil
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Iterator, Literal

import torch
from torch import nn

from megatron.data.tokenizers.build import build_tokenizer
from megatron.data.tokenizers.config import TokenizerConfig, padded_vocab_size
from megatron.logging import get_logger
from megatron.model.bert import BertModel
from megatron.model.config import TransformerConfig
from megatron.model.gpt import GPTModel, check_tensor_parallel_divisibility
from megatron.parallel.state import ParallelState
from megatron.parallel.utils import shard_of
from megatron.training.checkpointing import (
    TRACKER_FILENAME, _read_payload, checkpoint_path, iteration_dir, read_tracker, save_checkpoint,
)

__all__ = [
    "ModelType", "ModelSpec", "MegatronCheckpoint", "build_meta_model", "partition_dims", "merge_shards",
    "split_shards", "resize_vocab", "read_megatron_checkpoint", "write_release_checkpoint",
    "transformer_config_from_dict", "staged_output", "reshard_megatron",
]

logger = get_logger(__name__)

ModelType = Literal["GPT", "BERT"]
_ROOT_MODULE = {"GPT": "decoder", "BERT": "encoder"}  # the layer stack's attribute: tells the two models apart
_VOCAB_ROWS = ("word_embeddings.weight", "output_layer.weight", "lm_head.bias")
"""Our tensors with one row per vocabulary id."""


@dataclass(kw_only=True)
class ModelSpec:
    """Everything needed to build our model: the architecture plus the facts the run config does not hold."""

    model_type: ModelType
    """GPT (``GPTModel``) or BERT (``BertModel``)."""
    config: TransformerConfig
    """The architecture (model section of the run config)."""
    vocab_size: int
    """Rows of the word embedding: the padded vocabulary at the TP size the weights are laid out for."""
    add_binary_head: bool = False
    """BERT only: the pooler and the next-sentence (binary) head exist."""
    num_tokentypes: int = 0
    """BERT only: rows of the token-type embedding (0: none)."""


@dataclass
class MegatronCheckpoint:
    """An unsharded view of one training checkpoint."""

    spec: ModelSpec
    """Architecture; ``spec.vocab_size`` is the padded vocabulary at the source TP size."""
    state: dict[str, torch.Tensor]
    """Full (TP-merged) model state dict, our parameter names."""
    tokenizer: TokenizerConfig
    """The run's tokenizer config (with the caller's file overrides applied)."""
    run_config: dict[str, Any] = field(default_factory=dict)
    """The iteration's ``config.json`` as read."""
    source_tp: int = 1
    """Tensor-parallel size the checkpoint was saved with."""


def transformer_config_from_dict(section: dict[str, Any], where: str) -> TransformerConfig:
    """A :class:`TransformerConfig` from a saved ``model`` section; unknown keys are errors naming ``where``."""
    known = {f.name for f in fields(TransformerConfig) if f.init}
    unknown = sorted(set(section) - known)
    if unknown:
        raise ValueError(f"{where}: model section has keys {unknown} that TransformerConfig does not know; was it "
                         "written by a newer version of this code?")
    # Compilation and recomputation change how training runs, never the weights; building a converter-side model
    # with them would only compile or validate things that do not matter here.
    values = {**section, "torch_compile": False, "recompute_activations": False, "recompute_granularity": None,
              "recompute_method": None, "recompute_num_layers": None}
    return TransformerConfig(**values)


def build_meta_model(spec: ModelSpec) -> nn.Module:
    """Our model for ``spec`` at TP=1 on the meta device (shapes and TP attributes only, no storage)."""
    with torch.device("meta"):
        if spec.model_type == "GPT":
            return GPTModel(spec.config, ParallelState.single(), spec.vocab_size)
        return BertModel(spec.config, ParallelState.single(), spec.vocab_size, add_binary_head=spec.add_binary_head,
                         num_tokentypes=spec.num_tokentypes)


def partition_dims(model: nn.Module) -> dict[str, int | None]:
    """``{name: dim the parameter is split along over TP, or None if replicated}`` for every state-dict entry."""
    params = dict(model.named_parameters())
    dims: dict[str, int | None] = {}
    for name in model.state_dict():
        p = params.get(name)
        split = p is not None and getattr(p, "tensor_model_parallel", False)
        dims[name] = int(p.partition_dim) if split else None
    return dims


def _check_against_model(state: dict[str, torch.Tensor], model: nn.Module, where: str) -> None:
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    missing, extra = sorted(expected.keys() - state.keys()), sorted(state.keys() - expected.keys())
    if missing or extra:
        raise ValueError(f"{where}: the weights do not match the architecture in config.json: missing {missing[:6]}, "
                         f"unexpected {extra[:6]}")
    for name, shape in expected.items():
        if tuple(state[name].shape) != shape:
            raise ValueError(f"{where}: {name} has shape {tuple(state[name].shape)} but the architecture in "
                             f"config.json gives {shape}")


def merge_shards(shards: list[dict[str, torch.Tensor]], dims: dict[str, int | None]) -> dict[str, torch.Tensor]:
    """Concatenate per-rank state dicts (TP-rank order) along each tensor's partition dim; replicated from rank 0."""
    merged: dict[str, torch.Tensor] = {}
    for name, dim in dims.items():
        merged[name] = shards[0][name] if dim is None else torch.cat([s[name] for s in shards], dim=dim)
    return merged


def split_shards(state: dict[str, torch.Tensor], dims: dict[str, int | None], tp: int) -> list[dict[str, torch.Tensor]]:
    """Inverse of :func:`merge_shards`: rank r's state dict holds the r-th contiguous chunk of each split tensor.

    Chunks are cloned: ``torch.save`` of a view would write the whole underlying storage into every rank's file.
    """
    return [
        {name: (state[name] if dim is None else shard_of(state[name], dim, r, tp)).clone()
         for name, dim in dims.items()}
        for r in range(tp)
    ]


def resize_vocab(state: dict[str, torch.Tensor], rows: int, used: int, where: str) -> None:
    """Re-pad every vocabulary-indexed tensor to ``rows`` rows (in place); rows beyond ``used`` are padding."""
    have = state["word_embeddings.weight"].shape[0]
    if have < used:
        raise ValueError(f"{where}: the embedding has {have} rows but the tokenizer {used} ids; pass the model's "
                         "own tokenizer (--vocab-file/--merge-file)")
    if have == rows:
        return
    logger.info("vocabulary rows %d -> %d (tokenizer ids: %d): %s", have, rows, used,
                "appending zero rows" if rows > have else "dropping padding rows past the tokenizer's ids")
    for name in _VOCAB_ROWS:
        if name in state:
            t = state[name]
            state[name] = (torch.cat([t, t.new_zeros(rows - have, *t.shape[1:])]) if rows > have
                           else t[:rows].clone())


@contextmanager
def staged_output(target: str | os.PathLike, flag: str) -> Iterator[Path]:
    """Yield a fresh hidden sibling of ``target`` to write into; rename it to ``target`` only on success.

    ``target`` must not exist or be an empty directory (an atomic rename cannot replace a full one).
    """
    target = Path(target)
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise ValueError(f"{flag} {target} already exists and is not empty; remove it or choose a new directory")
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.parent / f".{target.name}.tmp-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    try:
        yield staging
        if target.exists():
            target.rmdir()
        os.replace(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _detect_model_type(state: dict[str, torch.Tensor], path: Path, model_type: ModelType) -> None:
    found = [t for t, root in _ROOT_MODULE.items() if any(k.startswith(root + ".") for k in state)]
    if len(found) != 1:
        raise ValueError(f"checkpoint {path} holds neither a GPT (decoder.*) nor a BERT (encoder.*) model; "
                         "--load-dir must be a Megatron-DE GPT or BERT training checkpoint")
    if found[0] != model_type:
        raise ValueError(f"--model-type {model_type} but checkpoint {path} holds a {found[0]} model "
                         f"({_ROOT_MODULE[found[0]]}.* weights); pass --model-type {found[0]}")


def _read_run_config(it_dir: Path) -> dict[str, Any]:
    path = it_dir / "config.json"
    if not path.is_file():
        raise ValueError(f"{path} does not exist: the architecture of a checkpoint is read from the config.json "
                         "that training writes beside it; restore that file (it is the run's resolved config)")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} is not valid JSON ({exc}); restore the file training wrote") from None
    for section in ("model", "tokenizer"):
        if not isinstance(config.get(section), dict):
            raise ValueError(f"{path} has no {section!r} section; it is not a Megatron-DE run config")
    return config


def read_megatron_checkpoint(
    load_dir: str | os.PathLike, model_type: ModelType, tokenizer_overrides: dict[str, str] | None = None,
) -> MegatronCheckpoint:
    """Read the latest iteration under ``load_dir`` (every ``mp_rank_XX`` file) as one unsharded state dict.

    Args:
        load_dir: a training ``--save`` directory (holding ``latest_checkpointed_iteration.txt``).
        model_type: what the caller expects; a mismatch with the weights is an error.
        tokenizer_overrides: tokenizer fields (``vocab_file``, ``merge_file``, ``tokenizer_model``) replacing the
            saved ones, for runs whose tokenizer files have moved.
    """
    root = Path(load_dir)
    tag = read_tracker(root)
    if tag is None:
        raise ValueError(f"--load-dir {root} has no {TRACKER_FILENAME}; pass the --save directory of a training run "
                         "(the folder that holds that file and the iter_* directories)")
    it_dir = iteration_dir(root, tag)
    run_config = _read_run_config(it_dir)
    first = _read_payload(checkpoint_path(root, tag, 0))
    tp = int(first["tensor_model_parallel_size"])
    shards = [first["model"]] + [_read_payload(checkpoint_path(root, tag, r))["model"] for r in range(1, tp)]
    _detect_model_type(first["model"], it_dir, model_type)

    state0 = first["model"]
    vocab_rows = sum(s["word_embeddings.weight"].shape[0] for s in shards)
    spec = ModelSpec(
        model_type=model_type, config=transformer_config_from_dict(run_config["model"], str(it_dir / "config.json")),
        vocab_size=vocab_rows, add_binary_head="binary_head.weight" in state0,
        num_tokentypes=state0["tokentype_embeddings.weight"].shape[0] if "tokentype_embeddings.weight" in state0 else 0,
    )
    model = build_meta_model(spec)
    state = merge_shards(shards, partition_dims(model))
    _check_against_model(state, model, str(it_dir))
    tok_section = {**run_config["tokenizer"], **(tokenizer_overrides or {})}
    unknown = sorted(set(tok_section) - {f.name for f in fields(TokenizerConfig) if f.init})
    if unknown:
        raise ValueError(f"{it_dir / 'config.json'}: tokenizer section has keys {unknown} that TokenizerConfig does "
                         "not know; was it written by a newer version of this code?")
    tokenizer = TokenizerConfig(**tok_section)
    return MegatronCheckpoint(spec=spec, state=state, tokenizer=tokenizer, run_config=run_config, source_tp=tp)


class _StateHolder(nn.Module):
    """Hands ``save_checkpoint`` a ready state dict (it only calls ``model.state_dict()``)."""

    def __init__(self, state: dict[str, torch.Tensor]) -> None:
        super().__init__()
        self._state = state

    def state_dict(self, *args: Any, **kwargs: Any) -> dict[str, torch.Tensor]:
        return dict(self._state)


@dataclass
class _RankView:
    """One TP rank of a single-process writer: ``save_checkpoint`` reads these fields only. ``rank`` stays 0 so
    the (per-rank) call also publishes its directory and tracker, which :func:`write_release_checkpoint` then
    gathers into one iteration."""

    tp_rank: int
    tp_size: int
    rank: int = 0
    dp_rank: int = 0
    dp_size: int = 1
    dp_group: None = None


def write_release_checkpoint(
    staging: Path, shards: list[dict[str, torch.Tensor]], run_config: dict[str, Any],
) -> None:
    """Write ``shards`` (one state dict per TP rank) as ``<staging>/release/mp_rank_XX/model_optim_rng.pt`` plus
    ``config.json`` and a tracker reading ``release`` (Megatron's tag for converted weights: loading one restarts
    at iteration 0 with a fresh optimizer, like ``--finetune``).

    Each rank goes through :func:`save_checkpoint` into its own scratch root; the rank directories are then moved
    under one ``release`` directory. ``staging`` must be a fresh directory that the caller publishes atomically.
    """
    tp = len(shards)
    release = iteration_dir(staging, "release")
    for r, shard in enumerate(shards):
        scratch = staging / f".rank{r}"
        save_checkpoint(scratch, 0, model=_StateHolder(shard), optimizer=None, scheduler=None,
                        pstate=_RankView(tp_rank=r, tp_size=tp), train_state={}, config=run_config)
        if r == 0:
            os.replace(iteration_dir(scratch, 0), release)
        else:
            os.replace(checkpoint_path(scratch, 0, r).parent, checkpoint_path(staging, "release", r).parent)
        shutil.rmtree(scratch)
    (staging / TRACKER_FILENAME).write_text("release\n", encoding="utf-8")


def reshard_megatron(
    load_dir: str | os.PathLike, save_dir: str | os.PathLike, model_type: ModelType, target_tp: int,
    tokenizer_overrides: dict[str, str] | None = None,
) -> Path:
    """Re-split the latest checkpoint under ``load_dir`` for ``target_tp`` ranks, as a ``release`` checkpoint.

    The vocabulary is re-padded by the run's own rule for the new TP size; config.json is the run's with the new
    tensor-parallel size (and the tokenizer overrides). Optimizer and RNG states are not carried over.
    """
    ckpt = read_megatron_checkpoint(load_dir, model_type, tokenizer_overrides)
    used = build_tokenizer(ckpt.tokenizer).vocab_size
    rows = padded_vocab_size(used, ckpt.tokenizer.make_vocab_size_divisible_by, target_tp)
    try:
        check_tensor_parallel_divisibility(ckpt.spec.config, rows, target_tp)
    except ValueError as exc:
        raise ValueError(f"{exc}; choose another --target-tensor-parallel-size") from None
    resize_vocab(ckpt.state, rows, used, str(load_dir))
    ckpt.spec.vocab_size = rows
    run_config = json.loads(json.dumps(ckpt.run_config))
    run_config.setdefault("parallel", {})["tensor_model_parallel_size"] = target_tp
    run_config["tokenizer"].update(tokenizer_overrides or {})
    shards = split_shards(ckpt.state, partition_dims(build_meta_model(ckpt.spec)), target_tp)
    with staged_output(save_dir, "--save-dir") as staging:
        write_release_checkpoint(staging, shards, run_config)
    logger.info("wrote %s (TP=%d, vocab %d rows) from %s at TP=%d", save_dir, target_tp, rows, load_dir,
                ckpt.source_tp)
    return Path(save_dir)

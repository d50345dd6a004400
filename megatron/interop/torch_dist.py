"""Megatron-LM's distributed checkpoints (``--ckpt-format torch_dist``) read on one process, weights only.

Such an ``iter_XXXXXXX`` directory is written by megatron-core's ``dist_checkpointing.save`` through
``torch.distributed.checkpoint``: ``.metadata`` (the index), ``__R_T.distcp`` files (the data, any number of writing
ranks and threads), ``common.pt`` (the unsharded rest: ``args``, ``iteration``, ``checkpoint_version``) and
``metadata.json``. Every tensor is stored under one key at its *global* shape, whatever the tensor- and
pipeline-parallel sizes of the run: the layers of a stack are stacked on a leading axis
(``decoder.layers.self_attention.linear_qkv.weight [L, 3h, h]``), TP shards are concatenated back along their
split dimension. So the file already is the TP=1, PP=1 model; :func:`read_torch_dist` returns it in the per-layer
names of a legacy ``--ckpt-format torch`` checkpoint (``decoder.layers.0.self_attention...``).

What is trusted: ``torch.distributed.checkpoint`` unpickles ``.metadata`` with plain ``pickle``; here it is read
with an unpickler that builds only the index classes of ``torch.distributed.checkpoint`` (metadata, plan and storage
records), ``torch.Size``, dtypes, layouts and memory formats, and refuses any other class. Tensor data is read by
``torch.distributed.checkpoint`` itself, with ``torch.load(weights_only=True)``; byte entries (Transformer Engine
extra state, RNG and optimizer objects) are never read. ``common.pt`` is read by the caller's ``load_common`` (the
importer passes its restricted loader, :func:`megatron.interop.megatron_import.safe_load`).
"""

from __future__ import annotations

import argparse
import copy
import pickle
import re
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.metadata import Metadata, StorageMeta, TensorStorageMetadata

__all__ = ["is_torch_dist_checkpoint", "read_torch_dist"]

# Model weights in megatron-core's sharded state dict (GPT and BERT); optimizer, RNG and rerun-state keys are not.
_MODEL_KEY = re.compile(r"^(embedding|decoder|encoder|output_layer|pooler|lm_head|binary_head)\.")
# torch.distributed.checkpoint's index records: plain dataclasses and enums, constructed without running code.
_INDEX_MODULES = ("torch.distributed.checkpoint.metadata", "torch.distributed.checkpoint.planner",
                  "torch.distributed.checkpoint.filesystem")
_TORCH_NAMES = {("torch", "Size"): torch.Size, ("torch.serialization", "_get_layout"): torch.serialization._get_layout,
                ("collections", "OrderedDict"): __import__("collections").OrderedDict}


class _IndexUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _TORCH_NAMES:
            return _TORCH_NAMES[(module, name)]
        if module == "torch" and isinstance(getattr(torch, name, None), (torch.dtype, torch.memory_format,
                                                                        torch.layout)):
            return getattr(torch, name)
        if module in _INDEX_MODULES:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"the checkpoint index names {module}.{name}, which is not one of "
                                     "torch.distributed.checkpoint's index records; refusing to build it")


class _SafeReader(dcp.FileSystemReader):
    """``FileSystemReader`` whose ``.metadata`` is read with :class:`_IndexUnpickler`."""

    def read_metadata(self, *args: Any, **kwargs: Any) -> Metadata:
        path = Path(self.path) / ".metadata"
        with open(path, "rb") as f:
            try:
                metadata = _IndexUnpickler(f).load()
            except pickle.UnpicklingError as err:
                raise ValueError(f"{path}: {err}") from None
        if not isinstance(metadata, Metadata):
            raise ValueError(f"{path} does not hold a torch.distributed.checkpoint Metadata index")
        if getattr(metadata, "storage_meta", None) is None:
            metadata.storage_meta = StorageMeta()
        metadata.storage_meta.load_id = self.load_id
        return metadata


def is_torch_dist_checkpoint(it_dir: Path) -> bool:
    """Whether ``it_dir`` (an ``iter_XXXXXXX`` directory) holds a torch_dist checkpoint."""
    return (it_dir / ".metadata").is_file()


def _per_layer(key: str, tensor: torch.Tensor, num_layers: int, where: str) -> dict[str, torch.Tensor]:
    """``...layers.X [L, ...]`` -> ``...layers.{i}.X`` for each layer; other keys unchanged."""
    head, sep, rest = key.partition(".layers.")
    if not sep or rest.split(".", 1)[0].isdigit():
        return {key: tensor}
    if tensor.shape[0] != num_layers:
        raise ValueError(f"{where}: {key} stacks {tensor.shape[0]} layers but args say num_layers {num_layers}")
    return {f"{head}.layers.{i}.{rest}": tensor[i] for i in range(num_layers)}


def _join_swiglu_halves(state: dict[str, torch.Tensor]) -> None:
    """megatron-core's ``singleton_local_shards`` SwiGLU keys ``X_w``/``X_v`` -> ``X`` = ``[w; v]`` per layer."""
    for key in [k for k in state if k.endswith("_w") and k[:-2] + "_v" in state]:
        w, v = state.pop(key), state.pop(key[:-2] + "_v")
        state[key[:-2]] = torch.cat([w, v], dim=1 if ".layers." in key else 0)


def read_torch_dist(it_dir: Path, load_common: Callable[[Path], dict[str, Any]]) -> dict[str, Any]:
    """A torch_dist ``iter_XXXXXXX`` directory as a legacy checkpoint payload: ``{"args", "checkpoint_version",
    "iteration", "model"}`` with ``model`` the flat, per-layer, unsharded weights.

    ``args`` is a copy of the run's with ``tensor_model_parallel_size`` 1, the layout of the returned weights.
    ``load_common`` reads ``common.pt`` without unpickling arbitrary objects.

    Raises:
        ValueError: no ``common.pt`` or ``args`` in it, an index that names classes other than torch's index
            records, or layer stacks that disagree with ``num_layers``.
    """
    common_path = it_dir / "common.pt"
    if not common_path.is_file():
        raise ValueError(f"{it_dir} has a .metadata index but no common.pt; pass a Megatron-LM torch_dist checkpoint")
    common = load_common(common_path)
    args = common.get("args")
    if not isinstance(args, argparse.Namespace):
        raise ValueError(f"{common_path} holds no 'args' (the run's argparse.Namespace); the architecture cannot be "
                         "read")
    reader = _SafeReader(str(it_dir))
    metadata = reader.read_metadata()
    state = {k: torch.empty(m.size, dtype=m.properties.dtype) for k, m in metadata.state_dict_metadata.items()
             if isinstance(m, TensorStorageMetadata) and _MODEL_KEY.match(k)}
    if not state:
        raise ValueError(f"{it_dir}: the index holds no model weights (keys like embedding.*, decoder.*, encoder.*)")
    with warnings.catch_warnings():  # "torch.distributed is ... uninitialized, assuming ... a single process": yes
        warnings.simplefilter("ignore", UserWarning)
        dcp.load(state, storage_reader=reader, no_dist=True)
    _join_swiglu_halves(state)
    model: dict[str, torch.Tensor] = {}
    for key, tensor in state.items():
        model.update(_per_layer(key, tensor, int(args.num_layers), str(it_dir)))
    args = copy.copy(args)
    args.tensor_model_parallel_size = 1  # the stored tensors are whole, whatever the run's TP size was
    return {"args": args, "checkpoint_version": common.get("checkpoint_version", 3.0),
            "iteration": common.get("iteration"), "model": model}

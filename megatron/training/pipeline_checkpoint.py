"""Re-split a training checkpoint over another number of pipeline stages (or virtual stages), resumable exactly.

A checkpoint at PP=P holds one file per (TP rank, pipeline rank), ``mp_rank_{TT}_{PPP}`` (``mp_rank_{TT}`` at P=1),
each with its stages' parameters under local layer numbers (``model``, or ``model0``, ``model1`` ... per chunk) and
its optimizer's AdamW state in the optimizer's parameter order, whose full-model names the file records
(``optimizer_param_names``). :func:`convert_pipeline_checkpoint` merges each TP rank's stages into full-model
dictionaries keyed by ``GPTModel.state_dict()`` names and cuts them again for the target split: weights, AdamW
moments and step counts, fp32 master copies, the loss scaler, the LR schedule, the counters, the sampler and the
data-efficiency state (the last five are the same on every stage and are copied). RNG states: each target stage
takes the dropout streams of the source stage with the same index (a fresh seeding, as at start, for a stage index
the source did not have) and random-LTD's token-routing stream from a source stage that drew kept tokens (every
such stage advanced it alike), so kept tokens continue as in the unconverted run.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch

from megatron.parallel.pipeline_state import pipeline_layer_ranges, stage_indices_of_rank
from megatron.parallel.random import TOKEN_ROUTING_RNG, TOKEN_ROUTING_SEED_OFFSET, RNGStatesTracker
from megatron.training.checkpointing import (
    TRACKER_FILENAME,
    check_weights_only_safe,
    iteration_dir,
    rank_dirname,
    read_tracker,
)
from megatron.training.pipeline import stage_rng_tracker

__all__ = ["convert_pipeline_checkpoint", "stage_layout"]

_MODEL_FILENAME = "model_optim_rng.pt"
_LAYERS = "decoder.layers."


def stage_layout(num_layers: int, pp: int, vpp: int | None) -> dict[int, list[tuple[int, tuple[int, int]]]]:
    """``pp_rank -> [(stage_index, (start, end)), ...]`` in chunk order."""
    ranges = pipeline_layer_ranges(num_layers, pp, vpp)
    chunks = len(ranges) // pp
    return {r: [(k, ranges[k]) for k in stage_indices_of_rank(r, pp, chunks)] for r in range(pp)}


def _entry_keys(num_chunks: int) -> list[str]:
    return ["model"] if num_chunks == 1 else [f"model{c}" for c in range(num_chunks)]


def _to_global(key: str, start: int) -> str:
    if not key.startswith(_LAYERS):
        return key
    local, rest = key[len(_LAYERS):].split(".", 1)
    return f"{_LAYERS}{start + int(local)}.{rest}"


def _stage_keys(all_keys: list[str], stage: int, num_stages: int, layer_range: tuple[int, int],
                tied: bool) -> list[tuple[str, str]]:
    """``(local key, global key)`` of one stage, in the full model's order (``GPTStage`` registers its modules
    in that order: embeddings, layers, final norm, output layer)."""
    first, last = stage == 0, stage == num_stages - 1
    out = []
    for key in all_keys:
        if key.startswith(_LAYERS):
            i, rest = key[len(_LAYERS):].split(".", 1)
            if layer_range[0] <= int(i) < layer_range[1]:
                out.append((f"{_LAYERS}{int(i) - layer_range[0]}.{rest}", key))
        elif key.startswith("word_embeddings."):
            if first or (last and tied):
                out.append((key, key))
        elif key.startswith("position_embeddings."):
            if first:
                out.append((key, key))
        elif last:  # decoder.final_layernorm.*, output_layer.*
            out.append((key, key))
    return out


def _read(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ValueError(f"checkpoint file {path} is missing; is the checkpoint complete?")
    return torch.load(path, map_location="cpu", weights_only=True)


def _source_layout(folder: Path) -> tuple[int, int]:
    """``(tp_size, pp_size)`` from the ``mp_rank_*`` directory names."""
    names = [p.name for p in folder.glob("mp_rank_*") if p.is_dir()]
    if not names:
        raise ValueError(f"{folder} holds no mp_rank_* directories; pass the --save directory of a training run")
    tps = {int(n.split("_")[2]) for n in names}
    pps = {int(n.split("_")[3]) for n in names if n.count("_") == 3}
    return len(tps), (len(pps) if pps else 1)


def _merge_tp_rank(folder: Path, tp_rank: int, pp: int, vpp: int | None, num_layers: int) -> dict[str, Any]:
    """One TP rank's stages merged: full-model weights, per-name AdamW state and masters, stage RNG states."""
    layout = stage_layout(num_layers, pp, vpp)
    weights: dict[str, torch.Tensor] = {}
    adam: dict[str, dict] = {}
    masters: dict[str, torch.Tensor] = {}
    group_of: dict[str, int] = {}
    stage_rng: dict[int, list[dict]] = {}
    payloads = []
    for r in range(pp):
        payload = _read(folder / rank_dirname(tp_rank, r if pp > 1 else None) / _MODEL_FILENAME)
        payloads.append(payload)
        names = payload.get("optimizer_param_names")
        if names is None and payload["optimizer"] is not None:
            raise ValueError(f"{folder}: the checkpoint does not record its optimizer's parameter names (saved before"
                             " pipeline support); resume it at its own pipeline size, or load only its weights with "
                             "--finetune")
        stages = layout[r]
        for (k, (start, _)), key in zip(stages, _entry_keys(len(stages))):
            for local, tensor in payload[key].items():
                weights.setdefault(_to_global(local, start), tensor)
        opt = payload["optimizer"]
        if opt is not None:
            state = opt["optimizer"]["state"]
            order = [i for g in opt["optimizer"]["param_groups"] for i in g["params"]]
            group = {i: gi for gi, g in enumerate(opt["optimizer"]["param_groups"]) for i in g["params"]}
            for pos, (idx, name) in enumerate(zip(order, names)):
                adam.setdefault(name, state.get(idx, {}))
                group_of.setdefault(name, group[idx])
                if opt.get("fp32_master_params") is not None:
                    masters.setdefault(name, opt["fp32_master_params"][pos])
        for dp_index, states in enumerate(payload["rng_state"]):
            tracker_states = states["rng_tracker_states"]
            chunks = [tracker_states] if len(stages) == 1 else [tracker_states[f"chunk{c}"] for c in
                                                                range(len(stages))]
            for (k, _), chunk_states in zip(stages, chunks):
                stage_rng.setdefault(k, []).append(chunk_states)
    return {"weights": weights, "adam": adam, "masters": masters, "group_of": group_of, "stage_rng": stage_rng,
            "payloads": payloads, "names": payloads[0].get("optimizer_param_names")}


def _routing_state(stage_rng: dict[int, list[dict]], seed: int, dp_index: int) -> torch.Tensor | None:
    """The token-routing stream of a source stage that drew kept tokens (it differs from the initial seeding);
    every drawing stage holds the same state."""
    fresh = RNGStatesTracker()
    fresh.add(TOKEN_ROUTING_RNG, seed + TOKEN_ROUTING_SEED_OFFSET)
    initial = fresh.get_states()[TOKEN_ROUTING_RNG]
    for k in sorted(stage_rng):
        state = stage_rng[k][dp_index % len(stage_rng[k])].get(TOKEN_ROUTING_RNG)
        if state is not None and any(not torch.equal(state[n], initial[n]) for n in state):
            return state
    return None


def convert_pipeline_checkpoint(load: str | os.PathLike, save: str | os.PathLike, target_pp: int,
                                target_vpp: int | None = None) -> Path:
    """Write ``load``'s latest checkpoint into ``save`` split over ``target_pp`` stages (``target_vpp`` layers per
    virtual stage); returns the written iteration directory. ``save`` must not exist or be empty; it gets its
    tracker file only once the iteration directory is complete.

    Raises:
        ValueError: no checkpoint under ``load``, a split that does not divide the layers, or a checkpoint without
            recorded optimizer parameter names.
    """
    load, save = Path(load), Path(save)
    tag = read_tracker(load)
    if tag is None:
        raise ValueError(f"no checkpoint under {load}: {TRACKER_FILENAME} not found")
    if save.exists() and any(save.iterdir()):
        raise ValueError(f"--save {save} exists and is not empty; pass a new directory")
    folder = iteration_dir(load, tag)
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    num_layers, seed = int(config["model"]["num_layers"]), int(config["training"]["seed"])
    tied = not config["model"].get("untie_embeddings_and_output_weights", False)
    src_vpp = config["parallel"].get("num_layers_per_virtual_pipeline_stage")
    tp, src_pp = _source_layout(folder)
    target = stage_layout(num_layers, target_pp, target_vpp)  # validates the target split
    num_stages = sum(len(v) for v in target.values())
    staging = save / f"{folder.name}.tmp"
    shutil.rmtree(staging, ignore_errors=True)
    for tp_rank in range(tp):
        merged = _merge_tp_rank(folder, tp_rank, src_pp, src_vpp, num_layers)
        all_keys = list(merged["weights"])
        for r in range(target_pp):
            payload = _target_payload(merged, all_keys, target[r], num_stages, tied, seed, tp_rank, target_pp, r)
            if isinstance(payload.get("config"), dict) and "parallel" in payload["config"]:
                payload["config"] = {**payload["config"], "parallel": {
                    **payload["config"]["parallel"], "pipeline_model_parallel_size": target_pp,
                    "num_layers_per_virtual_pipeline_stage": target_vpp}}
            check_weights_only_safe(payload)
            path = staging / rank_dirname(tp_rank, r if target_pp > 1 else None) / _MODEL_FILENAME
            path.parent.mkdir(parents=True, exist_ok=True)
            torch.save(payload, path)
    config["parallel"]["pipeline_model_parallel_size"] = target_pp
    config["parallel"]["num_layers_per_virtual_pipeline_stage"] = target_vpp
    (staging / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    final = save / folder.name
    os.replace(staging, final)
    tmp = save / (TRACKER_FILENAME + ".tmp")
    tmp.write_text(f"{tag}\n", encoding="utf-8")
    os.replace(tmp, save / TRACKER_FILENAME)
    return final


def _target_payload(merged: dict[str, Any], all_keys: list[str], stages: list[tuple[int, tuple[int, int]]],
                    num_stages: int, tied: bool, seed: int, tp_rank: int, target_pp: int, pp_rank: int
                    ) -> dict[str, Any]:
    """The file of target pipeline rank ``pp_rank``: its chunks' weights and the matching optimizer state."""
    src = merged["payloads"][min(pp_rank, len(merged["payloads"]) - 1)]
    payload = {k: v for k, v in src.items() if not (k == "model" or (k.startswith("model") and k[5:].isdigit()))}
    payload["pipeline_model_parallel_size"] = target_pp
    param_names: list[str] = []
    for (k, layer_range), entry in zip(stages, _entry_keys(len(stages))):
        pairs = _stage_keys(all_keys, k, num_stages, layer_range, tied)
        payload[entry] = {local: merged["weights"][name] for local, name in pairs}
        param_names += [name for _, name in pairs if name in merged["group_of"]]
    # MegatronOptimizer's order: group by group (decay, then no decay), each in parameter order.
    groups = sorted({merged["group_of"][n] for n in param_names})
    ordered = [n for g in groups for n in param_names if merged["group_of"][n] == g]
    payload["optimizer_param_names"] = ordered
    if src["optimizer"] is not None:
        opt = src["optimizer"]
        src_groups = opt["optimizer"]["param_groups"]
        index = {n: i for i, n in enumerate(ordered)}
        new_groups = [{**src_groups[g], "params": [index[n] for n in ordered if merged["group_of"][n] == g]}
                      for g in groups]
        state = {index[n]: merged["adam"][n] for n in ordered if merged["adam"].get(n)}
        masters = [merged["masters"][n] for n in ordered] if opt.get("fp32_master_params") is not None else None
        payload["optimizer"] = {**opt, "optimizer": {"state": state, "param_groups": new_groups},
                                "fp32_master_params": masters}
    payload["rng_state"] = [_target_rng(dp_state, merged["stage_rng"], stages, seed, tp_rank, i)
                            for i, dp_state in enumerate(src["rng_state"])]
    return payload


def _target_rng(dp_state: dict[str, Any], stage_rng: dict[int, list[dict]], stages: list[tuple[int, tuple]],
                seed: int, tp_rank: int, dp_index: int) -> dict[str, Any]:
    routing = _routing_state(stage_rng, seed, dp_index)
    chunks = []
    for k, _ in stages:
        if k in stage_rng:
            states = {n: dict(v) for n, v in stage_rng[k][dp_index % len(stage_rng[k])].items()}
        else:
            # A stage index the source did not have starts its streams as at the start of training (the
            # model-parallel stream is offset by the TP rank, the only field the seeding reads).
            states = stage_rng_tracker(seed, SimpleNamespace(tp_rank=tp_rank), k).get_states()
        if routing is not None:
            states[TOKEN_ROUTING_RNG] = routing
        chunks.append(states)
    tracker_states = chunks[0] if len(chunks) == 1 else {f"chunk{c}": s for c, s in enumerate(chunks)}
    return {**dp_state, "rng_tracker_states": tracker_states}

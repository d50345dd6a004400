"""Checkpoints in Megatron's torch layout, written atomically and read with ``weights_only=True``.

Layout: ``<save>/iter_{iteration:07d}/mp_rank_{tp_rank:02d}/model_optim_rng.pt`` (one file per tensor-parallel
rank, written by data-parallel rank 0; with pipeline stages Megatron's ``mp_rank_{tp_rank:02d}_{pp_rank:03d}``, the
model under ``model``, or ``model0``, ``model1`` ... per chunk of the interleaved schedule),
``<save>/iter_*/config.json`` (the resolved run config) and ``<save>/latest_checkpointed_iteration.txt``. An iteration is first written into ``iter_*.tmp``, renamed into
place once every rank has finished, and only then does the tracker file move to it, so the tracker never points
at a partial directory. Everything stored is a tensor or a plain container, so loading never unpickles objects.
A write that fails (a full disk: torch reports it as ``RuntimeError: [enforce fail at inline_container.cc]``) removes
the staging directory and says which device and file, leaving the tracker at the last complete checkpoint.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import random
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from megatron.logging import get_logger, log_rank0
from megatron.parallel.state import ParallelState

__all__ = [
    "CHECKPOINT_VERSION", "TRACKER_FILENAME", "LoadedCheckpoint", "checkpoint_path", "read_tracker",
    "save_checkpoint", "load_checkpoint", "read_checkpoint", "capture_rng_state", "restore_rng_state",
    "check_weights_only_safe",
]

logger = get_logger(__name__)

CHECKPOINT_VERSION = 3.0
TRACKER_FILENAME = "latest_checkpointed_iteration.txt"
_MODEL_FILENAME = "model_optim_rng.pt"
_SAFE_SCALARS = (int, float, str, bool, type(None), torch.Tensor, torch.dtype, torch.Size)


def iteration_dir(root: str | os.PathLike, iteration: int | str) -> Path:
    """``<root>/iter_0000010`` (or ``<root>/release``)."""
    return Path(root) / ("release" if iteration == "release" else f"iter_{int(iteration):07d}")


def rank_dirname(tp_rank: int, pp_rank: int | None = None) -> str:
    """``mp_rank_{TT}`` without pipeline stages, ``mp_rank_{TT}_{PPP}`` with them (Megatron's names)."""
    return f"mp_rank_{tp_rank:02d}" if pp_rank is None else f"mp_rank_{tp_rank:02d}_{pp_rank:03d}"


def checkpoint_path(root: str | os.PathLike, iteration: int | str, tp_rank: int, pp_rank: int | None = None) -> Path:
    """Path of one (tensor-parallel, pipeline) rank's file inside an iteration directory; ``pp_rank`` None when the
    run has no pipeline stages."""
    return iteration_dir(root, iteration) / rank_dirname(tp_rank, pp_rank) / _MODEL_FILENAME


def _pp_rank_of(pstate: ParallelState) -> int | None:
    """This rank's pipeline rank for the file name, None without pipeline stages (the pre-pipeline layout)."""
    return pstate.pp_rank if getattr(pstate, "pp_size", 1) > 1 else None


def _model_entries(model: nn.Module) -> dict[str, Any]:
    """The payload's model keys: ``{"model": state_dict}``, or a pipeline rank's per-chunk entries."""
    entries = getattr(model, "checkpoint_entries", None)
    return entries() if entries is not None else {"model": model.state_dict()}


def check_weights_only_safe(obj: Any, where: str = "checkpoint") -> None:
    """Raise TypeError naming the key path of the first value ``torch.load(weights_only=True)`` would reject.

    Stateful objects (samplers, schedulers, extensions) must convert numpy arrays and custom objects to tensors,
    lists or numbers before they reach a checkpoint.
    """
    if isinstance(obj, _SAFE_SCALARS):
        return
    if isinstance(obj, dict):
        for k, v in obj.items():
            if not isinstance(k, (str, int)):
                raise TypeError(f"{where}: key {k!r} has type {type(k).__name__}; use str or int keys")
            check_weights_only_safe(v, f"{where}[{k!r}]")
        return
    if isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            check_weights_only_safe(v, f"{where}[{i}]")
        return
    raise TypeError(
        f"{where} holds a {type(obj).__module__}.{type(obj).__name__}, which torch.load(weights_only=True) cannot "
        "read back; convert it to a tensor, a list or a number in its state_dict()"
    )


def capture_rng_state(tracker: Any | None = None) -> dict[str, Any]:
    """This process's random states as tensors and plain values (python, numpy, torch, CUDA, RNG tracker)."""
    version, py_state, gauss = random.getstate()
    _, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "random_rng_state": {"version": version, "state": torch.tensor(py_state, dtype=torch.int64), "gauss": gauss},
        "np_rng_state": {
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)), "pos": int(pos),
            "has_gauss": int(has_gauss), "cached_gaussian": float(cached),
        },
        "torch_rng_state": torch.get_rng_state(),
        "cuda_rng_state": torch.cuda.get_rng_state() if torch.cuda.is_available() else None,
        "rng_tracker_states": tracker.get_states() if tracker is not None else None,
    }


def restore_rng_state(state: dict[str, Any], tracker: Any | None = None) -> None:
    """Inverse of :func:`capture_rng_state`."""
    py = state["random_rng_state"]
    random.setstate((py["version"], tuple(int(x) for x in py["state"].tolist()), py["gauss"]))
    nps = state["np_rng_state"]
    keys = nps["keys"].numpy().astype(np.uint32)
    np.random.set_state(("MT19937", keys, nps["pos"], nps["has_gauss"], nps["cached_gaussian"]))
    torch.set_rng_state(state["torch_rng_state"])
    if state.get("cuda_rng_state") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda_rng_state"])
    if tracker is not None and state.get("rng_tracker_states") is not None:
        tracker.set_states(state["rng_tracker_states"])


def _gather_rng_states(pstate: ParallelState, tracker: Any | None) -> list[dict[str, Any]]:
    """RNG states of every DP rank of this TP rank (Megatron stores the list and each rank takes its entry)."""
    mine = capture_rng_state(tracker)
    if pstate.dp_group is None:
        return [mine]
    gathered: list[Any] = [None] * pstate.dp_size
    dist.all_gather_object(gathered, mine, group=pstate.dp_group)
    return gathered


def _barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _device_of(path: Path) -> str:
    """``/dev/sda1 (mounted at /work)`` for the filesystem holding ``path`` (the mount point alone if unknown)."""
    mount = Path(os.path.abspath(path))
    while not mount.exists() or not os.path.ismount(mount):
        mount = mount.parent
    try:
        with open("/proc/self/mounts", encoding="utf-8") as f:
            devices = [line.split()[0] for line in f if len(line.split()) > 1 and line.split()[1] == str(mount)]
    except OSError:
        devices = []
    return f"{devices[-1]} (mounted at {mount})" if devices else str(mount)


def _out_of_space(err: BaseException) -> bool:
    """True for ENOSPC/EDQUOT anywhere in the chain, or torch's stream writer failing (a short write: torch raises
    ``RuntimeError: [enforce fail at inline_container.cc] ... unexpected pos`` and drops the OSError's errno)."""
    seen: set[int] = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if isinstance(err, RuntimeError) and ("inline_container.cc" in str(err) or "PytorchStreamWriter" in str(err)):
            return True
        err = err.__cause__ or err.__context__
    return False


@contextlib.contextmanager
def _writing(path: Path, partial: Path | None = None) -> Iterator[None]:
    """Write ``path``; on failure remove ``partial`` (the staging directory) and turn a full disk into
    ``OSError(ENOSPC, "no space left on DEVICE while writing PATH")``."""
    try:
        yield
    except (OSError, RuntimeError) as err:
        if partial is not None:
            shutil.rmtree(partial, ignore_errors=True)
        if not _out_of_space(err):
            raise
        cleaned = f"; removed the partial {partial}" if partial is not None else ""
        raise OSError(
            errno.ENOSPC, f"no space left on {_device_of(path)} while writing {path} ({type(err).__name__}: "
            f"{err}){cleaned}. Free space there or point --save at another disk; {TRACKER_FILENAME} still names "
            "the last complete checkpoint"
        ) from err


def _atomic_torch_save(obj: Any, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _non_finite_tensors(model: nn.Module, pstate: ParallelState) -> list[str]:
    """Names of this rank's floating-point model tensors holding nan/inf; non-empty on every TP rank if on one."""
    bad = [name for name, t in model.state_dict().items()
           if isinstance(t, torch.Tensor) and t.is_floating_point() and not bool(torch.isfinite(t).all())]
    tp_group = getattr(pstate, "tp_group", None)  # writers of converted weights pass a view without groups
    if tp_group is not None:
        flag = torch.tensor([float(bool(bad))], device=next(iter(model.state_dict().values())).device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX, group=tp_group)
        if flag.item() and not bad:
            bad = ["<a tensor of another tensor-parallel rank>"]
    return bad


def _check_before_save(root: Path, iteration: int, model: nn.Module, pstate: ParallelState, overwrite: bool) -> None:
    bad = _non_finite_tensors(model, pstate)
    latest = read_tracker(root)
    if bad:
        keep = f"{TRACKER_FILENAME} still names iteration {latest}" if latest is not None else "no checkpoint there"
        raise FloatingPointError(
            f"refusing to save checkpoint iteration {iteration} to {root}: {len(bad)} model tensors hold nan/inf "
            f"({', '.join(bad[:3])}{', ...' if len(bad) > 3 else ''}); the run diverged ({keep}). Lower --lr or "
            "resume from an earlier checkpoint; keep --check-for-nan-in-loss-and-grad on (the default) to stop at "
            "the first non-finite loss instead"
        )
    if isinstance(latest, int) and latest > iteration and not overwrite:
        raise ValueError(
            f"refusing to save iteration {iteration} to {root}: its {TRACKER_FILENAME} names the newer iteration "
            f"{latest}, which this save would move back; save into another directory or pass --overwrite-checkpoints"
        )


def save_checkpoint(
    root: str | os.PathLike, iteration: int, *, model: nn.Module, optimizer: Any, scheduler: Any,
    pstate: ParallelState, train_state: dict[str, int], sampler_state: dict | None = None,
    extra_state: dict[str, dict] | None = None, config: dict | None = None, rng_tracker: Any | None = None,
    overwrite: bool = False,
) -> Path:
    """Write iteration ``iteration`` (collective: every rank calls it) and move the tracker to it.

    Args:
        train_state: progress counters (consumed samples/tokens, skipped iterations, ...), plain ints.
        sampler_state: the training sampler's ``state_dict()``.
        extra_state: ``{name: state_dict}`` of extension objects (curriculum sampler, random-LTD scheduler).
        config: the resolved run config as a JSON-ready dict; also written to ``config.json``.
        overwrite: allow moving the tracker back from a newer iteration (``--overwrite-checkpoints``).
    Returns:
        The final iteration directory.
    Raises:
        FloatingPointError: a model tensor holds nan/inf (nothing is written: a diverged run never replaces a
            good checkpoint).
        ValueError: the tracker names a newer iteration and ``overwrite`` is False.
        OSError: ENOSPC "no space left on DEVICE while writing PATH" (the staging directory is removed).
    """
    root = Path(root)
    _check_before_save(root, iteration, model, pstate, overwrite)
    final, staging = iteration_dir(root, iteration), root / f"iter_{iteration:07d}.tmp"
    if pstate.rank == 0:
        root.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(staging, ignore_errors=True)  # leftovers of a crashed save
    _barrier()
    rng_states = _gather_rng_states(pstate, rng_tracker)  # collective over DP
    optim_state = optimizer.state_dict() if optimizer is not None else None  # collective over DP with ZeRO
    if pstate.dp_rank == 0:
        payload = {
            "checkpoint_version": CHECKPOINT_VERSION,
            "iteration": iteration,
            "tensor_model_parallel_size": pstate.tp_size,
            "pipeline_model_parallel_size": getattr(pstate, "pp_size", 1),
            "data_parallel_size": pstate.dp_size,
            **_model_entries(model),
            "optimizer_param_names": _optimizer_param_names(model, optimizer),
            "optimizer": optim_state,
            "opt_param_scheduler": scheduler.state_dict() if scheduler is not None else None,
            "rng_state": rng_states,
            "train_state": dict(train_state),
            "data_sampler": sampler_state,
            "extra_state": dict(extra_state or {}),
            "config": config,
        }
        check_weights_only_safe(payload)
        path = staging / rank_dirname(pstate.tp_rank, _pp_rank_of(pstate)) / _MODEL_FILENAME
        with _writing(path, staging):
            path.parent.mkdir(parents=True, exist_ok=True)
            _atomic_torch_save(payload, path)
    if pstate.rank == 0 and config is not None:
        with _writing(staging / "config.json", staging):
            staging.mkdir(parents=True, exist_ok=True)
            _atomic_write_text(staging / "config.json", json.dumps(config, indent=2, sort_keys=True) + "\n")
    _barrier()
    if pstate.rank == 0:
        if final.exists():  # re-saving an iteration: move the old copy aside before the rename
            old = root / f"iter_{iteration:07d}.old"
            shutil.rmtree(old, ignore_errors=True)
            os.replace(final, old)
            shutil.rmtree(old, ignore_errors=True)
        os.replace(staging, final)
        with _writing(root / TRACKER_FILENAME):
            _atomic_write_text(root / TRACKER_FILENAME, f"{iteration}\n")
    _barrier()
    log_rank0(logger, "saved checkpoint at iteration %d to %s", iteration, final)
    return final


def read_tracker(root: str | os.PathLike) -> int | str | None:
    """The iteration named by ``latest_checkpointed_iteration.txt`` (an int or ``"release"``), None if absent."""
    tracker = Path(root) / TRACKER_FILENAME
    if not tracker.is_file():
        return None
    text = tracker.read_text(encoding="utf-8").strip()
    if text == "release":
        return text
    try:
        value = int(text)
    except ValueError:
        raise ValueError(
            f"{tracker}: expected an iteration number or 'release', found {text!r}; fix or delete the file"
        ) from None
    if value < 0:
        raise ValueError(f"{tracker}: iteration must be >= 0, found {value}")
    return value


@dataclass
class LoadedCheckpoint:
    """What the loop needs from a loaded checkpoint besides the restored model/optimizer/scheduler/RNG."""

    iteration: int
    train_state: dict[str, int] = field(default_factory=dict)
    sampler_state: dict | None = None
    extra_state: dict[str, dict] = field(default_factory=dict)
    config: dict | None = None


def _read_payload(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ValueError(
            f"checkpoint file {path} does not exist; was the checkpoint saved with a different "
            "--tensor-model-parallel-size, or is --load pointing at the wrong directory?"
        )
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any failure to parse means a damaged file
        raise ValueError(
            f"checkpoint file {path} is corrupted or truncated ({type(exc).__name__}: {exc}); delete that "
            f"iteration directory and point {TRACKER_FILENAME} at an earlier one"
        ) from exc
    if not isinstance(payload, dict) or "checkpoint_version" not in payload:
        raise ValueError(f"checkpoint file {path} is not a Megatron-DE checkpoint (no checkpoint_version key)")
    if payload["checkpoint_version"] != CHECKPOINT_VERSION:
        raise ValueError(
            f"checkpoint file {path} has checkpoint_version {payload['checkpoint_version']}, this code reads "
            f"{CHECKPOINT_VERSION}"
        )
    return payload


def load_checkpoint(
    root: str | os.PathLike, *, model: nn.Module, optimizer: Any, scheduler: Any, pstate: ParallelState,
    no_load_optim: bool = False, no_load_rng: bool = False, finetune: bool = False,
    override_opt_param_scheduler: bool = False, use_checkpoint_opt_param_scheduler: bool = False,
    rng_tracker: Any | None = None, validate: Callable[[dict[str, Any], int | str], None] | None = None,
) -> LoadedCheckpoint | None:
    """Restore the latest checkpoint under ``root`` in place; None (and a log line) when there is none.

    ``finetune`` (and a ``release`` checkpoint) load only the model weights and restart counting at iteration 0.
    ``validate(payload, tag)`` runs on the read payload before anything is restored (and may raise).
    """
    tag = read_tracker(root)
    if tag is None:
        log_rank0(logger, "no %s under %s: training from scratch", TRACKER_FILENAME, root)
        return None
    path = checkpoint_path(root, tag, pstate.tp_rank, _pp_rank_of(pstate))
    _check_pipeline_layout(path, getattr(pstate, "pp_size", 1))
    payload = _read_payload(path)
    if payload["tensor_model_parallel_size"] != pstate.tp_size:
        raise ValueError(
            f"checkpoint {path} was saved with tensor_model_parallel_size {payload['tensor_model_parallel_size']} "
            f"but this run uses {pstate.tp_size}; set --tensor-model-parallel-size to match (no resharding)"
        )
    if validate is not None:
        validate(payload, tag)
    load_entries = getattr(model, "load_checkpoint_entries", None)
    if load_entries is not None:
        load_entries(payload)
    else:
        model.load_state_dict(payload["model"], strict=True)
    if optimizer is not None:
        optimizer.reload_model_params()
    restart = finetune or tag == "release"
    if not restart and not no_load_optim:
        if optimizer is not None and payload["optimizer"] is not None:
            optimizer.load_state_dict(payload["optimizer"])
        if scheduler is not None and payload["opt_param_scheduler"] is not None:
            scheduler.load_state_dict(
                payload["opt_param_scheduler"], override=override_opt_param_scheduler,
                use_checkpoint=use_checkpoint_opt_param_scheduler,
            )
    if not restart and not no_load_rng:
        states = payload["rng_state"]
        if len(states) != pstate.dp_size:
            log_rank0(logger, "checkpoint has RNG states for %d data-parallel ranks, run has %d: reusing them "
                      "cyclically", len(states), pstate.dp_size)
        restore_rng_state(states[pstate.dp_rank % len(states)], rng_tracker)
    log_rank0(logger, "loaded checkpoint %s (iteration %s)", path.parent.parent, tag)
    if restart:
        return LoadedCheckpoint(iteration=0, config=payload.get("config"))
    return LoadedCheckpoint(
        iteration=int(payload["iteration"]), train_state=dict(payload["train_state"]),
        sampler_state=payload["data_sampler"], extra_state=dict(payload["extra_state"] or {}),
        config=payload.get("config"),
    )


def _optimizer_param_names(model: nn.Module, optimizer: Any) -> list[str] | None:
    """Full-model names (``GPTModel.state_dict()`` keys) of the optimizer's parameters in its order: what
    ``tools/checkpoint/convert_pipeline.py`` needs to move AdamW state between pipeline splits. None for an
    optimizer without a parameter list."""
    params = getattr(optimizer, "params", None)
    if params is None:
        return None
    names = getattr(model, "global_names", None)
    if names is not None:
        by_id = names()
    else:  # state_dict keys, not parameter names: a random-LTD wrapper adds a module level to the latter only
        by_ptr = {t.data_ptr(): k for k, t in model.state_dict(keep_vars=True).items()}
        by_id = {id(p): by_ptr[p.data_ptr()] for p in model.parameters()}
    return [by_id[id(p)] for p in params]


def _check_pipeline_layout(path: Path, pp_size: int) -> None:
    """A checkpoint saved at another pipeline size fails with the converter to run (before reading any file)."""
    if path.is_file():
        return
    folder = path.parent.parent
    names = sorted(p.name for p in folder.glob("mp_rank_*")) if folder.is_dir() else []
    saved_pp = len({n.split("_")[3] for n in names if n.count("_") == 3}) or (1 if names else None)
    if saved_pp is not None and saved_pp != pp_size:
        raise ValueError(
            f"checkpoint {folder} was saved with pipeline_model_parallel_size {saved_pp} ({', '.join(names[:4])}"
            f"{' ...' if len(names) > 4 else ''}) but this run uses {pp_size}; convert it with "
            f"tools/checkpoint/convert_pipeline.py --load <dir> --save <new dir> --target-pipeline-model-parallel-size"
            f" {pp_size}, or set --pipeline-model-parallel-size {saved_pp}"
        )


def read_checkpoint(root: str | os.PathLike, tp_rank: int = 0) -> tuple[dict[str, Any], int | str, Path]:
    """``(payload, tag, path)`` of tensor-parallel rank ``tp_rank``'s file of the latest checkpoint under ``root``
    (read with ``weights_only=True``), for tools that need weights without a training run.

    Raises:
        ValueError: ``root`` holds no tracker file, or the file is missing, damaged or of another version.
    """
    tag = read_tracker(root)
    if tag is None:
        hint = ""
        if Path(root).name.startswith("iter_") or Path(root).name == "release":
            hint = f"; pass the directory above it ({Path(root).parent}), which holds {TRACKER_FILENAME}"
        raise ValueError(f"no checkpoint under {root}: {TRACKER_FILENAME} not found{hint}")
    path = checkpoint_path(root, tag, tp_rank)
    _check_pipeline_layout(path, 1)
    return _read_payload(path), tag, path

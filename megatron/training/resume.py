"""Guards around ``--load`` and ``--save``: nothing about a resume may go silently wrong.

Three rules, each checked before any tensor is loaded or written: a ``--load`` that finds no checkpoint is an
error (unless ``--allow-missing-checkpoint``), naming the likely mistake; a run never moves a ``--save``
directory's latest checkpoint backwards (unless ``--overwrite-checkpoints``); and a resume must keep the run's
defining arguments - architecture, tokenizer, ``--seq-length`` and the data-efficiency settings recorded in the
checkpoint's config - and must not drop state the checkpoint holds (unless ``--override-checkpoint-args``).
``--finetune`` starts a new run from another one's weights, so only the architecture and tokenizer must match.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch

from megatron.data_efficiency.curriculum.identity import file_digest
from megatron.logging import get_logger, log_rank0
from megatron.model.config import TransformerConfig
from megatron.training.checkpointing import TRACKER_FILENAME, read_tracker
from megatron.training.config import PretrainConfig

__all__ = ["run_record", "missing_checkpoint_error", "check_save_target", "check_resume"]

logger = get_logger(__name__)

# Model fields that change neither the parameters' meaning nor their shapes: dropout, initialization (the weights
# come from the checkpoint), recomputation, compilation and storage precision may change on resume.
_FREE_MODEL_FIELDS = frozenset({
    "model_flavor", "hidden_dropout", "attention_dropout", "init_method_std", "recompute_activations",
    "recompute_granularity", "recompute_method", "recompute_num_layers", "torch_compile", "params_dtype",
})
_TOKENIZER_FIELDS = ("tokenizer_type", "vocab_size", "vocab_extra_ids", "make_vocab_size_divisible_by")
_TOKENIZER_FILES = ("vocab_file", "merge_file", "tokenizer_model")


def run_record(cfg: PretrainConfig, extensions: Sequence[Any]) -> dict[str, Any]:
    """The config saved with every checkpoint: ``cfg.to_dict()`` plus what a resume is checked against.

    Added keys: ``extensions`` (each data-efficiency extension's ``run_config()``, by name), ``fingerprints``
    (tokenizer file contents, so a moved vocabulary still matches) and ``runtime`` (the CPU thread count, which
    decides whether CPU results can be bit-identical).
    """
    record = cfg.to_dict()
    configs = {e.name: e.run_config() for e in extensions}
    record["extensions"] = {name: c for name, c in configs.items() if c is not None}
    record["fingerprints"] = {f"tokenizer.{n}": file_digest(getattr(cfg.tokenizer, n)) for n in _TOKENIZER_FILES}
    record["runtime"] = {"torch_num_threads": torch.get_num_threads()}
    return record


def missing_checkpoint_error(load: str) -> ValueError:
    """The error for a ``--load`` directory without a checkpoint, with the most likely cause."""
    path = Path(load)
    if not path.exists():
        why = "does not exist"
    elif path.name.startswith("iter_") or path.name == "release":
        why = (f"is one iteration of a checkpoint; pass the directory above it ({path.parent}), which holds "
               f"{TRACKER_FILENAME}")
    elif any(path.glob("iter_*")):
        why = f"holds iter_* directories but no {TRACKER_FILENAME}; write the iteration to resume into that file"
    else:
        why = f"holds no {TRACKER_FILENAME}"
    return ValueError(
        f"--load {load} {why}. Nothing was loaded; fix the path, or pass --allow-missing-checkpoint to start from "
        "scratch when the directory is empty (the first run of a resumable recipe)"
    )


def check_save_target(save: str, start_iteration: int, overwrite: bool) -> None:
    """Refuse to train into a ``--save`` directory whose latest checkpoint is newer than ``start_iteration``.

    Its first save would move the tracker back and later ones replace that run's iterations (a mistyped ``--load``
    with the real ``--save``, or a fresh run into an old directory).
    """
    latest = read_tracker(save)
    if not isinstance(latest, int) or latest <= start_iteration:
        return
    message = (f"--save {save} already holds checkpoint iteration {latest}, newer than this run's start at iteration "
               f"{start_iteration}; its saves would replace those iterations and move {TRACKER_FILENAME} back")
    if overwrite:
        log_rank0(logger, "%s (--overwrite-checkpoints)", message, level=logging.WARNING)
        return
    raise ValueError(f"{message}. Resume it with --load {save}, save into another directory, or pass "
                     "--overwrite-checkpoints to replace it")


def _flatten(record: Mapping[str, Any] | None, finetune: bool) -> dict[str, Any] | None:
    """``room.field -> value`` of the defining arguments of a run record (None when there is no record)."""
    if record is None:
        return None
    out: dict[str, Any] = {}
    for k, v in (record.get("model") or {}).items():
        if k not in _FREE_MODEL_FIELDS:
            out[f"model.{k}"] = v
    bert = (record.get("extras") or {}).get("bert")
    if isinstance(bert, Mapping) and "bert_binary_head" in bert:  # BERT's next-sentence head is architecture
        out["bert.bert_binary_head"] = bert["bert_binary_head"]
    tok = record.get("tokenizer") or {}
    for k in _TOKENIZER_FIELDS:
        out[f"tokenizer.{k}"] = tok.get(k)
    out.update({k: v for k, v in (record.get("fingerprints") or {}).items() if k.startswith("tokenizer.")})
    if not finetune:
        out["data.seq_length"] = (record.get("data") or {}).get("seq_length")
        for name, config in sorted((record.get("extensions") or {}).items()):
            out[f"data_efficiency.{name}"] = config
    return out


def _added_model_field_at_default(key: str, value: Any) -> bool:
    """``model.<field>`` is a :class:`TransformerConfig` field whose default is ``value``: a checkpoint written
    before the field existed was trained with that default (e.g. ``normalization`` LayerNorm, ``swiglu`` off)."""
    room, _, name = key.partition(".")
    if room != "model":
        return False
    fields = {f.name: f for f in dataclasses.fields(TransformerConfig)}
    f = fields.get(name)
    return f is not None and f.default is not dataclasses.MISSING and f.default == value


def _differences(saved: Mapping[str, Any], current: Mapping[str, Any], saved_record: Mapping[str, Any]) -> list[str]:
    """``key: checkpoint <a>, this run <b>`` per differing key; groups the checkpoint predates are not compared."""
    skip = ()
    if "fingerprints" not in saved_record:
        skip += tuple(f"tokenizer.{n}" for n in _TOKENIZER_FILES)
    if "extensions" not in saved_record:
        skip += ("data_efficiency.",)
    diffs = []
    for key in sorted(set(saved) | set(current)):
        a, b = saved.get(key, "<off>"), current.get(key, "<off>")
        if key not in saved and _added_model_field_at_default(key, b):
            continue  # an architecture option newer than the checkpoint, left at the behaviour it was written with
        if a != b and not key.startswith(skip):
            diffs.append(f"{key}: checkpoint {a!r}, this run {b!r}")
    return diffs


def check_resume(saved: Mapping[str, Any] | None, current: Mapping[str, Any], *, extra_state_names: Sequence[str],
                 consumers: Sequence[str], finetune: bool, override: bool, where: str) -> None:
    """Compare the checkpoint's run record with this run's before anything is loaded.

    Args:
        saved: the checkpoint's ``config`` (None for checkpoints without one: a warning, nothing checked).
        current: this run's :func:`run_record`.
        extra_state_names: the ``extra_state`` entries the checkpoint holds (curriculum sampler, random-LTD, ...).
        consumers: names of this run's stateful objects that will restore such entries.
        finetune: a ``--finetune`` load (architecture and tokenizer only; no state is resumed).
        override: ``--override-checkpoint-args``: log the differences instead of raising.
        where: the checkpoint directory and iteration, for messages.
    Raises:
        ValueError: listing every difference as ``key: checkpoint <value>, this run <value>``.
    """
    problems = []
    flat_saved = _flatten(saved, finetune)
    if flat_saved is None:
        log_rank0(logger, "%s records no run config; architecture and settings cannot be checked", where,
                  level=logging.WARNING)
    else:
        problems += _differences(flat_saved, _flatten(current, finetune), saved)
    if not finetune:
        dropped = sorted(set(extra_state_names) - set(consumers))
        problems += [f"{name}: the checkpoint holds its state but this run has no {name} (it would be dropped)"
                     for name in dropped]
    if not problems:
        threads = ((saved or {}).get("runtime") or {}).get("torch_num_threads")
        cpu = not torch.cuda.is_available()
        if cpu and threads is not None and threads != current["runtime"]["torch_num_threads"] and not finetune:
            log_rank0(logger, "%s was trained with %d CPU threads, this run has %d: on CPU the continuation is not "
                      "bit-identical to an uninterrupted run (set --torch-num-threads %d)", where, threads,
                      current["runtime"]["torch_num_threads"], threads, level=logging.WARNING)
        return
    what = "--finetune needs the pretrained architecture and tokenizer" if finetune else "a resume must keep them"
    text = f"{where} was saved with other defining arguments ({what}): " + "; ".join(problems)
    if override:
        log_rank0(logger, "%s; continuing with this command line's values (--override-checkpoint-args)", text,
                  level=logging.WARNING)
        return
    raise ValueError(f"{text}. Pass the checkpoint's values (see its config.json), or --override-checkpoint-args to "
                     "continue with this command line's deliberately")


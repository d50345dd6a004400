"""The rest of a DeepSpeed config JSON: batch sizes, precision and loss scaler, ZeRO stage, gradient clipping.

Megatron-DeepSpeed recipes pass one JSON (``--deepspeed_config``) whose ``data_efficiency`` section the data
efficiency room reads; the other top-level keys set what the DeepSpeed engine would have done to training. Here
they are applied to the training config, or checked against the flags that say the same thing:

* a setting given both in the JSON and by its flag must agree (else ``ValueError`` naming both);
* a setting given in one place is applied; ``"auto"`` in the JSON means "not given here, the flags decide";
* once the JSON enables ``fp16``, a loss-scaler key it leaves out takes its flag if that was given, else
  DeepSpeed's default (``initial_scale_power`` 16, ``loss_scale_window`` 1000, ``hysteresis`` 2,
  ``min_loss_scale`` 1), since the DeepSpeed engine, not Megatron, scaled the loss of such a recipe;
* ``zero_optimization.stage`` 0/1 is applied (1 = optimizer state sharded over data-parallel ranks), 2/3 refused;
* keys with no effect on the numbers here are noted once, keys that would change training in a way this framework
  cannot reproduce are refused, and unknown keys are reported once (a warning, not an error).
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Mapping
from typing import Any

from megatron.config import flag_name
from megatron.logging import get_logger, log_rank0
from megatron.training.config import PretrainConfig

__all__ = ["DEEPSPEED_DEFAULT_FP16", "read_deepspeed_json", "apply_deepspeed_config"]

logger = get_logger(__name__)

DEEPSPEED_DEFAULT_FP16: dict[str, float] = {
    "initial_scale_power": 16, "loss_scale_window": 1000, "hysteresis": 2, "min_loss_scale": 1,
}
"""DeepSpeed's defaults for the dynamic loss scaler of an enabled ``fp16`` section (``runtime/constants.py``)."""

# Top-level keys other rooms read: the data-efficiency section and DeepSpeed's legacy seqlen warm-up.
_READ_ELSEWHERE = ("data_efficiency", "curriculum_learning")

_IGNORED: dict[str, str] = {
    "steps_per_print": "DeepSpeed's own progress lines; --log-interval sets this framework's",
    "wall_clock_breakdown": "DeepSpeed's timers; the training loop logs its own timings",
    "prescale_gradients": "only moves the division by the data-parallel size before the gradient all-reduce",
    "gradient_predivide_factor": "only splits the division by the data-parallel size around the all-reduce",
    "dataloader_drop_last": "the training samplers always drop an incomplete last global batch",
    "memory_breakdown": "DeepSpeed's memory report",
    "flops_profiler": "DeepSpeed's profiler; the loop logs TFLOP/s itself",
    "tensorboard": "DeepSpeed's monitor; use --tensorboard-dir",
    "wandb": "DeepSpeed's monitor; use --metrics-file or --tensorboard-dir",
    "csv_monitor": "DeepSpeed's monitor; use --metrics-file",
    "comet": "DeepSpeed's monitor; use --metrics-file or --tensorboard-dir",
    "comms_logger": "DeepSpeed's communication logger",
    "activation_checkpointing": "DeepSpeed's activation-checkpointing memory options; recomputation itself is "
                                "--checkpoint-activations / --recompute-granularity",
    "checkpoint": "DeepSpeed's checkpoint-engine options; checkpoints here are Megatron's",
    "communication_data_type": "data type of DeepSpeed's gradient all-reduce; here gradients are reduced in the "
                               "main-gradient dtype",
    "sparse_gradients": "DeepSpeed's sparse embedding-gradient all-reduce (a communication format)",
    "zero_allow_untested_optimizer": "a DeepSpeed safety switch for client optimizers under ZeRO",
    "zero_force_ds_cpu_optimizer": "a DeepSpeed switch for CPU-offloaded optimizers (offload is refused anyway)",
    "aio": "DeepSpeed's NVMe offload I/O settings",
    "autotuning": "DeepSpeed's autotuner",
    "pipeline": "DeepSpeed pipeline-engine options; pipeline parallelism here is --pipeline-model-parallel-size "
                "(stages on torch.distributed.pipelining)",
    "dump_state": "DeepSpeed's debug print of its config",
    "data_types": "DeepSpeed's gradient-accumulation dtype; here gradients accumulate in fp32 main gradients",
}
"""Top-level keys accepted with no effect, and why (listed once per run when present)."""

_REFUSED: dict[str, str] = {
    "optimizer": "the optimizer comes from the flags: --optimizer adam, --lr, --adam-beta1/--adam-beta2/--adam-eps, "
                 "--weight-decay (Megatron-DeepSpeed's recipes leave this key out for the same reason)",
    "scheduler": "the learning-rate schedule comes from the flags: --lr-decay-style, --lr-warmup-*, --lr-decay-*",
    "amp": "NVIDIA Apex AMP is not used; pass --fp16 or --bf16 (or the JSON's fp16/bf16 sections)",
    "compression_training": "DeepSpeed's compression library is not implemented",
    "sequence_parallel_size": "DeepSpeed-Ulysses sequence parallelism is not implemented; remove the key",
}
"""Top-level keys that would change training in a way not reproduced here: an error with what to use instead."""

_APPLIED = ("train_batch_size", "train_micro_batch_size_per_gpu", "gradient_accumulation_steps", "fp16", "bf16",
            "bfloat16", "zero_optimization", "gradient_clipping")

_FP16_KEYS = ("enabled", "loss_scale", "initial_scale_power", "loss_scale_window", "hysteresis", "min_loss_scale",
              "consecutive_hysteresis", "auto_cast", "fp16_master_weights_and_grads")
_BF16_KEYS = ("enabled", "immediate_grad_update", "check_grad_overflow")
# ZeRO keys that tune communication buffers and overlap only (no effect on the numbers at stage 0/1 here).
_ZERO_TUNING = ("reduce_bucket_size", "allgather_bucket_size", "overlap_comm", "contiguous_gradients",
                "reduce_scatter", "allgather_partitions", "round_robin_gradients", "elastic_checkpoint",
                "load_from_fp32_weights", "sub_group_size", "use_multi_rank_bucket_allreduce",
                "ignore_unused_parameters", "legacy_stage1", "memory_efficient_linear")
_ZERO_OFFLOAD = ("offload_optimizer", "offload_param", "cpu_offload", "cpu_offload_params")


def read_deepspeed_json(path: str) -> dict[str, Any]:
    """The JSON object of ``--deepspeed_config``; ValueError naming the file for a missing file or bad JSON."""
    if not os.path.isfile(path):
        raise ValueError(f"--deepspeed_config {path} does not exist; pass the DeepSpeed JSON file")
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: line {e.lineno} column {e.colno}: invalid JSON: {e.msg}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a DeepSpeed config must be a JSON object, got {type(data).__name__}")
    return data


class _Applier:
    """Applies one DeepSpeed JSON to one config; collects what was applied, ignored and unknown."""

    def __init__(self, cfg: PretrainConfig, data: Mapping[str, Any], path: str) -> None:
        self.cfg, self.data, self.path = cfg, data, path
        self.explicit = cfg.explicit_flags
        self.applied: list[str] = []
        self.ignored: list[str] = []
        self.unknown: list[str] = []

    # ---- values ---------------------------------------------------------------------------------------------------
    def _number(self, key: str, value: Any, *, integer: bool, minimum: float) -> float | int | None:
        """``value`` checked as a number >= ``minimum``; None for ``"auto"``."""
        if value == "auto":
            return None
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        if ok and integer:
            ok = float(value).is_integer()
        if not ok or value < minimum:
            kind = "an integer" if integer else "a number"
            raise ValueError(f"{self.path}: {key} is {value!r}; it must be {kind} >= {minimum:g} or \"auto\"")
        return int(value) if integer else float(value)

    def _switch(self, key: str, value: Any) -> bool | None:
        if value == "auto":
            return None
        if not isinstance(value, bool):
            raise ValueError(f"{self.path}: {key} is {value!r}; it must be true, false or \"auto\"")
        return value

    def _set(self, room: Any, name: str, value: Any, key: str, shown: Any = None) -> None:
        """Set ``room.name`` from JSON ``key``; a flag given with another value is a conflict."""
        current = getattr(room, name)
        if name in self.explicit and current != value:
            given = json.dumps(value) if isinstance(value, bool) else shown if shown is not None else repr(value)
            flag = (flag_name(name) if current else f"no {flag_name(name)}") if isinstance(current, bool) \
                else f"{flag_name(name)} {current}"
            raise ValueError(f"{self.path}: {key} = {given} conflicts with {flag}; make them agree or drop one of them")
        setattr(room, name, value)
        self.applied.append(f"{key}={shown if shown is not None else value}")

    # ---- sections -------------------------------------------------------------------------------------------------
    def batch(self) -> None:
        t = self.cfg.training
        total = self._number("train_batch_size", self.data.get("train_batch_size", "auto"), integer=True, minimum=1)
        micro = self._number("train_micro_batch_size_per_gpu",
                             self.data.get("train_micro_batch_size_per_gpu", "auto"), integer=True, minimum=1)
        accum = self._number("gradient_accumulation_steps", self.data.get("gradient_accumulation_steps", "auto"),
                             integer=True, minimum=1)
        if total is not None:
            self._set(t, "global_batch_size", total, "train_batch_size")
        if micro is not None:
            self._set(t, "micro_batch_size", micro, "train_micro_batch_size_per_gpu")
        if accum is not None:  # checked against the data-parallel size in validate() (check_gradient_accumulation)
            self.cfg.compat.deepspeed_gradient_accumulation_steps = accum
            self.applied.append(f"gradient_accumulation_steps={accum}")

    def _section(self, key: str, known: tuple[str, ...]) -> Mapping[str, Any] | None:
        section = self.data.get(key)
        if section is None:
            return None
        if not isinstance(section, Mapping):
            raise ValueError(f"{self.path}: {key} must be an object, got {section!r}")
        self.unknown += [f"{key}.{k}" for k in section if k not in known]
        return section

    def precision(self) -> None:
        t = self.cfg.training
        fp16 = self._section("fp16", _FP16_KEYS)
        bf16_key = "bf16" if "bf16" in self.data else "bfloat16"
        bf16 = self._section(bf16_key, _BF16_KEYS)
        fp16_on = None if fp16 is None else self._switch("fp16.enabled", fp16.get("enabled", False))
        bf16_on = None if bf16 is None else self._switch(f"{bf16_key}.enabled", bf16.get("enabled", False))
        if fp16_on and bf16_on:
            raise ValueError(f"{self.path}: fp16.enabled and {bf16_key}.enabled are both true; enable one")
        if fp16_on is not None:
            if fp16_on and t.bf16 and "bf16" in self.explicit:
                raise ValueError(f"{self.path}: fp16.enabled = true conflicts with --bf16; make them agree")
            self._set(t, "fp16", fp16_on, "fp16.enabled")
            if fp16_on:
                t.bf16 = False
        if bf16_on is not None:
            if bf16_on and t.fp16 and "fp16" in self.explicit:
                raise ValueError(f"{self.path}: {bf16_key}.enabled = true conflicts with --fp16; make them agree")
            self._set(t, "bf16", bf16_on, f"{bf16_key}.enabled")
            if bf16_on:
                t.fp16 = False
        if fp16_on:
            self._loss_scaler(fp16)

    def _loss_scaler(self, fp16: Mapping[str, Any]) -> None:
        t = self.cfg.training
        for key in ("consecutive_hysteresis", "auto_cast", "fp16_master_weights_and_grads"):
            if fp16.get(key) is True:
                raise NotImplementedError(
                    f"{self.path}: fp16.{key} = true is not supported (Megatron's fp16 path: fp32 master weights, "
                    f"loss scale with hysteresis refilled after loss_scale_window clean steps); remove fp16.{key}"
                )
        scale = self._number("fp16.loss_scale", fp16.get("loss_scale", 0), integer=False, minimum=0)
        if scale is not None:
            self._set(t, "loss_scale", scale or None, "fp16.loss_scale", scale)  # 0 = dynamic scaling
        specs = (("initial_scale_power", "initial_loss_scale", True, 0), ("loss_scale_window", "loss_scale_window",
                 True, 1), ("hysteresis", "hysteresis", True, 1), ("min_loss_scale", "min_loss_scale", False, 0))
        for key, name, integer, minimum in specs:
            if key not in fp16 and name in self.explicit:
                continue  # the JSON is silent, the flag speaks
            value = self._number(f"fp16.{key}", fp16.get(key, DEEPSPEED_DEFAULT_FP16[key]), integer=integer,
                                 minimum=minimum)
            if value is None:
                continue
            if key == "initial_scale_power":
                self._set(t, name, 2.0**value, f"fp16.{key}", f"{value} (2^{value} = {2**value})")
            else:
                self._set(t, name, type(getattr(t, name))(value), f"fp16.{key}", value)

    def zero(self) -> None:
        zero = self._section("zero_optimization", ("stage", *_ZERO_TUNING, *_ZERO_OFFLOAD))
        if zero is None:
            return
        for key in _ZERO_OFFLOAD:
            spec = zero.get(key)
            device = spec.get("device", "none") if isinstance(spec, Mapping) else ("cpu" if spec else "none")
            if device not in (None, "none"):
                raise NotImplementedError(
                    f"{self.path}: zero_optimization.{key} offloads to {device!r}, which is not supported; remove it "
                    "(optimizer state stays on the device, sharded over data-parallel ranks with stage 1)"
                )
        stage = self._number("zero_optimization.stage", zero.get("stage", 0), integer=True, minimum=0)
        if stage is None:
            return
        if stage >= 2:
            raise NotImplementedError(
                f"{self.path}: zero_optimization.stage {stage} is not supported (ZeRO-{stage} shards "
                f"{'gradients' if stage == 2 else 'gradients and parameters'}); use stage 1 (optimizer state sharded "
                "over data-parallel ranks, as --use-distributed-optimizer) or 0"
            )
        self._set(self.cfg.compat, "zero_stage", stage, "zero_optimization.stage")
        if stage == 1:
            self.cfg.parallel.use_distributed_optimizer = True
        elif "use_distributed_optimizer" not in self.explicit:
            self.cfg.parallel.use_distributed_optimizer = False
        tuning = [k for k in zero if k in _ZERO_TUNING]
        if tuning:
            self.ignored.append(f"zero_optimization.{{{', '.join(tuning)}}} (communication buffers and overlap)")

    def clipping(self) -> None:
        value = self._number("gradient_clipping", self.data.get("gradient_clipping", "auto"), integer=False,
                             minimum=0)
        if value is not None:
            self._set(self.cfg.training, "clip_grad", value, "gradient_clipping")

    def classify(self) -> None:
        refused = [k for k in self.data if k in _REFUSED]
        if refused:
            raise NotImplementedError(f"{self.path}: " + "; ".join(f"{k} is not supported: {_REFUSED[k]}"
                                                                   for k in refused))
        for key in self.data:
            if key in _IGNORED:
                self.ignored.append(f"{key} ({_IGNORED[key]})")
            elif key not in _APPLIED and key not in _READ_ELSEWHERE:
                self.unknown.append(key)


def apply_deepspeed_config(cfg: PretrainConfig, path: str, data: Mapping[str, Any] | None = None) -> None:
    """Apply the non-data-efficiency keys of the DeepSpeed JSON at ``path`` to ``cfg`` (see the module docstring).

    Runs before ``cfg.validate()``; the gradient-accumulation count is checked there against the data-parallel
    size. Logs (rank 0, once) what was applied, what was accepted without effect and which keys are unknown.

    Raises:
        ValueError: a JSON value conflicts with its flag, or has a wrong type/range (naming both).
        NotImplementedError: a key asks for something not supported here (ZeRO-2/3, offload, an optimizer or
            scheduler section, ...), with what to use instead.
    """
    ds = _Applier(cfg, read_deepspeed_json(path) if data is None else data, path)
    ds.classify()
    ds.batch()
    ds.precision()
    ds.zero()
    ds.clipping()
    if ds.applied:
        log_rank0(logger, "DeepSpeed config %s: applied %s", path, ", ".join(ds.applied))
    if ds.ignored:
        log_rank0(logger, "DeepSpeed config %s: accepted without effect here: %s", path, "; ".join(ds.ignored))
    if ds.unknown:
        log_rank0(logger, "DeepSpeed config %s: unknown keys ignored: %s (not DeepSpeed settings this framework "
                  "knows; check their spelling)", path, ", ".join(ds.unknown), level=logging.WARNING)

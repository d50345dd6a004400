"""Metric sinks for training and evaluation: one console line, TensorBoard scalars, JSON lines.

Metrics are a ``dict[str, float]``; a value may also be one level of ``{name: number}`` (the curriculum's
``difficulty``), written nested to JSONL, as ``key/name`` scalars to TensorBoard and as ``key: name=value`` on the
console. The core training keys are plain (``iteration``, ``loss``, ``lr``, ``grad_norm``, ``consumed_samples``,
``consumed_tokens``, ``step_time_s``, ``tokens_per_s``); most others are namespaced (``throughput/tflops_per_device``,
``loss/lm``). Keys this module does not know are still written to every sink, which is the hook through which the
data efficiency extensions add ``difficulty``, ``ltd_kept_tokens`` and ``consumed_layer_tokens`` (see
``loop.TrainerExtension.metrics``). Also owns the FLOP/MFU arithmetic shared by the loop and the benchmarks.
"""

from __future__ import annotations

import json
import math
import resource
import sys
from pathlib import Path
from typing import Any, Literal

import torch

from megatron.logging import get_logger

__all__ = ["MetricsWriter", "peak_device_tflops", "peak_memory_gb", "format_train_line"]

logger = get_logger(__name__)

# Dense bf16/fp16 tensor-core peak TFLOP/s per device (vendor datasheets, no sparsity), matched by substring of
# torch.cuda.get_device_name(). More specific names first.
_PEAK_TFLOPS = (
    ("H200", 989.0),
    ("H100 PCIe", 756.0),
    ("H100", 989.0),
    ("H800", 989.0),
    ("GH200", 989.0),
    ("B200", 2250.0),
    ("A100", 312.0),
    ("A800", 312.0),
    ("L40S", 362.0),
    ("L4", 121.0),
    ("A10G", 70.0),
    ("A10", 125.0),
    ("V100", 125.0),
    ("T4", 65.0),
)


def peak_device_tflops(override: float | None = None) -> float | None:
    """Peak TFLOP/s of one device: ``override`` (``--peak-tflops``) if given, else the table for a known GPU.

    Returns None on CPU or an unknown GPU (MFU is then omitted).
    """
    if override is not None:
        return override
    if not torch.cuda.is_available():
        return None
    name = torch.cuda.get_device_name()
    return next((peak for key, peak in _PEAK_TFLOPS if key in name), None)


def peak_memory_gb() -> tuple[str, float]:
    """(label, GB): peak CUDA memory allocated by this process, or its peak resident set size on CPU."""
    if torch.cuda.is_available():
        return "memory/peak_allocated_gb", torch.cuda.max_memory_allocated() / 1e9
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # ru_maxrss is KiB on Linux and bytes on macOS.
    return "memory/peak_rss_gb", rss / (1e9 if sys.platform == "darwin" else 1e6)


# key -> (console label, format spec); order is the console order.
_TRAIN_FIELDS: dict[str, tuple[str, str]] = {
    "consumed_samples": ("consumed samples", "d"),
    "consumed_tokens": ("consumed tokens", "d"),
    "step_time_s": ("elapsed time per iteration (ms)", "ms"),
    "tokens_per_s": ("tokens/s", ".1f"),
    "throughput/tflops_per_device": ("TFLOP/s/device", ".2f"),
    "throughput/mfu": ("MFU", "pct"),
    "lr": ("learning rate", ".3E"),
    "global_batch_size": ("global batch size", "d"),
    "loss": ("loss", ".6E"),
    "loss_scale": ("loss scale", ".1f"),
    "grad_norm": ("grad norm", ".3f"),
    "skipped_iterations": ("number of skipped iterations", "d"),
    "nan_iterations": ("number of nan iterations", "d"),
}


def _fmt(value: Any, spec: str) -> str:
    if spec == "ms":
        return f"{value * 1000:.1f}"
    if spec == "pct":
        return f"{value * 100:.1f}%"
    if spec == "d":
        return str(int(value))
    return format(value, spec)


def format_train_line(metrics: dict[str, Any], train_iters: int | None = None) -> str:
    """The Megatron-style console line: ``iteration i/N | consumed samples ... | ... |``."""
    it = int(metrics["iteration"])
    parts = [f"iteration {it:8d}" + (f"/{train_iters:8d}" if train_iters else "")]
    for key, (label, spec) in _TRAIN_FIELDS.items():
        if metrics.get(key) is not None:
            parts.append(f"{label}: {_fmt(metrics[key], spec)}")
    for key, value in metrics.items():
        if key in _TRAIN_FIELDS or key in ("iteration", "kind") or value is None:
            continue
        if isinstance(value, dict):
            value = ", ".join(f"{k}={v}" for k, v in value.items())
        parts.append(f"{key}: {value:.4g}" if isinstance(value, float) else f"{key}: {value}")
    return " | ".join(parts) + " |"


class MetricsWriter:
    """Writes metric dicts to the console (via logging), TensorBoard and a JSONL file.

    Only the writing rank (global rank 0) should be ``enabled``; the loop reduces the values over ranks first.
    JSONL lines are appended and flushed one by one, so an interrupted run leaves whole lines; a resumed run
    appends after them.
    """

    def __init__(
        self, *, tensorboard_dir: str | None = None, metrics_file: str | None = None, enabled: bool = True,
        train_iters: int | None = None,
    ) -> None:
        self.enabled = enabled
        self.train_iters = train_iters
        self._tb = None
        self._jsonl = None
        if not enabled:
            return
        if tensorboard_dir:
            from torch.utils.tensorboard import SummaryWriter  # imported lazily: tensorboard is slow to import

            self._tb = SummaryWriter(log_dir=tensorboard_dir, max_queue=1000)
        if metrics_file:
            Path(metrics_file).parent.mkdir(parents=True, exist_ok=True)
            self._jsonl = open(metrics_file, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()

    def _scalars(self, metrics: dict[str, Any], step: int) -> None:
        if self._tb is None:
            return
        for key, value in metrics.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool) and key != "iteration":
                self._tb.add_scalar(key, value, step)
            elif isinstance(value, dict):  # a nested group such as difficulty: {metric: value} -> difficulty/metric
                for sub, v in value.items():
                    self._tb.add_scalar(f"{key}/{sub}", v, step)
        # Curves against data seen, so that runs with different batch/sequence schedules compare (MDS "vs tokens").
        if "loss" in metrics and "consumed_tokens" in metrics:
            self._tb.add_scalar("loss/vs_samples", metrics["loss"], int(metrics["consumed_samples"]))
            self._tb.add_scalar("loss/vs_tokens", metrics["loss"], int(metrics["consumed_tokens"]))

    def _line(self, record: dict[str, Any]) -> None:
        if self._jsonl is None:
            return
        clean = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in record.items()}
        self._jsonl.write(json.dumps(clean, sort_keys=False) + "\n")
        self._jsonl.flush()

    def log_train(self, metrics: dict[str, Any]) -> None:
        """One log interval: ``metrics`` must hold ``iteration``; see the module docstring for the keys."""
        if not self.enabled:
            return
        logger.info(format_train_line(metrics, self.train_iters))
        self._scalars(metrics, int(metrics["iteration"]))
        self._line({"kind": "train", **metrics})

    def log_eval(self, iteration: int, loss: float, split: Literal["valid", "test"], extra: dict | None = None) -> None:
        """One evaluation: loss and perplexity ``exp(min(20, loss))`` (Megatron caps the exponent; a nan/inf loss has
        a nan/inf perplexity, not the cap's 4.85e8), plus the mean of each loss component in ``extra`` (e.g. BERT's
        ``loss/lm`` and ``loss/sop``; the loss is their sum)."""
        if not self.enabled:
            return
        ppl = math.exp(min(20.0, loss)) if math.isfinite(loss) else loss
        prefix = "val" if split == "valid" else "test"
        name = "validation" if split == "valid" else "test"
        if len(extra or {}) > 1:  # a sum of losses (BERT: masked LM + next sentence): no single perplexity
            parts = "".join(f" {k}: {v:.6E} |" for k, v in extra.items())
            logger.info("%s loss at iteration %d | total loss value: %.6E |%s", name, iteration, loss, parts)
        else:
            logger.info("%s loss at iteration %d | lm loss value: %.6E | lm loss PPL: %.6E |", name, iteration, loss,
                        ppl)
        record = {"iteration": iteration, f"{prefix}_loss": loss, f"{prefix}_ppl": ppl, **(extra or {})}
        if self._tb is not None:
            self._tb.add_scalar(f"{prefix}/loss", loss, iteration)
            self._tb.add_scalar(f"{prefix}/ppl", ppl, iteration)
            for k, v in (extra or {}).items():
                self._tb.add_scalar(f"{prefix}/{k}", v, iteration)
        self._line({"kind": split, **record})

    def close(self) -> None:
        if self._tb is not None:
            self._tb.flush()
            self._tb.close()
            self._tb = None
        if self._jsonl is not None:
            self._jsonl.close()
            self._jsonl = None


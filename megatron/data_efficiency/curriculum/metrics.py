"""Difficulty metrics of training samples, computed by the offline analyzer on batches of token arrays.

A ``Metric`` is either per-sample (one integer per sample: seqlen, vocab_rarity, ...) or accumulated (one integer
vector summed over all samples: total_vocab_freq). Built-ins follow Megatron-DeepSpeed's ``analyze_data.py``;
custom metrics are named ``package.module:attribute`` and imported with importlib (never eval'd).
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

__all__ = [
    "MetricKind",
    "MetricBatch",
    "MetricFn",
    "MetricContext",
    "Metric",
    "BUILTIN_METRICS",
    "resolve_metric",
    "vocab_rarity_table",
    "seqlen_coefficient",
]

MetricKind = Literal["per_sample", "accumulate"]

MetricBatch = Mapping[str, np.ndarray]
"""A batch of samples: ``tokens`` int64 [B, L] (GPT: the S+1 tokens of each sample), optionally ``padding_mask``
[B, L] (1 = real token; BERT-style samples)."""

MetricFn = Callable[[MetricBatch], np.ndarray]
"""Per-sample: returns integer [B]. Accumulated: returns an integer vector [K] (K fixed over batches)."""


@dataclass(frozen=True)
class MetricContext:
    """What a metric may need besides the batch.

    Attributes:
        vocab_size: number of token ids; token ids must be < vocab_size (histogram length).
        pad_id: padding token id of the tokenizer, or None (GPT samples are packed and have no padding).
        sample_length: tokens per sample (GPT: seq_length + 1).
        load_metric_value: returns the reduced vector of an accumulated metric already analyzed
            (e.g. ``total_vocab_freq`` for ``vocab_rarity``).
    """

    vocab_size: int | None
    pad_id: int | None
    sample_length: int | None
    load_metric_value: Callable[[str], np.ndarray] = field(repr=False)


@dataclass(frozen=True)
class Metric:
    """A named difficulty metric.

    Attributes:
        name: output directory and file stem (``{save_path}/{name}/{name}_...``).
        kind: ``per_sample`` or ``accumulate``.
        build: called once per analysis process with the context; returns the batch function.
        requires: accumulated metrics whose reduced outputs ``build`` reads (analyzed first, automatically).
    """

    name: str
    kind: MetricKind
    build: Callable[[MetricContext], MetricFn]
    requires: tuple[str, ...] = ()


def _tokens(batch: MetricBatch) -> np.ndarray:
    return np.asarray(batch["tokens"])


def _real_token_mask(batch: MetricBatch, ctx: MetricContext) -> np.ndarray | None:
    """Bool [B, L] of non-pad tokens, or None when every token is real."""
    if "padding_mask" in batch:
        return np.asarray(batch["padding_mask"]).astype(bool)
    if ctx.pad_id is not None:
        return _tokens(batch) != ctx.pad_id
    return None


def _build_total_vocab_freq(ctx: MetricContext) -> MetricFn:
    if ctx.vocab_size is None:
        raise ValueError("metric total_vocab_freq needs the tokenizer's vocab_size")
    vocab = int(ctx.vocab_size)

    def fn(batch: MetricBatch) -> np.ndarray:
        tokens = _tokens(batch)
        mask = _real_token_mask(batch, ctx)
        flat = tokens[mask] if mask is not None else tokens.reshape(-1)
        if flat.size and (flat.min() < 0 or flat.max() >= vocab):
            raise ValueError(
                f"total_vocab_freq: token id {int(flat.max() if flat.max() >= vocab else flat.min())} is outside "
                f"[0, vocab_size={vocab}); the data was tokenized with another vocabulary"
            )
        return np.bincount(flat, minlength=vocab).astype(np.int64)

    return fn


def vocab_rarity_table(total_vocab_freq: np.ndarray) -> np.ndarray:
    """Per-token rarity ``-ln p(token)`` (float64 [V]), p = frequency / total.

    Ids never seen are counted once (frequency 1) so their rarity is finite, as in Megatron-DeepSpeed; the total
    includes those pseudo-counts.
    """
    freq = np.asarray(total_vocab_freq, dtype=np.float64).copy()
    freq[freq == 0] = 1.0
    return -np.log(freq / freq.sum())


def _rarity_sums(table: np.ndarray, batch: MetricBatch, ctx: MetricContext) -> np.ndarray:
    """Float64 [B]: sum of token rarities of each sample's real tokens (GPT: all S+1 tokens)."""
    tokens = _tokens(batch)
    if tokens.size and (tokens.min() < 0 or tokens.max() >= len(table)):
        raise ValueError(
            f"vocab_rarity: token ids span [{int(tokens.min())}, {int(tokens.max())}] but total_vocab_freq has "
            f"{len(table)} entries; re-run total_vocab_freq on this data"
        )
    r = table[tokens]
    mask = _real_token_mask(batch, ctx)
    if mask is not None:
        r = np.where(mask, r, 0.0)
    return r.sum(axis=1)


def _build_vocab_rarity(ctx: MetricContext) -> MetricFn:
    table = vocab_rarity_table(ctx.load_metric_value("total_vocab_freq"))

    def fn(batch: MetricBatch) -> np.ndarray:
        # Sum, not mean (the paper's GPT samples all have the same length). Stored as an integer: floor of the
        # float64 sum, which equals Megatron-DeepSpeed's int() truncation for these non-negative sums.
        return np.floor(_rarity_sums(table, batch, ctx)).astype(np.int64)

    return fn


def _build_seqlen(ctx: MetricContext) -> MetricFn:
    def fn(batch: MetricBatch) -> np.ndarray:
        mask = _real_token_mask(batch, ctx)
        tokens = _tokens(batch)
        if mask is None:
            return np.full(tokens.shape[0], tokens.shape[1], dtype=np.int64)
        return mask.sum(axis=1).astype(np.int64)

    return fn


def seqlen_coefficient(table: np.ndarray, sample_length: int) -> int:
    """Multiplier C of seqlen in ``seqlen * C + vocab_rarity``: a power of ten above any sample's rarity.

    Any rarity is at most ``sample_length * max(table)``, so with C = 10^(ceil(log10(that)) + 1) the combined
    value sorts by seqlen first and rarity second (Megatron-DeepSpeed's formula).
    """
    bound = max(float(sample_length) * float(table.max()), 1.0)
    return 10 ** (math.ceil(math.log10(bound)) + 1)


def _build_seqlen_vocab_rarity(ctx: MetricContext) -> MetricFn:
    if ctx.sample_length is None:
        raise ValueError("metric seqlen_vocab_rarity needs the sample length")
    table = vocab_rarity_table(ctx.load_metric_value("total_vocab_freq"))
    coeff = seqlen_coefficient(table, ctx.sample_length)
    if (ctx.sample_length + 1) * coeff >= 2**63:
        raise ValueError(f"seqlen_vocab_rarity: seqlen x {coeff} would overflow int64 for samples of "
                         f"{ctx.sample_length} tokens")
    seqlen = _build_seqlen(ctx)

    def fn(batch: MetricBatch) -> np.ndarray:
        rarity = np.floor(_rarity_sums(table, batch, ctx)).astype(np.int64)
        return seqlen(batch) * coeff + rarity

    return fn


BUILTIN_METRICS: dict[str, Metric] = {
    m.name: m
    for m in (
        Metric(name="total_vocab_freq", kind="accumulate", build=_build_total_vocab_freq),
        Metric(name="vocab_rarity", kind="per_sample", build=_build_vocab_rarity, requires=("total_vocab_freq",)),
        Metric(name="seqlen", kind="per_sample", build=_build_seqlen),
        Metric(name="seqlen_vocab_rarity", kind="per_sample", build=_build_seqlen_vocab_rarity,
               requires=("total_vocab_freq",)),
    )
}


def resolve_metric(spec: str) -> Metric:
    """A built-in metric name, or ``package.module:attribute`` for a custom one.

    The attribute is either a ``Metric`` (any kind) or a plain function ``f(tokens: int64 [B, L]) -> int [B]``,
    which becomes a per-sample metric named after the function.

    Raises:
        ValueError: unknown name, unimportable module or missing attribute (the message says which).
    """
    if spec in BUILTIN_METRICS:
        return BUILTIN_METRICS[spec]
    if ":" not in spec:
        raise ValueError(
            f"unknown metric {spec!r}: built-ins are {sorted(BUILTIN_METRICS)}; name a custom metric as "
            "package.module:function"
        )
    module_name, _, attr = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise ValueError(f"custom metric {spec!r}: cannot import module {module_name!r}: {e}") from None
    try:
        obj = getattr(module, attr)
    except AttributeError:
        raise ValueError(f"custom metric {spec!r}: module {module_name!r} has no attribute {attr!r}") from None
    if isinstance(obj, Metric):
        return obj
    if callable(obj):
        return Metric(name=getattr(obj, "__name__", attr), kind="per_sample",
                      build=lambda ctx, _f=obj: (lambda batch: _f(_tokens(batch))))
    raise ValueError(f"custom metric {spec!r} is a {type(obj).__name__}, expected a Metric or a function")

"""Offline data analyzer: metric of every training sample -> DeepSpeed-compatible index files (map/reduce).

Map: each worker (process or machine) takes a contiguous slice of the samples, split again over forked processes
("threads"), streams it in chunks and writes partial outputs plus, last and atomically, a done-marker. Reduce
checks that every worker's marker is present and consistent (it never reads a map output without one), then
writes DeepSpeed's files under ``save_path/{metric}/``: ``{metric}_sample_to_metric``, ``_index_to_metric``,
``_index_to_sample``, ``_index_to_sample_percentile_merged`` (per-sample metrics) or ``_metric_value``
(accumulated metrics), all through ``megatron.data.indexed_dataset`` with dtype codes 1-5 only.
"""

from __future__ import annotations

import glob
import hashlib
import json
import multiprocessing
import os
import shutil
import sys
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from megatron.data.indexed_dataset import IndexedDatasetBuilder, get_bin_path, get_idx_path
from megatron.data_efficiency.curriculum.index_files import (
    load_metric_value,
    output_prefix,
    read_flat,
    read_json,
    reduce_marker,
)
from megatron.data_efficiency.curriculum.metrics import Metric, MetricContext, resolve_metric
from megatron.logging import get_logger

__all__ = [
    "AnalyzerTask",
    "AnalyzerOptions",
    "analyze",
    "run_map",
    "run_reduce",
    "write_metric_index",
    "fit_index_dtype",
    "dataset_fingerprint",
    "split_range",
]

logger = get_logger(__name__)

AnalyzerTask = Literal["map", "reduce", "both"]

_MARKER_VERSION = 1
# Index dtypes whose codes (1-5) mean the same thing to DeepSpeed and megatron-core; unsigned 16/32/64-bit
# codes differ between the two libraries, so non-negative values wider than uint8 use the signed types.
_FIT_DTYPES = (np.uint8, np.int8, np.int16, np.int32, np.int64)


@dataclass(kw_only=True)
class AnalyzerOptions:
    """How to run the analyzer (the tool's flags; data and tokenizer flags come from their own configs)."""

    metrics: list[str] = field(metadata={"aliases": ["--analyzing-metric"]})
    """Metrics to analyze: built-in names (total_vocab_freq, vocab_rarity, seqlen, seqlen_vocab_rarity) or
    package.module:function for custom ones."""
    save_path: str = field(metadata={"aliases": ["--save"]})
    """Output directory; files land in save_path/{metric}/ with DeepSpeed's names."""
    task: AnalyzerTask = field(default="both", metadata={"aliases": ["--analyzing-task"]})
    """map, reduce, or both (map then reduce; prerequisite metrics such as total_vocab_freq run first)."""
    num_workers: int = field(default=1, metadata={"aliases": ["--analyzing-num-workers"]})
    """Number of map workers (processes or machines sharing save_path)."""
    worker_id: int = field(default=0, metadata={"aliases": ["--analyzing-worker-id"]})
    """This worker's id in [0, num_workers)."""
    num_threads: int = field(default=1, metadata={"aliases": ["--analyzing-num-threads"]})
    """Forked map processes per worker."""
    specific_threads: list[int] | None = field(default=None, metadata={"aliases": ["--analyzing-specific-threads"]})
    """Map only these threads of this worker (rerun threads that failed); the others' outputs are kept."""
    num_threads_reduce: int = field(default=1, metadata={"aliases": ["--analyzing-num-threads-reduce"]})
    """Accepted for Megatron-DeepSpeed's command line; the reduce is one vectorized pass (no threads)."""
    batch_size: int = 1024
    """Samples per map chunk (bounds the memory of a map process)."""
    wait_timeout_s: float = 86400.0
    """With task both and several workers: how long to wait for the other workers' map outputs, in seconds."""

    def __post_init__(self) -> None:
        if not self.metrics:
            raise ValueError("metrics is empty; name at least one metric")
        if self.num_workers < 1 or not 0 <= self.worker_id < self.num_workers:
            raise ValueError(f"worker_id {self.worker_id} must be in [0, num_workers={self.num_workers})")
        if self.num_threads < 1 or self.batch_size < 1:
            raise ValueError(f"num_threads ({self.num_threads}) and batch_size ({self.batch_size}) must be >= 1")


# --------------------------------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------------------------------


def _partial_prefix(save_path: str, metric: str, worker: int, thread: int, suffix: str) -> str:
    return os.path.join(save_path, metric, f"worker{worker}_thread{thread}", f"{metric}_{suffix}")


def _worker_marker(save_path: str, metric: str, worker: int) -> str:
    return os.path.join(save_path, metric, f"worker{worker}.done.json")


def _write_json_atomic(path: str, obj: dict[str, Any]) -> None:
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=1, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def fit_index_dtype(lo: int, hi: int) -> np.dtype:
    """Smallest of uint8/int8/int16/int32/int64 holding [lo, hi] (codes 1-5: same meaning in DeepSpeed)."""
    for dt in _FIT_DTYPES:
        info = np.iinfo(dt)
        if info.min <= lo and hi <= info.max:
            return np.dtype(dt)
    raise ValueError(f"metric values [{lo}, {hi}] do not fit int64")


def _is_reduced(save_path: str, metric: str, fingerprint: str) -> bool:
    marker = read_json(reduce_marker(save_path, metric))
    return marker is not None and marker.get("fingerprint") == fingerprint


def dataset_fingerprint(dataset: Any, extra: str = "") -> str:
    """Short digest of ``extra`` (e.g. the data flags), ``len(dataset)`` and a few samples' tokens.

    Map outputs, reduce outputs and prerequisites carry it, so outputs of another dataset are never mixed in.
    """
    n = len(dataset)
    h = hashlib.sha256(f"{extra}|{n}".encode())
    for i in sorted({0, n // 2, n - 1}) if n else ():
        h.update(np.ascontiguousarray(_sample_tokens(dataset[i]), dtype=np.int64).tobytes())
    return h.hexdigest()[:16]


def split_range(start: int, end: int, parts: int) -> list[tuple[int, int]]:
    """Contiguous near-equal split of ``[start, end)`` (DeepSpeed's ``np.linspace`` rule)."""
    bounds = np.linspace(start, end, parts + 1, dtype=np.int64)
    return [(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:])]


# --------------------------------------------------------------------------------------------------------------
# Map
# --------------------------------------------------------------------------------------------------------------


def _sample_tokens(item: Any) -> np.ndarray:
    if isinstance(item, dict):
        item = item["tokens"] if "tokens" in item else item["text"]
    return np.asarray(item)


def _collate(items: list[Any]) -> dict[str, np.ndarray]:
    first = _sample_tokens(items[0])
    tokens = np.empty((len(items), len(first)), dtype=np.int64)
    for k, it in enumerate(items):
        tokens[k] = _sample_tokens(it)  # one copy per sample; ValueError if lengths differ
    batch = {"tokens": tokens}
    if items and isinstance(items[0], dict) and "padding_mask" in items[0]:
        batch["padding_mask"] = np.stack([np.asarray(it["padding_mask"]) for it in items])
    return batch


def _check_output(metric: Metric, values: Any, batch_len: int, acc_len: int | None) -> np.ndarray:
    v = np.asarray(values)
    if v.dtype.kind not in "iub":
        raise ValueError(f"metric {metric.name} returned dtype {v.dtype}; metric values must be integers")
    if metric.kind == "per_sample" and v.shape != (batch_len,):
        raise ValueError(f"per-sample metric {metric.name} returned shape {v.shape} for a batch of {batch_len}")
    if metric.kind == "accumulate" and (v.ndim != 1 or (acc_len is not None and len(v) != acc_len)):
        raise ValueError(f"accumulated metric {metric.name} returned shape {v.shape}; it must be a vector of a "
                         f"fixed length ({acc_len})")
    return v.astype(np.int64, copy=False)


def _map_range(dataset: Any, metrics: Sequence[Metric], fns: Sequence[Callable], save_path: str, worker: int,
               thread: int, start: int, end: int, batch_size: int, progress: bool) -> dict[str, int]:
    """Stream samples [start, end) through every metric; write this thread's partial outputs."""
    builders, accs = {}, {}
    for m in metrics:
        os.makedirs(os.path.dirname(_partial_prefix(save_path, m.name, worker, thread, "x")), exist_ok=True)
        if m.kind == "per_sample":
            prefix = _partial_prefix(save_path, m.name, worker, thread, "sample_to_metric")
            builders[m.name] = IndexedDatasetBuilder(get_bin_path(prefix), dtype=np.int64)
    bar = _progress_bar(end - start, f"worker{worker} thread{thread}", thread, progress)
    try:
        for s in range(start, end, batch_size):
            e = min(end, s + batch_size)
            batch = _collate([dataset[i] for i in range(s, e)])
            for m, fn in zip(metrics, fns):
                acc = accs.get(m.name)
                v = _check_output(m, fn(batch), e - s, None if acc is None else len(acc))
                if m.kind == "per_sample":
                    builders[m.name].add_item(v)  # one row per chunk: the reduce concatenates them
                else:
                    accs[m.name] = v.copy() if acc is None else acc + v
            bar.update(e - s)
        for m in metrics:
            if m.kind == "per_sample":
                builders[m.name].finalize(get_idx_path(_partial_prefix(save_path, m.name, worker, thread,
                                                                       "sample_to_metric")))
            elif m.name in accs:
                _write_rows(_partial_prefix(save_path, m.name, worker, thread, "metric_value"), accs[m.name],
                            [len(accs[m.name])], np.int64)
    finally:
        bar.close()
        for b in builders.values():
            b.abort()
    return {m.name: int(m.name in accs) for m in metrics if m.kind == "accumulate"}


class _NoBar:
    """What a disabled progress bar does (nothing), without importing tqdm into each map process."""

    def update(self, n: int) -> None:
        pass

    def close(self) -> None:
        pass


def _progress_bar(total: int, desc: str, position: int, enabled: bool):
    if not enabled:
        return _NoBar()
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, position=position, unit="sample", disable=not enabled, leave=False,
                file=sys.stderr)


def _thread_main(conn, *args) -> None:
    """Body of a forked map process: report the result (or the traceback) through ``conn``."""
    try:
        conn.send(("ok", _map_range(*args)))
    except BaseException:  # noqa: BLE001 - everything must reach the parent
        conn.send(("error", traceback.format_exc()))
    finally:
        conn.close()


def _run_threads(dataset, metrics, fns, save_path, worker, ranges: dict[int, tuple[int, int]], batch_size,
                 progress) -> dict[int, dict[str, int]]:
    """Map thread ``t``'s samples ``ranges[t]`` for each requested ``t``; returns each thread's result."""
    (own, (own_s, own_e)), *forked = ranges.items()
    # fork, not spawn: children inherit the dataset (memory maps) and the metric closures without pickling. This
    # process maps the first range itself meanwhile: one fork fewer (a fork and a child's exit cost tens of ms,
    # which is most of the analyzer's fixed cost on small datasets).
    ctx = multiprocessing.get_context("fork")
    procs = []
    for t, (s, e) in forked:
        parent, child = ctx.Pipe(duplex=False)
        p = ctx.Process(target=_thread_main,
                        args=(child, dataset, metrics, fns, save_path, worker, t, s, e, batch_size, progress))
        p.start()
        child.close()
        procs.append((t, p, parent))
    results, errors = {}, []
    try:
        results[own] = _map_range(dataset, metrics, fns, save_path, worker, own, own_s, own_e, batch_size, progress)
    except Exception:
        if not procs:
            raise
        errors.append(f"thread {own} (samples {own_s}..{own_e}): {traceback.format_exc()}")
    for t, p, parent in procs:
        try:
            status, payload = parent.recv()
        except EOFError:
            status, payload = "error", "the process died without reporting (killed or out of memory?)"
        p.join()
        if status != "ok" or p.exitcode != 0:
            errors.append(f"thread {t} (samples {ranges[t][0]}..{ranges[t][1]}): {payload}")
        results[t] = payload
    if errors:
        raise RuntimeError(f"map worker {worker} failed; re-run this worker alone. " + "\n".join(errors))
    return results


def _thread_marker(save_path: str, metric: str, worker: int, thread: int) -> str:
    return os.path.join(save_path, metric, f"worker{worker}_thread{thread}.done.json")


def run_map(dataset: Any, metrics: Sequence[Metric], save_path: str, *, ctx: MetricContext, fingerprint: str,
            num_workers: int = 1, worker_id: int = 0, num_threads: int = 1, batch_size: int = 1024,
            progress: bool = True, threads: Sequence[int] | None = None) -> None:
    """Map this worker's slice of ``dataset`` through ``metrics`` and write partial outputs + done-markers.

    Re-running a worker first deletes its old marker and partial outputs, so a failed worker can be rerun alone.
    ``threads`` (Megatron-DeepSpeed's ``--analyzing-specific-threads``) reruns only those threads of the worker and
    keeps the others' outputs; the worker's marker is written once every thread of it has finished.
    """
    n = len(dataset)
    if n == 0:
        raise ValueError("the dataset to analyze is empty")
    start, end = split_range(0, n, num_workers)[worker_id]
    thread_ranges = split_range(start, end, num_threads)
    selected = sorted(set(range(num_threads) if not threads else threads))
    bad = [t for t in selected if not 0 <= t < num_threads]
    if bad:
        raise ValueError(f"threads {bad} are not threads of a worker with num_threads={num_threads}; pass ids in "
                         f"[0, {num_threads})")
    for m in metrics:
        marker = _worker_marker(save_path, m.name, worker_id)
        if os.path.exists(marker):
            os.remove(marker)  # first: a half-rewritten worker must never look complete
        stale = glob.glob(os.path.join(save_path, m.name, f"worker{worker_id}_thread*")) if not threads else [
            p for t in selected for p in (_thread_marker(save_path, m.name, worker_id, t),
                                          os.path.dirname(_partial_prefix(save_path, m.name, worker_id, t, "x")))]
        for old in stale:
            if os.path.isdir(old):
                shutil.rmtree(old)
            elif os.path.exists(old):
                os.remove(old)
    fns = [m.build(ctx) for m in metrics]
    t0 = time.time()
    results = _run_threads(dataset, metrics, fns, save_path, worker_id, {t: thread_ranges[t] for t in selected},
                           batch_size, progress)
    for m in metrics:
        for t, r in results.items():
            s, e = thread_ranges[t]
            _write_json_atomic(_thread_marker(save_path, m.name, worker_id, t), {
                "fingerprint": fingerprint, "num_samples": n, "start": s, "end": e, "present": r.get(m.name, 1)})
        done = [read_json(_thread_marker(save_path, m.name, worker_id, t)) for t in range(num_threads)]
        missing = [t for t, (d, (s, e)) in enumerate(zip(done, thread_ranges)) if d is None or (
            d.get("fingerprint"), d.get("num_samples"), d.get("start"), d.get("end")) != (fingerprint, n, s, e)]
        if missing:
            logger.warning("map worker %d, %s: threads %s have no finished output for this dataset yet; run them "
                           "(--analyzing-specific-threads) before the reduce", worker_id, m.name, missing)
            continue
        _write_json_atomic(_worker_marker(save_path, m.name, worker_id), {
            "version": _MARKER_VERSION, "metric": m.name, "kind": m.kind, "fingerprint": fingerprint,
            "num_samples": n, "num_workers": num_workers, "worker_id": worker_id, "start": start, "end": end,
            "threads": [[t, s, e, d["present"]] for t, ((s, e), d) in enumerate(zip(thread_ranges, done))],
        })
    logger.info("map worker %d/%d: samples [%d, %d) x %s, threads %s in %.1f s", worker_id, num_workers, start, end,
                [m.name for m in metrics], selected, time.time() - t0)


# --------------------------------------------------------------------------------------------------------------
# Reduce
# --------------------------------------------------------------------------------------------------------------


def _check_markers(save_path: str, metric: Metric, num_workers: int, num_samples: int,
                   fingerprint: str) -> list[dict[str, Any]]:
    """Every worker's marker, validated; ValueError listing what is missing or inconsistent."""
    expected = split_range(0, num_samples, num_workers)
    markers, problems = [], []
    for w in range(num_workers):
        mk = read_json(_worker_marker(save_path, metric.name, w))
        if mk is None:
            problems.append(f"worker {w}: no done-marker (map not run, still running, or failed)")
            continue
        got = (mk.get("num_workers"), mk.get("num_samples"), mk.get("fingerprint"), mk.get("kind"))
        want = (num_workers, num_samples, fingerprint, metric.kind)
        if got != want or (mk["start"], mk["end"]) != expected[w]:
            problems.append(f"worker {w}: marker is for (num_workers, num_samples, fingerprint, kind) = {got}, "
                            f"samples [{mk.get('start')}, {mk.get('end')}); expected {want}, {list(expected[w])}")
            continue
        bounds = [(s, e) for _, s, e, _ in mk["threads"]]
        if not bounds or bounds[0][0] != mk["start"] or bounds[-1][1] != mk["end"] or any(
                a[1] != b[0] for a, b in zip(bounds, bounds[1:])):
            problems.append(f"worker {w}: thread ranges {bounds} do not tile [{mk['start']}, {mk['end']})")
            continue
        markers.append(mk)
    if problems:
        raise ValueError(f"{os.path.join(save_path, metric.name)}: cannot reduce {metric.name}, the map is "
                         "incomplete:\n  " + "\n  ".join(problems) + "\nRe-run the listed map workers, then reduce.")
    return markers


def _write_rows(prefix: str, values: np.ndarray, lengths: Sequence[int] | np.ndarray, dtype: Any) -> None:
    """One ``.bin/.idx`` pair of rows (``values`` concatenated, row sizes ``lengths``) written atomically."""
    os.makedirs(os.path.dirname(prefix), exist_ok=True)
    with IndexedDatasetBuilder(get_bin_path(prefix), dtype=dtype) as b:
        b.add_document(np.asarray(values).astype(dtype, copy=False), lengths)
        b.finalize(get_idx_path(prefix))


def write_metric_index(save_path: str, name: str, values: np.ndarray) -> dict[str, int]:
    """Write the per-sample outputs of metric ``name`` from ``values`` (int [N], sample i -> metric).

    Groups samples by value with one stable argsort (no file per distinct value) and writes DeepSpeed's four
    files; returns summary statistics. The reduce uses it; tests and benchmarks may call it directly.
    """
    n = len(values)
    vdt = fit_index_dtype(int(values.min()), int(values.max()))
    sdt = fit_index_dtype(0, n - 1)
    order = np.argsort(values, kind="stable")  # ties keep ascending sample ids, as DeepSpeed's rows do
    sorted_values = values[order]
    starts = np.concatenate(([0], np.flatnonzero(np.diff(sorted_values)) + 1))
    counts = np.diff(np.concatenate((starts, [n])))
    distinct = sorted_values[starts]
    del sorted_values
    ones = np.ones(n, dtype=np.int64)
    _write_rows(output_prefix(save_path, name, "sample_to_metric"), values, ones, vdt)
    _write_rows(output_prefix(save_path, name, "index_to_metric"), distinct, ones[: len(distinct)], vdt)
    _write_rows(output_prefix(save_path, name, "index_to_sample"), order, counts, sdt)
    # DeepSpeed's "percentile merged" rows: groups of max(1, V // 100) consecutive values (about 100 rows); a
    # speed-up for percentile difficulties, not exact percentiles.
    step = max(1, len(distinct) // 100)
    merged = np.add.reduceat(counts, np.arange(0, len(distinct), step))
    _write_rows(output_prefix(save_path, name, "index_to_sample_percentile_merged"), order, merged, sdt)
    return {"num_distinct_values": len(distinct), "min": int(distinct[0]), "max": int(distinct[-1])}


def _reduce_one(save_path: str, metric: Metric, num_workers: int, num_samples: int, fingerprint: str,
                identity: Mapping[str, Any] | None = None) -> None:
    markers = _check_markers(save_path, metric, num_workers, num_samples, fingerprint)
    if metric.kind == "per_sample":
        parts = []
        for mk in markers:
            for t, s, e, _ in mk["threads"]:
                vals, _ = read_flat(_partial_prefix(save_path, metric.name, mk["worker_id"], t, "sample_to_metric"))
                if len(vals) != e - s:
                    raise ValueError(f"worker {mk['worker_id']} thread {t}: {len(vals)} values for {e - s} samples; "
                                     "re-run that map worker")
                parts.append(np.asarray(vals))
        values = np.concatenate(parts)
        assert len(values) == num_samples, f"reduce of {metric.name}: {len(values)} values for {num_samples} samples"
        stats = write_metric_index(save_path, metric.name, values)
    else:
        total = None
        for mk in markers:
            for t, _, _, present in mk["threads"]:
                if not present:
                    continue
                vec, _ = read_flat(_partial_prefix(save_path, metric.name, mk["worker_id"], t, "metric_value"))
                vec = np.asarray(vec, dtype=np.int64)
                if total is not None and len(vec) != len(total):
                    raise ValueError(f"{metric.name}: partial vectors have different lengths ({len(vec)} vs "
                                     f"{len(total)}); re-run the map")
                total = vec.copy() if total is None else total + vec
        _write_rows(output_prefix(save_path, metric.name, "metric_value"), total, [len(total)],
                    fit_index_dtype(int(total.min()), int(total.max())))
        stats = {"length": len(total), "sum": int(total.sum())}
    _write_json_atomic(reduce_marker(save_path, metric.name), {
        "version": _MARKER_VERSION, "metric": metric.name, "kind": metric.kind, "fingerprint": fingerprint,
        "num_samples": num_samples, **stats, **({"identity": dict(identity)} if identity is not None else {}),
    })
    logger.info("reduced %s over %d samples: %s", metric.name, num_samples, stats)


def run_reduce(metrics: Sequence[Metric], save_path: str, *, num_workers: int, num_samples: int,
               fingerprint: str, identity: Mapping[str, Any] | None = None) -> None:
    """Merge every worker's map outputs into the final files; ValueError if any map output is missing.

    ``identity`` (the analyzed split's settings, see ``curriculum.identity``) is stored in each reduce marker."""
    for m in metrics:
        marker = reduce_marker(save_path, m.name)
        if os.path.exists(marker):
            os.remove(marker)  # outputs are being replaced: not complete until the new marker lands
        _reduce_one(save_path, m, num_workers, num_samples, fingerprint, identity)


# --------------------------------------------------------------------------------------------------------------
# Orchestration
# --------------------------------------------------------------------------------------------------------------


def _wait_for(paths_ok: Callable[[], list[str]], timeout_s: float, what: str, poll_s: float = 1.0) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        missing = paths_ok()
        if not missing:
            return
        if time.monotonic() >= deadline:
            raise TimeoutError(f"gave up after {timeout_s:.0f} s waiting for {what}: {missing}")
        time.sleep(poll_s)


def _plan(opts: AnalyzerOptions, save_path: str, fingerprint: str) -> list[Metric]:
    """Requested metrics plus, for task both, unreduced prerequisites (first); ValueError if map lacks them."""
    requested = [resolve_metric(s) for s in opts.metrics]
    names = [m.name for m in requested]
    if len(set(names)) != len(names):
        raise ValueError(f"metric names repeat: {names}")
    if opts.task == "reduce":
        return requested
    extra = []
    for m in requested:
        for r in m.requires:
            if r in names or _is_reduced(save_path, r, fingerprint) or r in [e.name for e in extra]:
                continue
            if opts.task == "map":
                raise ValueError(f"metric {m.name} needs the reduced output of {r} on this dataset; run {r} first "
                                 "(--task map then --task reduce), or use --task both")
            extra.append(resolve_metric(r))
    return extra + requested


def analyze(dataset: Any, opts: AnalyzerOptions, *, vocab_size: int | None, pad_id: int | None = None,
            sample_length: int | None = None, fingerprint_extra: str = "", progress: bool = True,
            poll_s: float = 1.0, identity: Mapping[str, Any] | None = None) -> None:
    """Analyze ``dataset`` (sample id = position in it) as ``opts`` says; see the module docstring.

    With ``task='both'``, metrics run in dependency passes (total_vocab_freq before vocab_rarity). With several
    workers, worker 0 reduces once every worker's done-marker is there, and the others wait for that reduce
    before a dependent pass; all of this goes through the shared ``save_path``. ``identity`` (JSON-ready) is
    recorded in the reduce markers and, when ``fingerprint_extra`` is empty, is what the fingerprint digests.
    """
    save_path = opts.save_path
    os.makedirs(save_path, exist_ok=True)
    if identity is not None and not fingerprint_extra:
        fingerprint_extra = json.dumps(identity, sort_keys=True)
    fp = dataset_fingerprint(dataset, fingerprint_extra)
    n = len(dataset)
    ctx = MetricContext(vocab_size=vocab_size, pad_id=pad_id, sample_length=sample_length,
                        load_metric_value=lambda name: load_metric_value(save_path, name, fp))
    remaining = _plan(opts, save_path, fp)
    while remaining:
        done = {m.name for m in remaining}
        ready = [m for m in remaining if opts.task == "reduce" or not (set(m.requires) & done)]
        assert ready, f"dependency cycle among metrics {sorted(done)}"
        if opts.task in ("map", "both"):
            run_map(dataset, ready, save_path, ctx=ctx, fingerprint=fp, num_workers=opts.num_workers,
                    worker_id=opts.worker_id, num_threads=opts.num_threads, batch_size=opts.batch_size,
                    progress=progress, threads=opts.specific_threads)
        if opts.task == "reduce" or (opts.task == "both" and opts.worker_id == 0):
            if opts.task == "both" and opts.num_workers > 1:
                _wait_for(lambda: [w for m in ready for w in range(opts.num_workers)
                                   if not os.path.exists(_worker_marker(save_path, m.name, w))],
                          opts.wait_timeout_s, "map workers", poll_s)
            run_reduce(ready, save_path, num_workers=opts.num_workers, num_samples=n, fingerprint=fp,
                       identity=identity)
        remaining = [m for m in remaining if m not in ready]
        if remaining and opts.task == "both" and opts.worker_id != 0:
            _wait_for(lambda: [m.name for m in ready if not _is_reduced(save_path, m.name, fp)],
                      opts.wait_timeout_s, "worker 0's reduce", poll_s)

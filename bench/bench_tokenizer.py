"""Throughput of our GPT-2 tokenizer against HF ``tokenizers`` on the KJV Bible (1,189 chapters, 4.1 MB).

Both run in this process on the same documents; each row reports the best of ``--repeats`` runs in MB/s of
UTF-8 input and the ratio to the HF batch encoder. Token ids of every engine are checked to be identical first.

    python bench/bench_tokenizer.py [--repeats 3] [--threads N]
"""

from __future__ import annotations

import argparse
import os
import time
from typing import Callable

from tokenizers import Tokenizer, decoders, pre_tokenizers
from tokenizers.models import BPE

from megatron.data import tokenizer_bpe
from megatron.data.corpora import kjv_documents
from megatron.data.tokenizer import TokenizerConfig, build_tokenizer, default_gpt2_vocab_files


def _hf_reference() -> Tokenizer:
    vocab, merges = default_gpt2_vocab_files()
    tok = Tokenizer(BPE.from_file(vocab, merges))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    return tok


def _best(fn: Callable[[], list[list[int]]], repeats: int) -> tuple[float, list[list[int]]]:
    best, out = float("inf"), []
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return best, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="RAYON_NUM_THREADS for HF (default: all cores)")
    args = parser.parse_args()
    if args.threads:
        os.environ["RAYON_NUM_THREADS"] = str(args.threads)
    texts = [d["text"] for d in kjv_documents()]
    mb = sum(len(t.encode("utf-8")) for t in texts) / 1e6

    ours = build_tokenizer(TokenizerConfig())
    tokenizer_bpe._GPT2_CONTENT_DIGEST = "force-merge-list-engine"  # bench-only: measure the fallback engine too
    ours_merge_list = build_tokenizer(TokenizerConfig())
    hf = _hf_reference()
    rows = [
        ("ours GPT2BPETokenizer.tokenize_batch (tiktoken)", lambda: ours.tokenize_batch(texts)),
        ("ours GPT2BPETokenizer.tokenize loop (tiktoken)", lambda: [ours.tokenize(t) for t in texts]),
        ("ours merge-list engine tokenize_batch (tokenizers)", lambda: ours_merge_list.tokenize_batch(texts)),
        ("HF tokenizers encode_batch", lambda: [e.ids for e in hf.encode_batch(texts)]),
        ("HF tokenizers encode loop", lambda: [hf.encode(t).ids for t in texts]),
    ]
    results = [(name, *_best(fn, args.repeats)) for name, fn in rows]
    reference_ids = results[3][2]
    for name, _, ids in results:
        assert ids == reference_ids, f"{name} produced different ids than HF tokenizers"
    tokens = sum(map(len, reference_ids))
    hf_batch_s = results[3][1]
    print(f"KJV: {len(texts)} documents, {mb:.2f} MB, {tokens:,} GPT-2 tokens; {os.cpu_count()} cores; best of {args.repeats}")
    print(f"| {'engine':<52} | {'seconds':>8} | {'MB/s':>7} | {'Mtok/s':>6} | {'vs HF batch':>11} |")
    print(f"|{'-' * 54}|{'-' * 10}|{'-' * 9}|{'-' * 8}|{'-' * 13}|")
    for name, seconds, _ in results:
        print(f"| {name:<52} | {seconds:8.3f} | {mb / seconds:7.2f} | {tokens / seconds / 1e6:6.2f} | {hf_batch_s / seconds:10.2f}x |")


if __name__ == "__main__":
    main()

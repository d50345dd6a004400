"""Throughput of our GPT-2 tokenizer against HF ``tokenizers`` on the KJV Bible (1,189 chapters, 4.1 MB).

Both run in this process on the same documents, the engines called in turn ``--repeats`` times
(``bench/compare.py``: ABBA order, each call timed); each row reports min and median seconds, MB/s of UTF-8 input at
the min, and the ratio to the HF batch encoder (of mins and of medians, with a verdict on the noise). Token ids of
every engine are checked to be identical.

    python bench/bench_tokenizer.py [--repeats 5] [--threads N]
"""

from __future__ import annotations

import argparse
import os
import sys

from tokenizers import Tokenizer, decoders, pre_tokenizers
from tokenizers.models import BPE

from megatron.data.preprocessing.corpora import kjv_documents
from megatron.data.tokenizers import bpe as tokenizer_bpe
from megatron.data.tokenizers.bpe import default_gpt2_vocab_files
from megatron.data.tokenizers.build import build_tokenizer
from megatron.data.tokenizers.config import TokenizerConfig

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from compare import HEADER, Comparison, interleave, machine_line  # noqa: E402


def _hf_reference() -> Tokenizer:
    vocab, merges = default_gpt2_vocab_files()
    tok = Tokenizer(BPE.from_file(vocab, merges))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    return tok


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
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
    timed, ids = interleave(dict(rows), repeats=args.repeats, warmup=1)
    hf_batch = rows[3][0]
    for name, _ in rows:
        assert ids[name] == ids[hf_batch], f"{name} produced different ids than HF tokenizers"
    tokens = sum(map(len, ids[hf_batch]))
    print(f"KJV: {len(texts)} documents, {mb:.2f} MB, {tokens:,} GPT-2 tokens; {args.repeats} interleaved calls per "
          f"engine; {machine_line()}")
    print(f"| {'engine':<52} | {'min s':>7} | {'median s':>8} | {'MB/s':>7} | {'Mtok/s':>6} |")
    print(f"|{'-' * 54}|{'-' * 9}|{'-' * 10}|{'-' * 9}|{'-' * 8}|")
    for name, _ in rows:
        side = timed[name]
        print(f"| {name:<52} | {side.min:7.3f} | {side.median:8.3f} | {mb / side.min:7.2f} | "
              f"{tokens / side.min / 1e6:6.2f} |")
    print(f"\nAgainst {hf_batch} (peer):")
    print(HEADER)
    for name, _ in rows:
        if name != hf_batch:
            print(Comparison(timed[name], timed[hf_batch]).row(name))


if __name__ == "__main__":
    main()

"""Benchmark: the BERT dataset against megatron-core's, side by side in one run.

Two costs, each measured for ours in this process and for megatron-core 0.16 (``.venv/mcore``, imported in a
subprocess because its ``megatron`` namespace collides with ours) on the same inputs:

1. Sample index: ``build_bert_sample_index`` (numpy/Python) vs megatron-core's compiled ``helpers.build_mapping``
   on synthetic sentence lengths (``--num-sentences`` sentences in documents of 1-60 sentences), one epoch and
   ``--num-samples`` samples; the outputs are also checked equal.
2. Items per second: ``BertDataset[i]`` vs ``BERTMaskedWordPieceDataset[i]`` (sentence packing, segment pairing,
   whole-word n-gram masking, padding) over the sentence-split KJV corpus with a WordPiece vocabulary trained on it,
   at ``--seq-lengths``; first items of the shuffled training split, caches built beforehand.

    .venv/bin/python bench/bench_bert_dataset.py
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
MCORE = os.path.join(REPO, ".venv", "mcore")

MCORE_SIDE = textwrap.dedent(
    """
    import json, os, sys, time, warnings
    warnings.simplefilter("ignore")
    import numpy, torch
    torch.distributed.init_process_group("gloo", init_method="file://" + os.path.abspath("store"), rank=0,
                                         world_size=1)
    from megatron.core.datasets import helpers
    from megatron.core.datasets.blended_megatron_dataset_builder import BlendedMegatronDatasetBuilder
    from megatron.core.datasets.bert_dataset import BERTMaskedWordPieceDataset, BERTMaskedWordPieceDatasetConfig

    spec = json.load(open(sys.argv[1]))
    out = {}
    d = numpy.load("mapping-in.npz")
    for name, n in (("epoch", 1), ("samples", spec["num_samples"])):
        t = time.perf_counter()
        m = helpers.build_mapping(d["bounds"], d["sizes"], numpy.iinfo(numpy.int32).max - 1, n, spec["target"],
                                  0.1, 1234, False, 2)
        out[f"index_{name}"] = time.perf_counter() - t
        numpy.save(f"mapping-{name}.npy", m)

    class Tokenizer:
        unique_identifiers = {"class": "bench-adapter"}
        inv_vocab = {int(i): piece for i, piece in spec["tokenizer"]["inv_vocab"]}
        cls, sep, pad, mask, eos = (spec["tokenizer"][k] for k in ("cls", "sep", "pad", "mask", "eos"))

    for seq in spec["seq_lengths"]:
        config = BERTMaskedWordPieceDatasetConfig(
            random_seed=1234, sequence_length=seq, blend=([spec["prefix"]], None), split="949,50,1",
            path_to_cache=os.path.abspath(f"cache{seq}"), tokenizer=Tokenizer(), masking_probability=0.15,
            short_sequence_probability=0.1, masking_max_ngram=3, masking_do_full_word=True,
            masking_do_permutation=False, masking_use_longer_ngrams=False,
            masking_use_geometric_distribution=False, classification_head=True,
        )
        train = BlendedMegatronDatasetBuilder(BERTMaskedWordPieceDataset, [spec["items"], 0, 0], lambda: True,
                                              config).build()[0]
        t = time.perf_counter()
        for i in range(spec["items"]):
            train[i]
        out[f"items_{seq}"] = spec["items"] / (time.perf_counter() - t)
    print(json.dumps(out))
    """
)


def synthetic_documents(num_sentences: int) -> tuple[np.ndarray, np.ndarray]:
    """Sentence lengths (1-60 tokens, a few over 512) and document bounds (1-60 sentences per document)."""
    rng = np.random.default_rng(0)
    counts = rng.integers(1, 61, size=num_sentences // 30 + 1)
    bounds = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    bounds = bounds[bounds <= num_sentences]
    sizes = rng.integers(1, 61, size=int(bounds[-1])).astype(np.int32)
    sizes[rng.integers(0, len(sizes), size=len(sizes) // 10_000 + 1)] = 600
    return bounds, sizes


def build_corpus(root: str) -> tuple[str, str]:
    """The sentence-split KJV corpus and its WordPiece vocabulary (through the real tools, cached in ``root``)."""
    prefix, vocab = os.path.join(root, "kjv_bert_text_sentence"), os.path.join(root, "tok", "vocab.txt")
    if not os.path.exists(prefix + ".idx"):
        jsonl = os.path.join(root, "kjv.jsonl")
        for cmd in (
            ["tools/prepare_corpus.py", "--corpus", "kjv", "--output", jsonl],
            ["tools/train_tokenizer.py", "--input", jsonl, "--type", "wordpiece", "--lowercase", "--vocab-size",
             "8192", "--output-dir", os.path.dirname(vocab)],
            ["tools/preprocess_data.py", "--input", jsonl, "--output-prefix", os.path.join(root, "kjv_bert"),
             "--split-sentences", "--tokenizer-type", "BertWordPieceLowerCase", "--vocab-file", vocab,
             "--workers", "2", "--no-progress"],
        ):
            subprocess.run([sys.executable, *cmd], cwd=REPO, check=True, capture_output=True)
    return prefix, vocab


def ours(args, bounds, sizes, prefix: str, vocab: str, work: str) -> dict:
    from megatron.data.bert_dataset import BertDataConfig, build_bert_datasets
    from megatron.data.bert_indices import build_bert_sample_index
    from megatron.data.config import DataConfig
    from megatron.data.tokenizer import TokenizerConfig, build_tokenizer

    out = {}
    for name, kw in (("epoch", dict(num_samples=1)), ("samples", dict(num_samples=args.num_samples))):
        t = time.perf_counter()
        index = build_bert_sample_index(bounds, sizes, max_length=args.target, short_seq_prob=0.1, seed=1234,
                                        min_sentences=2, **kw)
        out[f"index_{name}"] = time.perf_counter() - t
        np.save(os.path.join(work, f"ours-{name}.npy"), index)
    tokenizer = build_tokenizer(TokenizerConfig(tokenizer_type="BertWordPieceLowerCase", vocab_file=vocab))
    for seq in args.seq_lengths:
        cfg = DataConfig(data_path=[prefix], split="949,50,1", seq_length=seq,
                         data_cache_path=os.path.join(work, f"ours-cache{seq}"))
        train = build_bert_datasets(cfg, BertDataConfig(), tokenizer, (args.items, 0, 0), 1234)[0]
        t = time.perf_counter()
        for i in range(args.items):
            train[i]
        out[f"items_{seq}"] = args.items / (time.perf_counter() - t)
    return out, tokenizer


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--num-sentences", type=int, default=1_000_000)
    p.add_argument("--num-samples", type=int, default=1_000_000, help="samples of the second index build")
    p.add_argument("--target", type=int, default=509, help="sample target length (seq 512 - 3)")
    p.add_argument("--seq-lengths", type=int, nargs="+", default=[128, 512])
    p.add_argument("--items", type=int, default=3000, help="items fetched per sequence length")
    p.add_argument("--work-dir", default=None)
    args = p.parse_args()
    if not os.path.isdir(os.path.join(MCORE, "megatron", "core")):
        sys.exit(f"megatron-core side install not found at {MCORE} (bash scripts/install.sh --test)")
    work = args.work_dir or tempfile.mkdtemp(prefix="bench_bert_")
    bounds, sizes = synthetic_documents(args.num_sentences)
    np.savez(os.path.join(work, "mapping-in.npz"), bounds=bounds, sizes=sizes)
    prefix, vocab = build_corpus(os.path.join(work, "corpus"))
    mine, tokenizer = ours(args, bounds, sizes, prefix, vocab, work)
    spec = {"num_samples": args.num_samples, "target": args.target, "seq_lengths": args.seq_lengths,
            "items": args.items, "prefix": prefix,
            "tokenizer": {"inv_vocab": [[i, t] for i, t in tokenizer.inv_vocab.items()], "cls": tokenizer.cls,
                          "sep": tokenizer.sep, "pad": tokenizer.pad, "mask": tokenizer.mask, "eos": tokenizer.eos}}
    with open(os.path.join(work, "spec.json"), "w", encoding="utf-8") as f:
        json.dump(spec, f)
    proc = subprocess.run([sys.executable, "-c", MCORE_SIDE, os.path.join(work, "spec.json")], cwd=work,
                          env={**os.environ, "PYTHONPATH": MCORE}, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"megatron-core side failed:\n{proc.stderr[-4000:]}")
    theirs = json.loads(proc.stdout.strip().splitlines()[-1])
    for name in ("epoch", "samples"):
        same = np.array_equal(np.load(os.path.join(work, f"ours-{name}.npy")),
                              np.load(os.path.join(work, f"mapping-{name}.npy")))
        assert same, f"sample index ({name}) differs from megatron-core's build_mapping"
    print(f"\nBERT dataset: {len(sizes):,} synthetic sentences in {len(bounds) - 1:,} documents; KJV corpus for items")
    print("| measurement | megatron-core 0.16 | ours | ours / megatron-core |")
    print("|---|---|---|---|")
    print(f"| sample index, 1 epoch (s) | {theirs['index_epoch']:.3f} (C++) | {mine['index_epoch']:.3f} | "
          f"{mine['index_epoch'] / theirs['index_epoch']:.1f}x time |")
    print(f"| sample index, {args.num_samples:,} samples (s) | {theirs['index_samples']:.3f} (C++) | "
          f"{mine['index_samples']:.3f} | {mine['index_samples'] / theirs['index_samples']:.1f}x time |")
    for seq in args.seq_lengths:
        print(f"| items/s at seq {seq} | {theirs[f'items_{seq}']:.0f} | {mine[f'items_{seq}']:.0f} | "
              f"{mine[f'items_{seq}'] / theirs[f'items_{seq}']:.2f}x throughput |")
    print("sample indices identical to build_mapping: yes")


if __name__ == "__main__":
    main()

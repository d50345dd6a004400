"""Benchmark: the BERT dataset against megatron-core's, side by side, interleaved (``bench/compare.py``).

1. Sample index: ``build_bert_sample_index`` (numba when installed, and the numpy fallback) vs megatron-core's
   compiled ``helpers.build_mapping`` (its C++ extension, loaded in this process) on synthetic sentence lengths
   (``--num-sentences`` sentences in documents of 1-60 sentences): one epoch and each of ``--num-samples``; the
   outputs are checked equal.
2. Items per second: ``BertDataset[i]`` vs ``BERTMaskedWordPieceDataset[i]`` (sentence packing, segment pairing,
   whole-word n-gram masking, padding) over the sentence-split KJV corpus with a WordPiece vocabulary trained on it,
   at ``--seq-lengths``; the first ``--items`` items of the shuffled training split per call, caches built first.
   megatron-core 0.16 (``.venv/mcore``) serves its side from a child process (its ``megatron`` namespace collides
   with ours), called in turn with ours.

    .venv/bin/python bench/bench_bert_dataset.py [--num-samples 1000000 100000000] [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_index_build import _mcore_helpers  # noqa: E402
from compare import HEADER, PeerProcess, compare, machine_line, python_code  # noqa: E402

MCORE = os.path.join(REPO, ".venv", "mcore")

MCORE_SIDE = textwrap.dedent(
    """
    import json, os, sys, warnings
    warnings.simplefilter("ignore")
    import numpy, torch
    torch.distributed.init_process_group("gloo", init_method="file://" + os.path.abspath("store"), rank=0,
                                         world_size=1)
    from megatron.core.datasets.blended_megatron_dataset_builder import BlendedMegatronDatasetBuilder
    from megatron.core.datasets.bert_dataset import BERTMaskedWordPieceDataset, BERTMaskedWordPieceDatasetConfig
    from compare import serve

    spec = json.load(open(sys.argv[1]))

    class Tokenizer:
        unique_identifiers = {"class": "bench-adapter"}
        inv_vocab = {int(i): piece for i, piece in spec["tokenizer"]["inv_vocab"]}
        cls, sep, pad, mask, eos = (spec["tokenizer"][k] for k in ("cls", "sep", "pad", "mask", "eos"))

    datasets = {}
    for seq in spec["seq_lengths"]:
        config = BERTMaskedWordPieceDatasetConfig(
            random_seed=1234, sequence_length=seq, blend=([spec["prefix"]], None), split="949,50,1",
            path_to_cache=os.path.abspath(f"cache{seq}"), tokenizer=Tokenizer(), masking_probability=0.15,
            short_sequence_probability=0.1, masking_max_ngram=3, masking_do_full_word=True,
            masking_do_permutation=False, masking_use_longer_ngrams=False,
            masking_use_geometric_distribution=False, classification_head=True,
        )
        datasets[seq] = BlendedMegatronDatasetBuilder(BERTMaskedWordPieceDataset, [spec["items"], 0, 0],
                                                      lambda: True, config).build()[0]

    def items(seq):
        train = datasets[seq]
        for i in range(spec["items"]):
            train[i]

    serve({"items": items})
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


def index_rows(args, bounds, sizes, helpers) -> list[str]:
    """Interleaved index builds, ours (numba if installed, then numpy) against C++ build_mapping."""
    from megatron.data.bert_indices import build_bert_sample_index

    rows = []
    backends = ["auto", "numpy"] if args.numpy_index else ["auto"]
    for backend in backends:
        for n in [None, *args.num_samples]:
            if backend == "numpy" and n is not None and n > args.numpy_max_samples:
                continue
            kw = dict(num_samples=1, num_epochs=None) if n is None else dict(num_samples=n, num_epochs=None)

            def ours():
                return build_bert_sample_index(bounds, sizes, kw["num_samples"], args.target, 0.1, 1234, 2,
                                               backend=backend)

            def peer():
                return helpers.build_mapping(bounds, sizes, np.iinfo(np.int32).max - 1, kw["num_samples"],
                                             args.target, 0.1, 1234, False, 2)

            repeats = args.repeats if n is None or n <= 10_000_000 else args.large_repeats
            comparison, mine, theirs = compare(ours, peer, repeats=repeats)
            assert np.array_equal(mine, theirs), f"sample index differs from build_mapping ({backend}, {n})"
            label = (f"index, {'1 epoch' if n is None else f'{n:,} samples'} ({len(mine):,} rows), "
                     f"{'numpy fallback' if backend == 'numpy' else 'ours'}")
            rows.append(comparison.row(label))
            print(rows[-1], flush=True)
            del mine, theirs
    return rows


def item_rows(args, prefix: str, vocab: str, work: str) -> list[str]:
    """Interleaved item fetching, ours in this process against megatron-core's in a child process."""
    from megatron.data.bert_dataset import BertDataConfig, build_bert_datasets
    from megatron.data.config import DataConfig
    from megatron.data.tokenizers.build import build_tokenizer
    from megatron.data.tokenizers.config import TokenizerConfig

    tokenizer = build_tokenizer(TokenizerConfig(tokenizer_type="BertWordPieceLowerCase", vocab_file=vocab))
    spec = {"seq_lengths": args.seq_lengths, "items": args.items, "prefix": prefix,
            "tokenizer": {"inv_vocab": [[i, t] for i, t in tokenizer.inv_vocab.items()], "cls": tokenizer.cls,
                          "sep": tokenizer.sep, "pad": tokenizer.pad, "mask": tokenizer.mask, "eos": tokenizer.eos}}
    with open(os.path.join(work, "spec.json"), "w", encoding="utf-8") as f:
        json.dump(spec, f)
    rows = []
    with PeerProcess(python_code(MCORE_SIDE, os.path.join(work, "spec.json")), env={"PYTHONPATH": MCORE},
                     cwd=work) as peer:
        for seq in args.seq_lengths:
            cfg = DataConfig(data_path=[prefix], split="949,50,1", seq_length=seq,
                             data_cache_path=os.path.join(work, f"ours-cache{seq}"))
            train = build_bert_datasets(cfg, BertDataConfig(), tokenizer, (args.items, 0, 0), 1234)[0]

            def ours():
                for i in range(args.items):
                    train[i]

            comparison, _, _ = compare(ours, lambda: peer.call("items", seq), repeats=args.repeats)
            # Time per item in milliseconds; the ratio (peer time / ours) is the throughput ratio.
            rows.append(comparison.row(f"ms per item, seq {seq} ({args.items} items per call)",
                                       unit=args.items / 1e3, digits=2))
            print(rows[-1], flush=True)
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--num-sentences", type=int, default=1_000_000)
    p.add_argument("--num-samples", type=int, nargs="*", default=[1_000_000],
                   help="sample counts of the index builds (besides one epoch); e.g. 1000000 100000000")
    p.add_argument("--target", type=int, default=509, help="sample target length (seq 512 - 3)")
    p.add_argument("--seq-lengths", type=int, nargs="*", default=[128, 512], help="none: skip the item rows")
    p.add_argument("--items", type=int, default=300, help="items fetched per call and sequence length")
    p.add_argument("--repeats", type=int, default=5, help="interleaved calls per side")
    p.add_argument("--large-repeats", type=int, default=3, help="calls per side for indices over 10M samples")
    p.add_argument("--no-numpy-index", dest="numpy_index", action="store_false",
                   help="skip the rows of the numpy fallback")
    p.add_argument("--numpy-max-samples", type=int, default=10_000_000, help="largest numpy-fallback index")
    p.add_argument("--work-dir", default=None)
    args = p.parse_args()
    helpers = _mcore_helpers()
    if helpers is None or not os.path.isdir(os.path.join(MCORE, "megatron", "core")):
        sys.exit(f"megatron-core side install (with its compiled helpers) not found at {MCORE} "
                 "(bash scripts/install.sh --test)")
    work = args.work_dir or tempfile.mkdtemp(prefix="bench_bert_")
    bounds, sizes = synthetic_documents(args.num_sentences)
    print(f"BERT dataset vs megatron-core 0.16; {machine_line()}")
    print(f"index input: {len(sizes):,} synthetic sentences in {len(bounds) - 1:,} documents, target {args.target}; "
          f"times in seconds, {args.repeats} interleaved calls per side ({args.large_repeats} over 10M samples)")
    print(HEADER)
    rows = index_rows(args, bounds, sizes, helpers)
    if args.seq_lengths:
        prefix, vocab = build_corpus(os.path.join(work, "corpus"))
        rows += item_rows(args, prefix, vocab, work)
    print("\n" + HEADER + "\n" + "\n".join(rows))
    print("sample indices identical to build_mapping: yes")


if __name__ == "__main__":
    main()

"""BERT dataset: items equal to megatron-core 0.16's BERTMaskedWordPieceDataset, sample structure, masking rate,
determinism, index cache, sample index vs its C++ build_mapping, config checks and the --bert-no-binary-head flag.

The corpus is 40 KJV chapters with a trained 1,024-piece WordPiece vocabulary, split into sentences, all through
the real tools (``tools/train_tokenizer.py``, ``tools/preprocess_data.py --split-sentences``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from data.conftest import kjv_chapters, preprocess_data, write_jsonl
from mcore_utils import MCORE, requires_mcore
from megatron.config import add_dataclass_arguments, dataclass_from_namespace
from megatron.data.batch import build_bert_batch
from megatron.data.bert_dataset import BertDataConfig, BertDataset, build_bert_datasets
from megatron.data.bert_indices import Mt19937_64, _shuffle_order, build_bert_sample_index, short_sequence_ratio
from megatron.data.config import DataConfig
from megatron.data.indexed_dataset import IndexedDataset
from megatron.data.tokenizers.build import build_tokenizer
from megatron.data.tokenizers.config import TokenizerConfig

REPO = Path(__file__).resolve().parents[2]
ARRAYS = ("tokens", "types", "labels", "padding_mask", "loss_mask")
SCALARS = ("is_random", "truncated", "dataset_id")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> dict:
    """Sentence-split KJV corpus: ``{"prefix", "tokenizer"}`` (read-only)."""
    root = tmp_path_factory.mktemp("bert_corpus")
    jsonl = write_jsonl(root / "corpus.jsonl", kjv_chapters(40))
    subprocess.run([sys.executable, str(REPO / "tools" / "train_tokenizer.py"), "--input", str(jsonl), "--type",
                    "wordpiece", "--vocab-size", "1024", "--output-dir", str(root / "tok")],
                   check=True, capture_output=True, text=True, timeout=300)
    vocab = root / "tok" / "vocab.txt"
    preprocess_data(["--input", jsonl, "--output-prefix", root / "kjv", "--split-sentences", "--workers", "1",
                     "--tokenizer-type", "BertWordPieceLowerCase", "--vocab-file", vocab])
    tokenizer = build_tokenizer(TokenizerConfig(tokenizer_type="BertWordPieceLowerCase", vocab_file=str(vocab)))
    return {"prefix": str(root / "kjv_text_sentence"), "tokenizer": tokenizer}


def build(corpus, cache, sizes, *, seq=64, seed=1234, split="8,1,1", weights=None, **bert):
    prefixes = [corpus["prefix"]] * (len(weights) if weights else 1)
    data_path = [x for w, p in zip(weights, prefixes) for x in (str(w), p)] if weights else prefixes
    data_cfg = DataConfig(data_path=data_path, split=split, seq_length=seq, data_cache_path=str(cache))
    return build_bert_datasets(data_cfg, BertDataConfig(**bert), corpus["tokenizer"], tuple(sizes), seed)


def stacked(dataset, count=None) -> dict[str, np.ndarray]:
    items = [dataset[i] for i in range(len(dataset) if count is None else count)]
    out = {k: np.stack([x[k] for x in items]) for k in ARRAYS}
    out.update({k: np.array([x[k] for x in items]) for k in SCALARS})
    return out


def framed_length(item) -> int:
    """Tokens before the padding."""
    return int(item["padding_mask"].sum())


MCORE_SCRIPT = textwrap.dedent(
    """
    import json, os, sys, warnings
    warnings.simplefilter("ignore")
    import numpy, torch
    torch.distributed.init_process_group("gloo", init_method="file://" + os.path.abspath("store"), rank=0,
                                         world_size=1)
    from megatron.core.datasets.blended_megatron_dataset_builder import BlendedMegatronDatasetBuilder
    from megatron.core.datasets.bert_dataset import BERTMaskedWordPieceDataset, BERTMaskedWordPieceDatasetConfig

    spec = json.load(open(sys.argv[1]))

    class Tokenizer:
        # What the dataset reads from a tokenizer, copied from ours (inv_vocab in our key order).
        unique_identifiers = {"class": "adapter"}
        inv_vocab = {int(i): piece for i, piece in spec["tokenizer"]["inv_vocab"]}
        cls, sep, pad, mask, eos = (spec["tokenizer"][k] for k in ("cls", "sep", "pad", "mask", "eos"))

    for k, case in enumerate(spec["cases"]):
        config = BERTMaskedWordPieceDatasetConfig(
            random_seed=case["seed"], sequence_length=case["seq"], blend=(case["prefixes"], case["weights"]),
            split=case["split"], path_to_cache=os.path.abspath(f"cache{k}"), tokenizer=Tokenizer(),
            masking_probability=case["mask_prob"], short_sequence_probability=case["short_seq_prob"],
            masking_max_ngram=3, masking_do_full_word=True, masking_do_permutation=False,
            masking_use_longer_ngrams=False, masking_use_geometric_distribution=False,
            classification_head=case["bert_binary_head"],
        )
        datasets = BlendedMegatronDatasetBuilder(BERTMaskedWordPieceDataset, case["sizes"], lambda: True,
                                                 config).build()
        for name, ds in zip(("train", "valid", "test"), datasets):
            items = [ds[i] for i in range(len(ds))]
            out = {key: numpy.stack([x[key] for x in items]) for key in ("text", "types", "labels", "padding_mask",
                                                                          "loss_mask")}
            out.update({key: numpy.array([x.get(key, 0) for x in items]) for key in ("is_random", "truncated",
                                                                                     "dataset_id")})
            numpy.savez(f"{k}-{name}.npz", **out)

    from megatron.core.datasets import helpers
    d = {name: numpy.load(f"mapping-in-{name}.npz") for name in {case[0] for case in spec["mapping_cases"]}}
    numpy.savez("mapping-out.npz", **{
        f"m{k}": helpers.build_mapping(d[name]["bounds"], d[name]["sizes"], numpy.iinfo(numpy.int32).max - 1, n,
                                       max_length, prob, seed, False, min_sentences)
        for k, (name, n, max_length, prob, seed, min_sentences) in enumerate(spec["mapping_cases"])
    })
    """
)

CASES = [
    dict(seed=1234, seq=64, split="8,1,1", sizes=[900, 60, 30], mask_prob=0.15, short_seq_prob=0.1,
         bert_binary_head=True, weights=None),
    dict(seed=7, seq=96, split="8,1,1", sizes=[200, 40, 20], mask_prob=0.15, short_seq_prob=0.1,
         bert_binary_head=False, weights=None),
    dict(seed=3, seq=128, split="6,2,2", sizes=[400, 50, 20], mask_prob=0.3, short_seq_prob=0.5,
         bert_binary_head=True, weights=None),
    dict(seed=11, seq=64, split="8,1,1", sizes=[500, 40, 20], mask_prob=0.15, short_seq_prob=0.1,
         bert_binary_head=True, weights=[0.3, 0.7]),
]


# Sample-index cases: (input, num_samples, target length, short_seq_prob, seed, minimum sentences).
MAPPING_CASES = [("mixed", 50, 125, 0.1, 1234, 2), ("mixed", 5000, 61, 0.25, 7, 1), ("mixed", 300, 509, 0.0, 3, 2),
                 ("mixed", 1000, 20, 1.0, 5, 2), ("long", 30000, 40, 0.1, 9, 2), ("long", 8000, 30, 1.0, 21, 1),
                 ("long", 4000, 509, 0.5, 13, 1)]


def mapping_input(name: str) -> tuple[np.ndarray, np.ndarray]:
    """Synthetic document bounds and sentence lengths. "mixed": empty, single-sentence and over-long-sentence
    documents of up to 29 sentences; "long": a few documents of thousands of sentences (many samples each, packed
    one by one once few documents are left) among one-to-three-sentence ones, with some empty sentences and a long
    sentence alone in a document."""
    rng = np.random.default_rng(0 if name == "mixed" else 1)
    if name == "mixed":
        counts = rng.integers(0, 30, size=400)
        sizes = rng.integers(1, 60, size=int(counts.sum())).astype(np.int32)
        sizes[5] = 600
        return np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)[50:300], sizes
    counts = rng.integers(1, 4, size=60)
    counts[rng.choice(60, size=6, replace=False)] = rng.integers(2000, 5000, size=6)
    sizes = rng.integers(0, 40, size=int(counts.sum())).astype(np.int32)
    bounds = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    alone = next(d for d in range(1, 60) if counts[d] == 1 and counts[d - 1] > 1)
    sizes[bounds[alone]] = 600  # a one-sentence document may hold a long sentence; it disqualifies no neighbour
    return bounds, sizes


@pytest.fixture(scope="module")
def mcore_outputs(corpus, tmp_path_factory) -> Path:
    """Directory of megatron-core's items for each of ``CASES`` and its build_mapping for ``MAPPING_CASES`` (one
    subprocess: importing megatron-core takes seconds)."""
    if not (MCORE / "megatron" / "core").is_dir():
        pytest.skip(f"megatron-core side install not found at {MCORE.relative_to(REPO)}")
    out = tmp_path_factory.mktemp("mcore_bert")
    tok = corpus["tokenizer"]
    spec = {
        "tokenizer": {"inv_vocab": [[i, p] for i, p in tok.inv_vocab.items()], "cls": tok.cls, "sep": tok.sep,
                      "pad": tok.pad, "mask": tok.mask, "eos": tok.eos},
        "cases": [{**c, "prefixes": [corpus["prefix"]] * len(c["weights"] or [0])} for c in CASES],
        "mapping_cases": MAPPING_CASES,
    }
    (out / "spec.json").write_text(json.dumps(spec))
    for name in {case[0] for case in MAPPING_CASES}:
        bounds, sizes = mapping_input(name)
        np.savez(out / f"mapping-in-{name}.npz", bounds=bounds, sizes=sizes)
    proc = subprocess.run([sys.executable, "-c", MCORE_SCRIPT, str(out / "spec.json")], cwd=out,
                          env={**os.environ, "PYTHONPATH": str(MCORE)}, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return out


@requires_mcore
def test_items_equal_megatron_core(corpus, mcore_outputs, tmp_path):
    """Every item of train/valid/test (tokens, types, labels, padding and loss masks, is_random, truncated, and the
    blend's dataset ids) equals megatron-core's BERTMaskedWordPieceDataset built by its
    BlendedMegatronDatasetBuilder: binary head on (several epochs), off, another mask/short-sequence probability,
    and a weighted blend (megatron-core 0.16 sizes blends as sum(ceil(N w)), ours as core_v0.8's
    sum(ceil(1.005 N w)): the common prefix is compared)."""
    compared = 0
    for k, case in enumerate(CASES):
        bert = {key: case[key] for key in ("mask_prob", "short_seq_prob", "bert_binary_head")}
        ours = build(corpus, tmp_path / f"ours{k}", case["sizes"], seq=case["seq"], seed=case["seed"],
                     split=case["split"], weights=case["weights"], **bert)
        for name, dataset in zip(("train", "valid", "test"), ours):
            theirs = dict(np.load(mcore_outputs / f"{k}-{name}.npz"))
            theirs["tokens"] = theirs.pop("text")
            n = len(theirs["tokens"])
            assert len(dataset) == n or (case["weights"] and len(dataset) >= n), (k, name, len(dataset), n)
            mine = stacked(dataset, n)
            # megatron-core marks a real position whose random replacement is the [PAD] id as padding (its bug,
            # fixed here): our mask is theirs with those positions, i.e. everything up to their last real token.
            last = np.where(theirs["padding_mask"] == 1, np.arange(theirs["padding_mask"].shape[1]), -1).max(axis=1)
            fixed = (np.arange(theirs["padding_mask"].shape[1])[None, :] <= last[:, None]).astype(np.int64)
            assert (theirs["padding_mask"] <= fixed).all()
            theirs["padding_mask"] = fixed
            for key in (*ARRAYS, *SCALARS):
                np.testing.assert_array_equal(mine[key], theirs[key], err_msg=f"case {k} {name} {key}")
            compared += n
    assert compared > 2000


def _backend(backend: str) -> str:
    """``backend``, skipping the test when it is the compiled one and numba is not installed."""
    if backend == "numba":
        pytest.importorskip("numba")
    return backend


@requires_mcore
@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_sample_index_equals_build_mapping(mcore_outputs, backend):
    """The sample index (rows, order, dtype) of each backend equals megatron-core's C++ helpers.build_mapping on
    synthetic documents with empty, single-sentence and over-long-sentence documents, and on documents of thousands
    of sentences; short-sequence probabilities 0, 0.1, 0.25, 0.5 and 1, one and two minimum sentences, many
    epochs."""
    theirs = np.load(mcore_outputs / "mapping-out.npz")
    for k, (name, n, max_length, prob, seed, min_sentences) in enumerate(MAPPING_CASES):
        ours = build_bert_sample_index(*mapping_input(name), n, max_length, prob, seed, min_sentences,
                                       backend=_backend(backend))
        assert ours.dtype == theirs[f"m{k}"].dtype
        np.testing.assert_array_equal(ours, theirs[f"m{k}"], err_msg=f"case {k}")


def sentence_loop_index(bounds, sizes, num_samples, max_length, prob, seed, min_sentences) -> np.ndarray:
    """The sample index the slow, obvious way: every sentence and every draw in turn, the shuffle's swaps replayed."""
    rng, ratio = np.random.RandomState(seed), short_sequence_ratio(prob)

    def target():
        r = int(rng.randint(0, 2**32, dtype=np.uint32)) if ratio else 1
        return 2 + r % (max_length - 1) if ratio and r % ratio == 0 else max_length

    rows = []
    while len(rows) < num_samples:
        for first, last in zip(bounds[:-1].tolist(), bounds[1:].tolist()):
            if last - first < min_sentences or (last - first > 1 and sizes[first:last].max() > 512):
                continue
            start, tokens, goal = first, 0, target()
            for s in range(first, last):
                tokens += int(sizes[s])
                if (tokens >= goal and last - s - 1 > 1 and s - start + 1 >= min_sentences) or s == last - 1:
                    rows.append((start, s + 1, goal))
                    start, tokens, goal = s + 1, 0, target()
    rows = np.array(rows, dtype=np.uint32).reshape(-1, 3)
    draws = Mt19937_64(seed + 1).draw(max(len(rows) - 1, 0)).tolist()
    for i, r in zip(range(len(rows) - 1, 0, -1), draws):
        j = r % (i + 1)
        rows[[i, j]] = rows[[j, i]]
    return rows


@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_sample_index_equals_sentence_loop(backend):
    """Without megatron-core: each backend's packing and shuffle (numpy's vectorised rounds, numba's compiled loop)
    equal a sentence-by-sentence loop with the swaps replayed, over random inputs (empty, one-sentence, long and empty-sentence documents; a long sentence alone in
    a document), short-sequence probabilities 0 to 1 (all short: every sample repacked one by one) and both
    minimum sentence counts."""
    for case in range(12):
        rng = np.random.default_rng(100 + case)
        counts = rng.integers(0, 8, size=int(rng.integers(5, 40)))
        counts[rng.integers(2, len(counts))] = rng.integers(50, 400)
        counts[:2] = 3, 1
        sizes = rng.integers(0, 30, size=int(counts.sum()) + 1).astype(np.int32)
        sizes[[3, rng.integers(0, len(sizes))]] = 513  # alone in document 1 (it qualifies, so does document 0)
        bounds = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        args = (int(rng.integers(1, 600)), int(rng.integers(2, 80)), [0.0, 0.1, 0.3, 1.0][case % 4],
                int(rng.integers(1, 1000)), 1 + case % 2)
        np.testing.assert_array_equal(build_bert_sample_index(bounds, sizes, *args, backend=_backend(backend)),
                                      sentence_loop_index(bounds, sizes, *args), err_msg=f"case {case}: {args}")


def test_shuffle_order_replays_the_swaps():
    """The vectorised Fisher-Yates order equals the swaps replayed one by one, for 1 to 30,000 rows (long chains
    of swaps through one position)."""
    for n, seed in ((1, 3), (2, 4), (3, 5), (57, 6), (30_000, 1234)):
        order = list(range(n))
        draws = Mt19937_64(seed + 1).draw(max(n - 1, 0)).tolist()
        for i, r in zip(range(n - 1, 0, -1), draws):
            j = r % (i + 1)
            order[i], order[j] = order[j], order[i]
        np.testing.assert_array_equal(_shuffle_order(n, seed), order, err_msg=f"{n} rows")


def test_mt19937_64_matches_the_standard():
    """Our std::mt19937_64 gives the C++ standard's required value: the 10000th output of a default-seeded
    (5489) engine is 9981545732273789042 ([rand.predef])."""
    assert int(Mt19937_64(5489).draw(10000)[-1]) == 9981545732273789042


def test_structure_types_and_masking_rate(corpus, tmp_path):
    """Each sample is [CLS] A [SEP] B [SEP] then padding: types 0 through the first [SEP] and 1 after it, padding
    mask 1 exactly on the framed tokens (also where a random replacement is the [PAD] id) and token 0 after them,
    labels set exactly where loss_mask is 1; about mask_prob of the real tokens are predicted, ~80% of them shown as [MASK];
    is_random is about half; the batch collates with the documented dtypes and shapes."""
    tok = corpus["tokenizer"]
    train, _, _ = build(corpus, tmp_path, (400, 10, 10), seq=128)
    items = [train[i] for i in range(len(train))]
    predicted = real = as_mask = 0
    for x in items:
        n = framed_length(x)
        tokens, types = x["tokens"], x["types"]
        assert tokens[0] == tok.cls and tokens[n - 1] == tok.sep
        assert (x["padding_mask"][:n] == 1).all() and (x["padding_mask"][n:] == 0).all() and (tokens[n:] == 0).all()
        seps = np.flatnonzero((tokens[:n] == tok.sep) & (x["labels"][:n] == -1))
        assert seps[-1] == n - 1 and 1 <= len(seps)
        first_sep = seps[0]
        assert (types[: first_sep + 1] == 0).all() and (types[first_sep + 1 : n] == 1).all()
        assert first_sep < n - 1, "binary head samples have a B segment"
        chosen = x["loss_mask"] == 1
        assert ((x["labels"] != -1) == chosen).all()
        predicted += int(chosen.sum())
        real += n
        as_mask += int((tokens[chosen] == tok.mask).sum())
    assert 0.12 < predicted / real < 0.16, predicted / real
    assert 0.75 < as_mask / predicted < 0.85
    assert 0.4 < np.mean([x["is_random"] for x in items]) < 0.6
    batch = build_bert_batch(items[:4])
    assert {k: (v.dtype, tuple(v.shape)) for k, v in batch.items()} == {
        **{k: (torch.int64, (4, 128)) for k in ("tokens", "types", "labels", "padding_mask")},
        "loss_mask": (torch.float32, (4, 128)),
        **{k: (torch.int64, (4,)) for k in ("is_random", "dataset_id", "dataset_sample_index")},
    }
    assert batch["dataset_sample_index"].tolist() == [0, 1, 2, 3]


def test_deterministic_and_cached(corpus, tmp_path):
    """Two builds with the same seed give identical items, the second loading the sample index from the cache;
    another seed gives other samples; items differ from their neighbours (per-item random state)."""
    first, _, _ = build(corpus, tmp_path, (100, 10, 10))
    assert first.built_indices
    again, _, _ = build(corpus, tmp_path, (100, 10, 10))
    assert not again.built_indices
    a, b = stacked(first), stacked(again)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
    other, _, _ = build(corpus, tmp_path, (100, 10, 10), seed=99)
    assert other.built_indices
    assert not np.array_equal(stacked(other, 20)["tokens"], a["tokens"][:20])
    assert not np.array_equal(a["tokens"][0], a["tokens"][1])


def test_pickles_as_file_references(corpus, tmp_path):
    """A cached BERT dataset pickles (for spawned loader workers) as its cache entry's file names, not a copy of
    the memory-mapped sample index, and serves identical items after unpickling (the shared cached-index base)."""
    import pickle

    ds, _, _ = build(corpus, tmp_path, (2000, 10, 10))
    blob = pickle.dumps(ds)
    assert isinstance(ds.sample_index, np.memmap) and len(blob) < ds.sample_index.nbytes
    clone = pickle.loads(blob)
    assert isinstance(clone.sample_index, np.memmap)
    for k in (0, 7, len(ds) - 1):
        for key, value in ds[k].items():
            np.testing.assert_array_equal(clone[k][key], value)


def test_without_binary_head(corpus, tmp_path):
    """Without the binary head there is no B segment: one [SEP] at the end, all types 0, is_random 0; samples also
    come from single-sentence packings, so there are more samples per epoch than with it."""
    tok = corpus["tokenizer"]
    train, _, _ = build(corpus, tmp_path, (1, 1, 1), bert_binary_head=False)
    with_head, _, _ = build(corpus, tmp_path, (1, 1, 1))
    assert len(train) >= len(with_head)
    for i in range(len(train)):
        x = train[i]
        n = framed_length(x)
        assert x["is_random"] == 0 and (x["types"] == 0).all()
        assert np.flatnonzero((x["tokens"][:n] == tok.sep) & (x["labels"][:n] == -1)).tolist() == [n - 1]


def test_exact_epochs_and_bad_values(corpus, tmp_path):
    """train_data_exact_num_epochs packs exactly that many epochs whatever the request: every sentence it uses is
    in exactly 2 samples for 2 epochs (and with fixed targets there are twice one epoch's samples); bad values are
    ValueErrors naming the field: mask_prob and short_seq_prob outside [0, 1], seq_length below 5; mock data is
    refused."""
    data = IndexedDataset(corpus["prefix"])
    for short_seq_prob in (0.0, 0.1):
        cfg = DataConfig(data_path=[corpus["prefix"]], split="8,1,1", seq_length=64, data_cache_path=str(tmp_path),
                         train_data_exact_num_epochs=2)
        two, valid, _ = build_bert_datasets(cfg, BertDataConfig(short_seq_prob=short_seq_prob), corpus["tokenizer"],
                                            (5, 0, 0), 1234)
        assert valid is None and isinstance(two, BertDataset)
        uses = np.zeros(len(data), dtype=np.int64)
        for first, end, _ in two.sample_index.tolist():
            uses[first:end] += 1
        assert set(np.unique(uses[uses > 0]).tolist()) == {2} and uses[data.document_indices[32] :].sum() == 0
    one, _, _ = build(corpus, tmp_path, (1, 0, 0), short_seq_prob=0.0)
    assert len(two) > len(one) and len(build_bert_datasets(cfg, BertDataConfig(short_seq_prob=0.0),
                                                           corpus["tokenizer"], (5, 0, 0), 1234)[0]) == 2 * len(one)
    for bad in (dict(mask_prob=-0.1), dict(mask_prob=1.5), dict(short_seq_prob=2.0)):
        with pytest.raises(ValueError, match=next(iter(bad))):
            BertDataConfig(**bad)
    with pytest.raises(ValueError, match="seq_length"):
        build(corpus, tmp_path, (10, 1, 1), seq=4)
    with pytest.raises(NotImplementedError, match="mock_data"):
        build_bert_datasets(DataConfig(mock_data=True, seq_length=64), BertDataConfig(), corpus["tokenizer"],
                            (10, 1, 1), 1)


def test_bert_no_binary_head_flag():
    """Megatron's --bert-no-binary-head (a negative_aliases spelling) and the generated --no-bert-binary-head both
    set bert_binary_head False; --mask-prob/--short-seq-prob parse as floats; the default keeps the head."""
    parser = argparse.ArgumentParser()
    add_dataclass_arguments(parser, BertDataConfig)

    def parse(*argv):
        return dataclass_from_namespace(BertDataConfig, parser.parse_args(list(argv)))

    assert parse().bert_binary_head is True
    assert parse("--bert-no-binary-head").bert_binary_head is False
    assert parse("--no-bert-binary-head").bert_binary_head is False
    cfg = parse("--mask-prob", "0.2", "--short-seq-prob", "0")
    assert (cfg.mask_prob, cfg.short_seq_prob) == (0.2, 0.0)

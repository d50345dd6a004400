"""GPT dataset: indices equal to megatron-core's, split boundaries, token coverage, exact epochs, index cache."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from megatron.data.config import DataConfig, Split, split_document_ranges
from megatron.data.gpt_dataset import GPTDataset, GPTIndexParams, MockIndexedDataset, build_gpt_datasets
from megatron.data.gpt_indices import build_gpt_indices
from megatron.data.indexed_dataset import IndexedDataset, write_dataset

REPO = Path(__file__).resolve().parents[2]
MCORE = REPO / ".venv" / "mcore"


class StubTokenizer:
    """Just what the dataset builder reads from a tokenizer."""

    eod = 0
    vocab_size = 1000

    def __init__(self, name: str = "stub") -> None:
        self.unique_identifiers = {"class": name}


def make_dataset(prefix: Path, lengths, seed: int = 0) -> np.ndarray:
    """Write a document-level uint16 dataset with the given document lengths; returns the lengths (int32)."""
    rng = np.random.default_rng(seed)
    write_dataset(str(prefix), [rng.integers(1, 1000, size=int(n)) for n in lengths], np.uint16)
    return np.asarray(lengths, dtype=np.int32)


def gpt(prefix, split=Split.train, doc_range=None, num_samples=10, seq=16, seed=1, exact=None, cache=None):
    data = IndexedDataset(str(prefix))
    doc_range = doc_range or (0, len(data))
    params = GPTIndexParams(str(prefix), split, doc_range, num_samples, seq, seed, exact)
    return GPTDataset(data, params, cache_dir=None if cache is None else str(cache), tokenizer_id={"t": 1})


MCORE_SCRIPT = textwrap.dedent(
    """
    import json, os, sys, warnings
    warnings.simplefilter("ignore")
    import numpy
    from megatron.core.datasets.blended_megatron_dataset_builder import BlendedMegatronDatasetBuilder
    from megatron.core.datasets.gpt_dataset import GPTDataset, GPTDatasetConfig

    class Tokenizer:
        eod = 0
        vocab_size = 1000
        unique_identifiers = {"class": "stub"}

    for k, case in enumerate(json.loads(sys.argv[1])):
        config = GPTDatasetConfig(
            random_seed=case["seed"], sequence_length=case["seq"], blend=([case["prefix"]], None),
            split=case["split"], path_to_cache=os.path.join(case["out"], f"cache{k}"), reset_position_ids=False,
            reset_attention_mask=False, eod_mask_loss=False, tokenizer=Tokenizer(),
        )
        datasets = BlendedMegatronDatasetBuilder(GPTDataset, case["sizes"], lambda: True, config).build()
        for name, dataset in zip(("train", "valid", "test"), datasets):
            for array in ("document_index", "sample_index", "shuffle_index"):
                numpy.save(os.path.join(case["out"], f"{k}-{name}-{array}.npy"), getattr(dataset, array))
    """
)


@pytest.mark.skipif(not (MCORE / "megatron" / "core").is_dir(), reason="megatron-core side install .venv/mcore absent")
def test_indices_bit_equal_to_megatron_core(tmp_path):
    """Document, sample and shuffle indices (values and dtypes) of all three splits equal megatron-core 0.16's
    GPTDataset for the same file, split string, seed, sequence length and sample counts: one epoch, several
    epochs with and without the separately shuffled last epoch, zero-length documents at the start."""
    rng = np.random.default_rng(0)
    lengths = rng.integers(1, 300, size=1000)
    lengths[:3] = [0, 5, 0]
    sizes = make_dataset(tmp_path / "d", lengths)
    cases = [
        dict(seed=1234, seq=64, split="969, 30, 1", sizes=[100, 10, 3]),
        dict(seed=7, seq=33, split="80,10,10", sizes=[9000, 900, 10]),  # 2 epochs, the last one nearly full
        dict(seed=3, seq=128, split="1,1,1", sizes=[700, 120, 1]),  # 2 epochs, separate last epoch
        dict(seed=5, seq=17, split="10,1,1", sizes=[45000, 200, 3]),
    ]
    for case in cases:
        case.update(prefix=str(tmp_path / "d"), out=str(tmp_path))
    env = {**os.environ, "PYTHONPATH": str(MCORE)}
    proc = subprocess.run([sys.executable, "-c", MCORE_SCRIPT, json.dumps(cases)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    branches = set()
    for k, case in enumerate(cases):
        fractions = [float(x) for x in case["split"].split(",")]
        ranges = split_document_ranges(len(sizes), [f / sum(fractions) for f in fractions])
        for split in Split:
            ours = build_gpt_indices(sizes, np.arange(*ranges[split], dtype=np.int32), case["seq"],
                                     case["sizes"][split], case["seed"])
            for name, theirs in (("doc_index", "document_index"), ("sample_index", "sample_index"),
                                 ("shuffle_index", "shuffle_index")):
                expected = np.load(tmp_path / f"{k}-{split.name}-{theirs}.npy")
                assert ours[name].dtype == expected.dtype, (k, split.name, name)
                np.testing.assert_array_equal(ours[name], expected, err_msg=f"case {k} {split.name} {name}")
            tokens = int(sizes[ranges[split][0] : ranges[split][1]].sum())
            epochs = len(ours["doc_index"]) // (ranges[split][1] - ranges[split][0])
            if epochs > 1:  # which side of Megatron's 80% rule this case exercised
                per_epoch = (tokens - 1) // case["seq"]
                last = case["sizes"][split] - ((epochs - 1) * tokens - 1) // case["seq"]
                branches.add(last < int(0.8 * per_epoch))
    assert branches == {True, False}, "cases must cover a separate and a shared last epoch"


def test_split_boundaries():
    """Splits are Megatron core's cumulative bookends rounded over the documents; an empty share gives None."""
    assert split_document_ranges(1000, (0.969, 0.030, 0.001)) == [(0, 969), (969, 999), (999, 1000)]
    assert split_document_ranges(10, (0.5, 0.0, 0.5)) == [(0, 5), None, (5, 10)]
    assert split_document_ranges(7, (1 / 3, 1 / 3, 1 / 3)) == [(0, 2), (2, 5), (5, 7)]
    cfg = DataConfig(data_path=["x"], split="8,1,1")
    assert split_document_ranges(100, cfg.split_fractions) == [(0, 80), (80, 90), (90, 100)]


def _stream(data: IndexedDataset, doc_index) -> np.ndarray:
    return np.concatenate([data[int(d)] for d in doc_index]).astype(np.int64)


@pytest.mark.parametrize("num_samples", [20, 300])
def test_samples_read_the_shuffled_document_stream(tmp_path, num_samples):
    """Sample j is tokens [j*S, j*S + S] of the concatenation of the documents in doc_index order (one epoch,
    and several epochs), every split document appears once per epoch and only split documents appear."""
    make_dataset(tmp_path / "d", np.random.default_rng(1).integers(0, 60, size=50))
    ds = gpt(tmp_path / "d", split=Split.valid, doc_range=(10, 40), num_samples=num_samples, seq=16)
    data = ds.indexed_dataset
    epochs = len(ds.doc_index) // 30
    assert sorted(ds.doc_index.tolist()) == sorted(list(range(10, 40)) * epochs)
    stream = _stream(data, ds.doc_index)
    assert len(ds) >= num_samples and len(ds) == (len(stream) - 1) // 16
    for j in range(len(ds)):
        np.testing.assert_array_equal(ds.sample_tokens(j), stream[j * 16 : j * 16 + 17])
    item = ds[3]
    np.testing.assert_array_equal(item["tokens"], ds.sample_tokens(int(ds.shuffle_index[3])))
    assert (item["dataset_id"], item["dataset_sample_index"]) == (0, 3)


def test_one_epoch_uses_every_token_once(tmp_path):
    """Within one epoch the samples, joined with their one-token overlap removed, are the split's tokens in
    doc_index order, each used exactly once, with fewer than S tokens left over at the end."""
    make_dataset(tmp_path / "d", np.random.default_rng(2).integers(1, 90, size=80))
    ds = gpt(tmp_path / "d", doc_range=(0, 80), num_samples=5, seq=32)
    assert len(ds.doc_index) == 80 and sorted(ds.doc_index.tolist()) == list(range(80))
    order = np.sort(np.asarray(ds.shuffle_index))
    np.testing.assert_array_equal(order, np.arange(len(ds)))
    samples = [ds.sample_tokens(j) for j in range(len(ds))]
    for a, b in zip(samples, samples[1:]):
        assert a[-1] == b[0]
    joined = np.concatenate([samples[0]] + [s[1:] for s in samples[1:]])
    stream = _stream(ds.indexed_dataset, ds.doc_index)
    np.testing.assert_array_equal(joined, stream[: len(joined)])
    assert 0 <= len(stream) - len(joined) < 32


def test_exact_epochs_mode(tmp_path):
    """train_data_exact_num_epochs builds exactly N epochs whatever is requested: (N*T-1)//S samples, each
    document N times, all samples shuffled together, and item k reports dataset_sample_index k."""
    lengths = make_dataset(tmp_path / "d", np.random.default_rng(3).integers(1, 50, size=100))
    cfg = DataConfig(data_path=[str(tmp_path / "d")], split="90,10,0", seq_length=8, train_data_exact_num_epochs=2,
                     data_cache_path=str(tmp_path / "cache"))
    train, valid, test = build_gpt_datasets(cfg, StubTokenizer(), (5, 4, 0), seed=9)
    tokens = int(lengths[:90].sum())
    assert len(train) == (2 * tokens - 1) // 8 and test is None and len(valid) >= 4
    assert np.all(np.bincount(train.doc_index, minlength=90) == 2)
    np.testing.assert_array_equal(np.sort(np.asarray(train.shuffle_index)), np.arange(len(train)))
    assert [train[k]["dataset_sample_index"] for k in (0, 7, len(train) - 1)] == [0, 7, len(train) - 1]
    again, _, _ = build_gpt_datasets(cfg, StubTokenizer(), (10**6, 4, 0), seed=9)
    assert not again.built_indices and len(again) == len(train)


def _mtimes(directory: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in sorted(directory.iterdir())}


def test_cache_reused_and_rebuilt_on_any_change(tmp_path):
    """The second build loads the cached files untouched; changing the seed, sequence length, sample count,
    tokenizer or the data's document lengths gives a new cache entry."""
    make_dataset(tmp_path / "d", np.random.default_rng(4).integers(1, 40, size=60))
    cache = tmp_path / "cache"
    first = gpt(tmp_path / "d", cache=cache)
    files = _mtimes(cache)
    assert first.built_indices and len(files) == 4 and all("-GPTDataset-train-" in f for f in files)
    second = gpt(tmp_path / "d", cache=cache)
    assert not second.built_indices and _mtimes(cache) == files
    np.testing.assert_array_equal(second.shuffle_index, first.shuffle_index)
    for kwargs in (dict(seed=2), dict(seq=15), dict(num_samples=200), dict(split=Split.test)):
        assert gpt(tmp_path / "d", cache=cache, **kwargs).built_indices, kwargs
    data = IndexedDataset(str(tmp_path / "d"))
    params = first.params
    assert GPTDataset(data, params, cache_dir=str(cache), tokenizer_id={"t": 2}).built_indices
    make_dataset(tmp_path / "d", np.random.default_rng(5).integers(1, 40, size=60))  # same prefix, new lengths
    assert gpt(tmp_path / "d", cache=cache).built_indices
    assert len(list(cache.glob("*-description.json"))) == 7


@pytest.mark.parametrize("damage", ["truncate", "flip", "description"])
def test_corrupt_cache_is_rebuilt(tmp_path, damage):
    """A truncated or bit-flipped index file, or a broken description, is detected and rebuilt to the same
    indices instead of being trusted."""
    make_dataset(tmp_path / "d", np.random.default_rng(6).integers(1, 40, size=60))
    cache = tmp_path / "cache"
    good = gpt(tmp_path / "d", cache=cache)
    expected = np.array(good.sample_index)
    del good
    target = next(cache.glob("*-sample_index.npy" if damage != "description" else "*-description.json"))
    raw = bytearray(target.read_bytes())
    if damage == "truncate":
        raw = raw[:-5]
    elif damage == "flip":
        raw[-3] ^= 0xFF
    else:
        raw = raw[: len(raw) // 2]
    target.write_bytes(bytes(raw))
    rebuilt = gpt(tmp_path / "d", cache=cache)
    assert rebuilt.built_indices
    np.testing.assert_array_equal(rebuilt.sample_index, expected)
    assert not gpt(tmp_path / "d", cache=cache).built_indices


def test_build_gpt_datasets_on_real_text(toy_gpt2_dataset, tmp_path):
    """On the GPT-2-tokenized KJV corpus with the real tokenizer: three splits of the requested sizes with
    seq_length+1 token samples from the vocabulary, documents ending in EOD, cache written to data_cache_path."""
    from megatron.data.tokenizers.build import build_tokenizer
    from megatron.data.tokenizers.config import TokenizerConfig

    tokenizer = build_tokenizer(TokenizerConfig())
    cfg = DataConfig(data_path=[toy_gpt2_dataset], split="90,5,5", seq_length=64, data_cache_path=str(tmp_path))
    train, valid, test = build_gpt_datasets(cfg, tokenizer, (50, 8, 8), seed=1234)
    assert len(train) >= 50 and len(valid) >= 8 and len(test) >= 8
    batch = np.stack([train[i]["tokens"] for i in range(8)])
    assert batch.shape == (8, 65) and batch.min() >= 0 and batch.max() < tokenizer.vocab_size
    every = np.concatenate([train.sample_tokens(j)[1:] for j in range(len(train))])
    assert (every == tokenizer.eod).sum() >= len(train.doc_index) - 2  # one EOD per document passed through
    data = IndexedDataset(toy_gpt2_dataset)
    assert all(data[i][-1] == tokenizer.eod for i in range(len(data)))
    assert len(list(tmp_path.glob("*-GPTDataset-*-description.json"))) == 3


def test_mock_data():
    """mock_data yields deterministic in-vocabulary samples (EOD only at document ends) without any file."""
    cfg = DataConfig(mock_data=True, seq_length=32)
    train, valid, test = build_gpt_datasets(cfg, StubTokenizer(), (4, 2, 0), seed=3)
    assert test is None and len(train) >= 4 and len(valid) >= 2
    again, _, _ = build_gpt_datasets(cfg, StubTokenizer(), (4, 2, 0), seed=3)
    np.testing.assert_array_equal(train[1]["tokens"], again[1]["tokens"])
    mock = MockIndexedDataset(vocab_size=1000, eod=0)
    doc = mock.get(5)
    assert len(doc) == mock.sequence_lengths[5] and doc[-1] == 0 and (doc[:-1] != 0).all() and doc.max() < 1000
    np.testing.assert_array_equal(mock.get(5, 1, 2), doc[1:3])


@pytest.mark.parametrize(
    "kwargs, field",
    [
        (dict(split="1,x,2"), "split"),
        (dict(split="1,1,1,1"), "split"),
        (dict(split="0,0"), "split"),
        (dict(data_path=["1", "a", "2"]), "data_path"),
        (dict(data_path=["0", "a", "2", "b"]), "data_path"),
        (dict(train_data_path=["-1", "a", "2", "b"]), "train_data_path"),
        (dict(data_path=["a", "b"]), "data_path"),
        (dict(seq_length=0), "seq_length"),
        (dict(train_data_exact_num_epochs=0), "train_data_exact_num_epochs"),
        (dict(data_path=["a"], valid_data_path=["b"]), "data_path"),
    ],
)
def test_config_errors_name_the_field(kwargs, field):
    """Bad split strings, odd or non-numeric weight/prefix lists, non-positive weights and conflicting paths
    raise ValueError naming the offending field."""
    with pytest.raises(ValueError, match=field):
        DataConfig(**kwargs)


def test_split_without_documents_is_a_clear_error(tmp_path):
    """A split whose share rounds to no document but is asked for samples fails with a ValueError that names
    the split instead of hanging (megatron-core loops forever there)."""
    make_dataset(tmp_path / "d", [5] * 10)
    cfg = DataConfig(data_path=[str(tmp_path / "d")], split="99,1,0", data_cache_path=str(tmp_path / "c"))
    with pytest.raises(ValueError, match="valid split"):
        build_gpt_datasets(cfg, StubTokenizer(), (10, 1, 0), seed=1)


def _distributed_build(rank, world_size, prefix, cache):
    data = IndexedDataset(prefix)
    ds = GPTDataset(data, GPTIndexParams(prefix, Split.train, (0, len(data)), 40, 8, 5), cache_dir=cache)
    return ds.built_indices, np.asarray(ds.shuffle_index).tolist(), isinstance(ds.shuffle_index, np.memmap)


@pytest.mark.distributed
def test_rank0_builds_others_load(tmp_path):
    """With torch.distributed initialized, global rank 0 builds and saves the indices and the other rank
    memory-maps the same files after the barrier."""
    from dist_utils import run_distributed

    make_dataset(tmp_path / "d", np.random.default_rng(7).integers(1, 40, size=50))
    results = run_distributed(_distributed_build, 2, str(tmp_path / "d"), str(tmp_path / "cache"))
    assert [r[0] for r in results] == [True, False]
    assert results[0][1] == results[1][1] and all(r[2] for r in results)


def test_pickles_as_file_references(tmp_path):
    """A cached dataset pickles (for spawned loader workers) without copying its memory-mapped indices and
    serves identical items after unpickling."""
    import pickle

    make_dataset(tmp_path / "d", np.random.default_rng(8).integers(1, 40, size=60))
    ds = gpt(tmp_path / "d", cache=tmp_path / "cache", num_samples=3000)
    blob = pickle.dumps(ds)
    assert len(blob) < 4000 < ds.sample_index.nbytes
    clone = pickle.loads(blob)
    assert isinstance(clone.shuffle_index, np.memmap)
    for k in (0, 5, len(ds) - 1):
        np.testing.assert_array_equal(clone[k]["tokens"], ds[k]["tokens"])

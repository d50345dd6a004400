"""The dataset builder's up-front checks: token ids inside the vocabulary (with the cached id range of large
files) and splits that get no documents (an error when used, skipped when not)."""

from __future__ import annotations

import os

import numpy as np
import pytest

from megatron.data import builder
from megatron.data.builder import EmptySplitError
from megatron.data.config import DataConfig, Split
from megatron.data.gpt_dataset import build_gpt_datasets
from megatron.data.indexed_dataset import IndexedDataset, write_dataset


class Tokenizer:
    eod, unique_identifiers = 0, {"class": "stub"}

    def __init__(self, vocab_size: int) -> None:
        self.vocab_size = vocab_size


def _write(prefix, high: int, num_docs: int = 40) -> None:
    """``num_docs`` documents of ids in [1, high], the last one holding ``high`` itself."""
    rng = np.random.default_rng(num_docs)
    docs = [rng.integers(1, high, size=20) for _ in range(num_docs - 1)] + [np.array([5, high])]
    write_dataset(str(prefix), docs, np.uint16)


def test_token_ids_outside_the_vocabulary_are_refused(tmp_path):
    """Ids up to vocab_size - 1 are accepted; one id beyond is a ValueError naming the file, the id and the size."""
    _write(tmp_path / "d", 999)
    cfg = DataConfig(data_path=[str(tmp_path / "d")], split="90,10,0", seq_length=8,
                     data_cache_path=str(tmp_path / "cache"))
    assert build_gpt_datasets(cfg, Tokenizer(1000), (4, 0, 0), seed=1)[0] is not None
    with pytest.raises(ValueError, match=r"d\.bin holds token id 999 \(ids \d+\.\.999\), but the tokenizer has 999 "
                                         r"ids \(0\.\.998\)"):
        build_gpt_datasets(cfg, Tokenizer(999), (4, 0, 0), seed=1)


def test_large_files_cache_their_id_range(tmp_path, monkeypatch):
    """Above the size threshold the id range is kept in the index cache: a second build does not scan the .bin,
    and rewriting the file (new size and time) scans it again."""
    monkeypatch.setattr(builder, "_CACHE_TOKEN_RANGE_FROM", 0)
    prefix, cache = tmp_path / "d", tmp_path / "cache"
    _write(prefix, 999)
    cfg = DataConfig(data_path=[str(prefix)], split="90,10,0", seq_length=8, data_cache_path=str(cache))
    scans = []
    original = IndexedDataset.token_range

    def counting(self):
        scans.append(self.path_prefix)
        return original(self)

    monkeypatch.setattr(IndexedDataset, "token_range", counting)
    build_gpt_datasets(cfg, Tokenizer(1000), (4, 0, 0), seed=1)
    build_gpt_datasets(cfg, Tokenizer(1000), (4, 0, 0), seed=1)
    assert len(scans) == 1 and len(list(cache.glob("*-TokenRange-all-description.json"))) == 1
    for suffix in (".bin", ".idx"):
        os.remove(f"{prefix}{suffix}")
    _write(prefix, 1500, num_docs=41)
    with pytest.raises(ValueError, match="holds token id 1500"):
        build_gpt_datasets(cfg, Tokenizer(1000), (4, 0, 0), seed=1)
    assert len(scans) == 2


def test_empty_split_is_an_error_only_when_used(tmp_path):
    """A split whose non-zero share rounds to no documents raises EmptySplitError (naming split, file and counts)
    when samples are requested from it and is None when none are; a share of 0 is None even when requested."""
    _write(tmp_path / "d", 999)
    cfg = DataConfig(data_path=[str(tmp_path / "d")], split="969,30,1", seq_length=8,
                     data_cache_path=str(tmp_path / "cache"))
    with pytest.raises(EmptySplitError, match=r"split '969,30,1' gives the test split none of the 40 documents, "
                                              r"but it is used \(8 test samples requested\)") as info:
        build_gpt_datasets(cfg, Tokenizer(1000), (4, 4, 8), seed=1)
    assert (info.value.split, info.value.num_documents, info.value.num_samples) == (Split.test, 40, 8)
    train, valid, test = build_gpt_datasets(cfg, Tokenizer(1000), (4, 4, 0), seed=1)
    assert train is not None and valid is not None and test is None
    zero = DataConfig(data_path=[str(tmp_path / "d")], split="98,2,0", seq_length=8,
                      data_cache_path=str(tmp_path / "cache"))
    assert build_gpt_datasets(zero, Tokenizer(1000), (4, 4, 8), seed=1)[2] is None
    with pytest.raises(EmptySplitError, match="train split none"):
        build_gpt_datasets(DataConfig(data_path=[str(tmp_path / "d")], split="0,50,50", seq_length=8),
                           Tokenizer(1000), (4, 4, 4), seed=1)

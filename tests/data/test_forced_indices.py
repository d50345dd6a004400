"""Training-split index files under Megatron-DeepSpeed's names (``data.forced_indices``, ``--train-*-idx-path``).

Pins: files written under Megatron-DeepSpeed's names load back into exactly the dataset that was built (GPT and
BERT), in its dtypes too (int64 sample index, uint32 shuffle index); files of another sequence length, corpus or
epoch count are refused naming the flag and what does not fit; the flags go together and refuse a blend; the epoch
count comes from the ``_exact{N}ep_`` name.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from training.conftest import tiny_bert_corpus, tiny_corpus  # noqa: F401 - fixtures
from megatron.data.bert_dataset import BertDataConfig, build_bert_datasets
from megatron.data.config import DataConfig
from megatron.data.forced_indices import (
    forced_index_epochs,
    mds_bert_index_path,
    mds_gpt_index_paths,
    write_mds_bert_index,
    write_mds_gpt_indices,
)
from megatron.data.gpt_dataset import build_gpt_datasets
from megatron.data.tokenizers.build import build_tokenizer
from megatron.data.tokenizers.config import TokenizerConfig


def _gpt(corpus, tmp_path: Path, seq: int = 32, **data):
    data = {"train_data_exact_num_epochs": 1, **data}
    cfg = DataConfig(data_path=[corpus["data_path"]], split="90,8,2", seq_length=seq,
                     data_cache_path=str(tmp_path / "cache"), **data)
    tok = build_tokenizer(TokenizerConfig(vocab_file=corpus["vocab_file"], merge_file=corpus["merge_file"]))
    return build_gpt_datasets(cfg, tok, (0, 0, 0), 1234)[0]


def _forced(paths: dict[str, str]) -> dict[str, str]:
    return {"train_doc_idx_path": paths["doc_index"], "train_sample_idx_path": paths["sample_index"],
            "train_shuffle_idx_path": paths["shuffle_index"]}


def _write_gpt(ds, tmp_path: Path, seq: int = 32) -> dict[str, str]:
    prefix = str(tmp_path / Path(ds.params.path_prefix).name)
    arrays = {"doc_index": ds.doc_index, "sample_index": ds.sample_index, "shuffle_index": ds.shuffle_index}
    return write_mds_gpt_indices(prefix, arrays, seq, 1234, 1)


def test_gpt_files_round_trip_into_the_same_dataset(tiny_corpus, tmp_path):
    """Written under Megatron-DeepSpeed's names (sample index as its int64), the files load into a training split
    whose every sample equals the built one's."""
    built = _gpt(tiny_corpus, tmp_path)
    paths = _write_gpt(built, tmp_path)
    stem = str(tmp_path / "kjv_text_document") + "_train_indexmap_exact1ep_32sl_1234s"
    assert paths == mds_gpt_index_paths(str(tmp_path / "kjv_text_document"), 32, 1234, 1)
    assert paths["doc_index"] == f"{stem}_doc_idx.npy" and np.load(paths["sample_index"]).dtype == np.int64
    loaded = _gpt(tiny_corpus, tmp_path / "other", **_forced(paths))
    assert loaded.cache is None and len(loaded) == len(built)
    for k in (0, 1, len(built) // 2, len(built) - 1):
        assert np.array_equal(loaded[k]["tokens"], built[k]["tokens"])


def test_gpt_files_of_another_split_are_refused(tiny_corpus, tmp_path):
    """Files built for --seq-length 16, or with an extra epoch, or missing, do not fit the data: ValueError naming
    the flag and the mismatch."""
    short = _write_gpt(_gpt(tiny_corpus, tmp_path / "s16", seq=16), tmp_path / "s16", seq=16)
    with pytest.raises(ValueError, match=r"--train-sample-idx-path .* does not fit this data: .* samples, but 1 "
                                         r"epoch\(s\) of these documents hold .* samples of --seq-length 32"):
        _gpt(tiny_corpus, tmp_path / "x", **_forced(short))
    paths = _write_gpt(_gpt(tiny_corpus, tmp_path / "ok"), tmp_path / "ok")
    doc = np.load(paths["doc_index"])
    np.save(paths["doc_index"], np.concatenate([doc, doc[:3]]))
    with pytest.raises(ValueError, match=r"--train-doc-idx-path .* documents appear between 1 and 2 times"):
        _gpt(tiny_corpus, tmp_path / "y", **_forced(paths))
    with pytest.raises(ValueError, match=r"holds 1 epoch\(s\) of its documents but --train-data-exact-num-epochs is 2"):
        _gpt(tiny_corpus, tmp_path / "e", **{**_forced(_write_gpt(_gpt(tiny_corpus, tmp_path / "e1"), tmp_path / "e1")),
                                             "train_data_exact_num_epochs": 2})
    with pytest.raises(ValueError, match=r"--train-doc-idx-path .*nope.npy: file not found"):
        _gpt(tiny_corpus, tmp_path / "z", **{**_forced(paths), "train_doc_idx_path": str(tmp_path / "nope.npy")})


def test_flags_go_together_and_refuse_blends(tiny_corpus):
    """One of the three GPT flags alone is an error naming the missing ones; forced files with a blend are refused."""
    with pytest.raises(ValueError, match=r"also pass --train-sample-idx-path, --train-shuffle-idx-path"):
        DataConfig(data_path=["p"], train_doc_idx_path="d.npy")
    with pytest.raises(NotImplementedError, match=r"the training data is a blend"):
        DataConfig(data_path=["1", "a", "1", "b"], train_idx_path="m.npy")


def test_epoch_count_comes_from_the_file_name():
    """``_exact{N}ep_`` in a forced file's name gives the epochs; our own names without it give None."""
    assert forced_index_epochs(DataConfig(train_idx_path=mds_bert_index_path("/d/p", 512, 0.1, 1234, 5))) == 5
    paths = mds_gpt_index_paths("/d/p", 2048, 1234, 1)
    assert forced_index_epochs(DataConfig(data_path=["/d/p"], **_forced(paths))) == 1
    assert mds_bert_index_path("/d/p", 512, 0.1, 1234, 5) == "/d/p_train_indexmap_exact5ep_509msl_0.10ssp_1234s.npy"
    assert forced_index_epochs(DataConfig(data_path=["/d/p"], train_idx_path="/x/mapping.npy")) is None


def test_bert_mapping_round_trips_and_is_checked(tiny_bert_corpus, tmp_path):
    """A BERT samples mapping written under Megatron-DeepSpeed's name loads into the same training split; one for a
    longer sequence is refused."""
    tok = build_tokenizer(TokenizerConfig(tokenizer_type="BertWordPieceLowerCase",
                                          vocab_file=tiny_bert_corpus["vocab_file"]))
    cfg = DataConfig(data_path=[tiny_bert_corpus["data_path"]], split="90,8,2", seq_length=64,
                     train_data_exact_num_epochs=2, data_cache_path=str(tmp_path / "cache"))
    bert = BertDataConfig()
    built = build_bert_datasets(cfg, bert, tok, (0, 0, 0), 1234)[0]
    path = write_mds_bert_index(str(tmp_path / "kjv"), built.sample_index, 64, 0.1, 1234, 2)
    loaded = build_bert_datasets(dataclasses.replace(cfg, train_idx_path=path), bert, tok, (0, 0, 0), 1234)[0]
    assert len(loaded) == len(built) and all(np.array_equal(loaded[k]["tokens"], built[k]["tokens"]) for k in (0, 7))
    with pytest.raises(ValueError, match=r"--train-idx-path .* target lengths span .* beyond --seq-length 32"):
        build_bert_datasets(dataclasses.replace(cfg, seq_length=32, train_idx_path=path), bert, tok, (0, 0, 0), 1234)

"""tools/analyze_data.py run with Megatron-DeepSpeed's analyzer command line (``--analyzing-*``, ``--save``, ...).

Pins: separate map and reduce invocations write DeepSpeed's files, and vocab_rarity equals Megatron-DeepSpeed's
formula (``bincount(minlength=padded_vocab + 1)``, zero counts set to 1, ``int(sum(-ln p))`` over all seq+1
tokens); ``--analyzing-specific-threads`` reruns only the named threads and the reduce then matches a full run;
the model/training flags of those scripts are accepted and named once, an unknown flag is still an error.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np
import pytest

from training.conftest import load_entry_script, megatron_logs, tiny_corpus  # noqa: F401 - fixtures
from megatron.data.config import DataConfig
from megatron.data.gpt_dataset import build_gpt_datasets
from megatron.data.tokenizers.build import build_tokenizer
from megatron.data.tokenizers.config import TokenizerConfig, padded_vocab_size
from megatron.data_efficiency.curriculum.index_files import output_prefix, read_flat

SEQ = 32


@pytest.fixture
def data(tiny_corpus, tmp_path) -> str:
    """A private copy of the corpus' .bin/.idx (the analysis writes index files beside it)."""
    for suffix in (".bin", ".idx"):
        shutil.copy(tiny_corpus["data_path"] + suffix, tmp_path / f"kjv_text_document{suffix}")
    return str(tmp_path / "kjv_text_document")


def _run(corpus, data: str, save: Path, task: str, metric: str, *extra: str) -> None:
    argv = ["--analyzing-task", task, "--analyzing-data-type", "GPT", "--analyzing-metric", metric,
            "--analyzing-num-workers", "1", "--analyzing-num-threads", "3", "--vocab-file", corpus["vocab_file"],
            "--merge-file", corpus["merge_file"], "--data-path", data, "--data-impl", "mmap",
            "--tokenizer-type", "GPT2BPETokenizer", "--micro-batch-size", "64", "--global-batch-size", "64",
            "--seq-length", str(SEQ), "--max-position-embeddings", str(SEQ), "--num-layers", "1", "--hidden-size", "1",
            "--num-attention-heads", "1", "--split", "90,8,2", "--distributed-backend", "gloo",
            "--train-data-exact-num-epochs", "1", "--return-data-index", "--save-interval", "1", "--save", str(save),
            *extra]
    if task == "map":
        argv += ["--analyzing-worker-id", "0"]
    else:
        argv += ["--analyzing-num-threads-reduce", "3"]
    load_entry_script("tools/analyze_data.py").main(argv)


def _values(save: Path, metric: str, suffix: str) -> np.ndarray:
    return np.asarray(read_flat(output_prefix(str(save), metric, suffix))[0], dtype=np.int64)


def test_map_reduce_match_megatron_deepspeeds_vocab_rarity(tiny_corpus, data, tmp_path, megatron_logs):
    """Four invocations as in ds_analyze_gpt_data_{map,reduce}.sh; the outputs equal Megatron-DeepSpeed's formula
    over the one-epoch training split, and the unused flags are named in one log line."""
    megatron_logs.set_level(logging.INFO)
    save = tmp_path / "analysis"
    for metric in ("total_vocab_freq", "vocab_rarity"):
        for task in ("map", "reduce"):
            _run(tiny_corpus, data, save, task, metric)
    tok = build_tokenizer(TokenizerConfig(vocab_file=tiny_corpus["vocab_file"], merge_file=tiny_corpus["merge_file"]))
    cfg = DataConfig(data_path=[data], split="90,8,2", seq_length=SEQ, train_data_exact_num_epochs=1)
    ds = build_gpt_datasets(cfg, tok, (0, 0, 0), 1234)[0]
    tokens = np.stack([ds[i]["tokens"] for i in range(len(ds))])
    freq = np.bincount(tokens.reshape(-1), minlength=padded_vocab_size(tok.vocab_size, 128, 1) + 1).astype(float)
    assert np.array_equal(_values(save, "total_vocab_freq", "metric_value"), freq.astype(np.int64))
    freq[freq == 0] = 1
    rarity = -np.log(freq / freq.sum())
    expected = np.array([int(rarity[row].sum()) for row in tokens])
    assert np.array_equal(_values(save, "vocab_rarity", "sample_to_metric"), expected)
    notes = {r.getMessage() for r in megatron_logs.records if "not used by the analysis" in r.getMessage()}
    assert len(notes) == 1 and "--num-layers" in next(iter(notes)) and "--return-data-index" in next(iter(notes))


def test_specific_threads_rerun_only_those(tiny_corpus, data, tmp_path):
    """A map whose thread 1 output is lost cannot be reduced; rerunning that thread alone completes the worker
    (thread 0's output untouched) and the reduce equals a clean run's."""
    full, partial = tmp_path / "full", tmp_path / "partial"
    for save in (full, partial):
        _run(tiny_corpus, data, save, "map", "total_vocab_freq")
        _run(tiny_corpus, data, save, "reduce", "total_vocab_freq")
        _run(tiny_corpus, data, save, "map", "vocab_rarity")
    metric_dir = partial / "vocab_rarity"
    shutil.rmtree(metric_dir / "worker0_thread1")
    (metric_dir / "worker0_thread1.done.json").unlink()
    (metric_dir / "worker0.done.json").unlink()
    with pytest.raises(ValueError, match=r"cannot reduce vocab_rarity, the map is incomplete"):
        _run(tiny_corpus, data, partial, "reduce", "vocab_rarity")
    kept = (metric_dir / "worker0_thread0.done.json").stat().st_mtime_ns
    _run(tiny_corpus, data, partial, "map", "vocab_rarity", "--analyzing-specific-threads", "1")
    assert (metric_dir / "worker0_thread0.done.json").stat().st_mtime_ns == kept
    for save in (full, partial):
        _run(tiny_corpus, data, save, "reduce", "vocab_rarity")
    for suffix in ("sample_to_metric", "index_to_sample", "index_to_metric"):
        assert np.array_equal(_values(partial, "vocab_rarity", suffix), _values(full, "vocab_rarity", suffix))


def test_unknown_flags_are_still_errors(tiny_corpus, data, tmp_path, capsys):
    """Flags that are neither analyzer nor pretraining flags stop the tool with argparse's message."""
    with pytest.raises(SystemExit):
        _run(tiny_corpus, data, tmp_path / "a", "map", "total_vocab_freq", "--analyzing-tsak", "map")
    assert "unrecognized arguments: --analyzing-tsak" in capsys.readouterr().err

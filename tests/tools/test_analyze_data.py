"""tools/analyze_data.py on a real preprocessed corpus: outputs equal numpy over the one-epoch training split,
the curriculum sampler reads them by dataset position, reduce refuses an incomplete map, and the plot is written."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from data.conftest import toy_gpt2_dataset  # noqa: F401  (session fixture: the KJV corpus preprocessed with GPT-2)
from megatron.data.config import DataConfig
from megatron.data.gpt_dataset import build_gpt_datasets
from megatron.data.tokenizers.build import build_tokenizer
from megatron.data.tokenizers.config import TokenizerConfig
from megatron.data_efficiency.config import parse_data_efficiency_config
from megatron.data_efficiency.curriculum.index_files import output_prefix, read_flat
from megatron.data_efficiency.curriculum.metrics import vocab_rarity_table
from megatron.data_efficiency.curriculum.sampler import build_curriculum_sampler

REPO = Path(__file__).resolve().parents[2]
SEQ = 64


def _run(tool: str, *args, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, str(REPO / "tools" / tool), *map(str, args)], capture_output=True,
                          text=True, timeout=300)
    if check and proc.returncode != 0:
        pytest.fail(f"{tool} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return proc


def _data_flags(prefix, cache):
    return ["--data-path", prefix, "--split", "90,5,5", "--seq-length", SEQ, "--data-cache-path", cache,
            "--seed", 7]


@pytest.fixture(scope="module")
def analyzed(toy_gpt2_dataset, tmp_path_factory):  # noqa: F811
    """vocab_rarity (and, automatically first, total_vocab_freq) of the toy corpus, with 2 map processes."""
    root = tmp_path_factory.mktemp("analysis")
    cache, save = root / "cache", root / "out"
    _run("analyze_data.py", *_data_flags(toy_gpt2_dataset, cache), "--metrics", "vocab_rarity",
         "--save-path", save, "--num-threads", 2, "--batch-size", 100, "--no-progress")
    cfg = DataConfig(data_path=[toy_gpt2_dataset], split="90,5,5", seq_length=SEQ, data_cache_path=str(cache),
                     train_data_exact_num_epochs=1)
    tokenizer = build_tokenizer(TokenizerConfig())
    train, _, _ = build_gpt_datasets(cfg, tokenizer, (0, 0, 0), 7)
    return train, tokenizer, str(save), root


def test_outputs_equal_numpy_over_the_training_split(analyzed):
    """Sample i of the outputs is item i of the exact-one-epoch training dataset (same split, seed, seq-length)."""
    train, tokenizer, save, _ = analyzed
    tokens = np.stack([train[i]["tokens"] for i in range(len(train))])
    freq = np.bincount(tokens.reshape(-1), minlength=tokenizer.vocab_size)
    rarity = np.floor(vocab_rarity_table(freq)[tokens].sum(axis=1)).astype(np.int64)
    got_freq, _ = read_flat(output_prefix(save, "total_vocab_freq", "metric_value"))
    assert np.array_equal(np.asarray(got_freq), freq)
    got, _ = read_flat(output_prefix(save, "vocab_rarity", "sample_to_metric"))
    assert np.array_equal(np.asarray(got), rarity)
    order, _ = read_flat(output_prefix(save, "vocab_rarity", "index_to_sample_percentile_merged"))
    assert np.array_equal(np.asarray(order), np.argsort(rarity, kind="stable"))


def test_sampler_reads_the_analysis_by_dataset_position(analyzed):
    """A percentile curriculum over the tool's files draws only the easiest samples of the training dataset."""
    train, _, save, _ = analyzed
    metric = {"index_to_sample_path": output_prefix(save, "vocab_rarity", "index_to_sample_percentile_merged"),
              "index_to_metric_path": output_prefix(save, "vocab_rarity", "index_to_metric"),
              "difficulty_type": "percentile", "clustering_type": "schedule_based", "min_difficulty": 20,
              "max_difficulty": 20, "schedule_type": "fixed_linear",
              "schedule_config": {"total_curriculum_step": 1, "difficulty_step": 1}}
    cfg = parse_data_efficiency_config({"enabled": True, "data_sampling": {"enabled": True, "curriculum_learning": {
        "enabled": True, "curriculum_metrics": {"voc": metric}}}})
    sampler = build_curriculum_sampler(cfg, train, global_batch_size=16, micro_batch_size=16)
    s2m, _ = read_flat(output_prefix(save, "vocab_rarity", "sample_to_metric"))
    rarity = np.asarray(s2m)
    cutoff = np.sort(rarity)[len(train) * 20 // 100 - 1]
    for _ in range(5):
        idx = sampler.draw_global_batch().indices
        assert rarity[idx].max() <= cutoff


def test_blend_is_analyzed_per_component(analyzed, toy_gpt2_dataset, tmp_path):  # noqa: F811
    """A weighted --data-path is analyzed per component into dataset{c}/: each component's files equal the
    analysis of its prefix alone (same split, seed, seq-length), and the tool prints the list of paths to configure."""
    _, _, single, root = analyzed
    blend = ["1", toy_gpt2_dataset, "3", toy_gpt2_dataset]
    proc = _run("analyze_data.py", "--data-path", *blend, "--split", "90,5,5", "--seq-length", SEQ,
                "--data-cache-path", root / "cache", "--seed", 7, "--metrics", "vocab_rarity",
                "--save-path", tmp_path, "--no-progress")
    want = [output_prefix(str(tmp_path / f"dataset{c}"), "vocab_rarity", "index_to_sample") for c in range(2)]
    assert f"index_to_sample_path {want}" in proc.stdout
    for file in ("sample_to_metric", "index_to_sample", "index_to_metric", "index_to_sample_percentile_merged"):
        expected = np.asarray(read_flat(output_prefix(single, "vocab_rarity", file))[0])
        for c in range(2):
            got = np.asarray(read_flat(output_prefix(str(tmp_path / f"dataset{c}"), "vocab_rarity", file))[0])
            assert np.array_equal(got, expected), (file, c)


def test_reduce_refuses_incomplete_map_through_the_cli(toy_gpt2_dataset, tmp_path):  # noqa: F811
    """--task reduce exits with an error naming the worker whose map output is missing; after it runs, it works."""
    flags = [*_data_flags(toy_gpt2_dataset, tmp_path / "cache"), "--metrics", "total_vocab_freq",
             "--save-path", tmp_path / "out", "--num-workers", 2, "--no-progress"]
    _run("analyze_data.py", *flags, "--task", "map", "--worker-id", 0)
    proc = _run("analyze_data.py", *flags, "--task", "reduce", check=False)
    assert proc.returncode != 0 and "worker 1: no done-marker" in proc.stderr
    _run("analyze_data.py", *flags, "--task", "map", "--worker-id", 1)
    _run("analyze_data.py", *flags, "--task", "reduce")
    assert (tmp_path / "out" / "total_vocab_freq" / "total_vocab_freq_metric_value.idx").exists()


def test_plot_curriculum_writes_a_png(analyzed):
    """plot_curriculum.py renders distribution + schedule of a DeepSpeed config pointing at the tool's outputs."""
    _, _, save, root = analyzed
    example = REPO / "examples" / "curriculum" / "gpt_1.3b_cl_vocab_rarity_seqlen_truncate.json"
    ds_cfg = json.loads(example.read_text())
    voc = ds_cfg["data_efficiency"]["data_sampling"]["curriculum_learning"]["curriculum_metrics"]["voc"]
    voc["index_to_sample_path"] = output_prefix(save, "vocab_rarity", "index_to_sample_percentile_merged")
    voc["index_to_metric_path"] = output_prefix(save, "vocab_rarity", "index_to_metric")
    (root / "ds.json").write_text(json.dumps(ds_cfg))
    out = root / "plots" / "curriculum.png"
    _run("plot_curriculum.py", "--config", root / "ds.json", "--output", out, "--num-steps", 2000)
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    assert not list(out.parent.glob(".plot_curriculum.*"))  # no temporary left behind

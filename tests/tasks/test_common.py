"""The task room's shared pieces: config from the checkpoint, weight loading with clear errors, metrics."""

from __future__ import annotations

import json

import numpy as np
import pytest

from megatron.tasks.common import build_task_config, format_table, load_weights, TaskResult, write_json_atomic
from megatron.tasks.metrics import accuracy, f1_binary, matthews_corrcoef, pearson, spearman
from megatron.parallel.state import ParallelState
from megatron.model.config import TransformerConfig
from megatron.model.gpt import GPTModel


def test_metrics_match_reference_values():
    """Accuracy, F1, Matthews correlation, Pearson and Spearman equal hand-computed / textbook values, including
    ties in Spearman and the undefined cases (constant inputs)."""
    pred, gold = [1, 1, 0, 0, 1, 0], [1, 0, 0, 1, 1, 0]
    assert accuracy(pred, gold) == pytest.approx(4 / 6)
    # tp=2, fp=1, fn=1 -> 2*2 / (4 + 1 + 1)
    assert f1_binary(pred, gold) == pytest.approx(4 / 6)
    # binary MCC = (tp*tn - fp*fn) / sqrt((tp+fp)(tp+fn)(tn+fp)(tn+fn)) = (4 - 1) / sqrt(3*3*3*3)
    assert matthews_corrcoef(pred, gold) == pytest.approx(3 / 9)
    assert matthews_corrcoef([1, 1, 1], [1, 0, 1]) == 0.0
    x, y = np.array([1.0, 2.0, 3.0, 4.0]), np.array([2.0, 4.0, 5.0, 9.0])
    assert pearson(x, y) == pytest.approx(np.corrcoef(x, y)[0, 1])
    assert spearman(x, y) == pytest.approx(1.0)
    # ties: ranks of [1, 2, 2, 3] are [1, 2.5, 2.5, 4]
    assert spearman([1, 2, 2, 3], [1, 2, 3, 4]) == pytest.approx(np.corrcoef([1, 2.5, 2.5, 4], [1, 2, 3, 4])[0, 1])
    assert np.isnan(pearson([1, 1, 1], [1, 2, 3]))


def test_task_config_from_checkpoint(gpt_checkpoint):
    """Without architecture flags the model, tokenizer and sequence length come from the checkpoint's config.json;
    a flag on the command line overrides the saved value."""
    cfg, task = build_task_config(["--task", "lambada", "--load", gpt_checkpoint["load"], "--valid-data", "x"])
    assert task.task == "LAMBADA"
    assert (cfg.model.num_layers, cfg.model.hidden_size, cfg.data.seq_length) == (4, 64, 32)
    assert cfg.tokenizer.vocab_file == gpt_checkpoint["vocab_file"]
    cfg, _ = build_task_config(["--task", "LAMBADA", "--load", gpt_checkpoint["load"], "--use-checkpoint-args",
                                "--seq-length", "16"])
    assert cfg.data.seq_length == 16


def test_load_weights_names_the_mismatch(gpt_checkpoint):
    """A model whose shapes or tensors do not fit the checkpoint is refused with the tensor, both shapes and the
    flag to check; a fitting model loads every tensor."""
    pstate = ParallelState.single()
    model = GPTModel(TransformerConfig.flavor("debug"), pstate, 512)
    load_weights(model, gpt_checkpoint["load"], pstate)
    wide = GPTModel(TransformerConfig.flavor("debug", hidden_size=32), pstate, 512)
    with pytest.raises(ValueError, match=r"word_embeddings.weight has shape \(512, 64\).*\(512, 32\); check --hidden-size"):
        load_weights(wide, gpt_checkpoint["load"], pstate)
    deep = GPTModel(TransformerConfig.flavor("debug", num_layers=5), pstate, 512)
    with pytest.raises(ValueError, match=r"missing tensors.*layers\.4"):
        load_weights(deep, gpt_checkpoint["load"], pstate)
    with pytest.raises(ValueError, match="latest_checkpointed_iteration.txt not found; pass the directory above"):
        load_weights(model, gpt_checkpoint["load"] + "/iter_0000030", pstate)


def test_results_table_and_atomic_json(tmp_path):
    """The table has one row per file plus the pooled row; the JSON file appears whole, with no temp file left."""
    result = TaskResult(metrics={"accuracy": 0.5}, per_file={"a": {"accuracy": 0.25}, "b": {"accuracy": 0.75}})
    table = format_table("MNLI", result)
    assert "| a | 0.2500 |" in table and "| overall | 0.5000 |" in table
    write_json_atomic(tmp_path / "sub" / "r.json", {"task": "MNLI", "metrics": result.metrics})
    assert json.loads((tmp_path / "sub" / "r.json").read_text())["metrics"] == {"accuracy": 0.5}
    assert [p.name for p in (tmp_path / "sub").iterdir()] == ["r.json"]

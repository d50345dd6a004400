"""Megatron-DeepSpeed's data-efficiency recipes, run through our entry points with only their variables changed.

The command lines are those of ``examples_deepspeed/data_efficiency/{gpt,bert}/`` (the analysis map and reduce
scripts, then the pretraining base script called by its run script's CL + random-LTD block), assembled from the
flag lists of :mod:`mds_recipes` with the values the scripts compute from our variables (tiny sizes, one process:
``deepspeed pretrain_gpt.py`` becomes a call of our ``main``), and the DeepSpeed JSON filled from a template with
the keys and fixed values of theirs. ``test_megatron_deepspeed_recipe_scripts.py`` runs their actual scripts and
checks that they pass exactly these flag lists.

Pins: the map/reduce invocations write DeepSpeed's analysis files and Megatron-DeepSpeed's index files; pretraining
with CL (vocabulary rarity + seqlen truncation) and random-LTD on layers 1..22 of 24 trains on that analysis
(through ``--train-doc-idx-path``/``--train-idx-path``), in fp16 with the JSON's loss scale 2^11, the recipe's
ignored flags noted once, and evaluates both held-out splits of ``--split 949,50,1``; the BERT pair (5-epoch
analysis, ``--train-idx-path``, encoder random-LTD) likewise.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from mds_recipes import DS_TEMPLATE, FLAGS, build_recipe_corpus, command_line, fill_template, recipe_values, \
    template_values
from training.conftest import load_entry_script, megatron_logs, tiny_bert_corpus, tiny_corpus  # noqa: F401 - fixtures
from megatron.training.checkpointing import read_tracker

pytestmark = pytest.mark.slow


def _analyze(model: str, values: dict) -> None:
    """The map and reduce scripts for total_vocab_freq, then for vocab_rarity (worker 0 of 1)."""
    for metric in ("total_vocab_freq", "vocab_rarity"):
        for task in ("map", "reduce"):
            argv = command_line(FLAGS[f"{model}_{task}"], {**values, "metric": metric})
            load_entry_script("tools/analyze_data.py").main(argv)
    assert Path(f"{values['voc_samples']}.bin").is_file() and Path(f"{values['voc_metrics']}.bin").is_file()


def _pretrain(model: str, values: dict, tmp_path: Path, logs) -> list[str]:
    """The base script's JSON and command line (checkpoint, TensorBoard and cluster directories made as it makes
    them); returns the metric lines after checking the run."""
    gpt = model == "gpt"
    for name in ("checkpoint", "tensorboard", "data_cluster"):
        values[name] = tmp_path / "out" / name
        values[name].mkdir(parents=True)
    values["ds_config"] = tmp_path / f"ds_config_{model}.json"
    text = fill_template(DS_TEMPLATE, template_values(gpt=gpt, values=values))
    json.loads(text)  # the filled template is valid JSON
    values["ds_config"].write_text(text)
    logs.set_level(logging.INFO, logger="megatron")
    result = load_entry_script(f"pretrain_{model}.py").main(command_line(FLAGS[f"{model}_pretrain"], values))
    assert result.exit_reason == "finished" and read_tracker(values["checkpoint"]) == result.iteration
    messages = [r.getMessage() for r in logs.records]
    lines = sorted({m for m in messages if m.startswith("iteration ")})
    assert len(lines) == result.iteration >= 3
    assert all("loss scale: 2048.0" in line and "ltd_kept_tokens" in line for line in lines)
    assert all("difficulty: voc=" in line and "seqlen_truncate=" in line for line in lines)
    notes = {m for m in messages if m.startswith("Megatron flags accepted without")}
    assert len(notes) == 1 and "--tensorboard-queue-size 1" in notes.pop()
    assert any(m.startswith("validation loss at") for m in messages) and any(m.startswith("test loss at")
                                                                             for m in messages)
    return lines


@pytest.fixture(scope="module")
def gpt_recipe_corpus(tiny_corpus, tmp_path_factory):
    return build_recipe_corpus(tmp_path_factory.mktemp("mds_gpt_data"), tiny_corpus, bert=False)


@pytest.fixture(scope="module")
def bert_recipe_corpus(tiny_bert_corpus, tmp_path_factory):
    return build_recipe_corpus(tmp_path_factory.mktemp("mds_bert_data"), tiny_bert_corpus, bert=True)


def test_gpt_analysis_then_pretraining_with_cl_and_random_ltd(gpt_recipe_corpus, tmp_path, megatron_logs):
    """GPT: map/reduce total_vocab_freq then vocab_rarity with ds_analyze_gpt_data_{map,reduce}.sh's command lines,
    then the 1.3B base script's command line (CL voc + seqlen_truncate, random-LTD, ZeRO-1) on the analysis and the
    index files the analysis wrote; the truncation schedule starts short and reaches the full length."""
    values = recipe_values(tmp_path, gpt_recipe_corpus, gpt=True)
    _analyze("gpt", values)
    for name in ("doc_idx", "sample_idx", "shuffle_idx"):
        assert Path(values[name]).is_file()
    lines = _pretrain("gpt", values, tmp_path, megatron_logs)
    assert "seqlen_truncate=24" in lines[0] and "seqlen_truncate=64" in lines[-1]


def test_bert_analysis_then_pretraining_with_cl_and_random_ltd(bert_recipe_corpus, tmp_path, megatron_logs):
    """BERT: the 5-epoch analysis (map/reduce) with ds_analyze_bert_data_{map,reduce}.sh's command lines writes the
    samples mapping the 336M base script names in --train-idx-path; its pretraining command line (default
    WordPiece tokenizer, as the script assumes) trains with CL and encoder random-LTD on that analysis."""
    values = recipe_values(tmp_path, bert_recipe_corpus, gpt=False)
    _analyze("bert", values)
    assert Path(values["train_idx"]).is_file()
    _pretrain("bert", values, tmp_path, megatron_logs)

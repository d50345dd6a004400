"""Golden loss curves of the data efficiency recipes: curriculum learning, random-LTD and both, on CPU.

Same setting as ``test_pretrain_golden.py`` (debug GPT and BERT, tiny KJV corpora, dropout on, ``pretrain_gpt.py``
and ``pretrain_bert.py``) plus a vocab-rarity analysis by ``tools/analyze_data.py`` and a DeepSpeed JSON config. Any change to the curriculum
sampler, seqlen truncation, random-LTD token choice or token accounting moves these numbers; an intended change
regenerates them with the same switch as the baseline:

    MEGATRON_DE_REGEN_GOLDEN=1 .venv/bin/python -m pytest tests/e2e/test_data_efficiency_golden.py

which rewrites ``tests/e2e/golden/{gpt,bert}_debug_{cl,ltd,cl_ltd}.json`` (review the diff and say why in the
commit).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from golden_files import load_golden
from training.conftest import (  # noqa: F401 - fixtures
    bert_args,
    gpt_args,
    load_entry_script,
    read_metrics,
    tiny_bert_corpus,
    tiny_corpus,
)
from training.test_data_efficiency import (  # noqa: F401 - fixture
    de_args,
    de_config,
    kjv_analysis,
    seqlen_metric,
    vocab_rarity_metric,
)
from training.test_pretrain_bert import BERT_SEQ, SHORT_SEQ_PROB, bert_analysis  # noqa: F401 - fixture

ATOL = 1e-3  # as test_pretrain_golden.py: cross-CPU fp32 reordering ~1e-5, a real change > 1e-2
FLAGS = dict(train_iters=12, eval_interval=6, eval_iters=2)

# Recipes: name -> (curriculum metrics?, random-LTD layers); schedules end at step 8 of 12. The family prefix picks
# the entry script, its corpus and analysis; BERT runs random-LTD on the encoder over its 64-token samples.
RECIPES = {
    "gpt_debug_cl": (True, None),
    "gpt_debug_ltd": (False, [1, 2]),
    "gpt_debug_cl_ltd": (True, [1, 2]),
    "bert_debug_cl": (True, None),
    "bert_debug_ltd": (False, [1, 2]),
    "bert_debug_cl_ltd": (True, [1, 2]),
}
FAMILIES = {  # entry script, flag builder, extra flags, corpus fixture, analysis fixture
    "gpt": ("pretrain_gpt.py", gpt_args, {}, "tiny_corpus", "kjv_analysis"),
    "bert": ("pretrain_bert.py", bert_args, {"short_seq_prob": SHORT_SEQ_PROB}, "tiny_bert_corpus", "bert_analysis"),
}


def _config(analysis: Path, name: str) -> dict:
    cl, ltd = RECIPES[name]
    bert = name.startswith("bert")
    metrics = None
    if cl:
        seqlen = seqlen_metric(lo=16, hi=BERT_SEQ, steps=8) if bert else seqlen_metric(steps=8)
        metrics = {"vocab_rarity": vocab_rarity_metric(analysis, steps=8), "seqlen_truncate": seqlen}
    config = de_config(metrics, ltd_layers=ltd)
    if bert and ltd:
        block = config["data_efficiency"]["data_routing"]["random_ltd"]
        block["model_type"] = "encoder"
        block["random_ltd_schedule"].update(min_value=16, max_value=BERT_SEQ)
    return config


def _portable(config: dict, analysis: Path) -> dict:
    """The config with the analysis directory replaced by ``<analysis>`` (golden files hold no machine paths)."""
    return json.loads(json.dumps(config).replace(str(analysis), "<analysis>"))


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_data_efficiency_golden_losses(name, request, tmp_path):
    """Per-iteration training losses, validation losses and the logged difficulty / kept-token curves match the
    committed golden file of the recipe, and the model learns."""
    script, build_args, extra, corpus, analysis_fixture = FAMILIES[name.split("_")[0]]
    analysis = request.getfixturevalue(analysis_fixture)
    config = _config(analysis, name)
    flags = de_args(tmp_path / "ds.json", config)
    result = load_entry_script(script).main(build_args(request.getfixturevalue(corpus), **extra,
                                                       metrics_file=tmp_path / "m.jsonl", **FLAGS, **flags))
    train = [r for r in read_metrics(tmp_path / "m.jsonl") if r["kind"] == "train"]
    got = {
        "recipe": {"flags": {**FLAGS, **extra}, "deepspeed_config": _portable(config, analysis)},
        "train_losses": [result.train_losses[i] for i in sorted(result.train_losses)],
        "val_losses": {str(k): v for k, v in sorted(result.val_losses.items())},
        "difficulty": [r.get("difficulty") for r in train],
        "ltd_kept_tokens": [r.get("ltd_kept_tokens") for r in train],
        "consumed_tokens": [r["consumed_tokens"] for r in train],
    }
    golden = load_golden(name, got)
    for key in ("difficulty", "ltd_kept_tokens", "consumed_tokens"):
        assert got[key] == golden[key], key
    assert len(got["train_losses"]) == FLAGS["train_iters"]
    assert got["train_losses"] == pytest.approx(golden["train_losses"], abs=ATOL)
    assert got["val_losses"] == pytest.approx(golden["val_losses"], abs=ATOL)
    assert got["val_losses"]["12"] < got["val_losses"]["6"], "the model learns"

"""Golden loss curves of the data efficiency recipes: curriculum learning, random-LTD and both, on CPU.

Same setting as ``test_pretrain_golden.py`` (debug GPT, tiny KJV corpus, dropout on, ``pretrain_gpt.py``) plus a
vocab-rarity analysis by ``tools/analyze_data.py`` and a DeepSpeed JSON config. Any change to the curriculum
sampler, seqlen truncation, random-LTD token choice or token accounting moves these numbers; an intended change
regenerates them with the same switch as the baseline:

    MEGATRON_DE_REGEN_GOLDEN=1 .venv/bin/python -m pytest tests/e2e/test_data_efficiency_golden.py

which rewrites ``tests/e2e/golden/gpt_debug_{cl,ltd,cl_ltd}.json`` (review the diff and say why in the commit).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from golden_files import load_golden
from training.conftest import gpt_args, load_entry_script, read_metrics, tiny_corpus  # noqa: F401 - fixture
from training.test_data_efficiency import (  # noqa: F401 - fixture
    de_args,
    de_config,
    kjv_analysis,
    seqlen_metric,
    vocab_rarity_metric,
)

ATOL = 1e-3  # as test_pretrain_golden.py: cross-CPU fp32 reordering ~1e-5, a real change > 1e-2
FLAGS = dict(train_iters=12, eval_interval=6, eval_iters=2)

# Recipes: name -> (curriculum metrics?, random-LTD layers); schedules end at step 8 of 12.
RECIPES = {
    "gpt_debug_cl": (True, None),
    "gpt_debug_ltd": (False, [1, 2]),
    "gpt_debug_cl_ltd": (True, [1, 2]),
}



def _config(analysis: Path, name: str) -> dict:
    cl, ltd = RECIPES[name]
    metrics = None
    if cl:
        metrics = {"vocab_rarity": vocab_rarity_metric(analysis, steps=8), "seqlen_truncate": seqlen_metric(steps=8)}
    return de_config(metrics, ltd_layers=ltd)


def _portable(config: dict, analysis: Path) -> dict:
    """The config with the analysis directory replaced by ``<analysis>`` (golden files hold no machine paths)."""
    return json.loads(json.dumps(config).replace(str(analysis), "<analysis>"))


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_data_efficiency_golden_losses(name, tiny_corpus, kjv_analysis, tmp_path):  # noqa: F811 - fixtures
    """Per-iteration training losses, validation losses and the logged difficulty / kept-token curves match the
    committed golden file of the recipe, and the model learns."""
    config = _config(kjv_analysis, name)
    flags = de_args(tmp_path / "ds.json", config)
    result = load_entry_script().main(gpt_args(tiny_corpus, metrics_file=tmp_path / "m.jsonl", **FLAGS, **flags))
    train = [r for r in read_metrics(tmp_path / "m.jsonl") if r["kind"] == "train"]
    got = {
        "recipe": {"flags": FLAGS, "deepspeed_config": _portable(config, kjv_analysis)},
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

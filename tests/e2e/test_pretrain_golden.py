"""Golden loss curves: the ``debug`` GPT and BERT train a few steps on CPU and must reproduce committed losses.

The corpora are the training fixtures' tiny KJV corpora (a 512-token BPE for GPT, a 1,024-token WordPiece and
sentence splitting for BERT, trained and applied by the real tools); the runs go through ``pretrain_gpt.py`` and
``pretrain_bert.py`` with dropout on. Any change to initialization, data order, masking, loss, optimizer or LR
schedule moves these numbers; an intended change regenerates them:

    MEGATRON_DE_REGEN_GOLDEN=1 .venv/bin/python -m pytest tests/e2e/test_pretrain_golden.py

which rewrites ``tests/e2e/golden/*.json`` (review the diff and say why in the commit).
"""

from __future__ import annotations

import pytest

from golden_files import load_golden
from training.conftest import (  # noqa: F401 - fixtures
    bert_args,
    gpt_args,
    load_entry_script,
    tiny_bert_corpus,
    tiny_corpus,
)

# Recipes: name -> flags on top of training.conftest.gpt_args / bert_args (debug flavor, 2 x 2 micro-batches).
RECIPES = {
    "gpt_debug_baseline": dict(train_iters=24, eval_interval=12, eval_iters=2),
    "bert_debug_baseline": dict(train_iters=24, eval_interval=12, eval_iters=2),
}
# The model family of a recipe: entry script, flag builder and corpus fixture.
FAMILIES = {
    "gpt": ("pretrain_gpt.py", gpt_args, "tiny_corpus"),
    "bert": ("pretrain_bert.py", bert_args, "tiny_bert_corpus"),
}

# The same code and seed give bit-identical losses on one machine; across CPUs (vector width, BLAS blocking) fp32
# sums reorder, which after 24 Adam steps moves the loss by ~1e-5. 1e-3 absolute still catches any real change
# (one wrong sample, a shifted label or lr: > 1e-2).
ATOL = 1e-3


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_golden_losses(name, request):
    """Per-iteration training losses and the validation losses match the committed golden curve."""
    flags = RECIPES[name]
    script, build_args, corpus = FAMILIES[name.split("_")[0]]
    result = load_entry_script(script).main(build_args(request.getfixturevalue(corpus), **flags))
    got = {
        "recipe": {k: v for k, v in flags.items()},
        "train_losses": [result.train_losses[i] for i in sorted(result.train_losses)],
        "val_losses": {str(k): v for k, v in sorted(result.val_losses.items())},
    }
    golden = load_golden(name, got)
    assert len(got["train_losses"]) == flags["train_iters"]
    assert got["train_losses"] == pytest.approx(golden["train_losses"], abs=ATOL)
    assert got["val_losses"] == pytest.approx(golden["val_losses"], abs=ATOL)
    assert got["train_losses"][-1] < got["train_losses"][0] - 0.3, "the model learns"

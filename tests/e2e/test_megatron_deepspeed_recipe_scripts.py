"""Megatron-DeepSpeed's own data-efficiency scripts, run here with only their variables and launcher line changed.

Needs a Megatron-DeepSpeed checkout (a work tree, or a bare/mirror git directory read at ``HEAD``) named by the
environment variable ``MDS_REPO``; skipped without one (their scripts are not part of this repository). For GPT and
for BERT, the test takes the text of the analysis map and reduce scripts, the pretraining base script, its
``ds_config_*_2clmetrics_TEMPLATE.json`` (unchanged) and the ``*_run.sh``, applies the substitutions of
:mod:`mds_recipes` (``NAME=value`` lines, the ``python ../analyze_data.py`` / ``deepspeed .../pretrain_*.py`` launcher
lines, one run block uncommented) and runs them with ``bash`` in that order: map and reduce for total_vocab_freq,
then for vocab_rarity, then ``bash ds_pretrain_*_run.sh``.

Pins: every script exits 0; each invocation passed the command line :data:`mds_recipes.FLAGS` records (so the CI
test, which assembles those command lines itself, runs what the scripts run); the analysis wrote the files their
run script names; pretraining trained on them with both curricula and random-LTD, in fp16 at the JSON's loss scale,
saved its checkpoint and evaluated the validation and test splits.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from mds_recipes import (
    EXAMPLES, FLAGS, RECIPES, RUN_BLOCKS, build_recipe_corpus, matches, recipe_values, substitute, uncomment_block,
)
from training.conftest import tiny_bert_corpus, tiny_corpus  # noqa: F401 - fixtures

REPO = Path(__file__).resolve().parents[2]
MDS_REPO = os.environ.get("MDS_REPO")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(3600),  # a few steps of a 24-layer fp16 model on CPU, plus torchrun and four analysis runs
    pytest.mark.skipif(not MDS_REPO, reason="set MDS_REPO to a Megatron-DeepSpeed checkout (or its git directory) "
                                            "to run its recipe scripts"),
]

# Shims on PATH: the base scripts sync the checkpoint tracker over nodes with ssh/ds_ssh (run the command here);
# record writes a command line to $MDE_ARGV, one argument per line, then runs it.
SHIMS = {
    "ssh": '#!/bin/sh\nwhile [ "${1#-}" != "$1" ]; do shift; done\nshift\nexec sh -c "$*"\n',
    "ds_ssh": '#!/bin/sh\nexec sh -c "$*"\n',
    "record": '#!/bin/sh\nprintf "%s\\n" "$@" > "$MDE_ARGV"\nexec "$@"\n',
}


def _their_text(path: str) -> str:
    """A file of the checkout: from its work tree, else from its git directory at HEAD."""
    root = Path(MDS_REPO)
    if (root / EXAMPLES / path).is_file():
        return (root / EXAMPLES / path).read_text(encoding="utf-8")
    return subprocess.run(["git", "--git-dir", str(root), "show", f"HEAD:{EXAMPLES}/{path}"], check=True,
                          capture_output=True, text=True).stdout


def _environment(tmp: Path) -> dict[str, str]:
    shims = tmp / "bin"
    shims.mkdir()
    for name, text in SHIMS.items():
        (shims / name).write_text(text)
        (shims / name).chmod(0o755)
    # One intra-op thread, as the test suite runs: OpenMP threads on a busy two-core machine mostly wait for each
    # other.
    return {**os.environ, "PATH": f"{shims}{os.pathsep}{os.environ['PATH']}", "OMP_NUM_THREADS": "1"}


def _run(script: str, work: Path, env: dict[str, str], argv_file: Path, *args: str) -> list[str]:
    """``bash script args`` in ``work``; returns the command line the script launched (after the script path)."""
    env = {**env, "MDE_ARGV": str(argv_file)}
    proc = subprocess.run(["bash", script, *args], cwd=work, env=env, capture_output=True, text=True, timeout=3000)
    logs = "\n".join(p.read_text(errors="replace")[-3000:] for p in work.glob("*.log"))
    assert proc.returncode == 0, f"{script}: exit {proc.returncode}\n{proc.stderr[-3000:]}\n{logs}"
    argv = argv_file.read_text().splitlines()
    return argv[next(i for i, a in enumerate(argv) if a.endswith(".py")) + 1:]


def _recipe(model: str, corpus: dict[str, str], tmp_path: Path) -> None:
    gpt = model == "gpt"
    values = recipe_values(tmp_path, corpus, gpt=gpt)
    values.update(python=sys.executable, repo=REPO, record="record")
    env, work = _environment(tmp_path), tmp_path / "scripts"
    work.mkdir()
    for metric in ("total_vocab_freq", "vocab_rarity"):
        for task in ("map", "reduce"):
            recipe = RECIPES[f"{model}_{task}"]
            name = Path(recipe.path).name
            (work / name).write_text(substitute(_their_text(recipe.path), recipe, {**values, "metric": metric}))
            argv = _run(name, work, env, tmp_path / f"argv_{task}_{metric}", "0")
            assert matches(FLAGS[f"{model}_{task}"], argv), (task, metric, argv)
    assert Path(f"{values['voc_samples']}.bin").is_file() and Path(f"{values['voc_metrics']}.bin").is_file()

    base, run = RECIPES[f"{model}_pretrain"], RECIPES[f"{model}_run"]
    template = f"ds_config_{model}_2clmetrics_TEMPLATE.json"
    (work / template).write_text(_their_text(f"{Path(base.path).parent}/{template}"))
    (work / Path(base.path).name).write_text(substitute(_their_text(base.path), base, values))
    run_text = uncomment_block(_their_text(run.path), RUN_BLOCKS[f"{model}_run"])
    (work / Path(run.path).name).write_text(substitute(run_text, run, values))
    argv = _run(Path(run.path).name, work, env, tmp_path / "argv_pretrain")
    assert matches(FLAGS[f"{model}_pretrain"], argv), argv

    (log,) = (tmp_path / "out" / "log").glob("*.log")
    text = log.read_text()
    steps = re.findall(r"iteration +(\d+)(?:/ *\d+)? \| .*loss scale: 2048\.0.*difficulty: voc=\d+, "
                       r"seqlen_truncate=(\d+).*ltd_kept_tokens: (\d+)", text)
    assert len(steps) >= 3 and [int(s[0]) for s in steps] == list(range(1, len(steps) + 1)), text[-3000:]
    assert int(steps[0][1]) < values["seq"] and int(steps[-1][1]) == values["seq"]  # truncation grew to full length
    assert int(steps[0][2]) == values["ltd_start"]
    assert "validation loss at iteration" in text and "test loss at iteration" in text
    (checkpoint,) = (tmp_path / "out" / "checkpoint").iterdir()
    assert (checkpoint / "latest_checkpointed_iteration.txt").read_text().strip() == steps[-1][0]


def test_gpt_recipe_scripts_run_unchanged_but_their_variables(tiny_corpus, tmp_path):
    """ds_analyze_gpt_data_{map,reduce}.sh (total_vocab_freq, vocab_rarity), then ds_pretrain_gpt_1.3B_dense_run.sh's
    CL (voc + seqlen_truncate) + random-LTD block calling the base script with its 2-metric JSON template."""
    corpus = build_recipe_corpus(tmp_path / "data", tiny_corpus, bert=False)
    _recipe("gpt", corpus, tmp_path)


def test_bert_recipe_scripts_run_unchanged_but_their_variables(tiny_bert_corpus, tmp_path):
    """ds_analyze_bert_data_{map,reduce}.sh (5-epoch analysis), then ds_pretrain_bert_336M_run.sh's CL + random-LTD
    block calling the base script, which trains on the samples mapping the analysis wrote (--train-idx-path)."""
    corpus = build_recipe_corpus(tmp_path / "data", tiny_bert_corpus, bert=True)
    _recipe("bert", corpus, tmp_path)

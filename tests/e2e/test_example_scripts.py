"""What the CPU recipes in ``examples/`` tell the user: that a rerun replaces the previous run's directory, and
where the outputs are at the end.

The scripts run for real (bash, in a copy of the repository layout) with ``PYTHON`` set to a stand-in that
records each command instead of training, so the test takes milliseconds and never touches ``runs/`` here.
"""

from __future__ import annotations

import shutil
import stat
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

FAKE_PYTHON = """#!/usr/bin/env bash
echo "python $*" >> "$RECIPE_LOG"
exit 0
"""


def _run_recipe(tmp_path: Path, script: str, run_dir: str, previous_run: bool) -> tuple[str, list[str]]:
    root = tmp_path / "repo"
    (root / "examples").mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO / "examples" / script, root / "examples" / script)
    fake = tmp_path / "python"
    fake.write_text(FAKE_PYTHON, encoding="utf-8")
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    if previous_run:
        (root / run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
    log = tmp_path / "log.txt"
    log.write_text("", encoding="utf-8")
    proc = subprocess.run(["bash", str(root / "examples" / script)], capture_output=True, text=True, timeout=60,
                          env={"PATH": "/usr/bin:/bin", "PYTHON": str(fake), "RECIPE_LOG": str(log)})
    assert proc.returncode == 0, proc.stderr
    assert not (root / run_dir / "checkpoints").exists()  # the previous run is gone, as announced
    return proc.stdout, log.read_text(encoding="utf-8").splitlines()


@pytest.mark.parametrize("script, run_dir", [("quickstart_cpu.sh", "runs/quickstart_cpu"),
                                             ("pretrain_bert_cpu.sh", "runs/bert_cpu")])
def test_recipe_announces_replacing_the_previous_run_and_names_its_outputs(tmp_path, script, run_dir):
    """A rerun says it replaces runs/NAME/ before deleting it (a first run says nothing), and the last lines name
    the checkpoints, metrics file and TensorBoard directory."""
    out, commands = _run_recipe(tmp_path / "again", script, run_dir, previous_run=True)
    assert f"replacing the previous run in {run_dir}/" in out
    assert any(c.startswith("python pretrain_") for c in commands)
    tail = out.strip().splitlines()[-3:]
    assert tail == [f"  checkpoints: {run_dir}/checkpoints/", f"  metrics:     {run_dir}/metrics.jsonl",
                    f"  tensorboard: {run_dir}/tensorboard/   (tensorboard --logdir {run_dir}/tensorboard)"]
    first, _ = _run_recipe(tmp_path / "first", script, run_dir, previous_run=False)
    assert "replacing" not in first

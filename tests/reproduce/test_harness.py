"""The reproduction harness end to end at the tiny scale: two cases of Table 7 through the real entry scripts,
results and report written, commands stored, finished cases skipped and an interrupted case resumed."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from megatron.reproduce.commands import shell_line
from megatron.reproduce.harness import Harness, HarnessOptions
from megatron.reproduce.paper import RunSpec

REPO = Path(__file__).resolve().parents[2]


def run_tool(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "tools" / "reproduce_paper.py"), *args], cwd=REPO,
                          capture_output=True, text=True, timeout=900)


def test_dry_run_prints_the_plan_and_bad_arguments_are_refused():
    """--dry-run lists every distinct run once with its cases and budget and trains nothing; unknown cases and
    tables are refused with the valid choices named."""
    proc = run_tool("--tables", "1", "3", "7", "--scale", "cpu", "--dry-run")
    assert proc.returncode == 0, proc.stderr
    assert "| gpt_base_d100 | gpt | 100% | 200 | 409,600 | T1(1), T3(1), T7(1) |" in proc.stdout
    assert "16 runs x 2 seeds = 32 trainings" in proc.stdout
    bad = run_tool("--tables", "7", "--cases", "7.9", "--dry-run")
    assert bad.returncode == 2 and "cases ['7.9'] are not among" in bad.stderr
    bad = run_tool("--tables", "5", "--dry-run")
    assert bad.returncode == 2 and "tables [5] are not reproduced" in bad.stderr


@pytest.mark.slow
def test_two_cases_end_to_end_then_skip_and_resume(tmp_path):
    """Table 7 cases 1 and 8 (baseline 100%; CL + random-LTD at 50%) at the tiny scale: each run trains, is
    evaluated (held-out loss, two proxy tasks 0- and k-shot) and lands in results.json and tables.md with its
    command line; the curriculum run reads less data and logs its difficulty and kept tokens. A second invocation
    skips both; deleting one run's result after its training checkpoint makes the next invocation resume it
    from the checkpoint instead of training again."""
    out = tmp_path / "repro"
    args = ("--tables", "7", "--cases", "7.1", "7.8", "--scale", "tiny", "--seeds", "1", "--output-dir", str(out))
    proc = run_tool(*args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    base = results["runs"]["gpt_base_d100"]["seeds"]["1234"]
    ltd = results["runs"]["gpt_voc+trunc_ltd_d50"]["seeds"]["1234"]
    assert base["status"] == ltd["status"] == "done"
    for r in (base, ltd):
        assert 0 <= r["metrics"]["zero_shot"] <= 100 and 0 <= r["metrics"]["few_shot"] <= 100
        assert r["metrics"]["val_loss"] > 0 and r["curves"]["val_loss"]
        assert any("pretrain_gpt.py" in line for line in r["command"])
    assert ltd["data_tokens"] < base["data_tokens"]
    assert ltd["curves"]["difficulty"] and ltd["curves"]["ltd_kept_tokens"]
    tables = (out / "tables.md").read_text()
    assert "## Table 7" in tables and "| (1) Baseline |" in tables and "| (8) CL + random-LTD |" in tables
    assert "## Claims" in tables and (out / "table7_loss_vs_tokens.png").is_file()
    commands = (out / "runs" / "gpt_base_d100" / "seed1234" / "commands.sh").read_text()
    assert "pretrain_gpt.py" in commands and "tasks/main.py --task MC" in commands

    # Finished runs are skipped: nothing is trained again.
    again = run_tool(*args)
    assert again.returncode == 0 and "pretrain_gpt.py" not in again.stderr

    # An interrupted run (trained to a checkpoint, no result yet) resumes from its checkpoint.
    run_dir = out / "runs" / "gpt_base_d100" / "seed1234"
    for name in ("result.json", "trained"):
        (run_dir / name).unlink()
    resumed = run_tool(*args)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "--load" in (run_dir / "commands.sh").read_text()
    assert "loaded checkpoint" in (run_dir / "train.log").read_text()


def test_harness_plan_and_run_directories(tmp_path):
    """Runs of different tables that are the same training share one directory per seed; seeds count up from
    1234."""
    h = Harness(HarnessOptions(tables=[1, 3, 7], scale="tiny", seeds=2, output_dir=str(tmp_path)))
    assert h.seeds == [1234, 1235]
    assert h.run_dir(RunSpec("gpt"), 1235) == tmp_path / "runs" / "gpt_base_d100" / "seed1235"
    assert len({r.key for r in h.runs}) == len(h.runs) == 16


def test_stored_command_lines_name_no_path_of_this_machine():
    """Command lines stored for rerunning by hand name the repository's files relative to its root and an
    interpreter outside it as plain python, so they paste on any checkout; other arguments stay as given."""
    assert shell_line([REPO / ".venv" / "bin" / "python", "tasks/main.py", "--load", REPO / "runs" / "a b"]) == (
        ".venv/bin/python tasks/main.py --load 'runs/a b'")
    assert shell_line(["/usr/bin/python3", "pretrain_gpt.py", "--data-path", "/data/x"]) == (
        "python pretrain_gpt.py --data-path /data/x")


@pytest.mark.slow
def test_table6_finetunes_the_baseline_with_and_without_random_ltd(tmp_path):
    """Table 6 at the tiny scale: the GPT baseline is pretrained, then fine-tuned on the fine-tuning corpus with and
    without random-LTD through ``pretrain_gpt.py --finetune``; both runs finish, validate during training on the
    held-out fine-tuning document (the corpus has too few documents for a --split share) and report a held-out
    perplexity, and the random-LTD run logs its kept tokens."""
    out = tmp_path / "repro"
    proc = run_tool("--tables", "6", "--scale", "tiny", "--seeds", "1", "--output-dir", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = json.loads((out / "results.json").read_text())["runs"]
    base, ltd = (runs[key]["seeds"]["1234"] for key in ("gpt_base_ft_d100", "gpt_base_ltd_ft_d100"))
    for r in (base, ltd):
        assert r["status"] == "done", r
        assert r["metrics"]["ppl"] > 1 and r["curves"]["val_loss"]
        assert any("--finetune" in line and "--valid-data-path" in line for line in r["command"])
    assert ltd["curves"]["ltd_kept_tokens"] and not base["curves"].get("ltd_kept_tokens")
    assert "## Table 6" in (out / "tables.md").read_text()

"""Run-to-run determinism of CPU training: the same command line gives bit-identical losses.

Pins: three ``pretrain_gpt.py`` processes started at once (sharing a cold index cache, each with its own
``PYTHONHASHSEED``) and one in-process run of the same flags produce bitwise-equal training and validation losses,
in fp32 and bf16, with dropout on. The intra-op thread count is pinned (``--torch-num-threads``; 1, so that four
processes do not oversubscribe CI's two cores) because it is the one environment input found to change CPU results:
LayerNorm weight gradients and long reductions sum per-thread partial results (docs/fault_cases.md), and torch's
default count follows each process's CPU affinity. The count is recorded with each checkpoint and a resume at
another count is warned about.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from training.conftest import REPO, gpt_args, load_entry_script, read_metrics


def _losses(records: list[dict]) -> dict[str, list[str]]:
    """Train and validation losses as exact hex strings, per iteration."""
    return {kind: [float(r[key]).hex() for r in records if r["kind"] == kind]
            for kind, key in (("train", "loss"), ("valid", "val_loss"))}


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_identical_runs_give_bitwise_identical_losses(precision, tiny_corpus, tmp_path):
    """4 runs of one config - 3 concurrent subprocesses and 1 in-process - agree bit for bit on every loss."""
    flags = dict(train_iters=8, eval_interval=4, eval_iters=2, lr_warmup_iters=2, torch_num_threads=1,
                 data_cache_path=tmp_path / "cache", bf16=precision == "bf16")
    procs = []
    for i in range(3):
        argv = gpt_args(tiny_corpus, metrics_file=tmp_path / f"run{i}.jsonl", **flags)
        env = {**os.environ, "PYTHONHASHSEED": str(i + 1)}
        procs.append(subprocess.Popen([sys.executable, str(REPO / "pretrain_gpt.py"), *argv], cwd=REPO, env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    load_entry_script().main(gpt_args(tiny_corpus, metrics_file=tmp_path / "run3.jsonl", **flags))
    for p in procs:
        out, _ = p.communicate(timeout=600)
        assert p.returncode == 0, out[-3000:]
    runs = [_losses(read_metrics(tmp_path / f"run{i}.jsonl")) for i in range(4)]
    assert len(runs[0]["train"]) == 8 and len(runs[0]["valid"]) == 2
    for i, run in enumerate(runs[1:], start=1):
        assert run == runs[0], f"run {i} differs from run 0: {json.dumps(run)} vs {json.dumps(runs[0])}"


def test_thread_count_is_pinned_recorded_and_restored(tiny_corpus, tmp_path, megatron_logs):
    """--torch-num-threads sets the count for the run only (the caller's count is restored), the checkpoint's
    config.json records it under runtime, and resuming at another count warns that the continuation is not
    bit-identical."""
    before = torch.get_num_threads()
    common = dict(train_iters=4, eval_iters=0, lr_warmup_iters=1, save=tmp_path / "ckpt")
    load_entry_script().main(gpt_args(tiny_corpus, torch_num_threads=2, exit_interval=2, **common))
    assert torch.get_num_threads() == before
    config = json.loads((tmp_path / "ckpt" / "iter_0000002" / "config.json").read_text(encoding="utf-8"))
    assert config["runtime"] == {"torch_num_threads": 2}
    load_entry_script().main(gpt_args(tiny_corpus, torch_num_threads=1, load=tmp_path / "ckpt", **common))
    assert "was trained with 2 CPU threads, this run has 1" in megatron_logs.text

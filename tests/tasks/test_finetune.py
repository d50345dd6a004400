"""The fine-tuning loop end to end through ``tasks/main.py`` on the session's tiny pretrained BERT: it learns a
separable task and writes the results, DP=2 and TP=2 equal one process, a resumed run equals an uninterrupted one,
``--epochs 0`` evaluates, and the data order and file names follow their rules."""

from __future__ import annotations

import json
import logging
import random
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from dist_utils import run_distributed
from megatron.tasks.finetune import Finetuner, epoch_batches, eval_names, rank_micro_batches
from megatron.training.checkpointing import read_checkpoint
from training.conftest import load_entry_script

_FILL = "and the lord spake unto moses saying go thou into the land which i give unto thee".split()


def run_task(*argv):
    return load_entry_script("tasks/main.py").main([str(a) for a in argv])


def write_sst2(path: Path, n: int, seed: int = 0) -> str:
    """An SST-2-format file whose label is which keyword (light / darkness, three times) a sentence holds."""
    rng = random.Random(seed)
    lines = ["sentence\tlabel"]
    for k in range(n):
        words = rng.sample(_FILL, 6)
        for _ in range(3):
            words.insert(rng.randrange(len(words) + 1), "light" if k % 2 else "darkness")
        lines.append(f"{' '.join(words)}\t{k % 2}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return str(path)


class _Records(logging.Handler):
    def __init__(self):
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record):
        self.lines.append(record.getMessage())


@pytest.fixture
def finetune_log():
    """Messages of ``megatron.tasks.finetune`` logged during the test."""
    handler = _Records()
    log = logging.getLogger("megatron.tasks.finetune")
    log.addHandler(handler)
    yield handler.lines
    log.removeHandler(handler)


def _base(ckpt: dict, train: str, valid: str, *extra) -> list:
    return ["--task", "SST2", "--train-data", train, "--valid-data", valid, "--pretrained-checkpoint", ckpt["load"],
            "--log-interval", "1", *extra]


def test_epoch_order_and_file_names():
    """Epoch permutations depend on seed + epoch only; the partial last batch is kept only with --keep-last; a
    DP rank's slices of a global batch, in rank order, are one process's micro-batches; evaluation files are named
    as Megatron names them."""
    a, b = epoch_batches(10, 0, 1234, 4, False), epoch_batches(10, 1, 1234, 4, True)
    assert [len(x) for x in a] == [4, 4] and [len(x) for x in b] == [4, 4, 2]
    assert not np.array_equal(np.concatenate(a), np.concatenate(b)[:8])
    assert sorted(np.concatenate(b).tolist()) == list(range(10))
    batch = np.arange(8)
    ranks = [m for r in range(2) for m in rank_micro_batches(batch, r, 2, 2)]
    assert [m.tolist() for m in ranks] == [m.tolist() for m in rank_micro_batches(batch, 0, 1, 2)]
    assert [len(m) for r in range(2) for m in rank_micro_batches(np.arange(3), r, 2, 2)] == [2, 1]
    assert eval_names(["glue/MNLI/dev_matched.tsv", "glue/MNLI/dev_mismatched.tsv"], "MNLI") == [
        "dev-matched", "dev-mismatched"]
    assert eval_names(["data/RACE/dev/middle", "data/RACE/dev/high"], "RACE") == ["dev/middle", "dev/high"]
    assert eval_names(["a/dev.tsv", "b/dev.tsv"], "SST2") == ["a/dev.tsv", "b/dev.tsv"]


def test_sst2_learns_and_writes_results(bert_checkpoint, tmp_path, finetune_log):
    """Two epochs on a separable 128-example file reach > 0.8 accuracy on train-like data; the results JSON has the
    task, the last epoch's metrics, every epoch's record and the best epoch; Megatron-style lines are logged."""
    train = write_sst2(tmp_path / "train.tsv", 128)
    valid = write_sst2(tmp_path / "dev.tsv", 32, seed=1)
    out = tmp_path / "SST2_lr1e-3_seed1234.json"
    result = run_task(*_base(bert_checkpoint, train, valid, "--epochs", "2", "--lr", "1e-3", "--micro-batch-size",
                             "4", "--global-batch-size", "8", "--results-file", out, "--log-interval", "8"))
    assert result.metrics["accuracy"] > 0.8
    data = json.loads(out.read_text())
    assert data["task"] == "SST2" and set(data["metrics"]) == {"accuracy", "correct", "total"}
    details = data["details"]
    assert [e["epoch"] for e in details["epochs"]] == [1, 2] and details["epochs"][-1]["metrics"] == data["metrics"]
    assert details["primary_metric"] == "accuracy" and details["best_epoch"] in (1, 2)
    assert (details["seed"], details["lr"], details["iterations"]) == (1234, 1e-3, 32)
    assert all(np.isfinite(e["train_loss"]) for e in details["epochs"])
    assert any(line.startswith(" > |epoch: 1| metrics for dev: correct / total = ") for line in finetune_log)
    assert any(line.startswith(" >> |epoch: 0| overall: correct / total = ") for line in finetune_log)


class _Crash(Exception):
    pass


def test_resume_equals_uninterrupted_run(bert_checkpoint, tmp_path, monkeypatch):
    """A run that stops right after its epoch-1 checkpoint and resumes from --load ends with the same weights,
    metrics and epoch history as an uninterrupted two-epoch run (dropout on: the RNG state is restored too)."""
    train = write_sst2(tmp_path / "train.tsv", 24)
    valid = write_sst2(tmp_path / "dev.tsv", 12, seed=1)
    args = _base(bert_checkpoint, train, valid, "--epochs", "2", "--lr", "1e-3", "--micro-batch-size", "4",
                 "--global-batch-size", "8")
    full = run_task(*args, "--save", tmp_path / "full")

    save = Finetuner.save

    def save_then_crash(self):
        save(self)
        raise _Crash

    monkeypatch.setattr(Finetuner, "save", save_then_crash)
    with pytest.raises(_Crash):
        run_task(*args, "--save", tmp_path / "part")
    monkeypatch.undo()
    resumed = run_task(*args, "--save", tmp_path / "part", "--load", tmp_path / "part")
    assert resumed.metrics == full.metrics
    assert resumed.details["epochs"] == full.details["epochs"]
    (a, tag_a, _), (b, tag_b, _) = read_checkpoint(tmp_path / "full"), read_checkpoint(tmp_path / "part")
    assert tag_a == tag_b == 6
    for name, tensor in a["model"].items():
        assert torch.equal(tensor, b["model"][name]), name


def test_epochs_zero_and_flag_errors(bert_checkpoint, tmp_path, finetune_log):
    """--epochs 0 evaluates the pretrained model with a fresh head (no training data needed); a checkpoint without
    the pooler gets a random one and a warning; missing --epochs, a train set smaller than one global batch and a
    --load of another task's run are refused with the flag to change."""
    valid = write_sst2(tmp_path / "dev.tsv", 10)
    result = run_task("--task", "SST2", "--valid-data", valid, "--pretrained-checkpoint", bert_checkpoint["load"],
                      "--epochs", "0")
    assert 0.0 <= result.metrics["accuracy"] <= 1.0 and result.metrics["total"] == 10
    assert [e["epoch"] for e in result.details["epochs"]] == [0]

    nopool = tmp_path / "nopool"
    shutil.copytree(bert_checkpoint["load"], nopool)
    payload, _, path = read_checkpoint(nopool)
    payload["model"] = {k: v for k, v in payload["model"].items() if not k.startswith(("pooler.", "binary_head."))}
    torch.save(payload, path)
    run_task("--task", "SST2", "--valid-data", valid, "--pretrained-checkpoint", nopool, "--epochs", "0")
    assert any("has no pooler weights" in line for line in finetune_log)

    base = ["--task", "SST2", "--valid-data", valid, "--pretrained-checkpoint", bert_checkpoint["load"]]
    with pytest.raises(ValueError, match="--epochs is required"):
        run_task(*base)
    with pytest.raises(ValueError, match="fewer than one global batch"):
        run_task(*base, "--train-data", valid, "--epochs", "1", "--lr", "1e-4", "--global-batch-size", "16")
    cola = tmp_path / "cola.tsv"
    cola.write_text("src\t1\t\tgo unto the land\nsrc\t0\t*\tland the go\n", encoding="utf-8")
    with pytest.raises(ValueError, match="is not a COLA fine-tuning checkpoint"):
        run_task("--task", "COLA", "--train-data", cola, "--valid-data", cola, "--epochs", "1", "--lr", "1e-4",
                 "--micro-batch-size", "2", "--load", bert_checkpoint["load"])


def _parallel_body(rank: int, world_size: int, argv: list[str]) -> dict:
    result = load_entry_script("tasks/main.py").main(argv)
    return {"metrics": result.metrics, "epochs": result.details["epochs"]}


def _losses(path: Path) -> list[float]:
    return [r["loss"] for r in map(json.loads, path.read_text().splitlines()) if r.get("kind") == "train"]


@pytest.mark.distributed
@pytest.mark.parametrize("layout", ["dp2", "tp2"])
def test_two_processes_equal_one(bert_checkpoint, tmp_path, layout):
    """DP=2 (micro 2, global 4) and TP=2 (micro 2, two accumulation steps) give one process's per-step losses and
    metrics (micro 2, two accumulation steps over the same global batch), including a partial last batch kept with
    --keep-last whose DP ranks hold one example each. Dropout off: its masks depend on the layout. DP=2 starts from
    the pretrained checkpoint; TP=2 from the same random initialization (the checkpoint is TP=1, and loading does
    not reshard), with a vocabulary padding that is equal at TP 1 and 2."""
    train = write_sst2(tmp_path / "train.tsv", 14)
    valid = write_sst2(tmp_path / "dev.tsv", 9, seed=1)
    argv = ["--task", "SST2", "--train-data", train, "--valid-data", valid, "--log-interval", "1", "--epochs", "2",
            "--lr", "1e-3", "--keep-last", "--micro-batch-size", "2", "--global-batch-size", "4",
            "--hidden-dropout", "0", "--attention-dropout", "0"]
    if layout == "dp2":
        argv += ["--pretrained-checkpoint", bert_checkpoint["load"]]
        parallel = ["--tensor-model-parallel-size", "1"]
    else:
        argv += ["--model-flavor", "debug", "--seq-length", "64", "--tokenizer-type", "BertWordPieceLowerCase",
                 "--vocab-file", bert_checkpoint["vocab_file"], "--make-vocab-size-divisible-by", "1"]
        parallel = ["--tensor-model-parallel-size", "2"]
    argv = [str(a) for a in argv]
    one = run_task(*argv, "--metrics-file", tmp_path / "one.jsonl")
    two = run_distributed(_parallel_body, 2, argv + [*parallel, "--metrics-file", str(tmp_path / "two.jsonl")],
                          timeout_s=300)
    # fp32: the layouts only regroup sums (per-rank partial sums, averaged gradients); measured gaps ~1e-7.
    np.testing.assert_allclose(_losses(tmp_path / "two.jsonl"), _losses(tmp_path / "one.jsonl"), rtol=1e-4)
    assert len(_losses(tmp_path / "one.jsonl")) == 8
    for rank_result in two:
        assert rank_result["metrics"] == pytest.approx(one.metrics, rel=1e-6)
        assert [e["metrics"] for e in rank_result["epochs"]] == [e["metrics"] for e in one.details["epochs"]]


@pytest.mark.parametrize("flags, message", [
    (["--pipeline-model-parallel-size", "2"], "does not support --pipeline-model-parallel-size"),
    (["--rampup-batch-size", "4", "4", "32"], "does not support --rampup-batch-size"),
    (["--moe-router-topk", "2"], "--moe-router-topk"),
], ids=["pipeline", "rampup", "refused Megatron flag"])
def test_training_features_the_task_runner_lacks_are_refused(bert_checkpoint, tmp_path, flags, message):
    """tasks/main.py refuses pipeline stages, a batch-size ramp-up and the Megatron flags pretraining refuses,
    naming the flag, instead of fine-tuning without them; --pretrained-checkpoint itself is not one of them."""
    train = write_sst2(tmp_path / "train.tsv", 16)
    with pytest.raises(NotImplementedError, match=message):
        run_task(*_base(bert_checkpoint, train, train, "--epochs", "1", "--global-batch-size", "8", *flags))

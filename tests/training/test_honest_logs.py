"""Honest numbers in the logs of ``pretrain_gpt.py`` runs: what the console and the metrics file say is what happened.

Pins: an fp16 step skipped while the loss scale settles logs its (finite) loss and is counted as skipped, not
printed as ``loss: NAN``; a nan validation loss has a nan perplexity, not the exp(20) cap; a finished run reports
its validation loss at the last iteration (once, also when that iteration was just evaluated), as Megatron
evaluates the validation split after training.
"""

from __future__ import annotations

import math

import pytest

from training.conftest import gpt_args, load_entry_script, read_metrics
from megatron.training.metrics import MetricsWriter

FAST = dict(eval_iters=1, lr_warmup_iters=1, log_interval=1)


def _console(logs) -> list[str]:
    """The metrics writer's console lines."""
    return [r.getMessage() for r in logs.records if r.name == "megatron.training.metrics"]


def test_fp16_skipped_steps_log_their_loss(tiny_corpus, tmp_path, megatron_logs):
    """With a loss scale far too large, the first fp16 steps overflow and are skipped: each such line prints the
    step's finite loss (the forward is unaffected by the scale) and 'number of skipped iterations: 1', and the
    metrics record holds that loss, not nan/null."""
    result = load_entry_script().main(gpt_args(
            tiny_corpus, train_iters=6, fp16=True, initial_loss_scale=2**40, hysteresis=1, eval_iters=0,
            lr_warmup_iters=1, log_interval=1, metrics_file=tmp_path / "m.jsonl"))
    train = [r for r in read_metrics(tmp_path / "m.jsonl") if r["kind"] == "train"]
    skipped = [r for r in train if r["skipped_iterations"] == 1]
    assert skipped, "a loss scale of 2**40 overflows the fp16 gradients"
    assert all(r["loss"] == result.train_losses[r["iteration"]] and math.isfinite(r["loss"]) for r in skipped)
    lines = [m for m in _console(megatron_logs) if m.lstrip().startswith("iteration")]
    assert not any("loss: NAN" in m for m in lines)
    assert sum("number of skipped iterations: 1" in m for m in lines) == len(skipped)


def test_nan_validation_loss_has_nan_perplexity(tiny_corpus, tmp_path, megatron_logs):
    """A diverged run's nan validation loss prints 'PPL: NAN' (not 4.85E+08, exp of the cap 20) and writes null for
    both in the metrics file; the writer gives inf for an inf loss and the capped value only for finite ones."""
    load_entry_script().main(gpt_args(
        tiny_corpus, train_iters=4, eval_interval=2, fp16=True, initial_loss_scale=1, lr=1e6, min_lr=0.0,
        metrics_file=tmp_path / "m.jsonl", **FAST))
    valid = [r for r in read_metrics(tmp_path / "m.jsonl") if r["kind"] == "valid"]
    assert valid[-1]["val_loss"] is None and valid[-1]["val_ppl"] is None
    text = "\n".join(_console(megatron_logs))
    assert "lm loss PPL: NAN" in text and "4.851652E+08" not in text

    writer = MetricsWriter(metrics_file=str(tmp_path / "w.jsonl"))
    writer.log_eval(1, float("inf"), "valid")
    writer.log_eval(2, 30.0, "valid")
    writer.close()
    assert "lm loss PPL: INF" in "\n".join(_console(megatron_logs))
    assert read_metrics(tmp_path / "w.jsonl")[-1]["val_ppl"] == pytest.approx(math.exp(20.0))


@pytest.mark.parametrize("eval_interval,expected", [(None, [6]), (4, [4, 6]), (3, [3, 6])])
def test_validation_after_training(eval_interval, expected, tiny_corpus, tmp_path):
    """A finished run evaluates the validation split at its last iteration, also without --eval-interval; when
    the last iteration was just evaluated it is not evaluated twice. An --exit-interval exit adds nothing."""
    result = load_entry_script().main(gpt_args(tiny_corpus, train_iters=6, eval_interval=eval_interval, skip_test=True,
                                               metrics_file=tmp_path / "m.jsonl", **FAST))
    assert sorted(result.val_losses) == expected
    valid = [r["iteration"] for r in read_metrics(tmp_path / "m.jsonl") if r["kind"] == "valid"]
    assert valid == expected
    exited = load_entry_script().main(gpt_args(tiny_corpus, train_iters=6, eval_interval=4, exit_interval=5, **FAST))
    assert exited.exit_reason == "exit_interval" and sorted(exited.val_losses) == [4]

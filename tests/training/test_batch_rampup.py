"""``--rampup-batch-size START INCREMENT SAMPLES``: Megatron's rule, its checks, and everything that counts batches.

Pins: the global batch of every iteration is megatron-core's ``RampupBatchsizeNumMicroBatchesCalculator`` value at
the consumed samples; bad ramps fail in validate() naming the flag; a ramped run counts consumed samples/tokens,
stops at --train-iters / --train-samples / --train-tokens, sets the LR from the consumed samples, logs the current
global batch and evaluates with the full one; a run saved mid-ramp resumes exactly (one process and DP=2, which also
equals one process accumulating the same global batches); curriculum learning keeps counting one curriculum step
per optimizer step and draws each step's batch at the ramp's size; random-LTD counts the layer tokens of the
actual, smaller batches; the DeepSpeed config's train_batch_size is the final batch.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from dist_utils import run_distributed
from mcore_utils import MCORE, requires_mcore
from training.conftest import gpt_args, load_entry_script, read_metrics
from training.test_data_efficiency import (  # noqa: F401 - fixtures
    LTD_SCHEDULE,
    SEQ,
    BatchSpy,
    de_args,
    de_config,
    kjv_analysis,
    seqlen_metric,
    vocab_rarity_metric,
)
from megatron.data_efficiency.curriculum.scheduler import fixed_root_difficulty
from megatron.data_efficiency.routing.scheduler import kept_tokens_fixed_linear
from megatron.training.checkpointing import read_tracker
from megatron.training.config import PretrainConfig
from megatron.training.data_efficiency import DATA_EFFICIENCY_SECTION, build_data_efficiency_extensions
from megatron.training.lr_schedule import compute_lr
from megatron.training.microbatches import BatchSizeSchedule

# Global batch 8 reached from 2 in steps of 2 over 24 samples (one increment per 8 samples): 2 2 2 2 4 4 6 6 8 ...
RAMP = dict(global_batch_size=8, rampup_batch_size="2 2 24", train_iters=None, lr_warmup_iters=None)
RAMP_SIZES = [2, 2, 2, 2, 4, 4, 6, 6, 8, 8, 8, 8]


def _ramp_args(corpus, **flags) -> list[str]:
    argv = gpt_args(corpus, **{**RAMP, **flags})
    i = argv.index("--rampup-batch-size")
    return argv[:i + 1] + argv[i + 1].split() + argv[i + 2:]  # the flag takes three words


@requires_mcore
def test_schedule_matches_megatron_core_calculator(tmp_path):
    """Our global batch at every consumed-sample count equals megatron-core's ramp-up calculator's (its float
    increment rule included), for ramps whose increments do and do not divide the ramp samples evenly."""
    cases = [(1536, 1, 8, (16, 16, 5859375)), (8, 2, 1, (2, 2, 24)), (60, 2, 3, (12, 6, 1000)), (40, 4, 1, (8, 8, 7))]
    script = """
import json, sys
from megatron.core.num_microbatches_calculator import RampupBatchsizeNumMicroBatchesCalculator as Calc
out = []
for gbs, mbs, dp, (start, inc, samples), points in json.loads(sys.argv[1]):
    calc = Calc(gbs, mbs, dp, False, 1, start, inc, samples)
    row = []
    for c in points:
        calc.update(c, consistency_check=True)
        row.append(calc.get_current_global_batch_size())
    out.append(row)
print(json.dumps(out))
"""
    points = [sorted({*range(0, 200), *np.linspace(0, 2 * r[2], 300).astype(int).tolist(), r[2], r[2] + 1})
              for *_, r in cases]
    payload = json.dumps([[*c, p] for c, p in zip(cases, points)])
    proc = subprocess.run([sys.executable, "-c", script, payload], cwd=tmp_path, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(MCORE)}, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    theirs = json.loads(proc.stdout.strip().splitlines()[-1])
    for (gbs, mbs, dp, ramp), p, want in zip(cases, points, theirs):
        ours = BatchSizeSchedule(gbs, mbs, dp, ramp)
        assert [ours.at(c) for c in p] == want


def test_schedule_counts_iterations_and_samples():
    """samples_after / iterations_within / samples_reaching agree with walking the ramp one iteration at a time."""
    batches = BatchSizeSchedule(8, 2, 1, (2, 2, 24))
    walk = [0]
    for _ in range(40):
        walk.append(walk[-1] + batches.at(walk[-1]))
    assert [batches.at(c) for c in walk[:12]] == RAMP_SIZES
    assert [batches.samples_after(n) for n in range(40)] == walk[:40]
    assert [batches.iterations_within(s) for s in (0, 1, 2, 27, 28, 60, 61)] == [0, 0, 1, 7, 8, 12, 12]
    assert [batches.samples_reaching(s) for s in (0, 1, 27, 28, 29)] == [0, 2, 28, 28, 36]
    constant = BatchSizeSchedule(8, 2, 1)
    assert constant.samples_after(5) == 40 and constant.iterations_within(47) == 5 and constant.at(10**9) == 8


BAD = [
    ("2 2", 8, 2, 1, r"expected three values, START INCREMENT SAMPLES"),
    ("8 2 24", 8, 2, 1, r"START \(8\) must be smaller than the global batch size \(8"),
    ("2 4 24", 8, 2, 1, r"minus START \(2\) = 6 must be divisible by INCREMENT \(4\)"),
    ("3 1 24", 8, 1, 1, None),
    ("3 1 24", 8, 2, 1, r"START \(3\) must be a multiple of micro_batch_size \(2\) x data-parallel size \(1\) = 2"),
    ("4 2 24", 8, 2, 2, r"INCREMENT \(2\) must be a multiple of micro_batch_size \(2\) x data-parallel size \(2\)"),
    ("0 2 24", 8, 2, 1, r"START \(0\) and INCREMENT \(2\) must be >= 1"),
]


@pytest.mark.parametrize("ramp,gbs,mbs,world,message", BAD)
def test_bad_ramps_fail_in_validate_naming_the_flag(tiny_corpus, ramp, gbs, mbs, world, message):
    """Megatron's ramp checks (three values, ends at the global batch, whole increments, every size whole
    micro-batches on every data-parallel rank) fail before any process group, naming --rampup-batch-size."""
    argv = _ramp_args(tiny_corpus, rampup_batch_size=ramp, global_batch_size=gbs, micro_batch_size=mbs,
                      train_samples=64)
    cfg = PretrainConfig.from_args(argv)
    if message is None:
        cfg.validate(world_size=world)
        return
    with pytest.raises(ValueError, match=r"--rampup-batch-size .*" + message):
        cfg.validate(world_size=world)


@pytest.mark.slow
def test_ramp_counts_samples_stops_sets_lr_and_resumes_mid_ramp(tiny_corpus, tmp_path):
    """--train-samples 60 trains the 12 iterations of 2 2 2 2 4 4 6 6 8 8 8 8 samples; every log line has the
    current global batch and the consumed samples/tokens; the LR is the sample-based schedule at the consumed
    samples (warmup 10, cosine to the end); validation runs full global batches; 5 iterations, a checkpoint and a
    resume give the same losses (dropout on) as the run straight through."""
    pg = load_entry_script()
    flags = dict(train_samples=60, lr_warmup_samples=10, eval_interval=10)
    straight = pg.main(_ramp_args(tiny_corpus, metrics_file=tmp_path / "a.jsonl", **flags))
    assert (straight.iteration, straight.consumed_samples, straight.consumed_tokens) == (12, 60, 60 * SEQ)
    train = [r for r in read_metrics(tmp_path / "a.jsonl") if r["kind"] == "train"]
    assert [r["global_batch_size"] for r in train] == RAMP_SIZES
    consumed = np.cumsum(RAMP_SIZES).tolist()
    assert [r["consumed_samples"] for r in train] == consumed
    assert [r["consumed_tokens"] for r in train] == [c * SEQ for c in consumed]
    spec = PretrainConfig.from_args(_ramp_args(tiny_corpus, **flags)).validate(world_size=1).lr_schedule_spec()
    assert (spec.warmup_samples, spec.decay_samples) == (10, 60)
    assert [r["lr"] for r in train] == pytest.approx([compute_lr(spec, c, c * SEQ, None) for c in consumed])
    assert sorted(straight.val_losses) == [10, 12]

    ckpt = tmp_path / "ckpt"
    first = pg.main(_ramp_args(tiny_corpus, save=ckpt, exit_interval=5, **flags))
    assert first.exit_reason == "exit_interval" and first.consumed_samples == 12 and read_tracker(ckpt) == 5
    second = pg.main(_ramp_args(tiny_corpus, save=ckpt, load=ckpt, metrics_file=tmp_path / "b.jsonl", **flags))
    assert {**first.train_losses, **second.train_losses} == straight.train_losses
    assert second.val_losses == straight.val_losses and second.test_loss == straight.test_loss
    resumed = [r["global_batch_size"] for r in read_metrics(tmp_path / "b.jsonl") if r["kind"] == "train"]
    assert resumed == RAMP_SIZES[5:]


@pytest.mark.parametrize("stop,iterations,decay", [(dict(train_iters=10), 10, ("decay_samples", 44)),
                                                   (dict(train_samples=61), 12, ("decay_samples", 61)),
                                                   (dict(train_tokens=28 * SEQ + 1), 9, ("decay_tokens", 28 * SEQ + 1))])
def test_ramp_stops_at_each_training_length(tiny_corpus, tmp_path, stop, iterations, decay):
    """--train-iters counts iterations (here also with a ramp, which Megatron refuses) and its default decay is the
    samples of those iterations under the ramp (44, not 10 x 8); --train-samples never goes past its budget;
    --train-tokens stops at the first iteration reaching it; the logged lr is the schedule's at the consumed
    samples/tokens, --min-lr once the decay ends at the last iteration."""
    argv = _ramp_args(tiny_corpus, eval_iters=0, metrics_file=tmp_path / "m.jsonl", **stop)
    result = load_entry_script().main(argv)
    train = [r for r in read_metrics(tmp_path / "m.jsonl") if r["kind"] == "train"]
    assert result.iteration == iterations and [r["global_batch_size"] for r in train] == RAMP_SIZES[:iterations]
    spec = PretrainConfig.from_args(argv).validate(world_size=1).lr_schedule_spec()
    assert getattr(spec, decay[0]) == decay[1]
    assert [r["lr"] for r in train] == pytest.approx(
        [compute_lr(spec, r["consumed_samples"], r["consumed_tokens"], 0) for r in train])
    if decay[1] != 61:
        assert train[-1]["lr"] == pytest.approx(1e-4)


def _ramp_dp_body(rank: int, world_size: int, argv: list[str], ckpt: str) -> tuple[dict, dict]:
    torch.set_num_threads(1)
    pg = load_entry_script()
    straight = pg.main(argv).train_losses
    first = pg.main([*argv, "--save", ckpt, "--exit-interval", "4"])
    second = pg.main([*argv, "--save", ckpt, "--load", ckpt])
    return straight, {**first.train_losses, **second.train_losses}


@pytest.mark.slow
@pytest.mark.distributed
def test_ramp_with_two_data_parallel_ranks_resumes_exactly_and_matches_one_process(tiny_corpus, tmp_path):
    """DP=2 with the ramp 4 4 24 to 12 (1, 2, then 3 micro-batches per rank): a run saved mid-ramp and resumed
    equals the run straight through bit for bit, and both equal one process accumulating the same global batches."""
    flags = dict(global_batch_size=12, rampup_batch_size="4 4 24", train_samples=72, lr_warmup_samples=8,
                 eval_iters=0, hidden_dropout=0.0, attention_dropout=0.0)
    reference = load_entry_script().main(_ramp_args(tiny_corpus, **flags)).train_losses
    assert len(reference) == 8  # 4 4 4 8 8 12 12 12
    argv = _ramp_args(tiny_corpus, **flags)
    for straight, resumed in run_distributed(_ramp_dp_body, 2, argv, str(tmp_path / "ckpt"), timeout_s=400):
        assert resumed == straight
        # fp32 sums in another order (DP all-reduce): agreement to ~1e-6 relative, as tests/training/test_pretrain.py.
        assert straight == pytest.approx(reference, rel=1e-5)


@pytest.mark.slow
def test_curriculum_steps_once_per_iteration_and_resumes_mid_ramp(tiny_corpus, kjv_analysis, tmp_path, monkeypatch):
    """CL (vocab rarity + seqlen truncation) under the ramp: iteration k trains a global batch of the ramp's size at
    curriculum step k with that step's difficulties; saved mid-ramp and resumed, the same samples, difficulties and
    losses follow; random-LTD counts the layer tokens of the actual (ramp-sized, truncated) batches."""
    metrics = {"vocab_rarity": vocab_rarity_metric(kjv_analysis), "seqlen_truncate": seqlen_metric()}
    config = {**de_config(metrics, ltd_layers=[1, 2]), "train_batch_size": 8}
    flags = dict(train_samples=60, lr_warmup_samples=10, eval_iters=0,
                 **de_args(tmp_path / "ds.json", config))
    pg = load_entry_script()
    spy = BatchSpy(monkeypatch)
    straight = pg.main(_ramp_args(tiny_corpus, metrics_file=tmp_path / "a.jsonl", **flags))
    records, spy.records[:] = list(spy.records), []
    per_iteration = [sum(len(r["indices"]) for r in records if r["iteration"] == k) for k in range(1, 13)]
    assert per_iteration == RAMP_SIZES
    for r in records:  # the difficulties of curriculum step k = iteration k, whatever the batch size
        k = r["iteration"]
        assert r["difficulty"] == {
            "vocab_rarity": fixed_root_difficulty(k, min_difficulty=10, max_difficulty=100, total_curriculum_step=16,
                                                  difficulty_step=1, root_degree=2),
            "seqlen_truncate": fixed_root_difficulty(k, min_difficulty=8, max_difficulty=SEQ,
                                                     total_curriculum_step=16, difficulty_step=8)}
        assert r["shape"] == (2, r["difficulty"]["seqlen_truncate"])
    train = [r for r in read_metrics(tmp_path / "a.jsonl") if r["kind"] == "train"]
    layers, n = 4, 2
    layer_tokens = np.cumsum([b * (s * (layers - n) + min(kept_tokens_fixed_linear(k - 1, **LTD_SCHEDULE), s) * n)
                              for k, (b, s) in enumerate(zip(RAMP_SIZES, [t["difficulty"]["seqlen_truncate"]
                                                                          for t in train]), start=1)])
    assert [t["consumed_layer_tokens"] for t in train] == layer_tokens.tolist()

    ckpt = tmp_path / "ckpt"
    first = pg.main(_ramp_args(tiny_corpus, save=ckpt, exit_interval=6, **flags))
    second = pg.main(_ramp_args(tiny_corpus, save=ckpt, load=ckpt, **flags))
    assert spy.records == records
    assert {**first.train_losses, **second.train_losses} == straight.train_losses


def test_deepspeed_train_batch_size_is_the_final_batch(tiny_corpus, tmp_path):
    """With a ramp, the DeepSpeed JSON's train_batch_size means the batch the ramp ends at (DeepSpeed's engine is
    told each iteration's size, as Megatron-DeepSpeed does): it fills --global-batch-size, agrees with it when both
    are given, and a JSON naming the start size contradicts the ramp with an error naming the flag."""
    def build(train_batch_size: int, **flags):
        path = tmp_path / "ds.json"
        path.write_text(json.dumps({"train_batch_size": train_batch_size, "gradient_accumulation_steps": "auto"}))
        argv = _ramp_args(tiny_corpus, train_samples=64, deepspeed_config=path, **flags)
        cfg = PretrainConfig.from_args(argv, extra_sections=DATA_EFFICIENCY_SECTION)
        build_data_efficiency_extensions(cfg)
        return cfg.validate(world_size=1)

    cfg = build(8, global_batch_size=None)
    assert cfg.global_batch_size == 8 and cfg.batch_schedule().at(0) == 2 and cfg.num_microbatches == 4
    assert build(8).global_batch_size == 8
    with pytest.raises(ValueError, match=r"train_batch_size = 2 conflicts with --global-batch-size 8"):
        build(2)
    with pytest.raises(ValueError, match=r"--rampup-batch-size 2 2 24: START \(2\) must be smaller"):
        build(2, global_batch_size=None)

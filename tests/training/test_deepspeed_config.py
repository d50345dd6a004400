"""The whole DeepSpeed config of a Megatron-DeepSpeed recipe: batch sizes, precision and loss scaler, ZeRO stage and
gradient clipping are applied to the run or checked against the flags (``training.deepspeed_config``).

Pins: a recipe's fp16/ZeRO-1/clipping/batch settings reach the training config; a JSON value and a flag that
disagree is an error naming both; ``"auto"`` leaves the flags in charge; an enabled fp16 section takes DeepSpeed's
loss-scaler defaults for keys it leaves out (unless their flag is given); ZeRO-2/3, offload and optimizer/scheduler
sections are refused with what to use instead; unknown keys are reported once without failing.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest

from megatron.training.config import PretrainConfig
from megatron.training.deepspeed_config import apply_deepspeed_config

BASE = ["--model-flavor", "debug", "--seq-length", "32", "--train-iters", "4", "--lr", "1e-3", "--mock-data"]

# Megatron-DeepSpeed's data-efficiency template, top-level keys (GBSIZE=8, MBSIZE=2, ZERO_STAGE=1).
RECIPE = {
    "train_batch_size": 8, "train_micro_batch_size_per_gpu": 2, "steps_per_print": 10,
    "zero_optimization": {"stage": 1}, "gradient_clipping": 0.5, "prescale_gradients": False,
    "fp16": {"enabled": True, "loss_scale": 0, "loss_scale_window": 500, "hysteresis": 2, "min_loss_scale": 1,
             "initial_scale_power": 11},
    "wall_clock_breakdown": False, "dataloader_drop_last": True,
}


def _cfg(tmp_path: Path, ds: dict[str, Any], *flags: str, world_size: int = 1) -> PretrainConfig:
    """Parse BASE + flags, apply the DeepSpeed JSON ``ds`` and validate for ``world_size`` processes."""
    path = tmp_path / "ds.json"
    path.write_text(json.dumps(ds), encoding="utf-8")
    cfg = PretrainConfig.from_args([*BASE, *flags])
    apply_deepspeed_config(cfg, str(path))
    return cfg.validate(world_size=world_size)


def test_recipe_settings_are_applied(tmp_path):
    """The template's batch sizes, fp16 loss scaler (2^11, window 500, hysteresis 2, min 1), ZeRO-1 and clipping
    become the run's settings when no flag says otherwise; at DP=2 that is 2 micro-batches per step."""
    cfg = _cfg(tmp_path, RECIPE, world_size=2)
    t = cfg.training
    assert (t.global_batch_size, t.micro_batch_size, cfg.num_microbatches) == (8, 2, 2)
    assert t.fp16 and not t.bf16 and t.loss_scale is None
    assert (t.initial_loss_scale, t.loss_scale_window, t.hysteresis, t.min_loss_scale) == (2048.0, 500, 2, 1.0)
    assert cfg.compat.zero_stage == 1 and cfg.parallel.use_distributed_optimizer
    assert t.clip_grad == 0.5 and cfg.model.params_dtype == "float16"


def test_recipe_flags_that_agree_are_accepted(tmp_path):
    """The same values given again by the recipe's own flags (--fp16, --hysteresis 2, --zero-stage 1, ...) agree."""
    cfg = _cfg(tmp_path, RECIPE, "--fp16", "--hysteresis", "2", "--zero-stage", "1", "--clip-grad", "0.5",
               "--micro-batch-size", "2", "--global-batch-size", "8", world_size=2)
    assert cfg.training.fp16 and cfg.training.global_batch_size == 8


CONFLICTS = [
    ({"train_batch_size": 8}, ["--global-batch-size", "4"],
     r"train_batch_size = 8 conflicts with --global-batch-size 4"),
    ({"train_micro_batch_size_per_gpu": 2}, ["--micro-batch-size", "1"],
     r"train_micro_batch_size_per_gpu = 2 conflicts with --micro-batch-size 1"),
    ({"gradient_clipping": 1.0}, ["--clip-grad", "0.3"], r"gradient_clipping = 1.0 conflicts with --clip-grad 0.3"),
    ({"fp16": {"enabled": True}}, ["--bf16"], r"fp16.enabled = true conflicts with --bf16"),
    ({"fp16": {"enabled": False}}, ["--fp16"], r"fp16.enabled = false conflicts with --fp16;"),
    ({"fp16": {"enabled": True, "hysteresis": 4}}, ["--hysteresis", "2"],
     r"fp16.hysteresis = 4 conflicts with --hysteresis 2"),
    ({"zero_optimization": {"stage": 0}}, ["--zero-stage", "1"],
     r"zero_optimization.stage = 0 conflicts with --zero-stage 1"),
    ({"fp16": {"enabled": True}, "bf16": {"enabled": True}}, [], r"fp16.enabled and bf16.enabled are both true"),
    ({"train_batch_size": 0}, [], r"train_batch_size is 0; it must be an integer >= 1"),
]


@pytest.mark.parametrize("ds,flags,message", CONFLICTS, ids=[c[2][:30] for c in CONFLICTS])
def test_conflicting_values_name_both(ds, flags, message, tmp_path):
    """A JSON value and a flag saying different things is a ValueError naming the key, the flag and both values."""
    with pytest.raises(ValueError, match=message):
        _cfg(tmp_path, ds, *flags)


def test_gradient_accumulation_is_checked_against_the_data_parallel_size(tmp_path):
    """gradient_accumulation_steps x micro batch x DP fills an open global batch and must match a given one."""
    cfg = _cfg(tmp_path, {"train_micro_batch_size_per_gpu": 2, "gradient_accumulation_steps": 3}, world_size=2)
    assert (cfg.training.global_batch_size, cfg.num_microbatches) == (12, 3)
    with pytest.raises(ValueError, match=r"gradient_accumulation_steps \(3\) x micro batch size \(2\) x data-parallel "
                                         r"size \(2\) = 12, but the global batch size is 8"):
        _cfg(tmp_path, {"train_batch_size": 8, "train_micro_batch_size_per_gpu": 2,
                        "gradient_accumulation_steps": 3}, world_size=2)


def test_auto_leaves_the_flags_in_charge(tmp_path):
    """"auto" values (as DeepSpeed's integrations write them) take the flags' values."""
    ds = {"train_batch_size": "auto", "train_micro_batch_size_per_gpu": "auto", "gradient_clipping": "auto",
          "fp16": {"enabled": "auto"}, "zero_optimization": {"stage": "auto"}}
    cfg = _cfg(tmp_path, ds, "--micro-batch-size", "2", "--global-batch-size", "4", "--clip-grad", "0.7")
    t = cfg.training
    assert (t.micro_batch_size, t.global_batch_size, t.clip_grad, t.fp16) == (2, 4, 0.7, False)


def test_fp16_section_takes_deepspeeds_scaler_defaults(tmp_path):
    """An enabled fp16 section without scaler keys gets DeepSpeed's defaults (2^16, 1000, 2, 1), not Megatron's
    2^32; a flag given for a key the JSON leaves out wins; loss_scale > 0 is a static scale."""
    t = _cfg(tmp_path, {"fp16": {"enabled": True}}).training
    assert (t.initial_loss_scale, t.loss_scale_window, t.hysteresis, t.min_loss_scale) == (2.0**16, 1000, 2, 1.0)
    t = _cfg(tmp_path, {"fp16": {"enabled": True}}, "--loss-scale-window", "200").training
    assert t.loss_scale_window == 200
    t = _cfg(tmp_path, {"fp16": {"enabled": True, "loss_scale": 128}}).training
    assert t.loss_scale == 128.0
    t = _cfg(tmp_path, {"bf16": {"enabled": True}}).training
    assert t.bf16 and not t.fp16


REFUSED = [
    ({"zero_optimization": {"stage": 2}}, r"zero_optimization.stage 2 is not supported .*use stage 1"),
    ({"zero_optimization": {"stage": 3}}, r"zero_optimization.stage 3 is not supported"),
    ({"zero_optimization": {"stage": 1, "offload_optimizer": {"device": "cpu"}}}, r"offload_optimizer offloads"),
    ({"optimizer": {"type": "Adam"}}, r"optimizer is not supported: the optimizer comes from the flags"),
    ({"scheduler": {"type": "WarmupLR"}}, r"scheduler is not supported: the learning-rate schedule comes from"),
    ({"fp16": {"enabled": True, "consecutive_hysteresis": True}}, r"fp16.consecutive_hysteresis = true is not"),
]


@pytest.mark.parametrize("ds,message", REFUSED, ids=[r[1][:24] for r in REFUSED])
def test_unsupported_settings_are_refused(ds, message, tmp_path):
    """ZeRO-2/3, offload, a JSON optimizer or scheduler, consecutive hysteresis: NotImplementedError saying what
    to use instead, before any process group exists."""
    with pytest.raises(NotImplementedError, match=message):
        _cfg(tmp_path, ds)


def test_unknown_keys_are_reported_once_and_ignored_keys_listed(tmp_path, megatron_logs):
    """Unknown top-level and section keys give one warning naming them all; keys without effect here are listed
    once with the reason; neither stops the run."""
    megatron_logs.set_level(logging.INFO, logger="megatron")
    ds = {**RECIPE, "train_batch_sise": 8, "fp16": {**RECIPE["fp16"], "loss_scale_windw": 4}, "wandb": {}}
    _cfg(tmp_path, ds, world_size=2)
    # (a set: the fixture's handler may see a record twice, through the megatron logger and the root)
    warnings = list({r.getMessage() for r in megatron_logs.records if r.levelno == logging.WARNING})
    assert len(warnings) == 1 and "train_batch_sise" in warnings[0] and "fp16.loss_scale_windw" in warnings[0]
    notes = list({r.getMessage() for r in megatron_logs.records if "accepted without effect" in r.getMessage()})
    assert len(notes) == 1 and "steps_per_print" in notes[0] and "wandb" in notes[0]


def test_a_config_without_data_efficiency_is_a_whole_deepspeed_config(tmp_path):
    """A baseline recipe's JSON (no data_efficiency key) parses as a DeepSpeed config with everything off."""
    from megatron.data_efficiency.config import parse_data_efficiency_config

    de = parse_data_efficiency_config(RECIPE)
    assert not de.curriculum_enabled and not de.random_ltd_enabled


@pytest.mark.parametrize("config", sorted(p.name for p in (Path(__file__).resolve().parents[2] / "examples").glob(
    "*/gpt_1.3b_*.json")))
def test_example_configs_agree_with_their_launch_flags(config, tmp_path):
    """The 1.3B recipes' DeepSpeed JSONs and examples/curriculum/gpt_1.3b_launch.sh's flags (MBS 4, global 512,
    fp16 2^11/500/2/1, ZeRO-1, clip 1.0) agree, so the launcher runs (micro batch "auto": MBS decides)."""
    root = Path(__file__).resolve().parents[2] / "examples"
    ds = json.loads(next(root.glob(f"*/{config}")).read_text(encoding="utf-8"))
    cfg = _cfg(tmp_path, ds, "--micro-batch-size", "4", "--global-batch-size", "512", "--clip-grad", "1.0", "--fp16",
               "--initial-loss-scale", "2048", "--loss-scale-window", "500", "--hysteresis", "2",
               "--min-loss-scale", "1", "--zero-stage", "1", world_size=8)
    assert cfg.num_microbatches == 16 and cfg.training.initial_loss_scale == 2048.0

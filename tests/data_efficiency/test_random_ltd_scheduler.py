"""Tests of the random-LTD keep schedule (golden values, rounding, clamps), its config validation, the layer-token
accounting and checkpoint resume of ``RandomLTDScheduler``."""

from __future__ import annotations

import io

import pytest
import torch

from megatron.data_efficiency.config import (
    RandomLTDConfig,
    RandomLTDScheduleConfig,
    RandomLTDScheduleSettings,
    parse_data_efficiency_config,
)
from megatron.data_efficiency.routing.scheduler import RandomLTDScheduler, kept_tokens_fixed_linear


def _config(min_value=128, max_value=2048, require_steps=200_000, seq_per_step=16, layers=24, ltd_ids=None):
    ids = list(range(1, layers - 1)) if ltd_ids is None else ltd_ids
    return RandomLTDConfig(
        enabled=True,
        total_layer_num=layers,
        random_ltd_layer_num=len(ids),
        random_ltd_layer_id=ids,
        model_mask_name="attention_mask",
        model_type="decoder",
        hidden_state_order="seq_batch_dim",
        random_ltd_schedule=RandomLTDScheduleConfig(
            min_value=min_value,
            max_value=max_value,
            schedule_type="fixed_linear",
            schedule_config=RandomLTDScheduleSettings(require_steps=require_steps, seq_per_step=seq_per_step),
        ),
    )


def test_golden_values_of_the_gpt_recipe():
    """min 128, max 2048, require_steps 200k, seq_per_step 16 at steps 0/1000/100k/200k/300k give 128, 128, 1088,
    2048, 2048 (the values DeepSpeed's RandomLTDScheduler produces for the paper's GPT-3 recipe)."""
    sched = RandomLTDScheduler(_config())
    assert [sched.kept_tokens(s) for s in (0, 1000, 100_000, 200_000, 300_000)] == [128, 128, 1088, 2048, 2048]


def test_schedule_is_monotone_multiple_of_step_and_bounded():
    """Over every step the kept length never decreases, stays in [min, max], and is a multiple of seq_per_step
    whenever it is above min_value."""
    kw = dict(min_value=80, max_value=512, require_steps=1000, seq_per_step=16)
    values = [kept_tokens_fixed_linear(s, **kw) for s in range(1200)]
    assert values[0] == 80 and values[-1] == 512
    assert all(a <= b for a, b in zip(values, values[1:]))
    assert all(v == 80 or v % 16 == 0 for v in values)
    assert all(80 <= v <= 512 for v in values)


def test_min_value_is_a_floor_unlike_deepspeed():
    """min 8 with seq_per_step 16 keeps 8 tokens at step 0 (DeepSpeed rounds it down to 0, PR #8529)."""
    kw = dict(min_value=8, max_value=64, require_steps=100, seq_per_step=16)
    assert kept_tokens_fixed_linear(0, **kw) == 8
    assert kept_tokens_fixed_linear(30, **kw) == 16  # 8 + 56 * 30 // 100 = 24 -> 16
    assert kept_tokens_fixed_linear(100, **kw) == 64


def test_integer_formula_is_exact_where_floats_round_down():
    """The schedule uses exact integer arithmetic: step/require_steps*(max-min) in floats can land just below an
    integer (here 0.29 * 100 = 28.999...), which DeepSpeed's floor would turn into one token less."""
    kw = dict(min_value=1, max_value=101, require_steps=100, seq_per_step=1)
    assert kept_tokens_fixed_linear(29, **kw) == 1 + 29
    assert int((29 / 100) * 100 + 1) == 29  # the float formula's answer, for the record


def test_kept_tokens_never_exceed_sequence_length():
    """A curriculum-truncated batch shorter than the schedule's value keeps all its tokens (r is capped at S)."""
    sched = RandomLTDScheduler(_config())
    assert sched.kept_tokens(150_000, seq_length=512) == 512
    assert sched.kept_tokens(0, seq_length=512) == 128


def test_layer_token_accounting():
    """Layer tokens of a step are B * (S * (L - n) + r * n) and effective tokens B * ((S*(L-n) + r*n) // L); both
    use the batch's actual length and count r = min(r, S)."""
    sched = RandomLTDScheduler(_config())
    assert sched.update(0) == 128
    assert sched.layer_tokens(2048, 512) == 512 * (2048 * 2 + 128 * 22)
    assert sched.effective_tokens(2048, 512) == 512 * ((2048 * 2 + 128 * 22) // 24)
    assert sched.consume(2048, 512) == sched.consumed_layer_tokens == 512 * (2048 * 2 + 128 * 22)
    sched.update(100_000)
    sched.consume(100, 4)  # truncated batch: S = 100 < r = 1088, so every layer sees all 100 tokens
    assert sched.consumed_layer_tokens == 512 * (2048 * 2 + 128 * 22) + 4 * 100 * 24
    assert sched.effective_tokens(100, 4) == 400


def test_state_dict_resume_matches_uninterrupted_run():
    """Saving after k steps and loading into a fresh scheduler (through torch.save / weights_only load) continues
    with the same kept lengths and consumed layer tokens as a run that never stopped."""
    def run(sched, steps):
        for step in steps:
            sched.update(step)
            sched.consume(2048, 8)
        return sched

    full = run(RandomLTDScheduler(_config(require_steps=50)), range(80))
    first = run(RandomLTDScheduler(_config(require_steps=50)), range(30))
    buf = io.BytesIO()
    torch.save(first.state_dict(), buf)
    buf.seek(0)
    resumed = RandomLTDScheduler(_config(require_steps=50))
    resumed.load_state_dict(torch.load(buf, weights_only=True))
    assert resumed.current_step == 29 and resumed.current_value == first.current_value
    run(resumed, range(30, 80))
    assert resumed.state_dict() == full.state_dict()
    assert resumed.current_value == full.current_value == 2048
    with pytest.raises(ValueError, match="missing keys"):
        resumed.load_state_dict({"current_step": 3})


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(min_value=0), "min_value"),
        (dict(min_value=600, max_value=512), "min_value: 600 is greater than max_value 512"),
        (dict(require_steps=0), "require_steps"),
        (dict(seq_per_step=0), "seq_per_step"),
        (dict(ltd_ids=[0, 24]), "random_ltd_layer_id"),
        (dict(ltd_ids=[3, 3]), "random_ltd_layer_id"),
        (dict(ltd_ids=[]), "random_ltd_layer_id: is empty"),
    ],
)
def test_config_validation_names_the_field(kwargs, match):
    """Impossible schedules and layer lists raise ValueError naming the DeepSpeed field and the values."""
    with pytest.raises(ValueError, match=match):
        _config(**kwargs)


def test_scheduler_takes_the_parsed_json_block_and_checks_layer_count():
    """The parsed data_routing.random_ltd block is what the scheduler takes (no copy into a second config class);
    its layer ids keep their JSON order and ``layer_ids`` sorts them; a layer count that disagrees with the id list
    is an error; a disabled block builds no scheduler."""
    block = {"enabled": True, "total_layer_num": 12, "random_ltd_layer_num": 2, "random_ltd_layer_id": [5, 2],
             "model_mask_name": "attention_mask", "model_type": "decoder", "hidden_state_order": "seq_batch_dim",
             "random_ltd_schedule": {"min_value": 64, "max_value": 256, "schedule_type": "fixed_linear",
                                     "schedule_config": {"require_steps": 10, "seq_per_step": 8}}}
    cfg = parse_data_efficiency_config(
        {"enabled": True, "data_routing": {"enabled": True, "random_ltd": block}}).data_routing.random_ltd
    assert cfg.random_ltd_layer_id == [5, 2] and cfg.layer_ids == [2, 5]
    sched = RandomLTDScheduler(cfg)
    assert sched.config is cfg and sched.kept_tokens(5) == 160
    with pytest.raises(ValueError, match="random_ltd_layer_num"):
        RandomLTDConfig(**{**vars(cfg), "random_ltd_layer_num": 3})
    with pytest.raises(ValueError, match="random_ltd.enabled is false"):
        RandomLTDScheduler(RandomLTDConfig())
"""The paper's cases as data and the scaled recipes: shared runs, the scaling rules written in recipes.py, and
DeepSpeed configs that our own config parser accepts."""

from __future__ import annotations

import pytest

from megatron.data_efficiency.config import parse_data_efficiency_config
from megatron.reproduce import recipes
from megatron.reproduce.paper import CLAIMS, TABLES, RunSpec, cases_of, runs_of
from megatron.reproduce.recipes import SCALES


def test_cases_share_runs_and_claims_name_existing_cases():
    """Table 1's, 3's and 7's baselines are one run; Table 7's CL best is Table 1's case 5; Table 6 adds the GPT
    baseline it fine-tunes; every claim compares two cases of its own table."""
    cases = cases_of([1, 3, 6, 7])
    runs = runs_of(cases)
    keys = [r.key for r in runs]
    assert len(keys) == len(set(keys))
    by_case = {(c.table, c.number): c.run.key for c in cases}
    assert by_case[1, 1] == by_case[3, 1] == by_case[7, 1] == "gpt_base_d100"
    assert by_case[1, 5] == by_case[7, 2] == "gpt_voc+trunc_d100"
    assert keys.index("gpt_base_d100") < keys.index("gpt_base_ft_d100")
    assert len(runs_of(cases_of([6]))) == 3  # two fine-tunings and the baseline they start from
    for claim in CLAIMS:
        numbers = {c.number for c in TABLES[claim.table]}
        assert {claim.first, claim.second} <= numbers, claim
    with pytest.raises(ValueError, match=r"tables \[5\] are not reproduced"):
        cases_of([5])


def _flag(flags: list[str], name: str) -> str:
    return flags[flags.index(name) + 1]


def test_scaling_rules():
    """Peak LR x 1/data fraction, warm-up 1% of the 100% run's tokens, token budget = fraction of the 100% run,
    curriculum over 38.4% and random-LTD over 69.9% of the 100% run's steps (both scaled with the data), truncation
    from 1/25.6 and kept tokens from 1/16 of the sequence (multiples of 8); the accounting control stops at the
    baseline's steps with its LR schedule over them."""
    scale = SCALES["cpu"]
    m = scale.gpt
    half = RunSpec("gpt", 0.5, ("vocab_rarity", "seqlen_truncate"), True)
    flags = recipes.pretrain_flags(half, scale, 7, data_path="d", tokenizer=[], ds_config="c.json")
    assert float(_flag(flags, "--lr")) == pytest.approx(2 * m.lr)
    assert int(_flag(flags, "--train-tokens")) == m.tokens // 2
    assert int(_flag(flags, "--lr-warmup-tokens")) == int(0.01 * m.tokens)
    assert {"--random-ltd", "--data-efficiency-curriculum-learning", "--deepspeed"} <= set(flags)
    cfg = recipes.data_efficiency_config(half, scale, 7, "idx")
    cl = cfg["data_efficiency"]["data_sampling"]["curriculum_learning"]["curriculum_metrics"]
    assert cl["vocab_rarity"]["schedule_config"]["total_curriculum_step"] == round(110_000 / 286_102 * m.steps / 2)
    assert cl["seqlen_truncate"]["min_difficulty"] == 8 and cl["seqlen_truncate"]["max_difficulty"] == m.seq_length
    ltd = cfg["data_efficiency"]["data_routing"]["random_ltd"]
    assert ltd["random_ltd_layer_id"] == list(range(1, m.num_layers - 1))
    assert ltd["random_ltd_schedule"]["min_value"] == 8
    assert ltd["random_ltd_schedule"]["schedule_config"]["require_steps"] == round(200_000 / 286_102 * m.steps / 2)
    control = recipes.pretrain_flags(RunSpec("gpt", ltd=True, match_baseline_data=True), scale, 7, data_path="d",
                                     tokenizer=[], ds_config="c.json")
    assert "--train-tokens" not in control and int(_flag(control, "--train-iters")) == m.steps
    assert int(_flag(control, "--lr-decay-iters")) == m.steps


@pytest.mark.parametrize("scale", sorted(SCALES), ids=lambda s: f"scale-{s}")
def test_every_generated_config_parses(scale):
    """The data_efficiency config of every run of every table, at every scale, is accepted by our parser (the
    same one pretrain_gpt.py / pretrain_bert.py use)."""
    for run in runs_of(cases_of([1, 2, 3, 4, 6, 7])):
        cfg = recipes.data_efficiency_config(run, SCALES[scale], 1234, "idx")
        if cfg is not None:
            parse_data_efficiency_config(cfg)

"""The data_efficiency JSON schema: DeepSpeed configs parse unchanged, and every bad key names its full path."""

from __future__ import annotations

import argparse
import copy
import json
from pathlib import Path

import pytest

from megatron.config import add_dataclass_arguments, dataclass_from_namespace
from megatron.data_efficiency.config import (
    DataEfficiencyArgs,
    load_data_efficiency_config,
    parse_data_efficiency_config,
)

_EXAMPLE_DIR = Path(__file__).resolve().parents[2] / "examples"
EXAMPLES = sorted((_EXAMPLE_DIR / "curriculum").glob("*.json"))
QUICKSTART = sorted((_EXAMPLE_DIR / "quickstart").glob("*.json"))
CM = "data_efficiency.data_sampling.curriculum_learning.curriculum_metrics"


def _section() -> dict:
    return {
        "enabled": True,
        "seed": 1234,
        "data_sampling": {
            "enabled": True,
            "num_epochs": 1,
            "curriculum_learning": {
                "enabled": True,
                "data_cluster_path": "clusters",
                "curriculum_metrics": {
                    "vocab_rarity": {
                        "index_to_sample_path": "a/vocab_rarity_index_to_sample_percentile_merged",
                        "index_to_metric_path": "a/vocab_rarity_index_to_metric",
                        "difficulty_type": "percentile",
                        "clustering_type": "schedule_based",
                        "min_difficulty": 1,
                        "max_difficulty": 100,
                        "schedule_type": "fixed_root",
                        "schedule_config": {"total_curriculum_step": 100, "difficulty_step": 1, "root_degree": 2},
                    },
                    "seqlen_truncate": {
                        "index_to_sample_path": "dummy",
                        "index_to_metric_path": "dummy",
                        "difficulty_type": "value",
                        "clustering_type": "single_cluster",
                        "min_difficulty": 8,
                        "max_difficulty": 64,
                        "schedule_type": "fixed_linear",
                        "schedule_config": {"total_curriculum_step": 10, "difficulty_step": 8},
                    },
                },
            },
        },
    }


@pytest.mark.parametrize("path", EXAMPLES + QUICKSTART, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_example_configs_parse(path):
    """Every committed example config (1.3B recipes and quickstart modes) is a whole DeepSpeed config that loads
    (its other keys are ignored) and switches on curriculum learning or random-LTD."""
    cfg = load_data_efficiency_config(path)
    assert cfg.curriculum_enabled or cfg.random_ltd_enabled
    if cfg.curriculum_enabled:
        assert cfg.data_sampling.curriculum_learning.curriculum_metrics


def test_examples_exist():
    """The paper's four GPT CL settings are shipped as examples."""
    names = {p.name for p in EXAMPLES}
    for case in ("seqlen_truncate", "seqlen_reshape", "vocab_rarity", "vocab_rarity_seqlen_truncate"):
        assert f"gpt_1.3b_cl_{case}.json" in names


def test_bare_section_and_full_config_agree(tmp_path):
    """A bare data_efficiency section and a DeepSpeed config holding it give the same parsed config."""
    bare = parse_data_efficiency_config(_section())
    full_path = tmp_path / "ds.json"
    full_path.write_text(json.dumps({"train_batch_size": 8, "fp16": {"enabled": True}, "data_efficiency": _section()}))
    full = load_data_efficiency_config(full_path)
    assert bare == full
    cl = full.data_sampling.curriculum_learning
    assert cl.seqlen_metric == "seqlen_truncate"
    assert list(cl.sampling_metrics) == ["vocab_rarity"]
    assert cl.curriculum_metrics["vocab_rarity"].schedule_config.root_degree == 2.0


def _mutate(path: str, value, delete: bool = False) -> dict:
    data = _section()
    keys = path.split(".")
    node = data
    for k in keys[:-1]:
        node = node[k]
    if delete:
        del node[keys[-1]]
    else:
        node[keys[-1]] = value
    return data


VR = "data_sampling.curriculum_learning.curriculum_metrics.vocab_rarity"


@pytest.mark.parametrize(
    ("path", "value", "delete", "key"),
    [
        (f"{VR}.min_dificulty", 1, False, f"{CM}.vocab_rarity.min_dificulty"),  # typo = unknown key
        (f"{VR}.min_difficulty", 200, False, f"{CM}.vocab_rarity.min_difficulty"),  # min > max
        (f"{VR}.max_difficulty", 150, False, f"{CM}.vocab_rarity.max_difficulty"),  # percentile > 100
        (f"{VR}.min_difficulty", "1", False, f"{CM}.vocab_rarity.min_difficulty"),  # wrong type
        (f"{VR}.difficulty_type", "rank", False, f"{CM}.vocab_rarity.difficulty_type"),
        (f"{VR}.index_to_sample_path", None, True, f"{CM}.vocab_rarity.index_to_sample_path"),
        (f"{VR}.schedule_type", None, True, f"{CM}.vocab_rarity.schedule_type"),  # required
        (f"{VR}.schedule_config.root_degree", None, True, f"{CM}.vocab_rarity.schedule_config.root_degree"),
        (f"{VR}.schedule_config.difficulty_step", 0, False, f"{CM}.vocab_rarity.schedule_config.difficulty_step"),
        (f"{VR}.schedule_config.difficulty", [1, 2], False, f"{CM}.vocab_rarity.schedule_config.difficulty"),
        ("data_sampling.curriculum_learning.curriculum_metrics.seqlen_truncate.clustering_type", "schedule_based",
         False, f"{CM}.seqlen_truncate.clustering_type"),
        ("data_sampling.enabled", False, False, "data_efficiency.data_sampling.enabled"),
        ("enabled", False, False, "data_efficiency.enabled"),
        ("data_sampling.num_epochs", 0, False, "data_efficiency.data_sampling.num_epochs"),
        ("data_routing", {"enabled": True, "random_ltd": {"enabled": True, "total_layer_num": 4}}, False,
         "data_efficiency.data_routing.random_ltd.random_ltd_layer_num"),
    ],
)
def test_bad_values_name_the_key_path(path, value, delete, key):
    """Unknown keys, wrong types, missing keys and inconsistent values are ValueErrors naming the JSON key path."""
    with pytest.raises(ValueError) as err:
        parse_data_efficiency_config(_mutate(path, value, delete))
    assert str(err.value).startswith(key + ":"), str(err.value)


def test_fixed_discrete_and_random_ltd_checks():
    """fixed_discrete needs len(difficulty) == len(max_step) + 1 inside [min, max]; LTD layer ids must exist."""
    data = _mutate(f"{VR}.schedule_type", "fixed_discrete")
    data["data_sampling"]["curriculum_learning"]["curriculum_metrics"]["vocab_rarity"]["schedule_config"] = {
        "difficulty": [10, 50, 100], "max_step": [5, 9]}
    parse_data_efficiency_config(data)
    bad = copy.deepcopy(data)
    metrics = bad["data_sampling"]["curriculum_learning"]["curriculum_metrics"]
    metrics["vocab_rarity"]["schedule_config"]["max_step"] = [9, 5]
    with pytest.raises(ValueError, match=rf"^{CM}.vocab_rarity.schedule_config.max_step\[1\]:"):
        parse_data_efficiency_config(bad)
    ltd = {"enabled": True, "total_layer_num": 4, "random_ltd_layer_num": 2, "random_ltd_layer_id": [1, 4],
           "model_mask_name": "attention_mask", "model_type": "decoder", "hidden_state_order": "seq_batch_dim",
           "random_ltd_schedule": {"min_value": 8, "max_value": 64, "schedule_type": "fixed_linear",
                                   "schedule_config": {"require_steps": 10, "seq_per_step": 8}}}
    with pytest.raises(ValueError, match=r"^data_efficiency.data_routing.random_ltd.random_ltd_layer_id\[1\]:"):
        parse_data_efficiency_config({"enabled": True, "data_routing": {"enabled": True, "random_ltd": ltd}})
    ltd["random_ltd_layer_id"] = [1, 2]
    cfg = parse_data_efficiency_config({"enabled": True, "data_routing": {"enabled": True, "random_ltd": ltd}})
    assert cfg.random_ltd_enabled and cfg.data_routing.random_ltd.random_ltd_schedule.schedule_config.seq_per_step == 8
    routing = cfg.data_routing.random_ltd  # what the routing room's scheduler and wrapper take, as parsed
    assert (routing.layer_ids, routing.random_ltd_schedule.max_value) == ([1, 2], 64)
    assert routing.random_ltd_schedule.schedule_config.require_steps == 10


def test_legacy_seqlen_block(tmp_path):
    """The top-level legacy curriculum_learning block parses; its errors name 'curriculum_learning.<key>'."""
    legacy = {"enabled": True, "curriculum_type": "seqlen", "min_difficulty": 8, "max_difficulty": 1024,
              "schedule_type": "fixed_linear", "schedule_config": {"total_curriculum_step": 100, "difficulty_step": 8}}
    cfg = parse_data_efficiency_config({"train_batch_size": 4, "curriculum_learning": legacy})
    assert cfg.legacy_curriculum.enabled and not cfg.curriculum_enabled
    legacy["schedule_config"] = {"difficulty_step": 8}
    with pytest.raises(ValueError, match=r"^curriculum_learning.schedule_config.total_curriculum_step:"):
        parse_data_efficiency_config({"curriculum_learning": legacy})
    path = tmp_path / "broken.json"
    path.write_text('{"data_efficiency": {"enabled": true,,}}')
    with pytest.raises(ValueError, match=r"broken.json: line 1 column \d+: invalid JSON"):
        load_data_efficiency_config(path)


def test_cli_flags_compose(tmp_path):
    """Megatron-DeepSpeed spellings parse into DataEfficiencyArgs, and the switch must agree with the JSON."""
    path = tmp_path / "ds.json"
    path.write_text(json.dumps({"data_efficiency": _section()}))
    parser = argparse.ArgumentParser()
    add_dataclass_arguments(parser, DataEfficiencyArgs)
    ns = parser.parse_args(["--deepspeed", "--deepspeed_config", str(path), "--data-efficiency-curriculum-learning"])
    args = dataclass_from_namespace(DataEfficiencyArgs, ns)
    assert args.load().curriculum_enabled
    ns = parser.parse_args(["--deepspeed-config", str(path)])
    with pytest.raises(ValueError, match="curriculum_learning.enabled is true but data_efficiency_curriculum_learning"):
        dataclass_from_namespace(DataEfficiencyArgs, ns).load()
    with pytest.raises(ValueError, match="need deepspeed_config"):
        DataEfficiencyArgs(data_efficiency_curriculum_learning=True)

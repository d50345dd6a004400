"""The Megatron-DeepSpeed / Megatron-LM flag audit (``docs/megatron_deepspeed_flags.md``, ``training.compat``).

Pins: every flag of the audit table parses (none is "unrecognized"), with the status the table gives it;
accepted-ignored flags change nothing and are listed in one note; refused flags stop the run with what to use
instead, unless given the value that asks for nothing; the alternative spellings (rotary, encoder-*, deepscale)
set the same fields as ours.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
from pathlib import Path

import pytest

from megatron.data.bert_dataset import BertDataConfig
from megatron.training.compat import MegatronCompatConfig, ignored_flags_note
from megatron.training.config import PretrainConfig
from megatron.training.data_efficiency import DATA_EFFICIENCY_SECTION

REPO = Path(__file__).resolve().parents[2]
SECTIONS = {"bert": BertDataConfig, **DATA_EFFICIENCY_SECTION}
BASE = ["--model-flavor", "debug", "--seq-length", "32", "--train-iters", "4", "--lr", "1e-3", "--mock-data"]


def _audit() -> dict[str, str]:
    """flag -> status word (works / accepted-ignored / refused) of the docs table."""
    rows = re.findall(r"^\| `(--[^`]+)` \| (works|accepted-ignored|refused)\b", (REPO / "docs" /
                      "megatron_deepspeed_flags.md").read_text(encoding="utf-8"), re.M)
    return dict(rows)


def _value_for(action: argparse.Action) -> list[str]:
    """A command-line value the flag accepts (none for switches)."""
    if action.nargs == 0:
        return []
    if action.choices:
        return [str(list(action.choices)[0])]
    kind = action.type
    return ["1"] if kind in (int, float) or kind is None else ["x" if kind is str else "1"]


def test_every_audited_flag_parses_with_its_documented_status():
    """All of Megatron-DeepSpeed's arguments.py flags (and the listed Megatron-LM ones) are in the table, each
    parses alone, and the table's status matches the code: ignored/refused flags live in MegatronCompatConfig."""
    audit = _audit()
    assert len(audit) > 330, "the audit table lost rows"
    for recipe_flag in ("--tensorboard-queue-size", "--data-impl", "--train-doc-idx-path", "--deepspeed_config",
                        "--zero-stage", "--no-pipeline-parallel", "--random-ltd", "--return-data-index"):
        assert recipe_flag in audit
    parser = PretrainConfig.build_parser(SECTIONS)
    actions = {s: a for a in parser._actions for s in a.option_strings}
    compat = {f.name: f.metadata for f in dataclasses.fields(MegatronCompatConfig)}
    for flag, status in audit.items():
        assert flag in actions, f"{flag} is unrecognized"
        parser.parse_args([flag, *_value_for(actions[flag])])  # exits (SystemExit) if it does not parse
        meta = compat.get(actions[flag].dest, {})
        kind = "accepted-ignored" if "ignored" in meta else "refused" if "refused" in meta else "works"
        # A refused field with a harmless value, or checked against its supported values, may be documented as
        # working for those values (--pipeline-model-parallel-size 1).
        assert kind == status or (kind == "refused" and status == "works"), (flag, status, kind)


def test_recipe_flags_are_noted_once_and_change_nothing():
    """The ignored flags of the base script end up in one note, with reasons, and leave the config as without."""
    ignored = ["--tensorboard-queue-size", "1", "--log-timers-to-tensorboard", "--log-batch-size-to-tensorboard",
               "--log-validation-ppl-to-tensorboard", "--log-optimizer-states-to-tensorboard", "--data-impl", "mmap",
               "--no-pipeline-parallel", "--distributed-backend", "nccl"]
    cfg = PretrainConfig.from_args([*BASE, *ignored], extra_sections=SECTIONS)
    plain = PretrainConfig.from_args(BASE, extra_sections=SECTIONS)
    assert cfg.training == plain.training and cfg.model == plain.model and cfg.data == plain.data
    note = ignored_flags_note(cfg.compat)
    assert note.startswith("Megatron flags accepted without effect: ")
    for part in ("--tensorboard-queue-size 1 (scalars are written synchronously", "--data-impl mmap (only the mmap",
                 "--no-pipeline-parallel (a detail of Megatron's own pipeline communication"):
        assert part in note
    assert ignored_flags_note(plain.compat) is None


REFUSED = [
    (["--squared-relu"], r"--squared-relu is not supported: the MLP uses GeLU"),
    (["--num-experts", "8"], r"--num-experts 8 is not supported: mixture of experts is not implemented"),
    (["--no-position-embedding"], r"needs rotary ones: pass --use-rotary-position-embeddings"),
    (["--batch-size", "8"], r"--batch-size 8 is not supported: use --micro-batch-size"),
    (["--ckpt-format", "torch_dist"], r"checkpoints are written in the torch layout"),
    (["--DDP-impl", "FSDP"], r"FSDP is not supported"),
]


@pytest.mark.parametrize("flags,message", REFUSED, ids=[r[0][0] for r in REFUSED])
def test_refused_flags_say_what_to_use(flags, message):
    """A refused flag fails validation (before any process group) naming itself and the replacement."""
    cfg = PretrainConfig.from_args([*BASE, *flags], extra_sections=SECTIONS)
    with pytest.raises(NotImplementedError, match=message):
        cfg.validate(world_size=1)


@pytest.mark.parametrize("flags", [["--num-experts", "1"], ["--transformer-impl", "local"], ["--DDP-impl", "local"],
                                   ["--no-position-embedding", "--use-rotary-position-embeddings"]])
def test_refused_flags_with_a_harmless_value_pass(flags):
    """The value that asks for nothing (one expert, local, rotary with no learned table) validates and is listed
    as ignored."""
    cfg = PretrainConfig.from_args([*BASE, "--num-attention-heads", "2", *flags], extra_sections=SECTIONS)
    cfg.validate(world_size=1)
    assert ignored_flags_note(cfg.compat, rope=cfg.model.position_embedding_type == "rope",
                              num_attention_heads=cfg.model.num_attention_heads) is not None


def test_other_spellings_set_our_fields():
    """Megatron-DeepSpeed/Megatron-LM spellings land in the same fields as ours."""
    cfg = PretrainConfig.from_args(
        [*BASE, "--use-rotary-position-embeddings", "--rotary-position-embeddings-theta", "500000",
         "--encoder-seq-length", "48", "--encoder-num-layers", "3", "--norm-epsilon", "1e-6", "--deepscale",
         "--deepscale_config", "ds.json", "--local_rank=0", "--checkpoint-activations"], extra_sections=SECTIONS)
    m = cfg.model
    assert (m.position_embedding_type, m.rotary_base, m.num_layers, m.layernorm_epsilon) == ("rope", 500000, 3, 1e-6)
    assert cfg.data.seq_length == 48 and m.recompute_granularity == "full"
    de = cfg.extras["data_efficiency"]
    assert de.deepspeed and de.deepspeed_config == "ds.json"


@pytest.mark.parametrize("flags,expected", [
    (["--normalization", "rmsnorm", "--swiglu", "--num-key-value-heads", "2"], ("RMSNorm", True, True, 2)),
    (["--normalization", "RMSNorm", "--group-query-attention", "--num-query-groups", "2"], ("RMSNorm", False, True, 2)),
    (["--normalization", "layernorm", "--group-query-attention"], ("LayerNorm", False, True, 1)),
    (["--num-key-value-heads", "4"], ("LayerNorm", False, False, None)),
], ids=["mds_llama2", "mlm_gqa", "mlm_gqa_default_groups", "kv_heads_equal_heads"])
def test_modern_architecture_flags_in_both_spellings(flags, expected):
    """Megatron-DeepSpeed's llama spellings (lowercase rmsnorm, --num-key-value-heads alone) and Megatron-LM's
    (RMSNorm, --group-query-attention --num-query-groups, whose group count defaults to 1) set the same model fields;
    as many key/value heads as heads is plain multi-head attention. They validate and are not noted as ignored."""
    cfg = PretrainConfig.from_args([*BASE, "--num-attention-heads", "4", *flags], extra_sections=SECTIONS)
    cfg.validate(world_size=1)
    m = cfg.model
    assert (m.normalization, m.swiglu, m.group_query_attention, m.num_query_groups) == expected
    assert ignored_flags_note(cfg.compat) is None

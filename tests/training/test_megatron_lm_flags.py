"""The Megatron-LM flag audit (``docs/megatron_lm_flags.md``, ``training.compat_megatron_lm``).

Pins: every flag Megatron-LM's pretraining parser accepts (recorded in ``megatron_lm_flags.py``) parses with
``pretrain_gpt.py``'s parser (or ``pretrain_bert.py``'s for BERT-only flags) and lands in exactly one class: it works
(a field of one of our rooms), it is accepted with a one-line note, or validation refuses it with an error naming the
flag and what to use instead; the docs table lists each flag once with the class the code gives it.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
from functools import lru_cache
from pathlib import Path

import pytest

from megatron.training.compat import MegatronCompatConfig, check_refused_flags, given_compat_flags, ignored_flags_note
from megatron.training.compat_megatron_lm import FAMILIES, MegatronLMCompat
from megatron.training.config import PretrainConfig
from megatron.training.data_efficiency import DATA_EFFICIENCY_SECTION
from pretrain_bert import BERT_SECTION
from training import megatron_lm_flags as recorded

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "megatron_lm_flags.md"
BASE = ["--model-flavor", "debug", "--seq-length", "32", "--train-iters", "4", "--lr", "1e-3", "--mock-data"]
COMPAT = {f.name: f for f in dataclasses.fields(MegatronCompatConfig)}
# A refused flag's note names what to do instead: another flag, a tool, or dropping the flag.
ALTERNATIVE = re.compile(r"--[a-z]|tools/|\b(drop|pass)\b|pretrain_(gpt|bert)\.py")


@lru_cache(maxsize=None)
def _parsers() -> tuple[argparse.ArgumentParser, argparse.ArgumentParser]:
    return PretrainConfig.build_parser(DATA_EFFICIENCY_SECTION), PretrainConfig.build_parser(BERT_SECTION)


def _action(flag: str) -> tuple[argparse.ArgumentParser, argparse.Action]:
    """The parser that knows ``flag`` (GPT's first, then BERT's) and its action; fails for an unrecognized flag."""
    for parser in _parsers():
        for action in parser._actions:
            if flag in action.option_strings:
                return parser, action
    pytest.fail(f"Megatron-LM flag {flag} is unrecognized by pretrain_gpt.py and pretrain_bert.py")


def _argv(flag: str, value: str | None) -> list[str]:
    return [flag] if value is None else [f"{flag}={value}"]


def _field_class(dest: str) -> str:
    """The class the code gives a flag's field (a refused field given an allowed value is still 'refused')."""
    meta = COMPAT[dest].metadata if dest in COMPAT else {}
    return "accepted-ignored" if "ignored" in meta else "refused" if "refused" in meta else "works"


@lru_cache(maxsize=None)
def _doc() -> dict[str, tuple[str, str]]:
    """flag -> (class, note) of the docs table; a flag listed twice is an error."""
    rows: dict[str, tuple[str, str]] = {}
    for line in DOC.read_text(encoding="utf-8").splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 4 or cells[1] not in ("works", "accepted-ignored", "refused"):
            continue
        for flag in re.findall(r"`(--[^`]+)`", cells[2]):
            assert flag not in rows, f"{flag} is listed twice in {DOC.name}"
            rows[flag] = (cells[1], cells[3])
    return rows


RECORDED = recorded.flags()


def test_the_record_is_megatron_lm_sized_and_the_doc_names_its_commit():
    """The recorded list is the whole parser (several hundred spellings, none twice) and the doc says which
    Megatron-LM commit it comes from."""
    spellings = [flag for flag, _ in RECORDED]
    assert len(spellings) > 800 and len(set(spellings)) == len(spellings)
    text = DOC.read_text(encoding="utf-8")
    assert recorded.COMMIT[:7] in text and recorded.COMMIT_DATE in text


@pytest.mark.parametrize("group", list(recorded.GROUPS))
def test_every_megatron_lm_flag_parses_and_lands_in_one_class(group):
    """Each flag of the group parses alone with its recorded value and is exactly one of: a field of one of our
    rooms (works), an ignored compat field listed by the note, or a refused compat field whose validation error
    names the flag and an alternative (or, given a harmless value such as 1, listed as ignored)."""
    for entry in recorded.GROUPS[group].split():
        flag, _, value = entry.partition("=")
        parser, action = _action(flag)
        ns = parser.parse_args(_argv(flag, value or None))
        dest = action.dest
        assert hasattr(ns, dest), flag
        kind = _field_class(dest)
        if kind == "works":
            continue  # a field of another room: its own tests cover what it does
        compat = MegatronCompatConfig(**{dest: getattr(ns, dest)})
        given = given_compat_flags(compat)
        assert len(given["ignored"]) + len(given["refused"]) == 1, (flag, given)
        if given["ignored"]:
            spelled, _, why = given["ignored"][0]
            assert why and spelled in action.option_strings and spelled in ignored_flags_note(compat), flag
            assert kind == "accepted-ignored" or getattr(ns, dest) in COMPAT[dest].metadata["allowed"], flag
            continue
        with pytest.raises(NotImplementedError) as err:
            check_refused_flags(compat)
        message = str(err.value)
        spelled, _, why = given["refused"][0]
        assert spelled in action.option_strings and message.startswith(spelled), (flag, message)
        assert why in message and ALTERNATIVE.search(why), f"{flag}: the refusal does not say what to use: {why}"


def test_the_docs_table_lists_every_flag_with_its_class():
    """docs/megatron_lm_flags.md lists each recorded flag once, with the class its field has in the code and, for
    the compat flags, the note the code gives; it lists nothing Megatron-LM does not have."""
    doc = _doc()
    spellings = {flag for flag, _ in RECORDED}
    assert set(doc) == spellings, (sorted(spellings - set(doc))[:10], sorted(set(doc) - spellings)[:10])
    for flag in spellings:
        _, action = _action(flag)
        kind, note = doc[flag]
        assert kind == _field_class(action.dest), (flag, kind)
        meta = COMPAT[action.dest].metadata if action.dest in COMPAT else {}
        reason = meta.get("ignored") or meta.get("refused")
        if reason:
            assert note.startswith(reason.replace("|", "\\|")), (flag, note, reason)


def test_each_family_lists_flags_of_megatron_lm_only():
    """The families of compat_megatron_lm hold Megatron-LM spellings (all of them recorded), none of which an
    earlier audit or a room already defines; each has one status and a note."""
    spellings = {flag for flag, _ in RECORDED}
    base = {f.name for f in dataclasses.fields(MegatronLMCompat)}
    for f in dataclasses.fields(MegatronLMCompat):
        assert {"--" + f.name.replace("_", "-"), *f.metadata["aliases"]} <= spellings, f.name
    own = MegatronCompatConfig.__annotations__
    assert not base & set(own), sorted(base & set(own))
    assert all(fam.status in ("ignored", "refused") and fam.note for fam in FAMILIES)


def test_a_megatron_lm_command_line_is_refused_once_naming_every_unsupported_flag():
    """A command line with flags of several families validates to one NotImplementedError naming each refused flag,
    while the ignored ones leave the config unchanged and are listed in the one note."""
    refused = ["--moe-router-topk", "2", "--fp8-format", "hybrid", "--use-megatron-fsdp", "--lr-wsd-decay-iters", "5"]
    ignored = ["--tp-comm-overlap", "--manual-gc", "--log-device-memory-used"]
    cfg = PretrainConfig.from_args([*BASE, *refused, *ignored], extra_sections=DATA_EFFICIENCY_SECTION)
    with pytest.raises(NotImplementedError) as err:
        cfg.validate(world_size=1)
    for flag in ("--moe-router-topk 2", "--fp8-format hybrid", "--use-megatron-fsdp", "--lr-wsd-decay-iters 5"):
        assert flag in str(err.value)
    ok = PretrainConfig.from_args([*BASE, *ignored], extra_sections=DATA_EFFICIENCY_SECTION)
    ok.validate(world_size=1)
    plain = PretrainConfig.from_args(BASE, extra_sections=DATA_EFFICIENCY_SECTION)
    plain.validate(world_size=1)
    assert (ok.model, ok.training, ok.data, ok.parallel) == (plain.model, plain.training, plain.data, plain.parallel)
    note = ignored_flags_note(ok.compat)
    assert all(flag in note for flag in ignored)


def test_renamed_flag_and_harmless_values_work():
    """--persistent-save-interval is Megatron-LM's other spelling of --save-interval; one expert-parallel rank, the
    fp32 optimizer-state dtypes and SIGTERM as exit signal ask for nothing and validate."""
    cfg = PretrainConfig.from_args(
        [*BASE, "--save", "ckpt", "--persistent-save-interval", "7", "--expert-model-parallel-size", "1",
         "--exp-avg-dtype", "fp32", "--exit-signal", "SIGTERM"], extra_sections=DATA_EFFICIENCY_SECTION)
    cfg.validate(world_size=1)
    assert cfg.training.save_interval == 7
    assert "--exit-signal SIGTERM" in ignored_flags_note(cfg.compat)
    bad = PretrainConfig.from_args([*BASE, "--exit-signal", "SIGUSR1"], extra_sections=DATA_EFFICIENCY_SECTION)
    with pytest.raises(NotImplementedError, match=r"--exit-signal SIGUSR1 is not supported: .*--exit-signal-handler"):
        bad.validate(world_size=1)

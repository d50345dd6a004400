"""Curriculum learning and random-LTD through the real ``pretrain_gpt.py`` path on the tiny KJV corpus.

Pins: the curriculum never trains on a sample above its difficulty and logs ``difficulty``; seqlen truncation is
counted in ``consumed_tokens``; CL + random-LTD resume exactly mid-schedule; random-LTD kept tokens follow the
schedule with data tokens and schedule (layer-averaged) tokens counted apart; bad configs fail before training;
an analysis of another split (seed, seq-length, split) is refused, settings that keep the split are not;
a weighted blend is curriculum-sampled per component with its weights held, at DP=1 and DP=2 alike.
The helpers here (analysis fixture, config builders) are shared with ``tests/e2e/test_data_efficiency_golden.py``.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from data.conftest import kjv_chapters, preprocess_data, write_jsonl
from training.conftest import gpt_args, load_entry_script, read_metrics
from megatron.data_efficiency.curriculum.index_files import output_prefix, read_flat
from megatron.data_efficiency.curriculum.scheduler import fixed_root_difficulty
from megatron.data_efficiency.routing.scheduler import kept_tokens_fixed_linear
from megatron.training import data_efficiency as de_mod
from megatron.training.checkpointing import read_tracker

SEQ = 32  # gpt_args' sequence length; the analysis must use the same one
LTD_SCHEDULE = dict(min_value=8, max_value=SEQ, require_steps=16, seq_per_step=8)


# ---- shared helpers -------------------------------------------------------------------------------------------------
def analyze_corpus(corpus: dict[str, str], save_path: Path, data_path: list[str] | None = None) -> Path:
    """Run ``tools/analyze_data.py --metrics vocab_rarity`` with gpt_args' data flags (``data_path``: a blend's
    ``--data-path`` words instead of the corpus prefix); returns ``save_path``."""
    tool = load_entry_script("tools/analyze_data.py")
    tool.main(["--data-path", *(data_path or [corpus["data_path"]]), "--vocab-file", corpus["vocab_file"],
               "--merge-file", corpus["merge_file"], "--split", "90,8,2", "--seq-length", str(SEQ), "--seed", "1234",
               "--metrics", "vocab_rarity", "--save-path", str(save_path), "--num-threads", "1", "--no-progress"])
    return save_path


@pytest.fixture(scope="session")
def kjv_analysis(tiny_corpus, tmp_path_factory) -> Path:
    """The tiny corpus' vocab-rarity analysis (session-wide, read-only)."""
    return analyze_corpus(tiny_corpus, tmp_path_factory.mktemp("kjv_analysis"))


def vocab_rarity_metric(analysis: Path | list[Path], *, difficulty_type: str = "percentile", lo: int = 10,
                        hi: int = 100, steps: int = 16) -> dict[str, Any]:
    """A schedule-based vocab-rarity curriculum metric over the analysis (fixed_root, degree 2); a list of
    analyses (one per blend component) gives lists of paths."""
    kind = "index_to_sample_percentile_merged" if difficulty_type == "percentile" else "index_to_sample"

    def paths(file: str) -> str | list[str]:
        if isinstance(analysis, list):
            return [output_prefix(str(a), "vocab_rarity", file) for a in analysis]
        return output_prefix(str(analysis), "vocab_rarity", file)

    return {
        "index_to_sample_path": paths(kind),
        "index_to_metric_path": paths("index_to_metric"),
        "difficulty_type": difficulty_type, "clustering_type": "schedule_based", "min_difficulty": lo,
        "max_difficulty": hi, "schedule_type": "fixed_root",
        "schedule_config": {"total_curriculum_step": steps, "difficulty_step": 1, "root_degree": 2},
    }


def seqlen_metric(lo: int = 8, hi: int = SEQ, steps: int = 16) -> dict[str, Any]:
    """A linear seqlen_truncate metric from ``lo`` to ``hi`` positions in steps of 8."""
    return {"difficulty_type": "value", "clustering_type": "single_cluster", "min_difficulty": lo,
            "max_difficulty": hi, "schedule_type": "fixed_linear",
            "schedule_config": {"total_curriculum_step": steps, "difficulty_step": 8}}


def de_config(metrics: dict[str, Any] | None = None, ltd_layers: list[int] | None = None,
              num_layers: int = 4) -> dict[str, Any]:
    """A whole DeepSpeed config whose data_efficiency section holds ``metrics`` (CL) and/or random-LTD layers."""
    section: dict[str, Any] = {"enabled": True, "seed": 1234}
    if metrics:
        section["data_sampling"] = {"enabled": True, "num_epochs": 4, "curriculum_learning": {
            "enabled": True, "curriculum_metrics": metrics}}
    if ltd_layers is not None:
        s = LTD_SCHEDULE
        section["data_routing"] = {"enabled": True, "random_ltd": {
            "enabled": True, "total_layer_num": num_layers, "random_ltd_layer_num": len(ltd_layers),
            "random_ltd_layer_id": ltd_layers, "model_mask_name": "attention_mask", "model_type": "decoder",
            "hidden_state_order": "seq_batch_dim",
            "random_ltd_schedule": {"min_value": s["min_value"], "max_value": s["max_value"],
                                    "schedule_type": "fixed_linear",
                                    "schedule_config": {"require_steps": s["require_steps"],
                                                        "seq_per_step": s["seq_per_step"]}}}}
    return {"train_batch_size": 4, "data_efficiency": section}


def de_args(path: Path, config: dict[str, Any]) -> dict[str, Any]:
    """Write ``config`` to ``path`` and return the matching gpt_args flags."""
    path.write_text(json.dumps(config, indent=1), encoding="utf-8")
    section = config["data_efficiency"]
    return {"deepspeed": True, "deepspeed_config": path,
            "data_efficiency_curriculum_learning": "data_sampling" in section,
            "random_ltd": "data_routing" in section}


def second_corpus(corpus: dict[str, str], root: Path) -> str:
    """KJV chapters 41-60 tokenized with ``corpus``' vocabulary into ``root``; returns the data prefix."""
    docs = write_jsonl(root / "more.jsonl", kjv_chapters(60)[40:])
    preprocess_data(["--input", docs, "--output-prefix", root / "more", "--append-eod", "--workers", "1",
                     "--vocab-file", corpus["vocab_file"], "--merge-file", corpus["merge_file"]])
    return str(root / "more_text_document")


class BatchSpy:
    """Records, per training micro-batch, the dataset positions, the difficulties and the processed shape."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.records: list[dict[str, Any]] = []
        original = de_mod.CurriculumExtension.process_batch

        def spy(ext, batch, iteration):
            out = original(ext, batch, iteration)
            self.records.append({"iteration": iteration, "indices": batch["dataset_sample_index"].tolist(),
                                 "components": batch["dataset_id"].tolist(),
                                 "difficulty": dict(ext._difficulties), "shape": tuple(out["tokens"].shape)})
            return out

        monkeypatch.setattr(de_mod.CurriculumExtension, "process_batch", spy)


# ---- tests -----------------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_curriculum_never_exceeds_difficulty_and_counts_truncated_tokens(tiny_corpus, kjv_analysis, tmp_path,
                                                                         monkeypatch):
    """Every trained sample's vocab rarity (from the analyzer's sample_to_metric file) is within the value
    difficulty of its global batch, batches are truncated to the seqlen difficulty, ``consumed_tokens`` equals the
    sum of the actual batch tokens, and every metrics-file train record carries ``difficulty: {metric: value}``."""
    values, _ = read_flat(output_prefix(str(kjv_analysis), "vocab_rarity", "sample_to_metric"))
    values = np.asarray(values)
    lo, hi = int(np.percentile(values, 20)), int(values.max())
    metrics = {"vocab_rarity": vocab_rarity_metric(kjv_analysis, difficulty_type="value", lo=lo, hi=hi),
               "seqlen_truncate": seqlen_metric()}
    spy = BatchSpy(monkeypatch)
    flags = de_args(tmp_path / "ds.json", de_config(metrics))
    result = load_entry_script().main(gpt_args(tiny_corpus, metrics_file=tmp_path / "m.jsonl", eval_iters=0,
                                               **flags))
    assert len(spy.records) == 20 * 2
    for r in spy.records:
        limit = r["difficulty"]["vocab_rarity"]
        assert values[r["indices"]].max() <= limit, r
        assert r["shape"] == (2, r["difficulty"]["seqlen_truncate"]), r
    first = fixed_root_difficulty(1, min_difficulty=lo, max_difficulty=hi, total_curriculum_step=16,
                                  difficulty_step=1, root_degree=2)
    assert spy.records[0]["difficulty"] == {"vocab_rarity": first, "seqlen_truncate": 8}
    assert spy.records[-1]["difficulty"] == {"vocab_rarity": hi, "seqlen_truncate": SEQ}
    assert values[spy.records[0]["indices"]].max() < hi, "the first batches come from the easy samples"
    assert result.consumed_tokens == sum(r["shape"][0] * r["shape"][1] for r in spy.records)
    train = [r for r in read_metrics(tmp_path / "m.jsonl") if r["kind"] == "train"]
    assert [r["difficulty"] for r in train] == [spy.records[2 * i]["difficulty"] for i in range(20)]
    assert train[-1]["consumed_tokens"] == result.consumed_tokens
    assert "schedule_tokens" not in train[-1], "without random-LTD the LR counts the data tokens"


@pytest.fixture(scope="module")
def blend_analysis(tiny_corpus, tmp_path_factory) -> tuple[list[str], list[Path]]:
    """A 0.3 / 0.7 blend of the tiny corpus and KJV chapters 41-60 (same vocabulary), analyzed per component:
    the ``--data-path`` words and the two component analysis directories."""
    root = tmp_path_factory.mktemp("blend")
    blend = ["0.3", tiny_corpus["data_path"], "0.7", second_corpus(tiny_corpus, root)]
    analysis = analyze_corpus(tiny_corpus, root / "analysis", data_path=blend)
    return blend, [analysis / f"dataset{c}" for c in range(2)]


def blended_curriculum(blend_analysis, path: Path) -> tuple[list[np.ndarray], dict[str, Any], int]:
    """Per-component vocab-rarity values, the flags of a value-based rarity curriculum over the blend, and its
    maximum difficulty."""
    parts = blend_analysis[1]
    values = [np.asarray(read_flat(output_prefix(str(p), "vocab_rarity", "sample_to_metric"))[0]) for p in parts]
    lo = int(max(np.percentile(v, 30) for v in values))
    hi = int(max(v.max() for v in values))
    metrics = {"vocab_rarity": vocab_rarity_metric(parts, difficulty_type="value", lo=lo, hi=hi)}
    return values, de_args(path, de_config(metrics)), hi


@pytest.mark.slow
def test_blended_curriculum_applies_thresholds_per_component_and_keeps_weights(tiny_corpus, blend_analysis, tmp_path,
                                                                               monkeypatch):
    """CL over a weighted blend of two corpora (weights 0.3 / 0.7), analyzed per component by the tool: every trained
    sample's vocab rarity, read from its own component's analysis, is within the value difficulty of its global
    batch; after k global batches component 1 has supplied round(0.7 * 4k) samples within one (the blend weights
    hold, although the exact-epoch blend itself holds every sample once); both components are drawn from."""
    values, flags, hi = blended_curriculum(blend_analysis, tmp_path / "ds.json")
    spy = BatchSpy(monkeypatch)
    argv = gpt_args(tiny_corpus, data_path=None, eval_iters=0, **flags) + ["--data-path", *blend_analysis[0]]
    load_entry_script().main(argv)
    assert len(spy.records) == 20 * 2
    for r in spy.records:
        rarity = [values[c][k] for c, k in zip(r["components"], r["indices"])]
        assert max(rarity) <= r["difficulty"]["vocab_rarity"], r
    from_second = np.cumsum([sum(a["components"]) + sum(b["components"])
                             for a, b in zip(spy.records[::2], spy.records[1::2])])
    assert np.all(np.abs(from_second - 0.7 * 4 * np.arange(1, 21)) <= 1), from_second
    assert 0 < from_second[-1] < 80
    easy = [values[c][k] for c, k in zip(spy.records[0]["components"], spy.records[0]["indices"])]
    assert max(easy) < hi, "the first batches come from the easy samples of each component"


@pytest.mark.slow
def test_curriculum_and_random_ltd_resume_exactly(tiny_corpus, kjv_analysis, tmp_path, monkeypatch):
    """CL (vocab rarity + seqlen truncation) with random-LTD: 20 iterations straight equal 10, a checkpoint and 10
    resumed ones - the same losses (dropout on), the same sampled dataset positions, difficulties, kept tokens
    and consumed layer tokens - with the schedules resumed mid-way (curriculum and kept-token ramps end at 16)."""
    metrics = {"vocab_rarity": vocab_rarity_metric(kjv_analysis), "seqlen_truncate": seqlen_metric()}
    flags = de_args(tmp_path / "ds.json", de_config(metrics, ltd_layers=[1, 2]))
    pg = load_entry_script()
    spy = BatchSpy(monkeypatch)
    straight = pg.main(gpt_args(tiny_corpus, metrics_file=tmp_path / "a.jsonl", **flags))
    straight_batches, spy.records[:] = list(spy.records), []
    ckpt = tmp_path / "ckpt"
    first = pg.main(gpt_args(tiny_corpus, save=ckpt, exit_interval=10, metrics_file=tmp_path / "b.jsonl", **flags))
    assert first.exit_reason == "exit_interval" and read_tracker(ckpt) == 10
    second = pg.main(gpt_args(tiny_corpus, save=ckpt, load=ckpt, metrics_file=tmp_path / "b.jsonl", **flags))
    assert spy.records == straight_batches
    assert {**first.train_losses, **second.train_losses} == straight.train_losses
    assert second.val_losses[20] == straight.val_losses[20]
    keys = ("iteration", "consumed_tokens", "schedule_tokens", "difficulty", "ltd_kept_tokens",
            "consumed_layer_tokens", "lr", "loss")
    a = [{k: r.get(k) for k in keys} for r in read_metrics(tmp_path / "a.jsonl") if r["kind"] == "train"]
    b = [{k: r.get(k) for k in keys} for r in read_metrics(tmp_path / "b.jsonl") if r["kind"] == "train"]
    assert a == b


def test_random_ltd_kept_tokens_follow_schedule(tiny_corpus, tmp_path):
    """Random-LTD alone: ``ltd_kept_tokens`` of iteration k is the fixed_linear value at step k-1 (8 -> 32 over 16
    steps, multiples of 8), ``consumed_layer_tokens`` sums rows * (S (L-n) + r n), ``consumed_tokens`` stays the data
    tokens and the LR schedule / ``--train-tokens`` count the layer-averaged tokens (``schedule_tokens``)."""
    flags = de_args(tmp_path / "ds.json", de_config(ltd_layers=[1, 2]))
    result = load_entry_script().main(gpt_args(tiny_corpus, metrics_file=tmp_path / "m.jsonl", eval_iters=0,
                                               **flags))
    train = [r for r in read_metrics(tmp_path / "m.jsonl") if r["kind"] == "train"]
    kept = [kept_tokens_fixed_linear(k - 1, **LTD_SCHEDULE) for k in range(1, 21)]
    assert [r["ltd_kept_tokens"] for r in train] == kept
    assert kept[0] == 8 and kept[-1] == SEQ and kept == sorted(kept)
    rows, n, L = 4, 2, 4
    layer_tokens = np.cumsum([rows * (SEQ * (L - n) + k * n) for k in kept])
    assert [r["consumed_layer_tokens"] for r in train] == list(layer_tokens)
    assert [r["consumed_tokens"] for r in train] == [rows * SEQ * k for k in range(1, 21)]
    effective = np.cumsum([rows * ((SEQ * (L - n) + k * n) // L) for k in kept])
    assert [r.get("schedule_tokens", r["consumed_tokens"]) for r in train] == list(effective)
    assert result.consumed_tokens == 20 * rows * SEQ


def test_random_ltd_train_tokens_budget_counts_layer_averaged_tokens(tiny_corpus, tmp_path):
    """--train-tokens stops on the layer-averaged count (Megatron-DeepSpeed's consumed_train_tokens), so a
    random-LTD run takes more steps than the data-token count alone would allow."""
    flags = de_args(tmp_path / "ds.json", de_config(ltd_layers=[1, 2]))
    result = load_entry_script().main(gpt_args(tiny_corpus, train_iters=None, train_tokens=1000, lr_warmup_iters=None,
                                               lr_warmup_tokens=256, lr_decay_tokens=1024, eval_iters=0, **flags))
    # Effective tokens per step 4 * ((32*2 + r*2) // 4): 6 steps at r=8 (80), 5 at r=16 (96), then r=24 (112) reaches
    # 1072 >= 1000 at step 12; counting data tokens (128 per step) would stop at step 8.
    assert result.iteration == 12 and result.consumed_tokens == 12 * 128


BAD = [
    ("unknown key", lambda a: {"data_efficiency": {"enabled": True, "sampling": {}}}, False, False,
     r"sampling: unknown key"),
    ("missing analysis", lambda a: de_config({"vocab_rarity": vocab_rarity_metric(a / "nowhere")}), True, False,
     r"curriculum_metrics\.vocab_rarity\.index_to_sample_path: analysis file .*nowhere.* does not exist"),
    ("layer id too big", lambda a: de_config(ltd_layers=[1, 4]), False, True,
     r"random_ltd_layer_id\[1\].*layer 4 is outside \[0, total_layer_num\) = \[0, 4\)"),
    ("layer count", lambda a: de_config(ltd_layers=[1, 2], num_layers=6), False, True,
     r"total_layer_num \(6\) must equal --num-layers \(4\)"),
    ("switch without json section", lambda a: de_config(ltd_layers=[1, 2]), True, True,
     r"curriculum_learning.enabled is false but data_efficiency_curriculum_learning is True"),
    ("seqlen above seq-length", lambda a: de_config({"seqlen_truncate": seqlen_metric(hi=64)}), True, False,
     r"seqlen_truncate\.max_difficulty \(64\) exceeds --seq-length \(32\)"),
]


@pytest.mark.parametrize("case,make,cl,ltd,message", BAD, ids=[b[0] for b in BAD])
def test_bad_configs_fail_before_training(case, make, cl, ltd, message, tiny_corpus, kjv_analysis, tmp_path,
                                          monkeypatch):
    """A bad data-efficiency config is a ValueError naming the key/file and values, raised while parsing and
    checking the config - before ``pretrain`` (process groups, model, data) is reached."""
    pg = load_entry_script()
    monkeypatch.setattr(pg, "pretrain", lambda *a, **k: pytest.fail("pretrain reached with a bad config"))
    path = tmp_path / "ds.json"
    path.write_text(json.dumps(make(kjv_analysis)), encoding="utf-8")
    flags = {"deepspeed_config": path, "data_efficiency_curriculum_learning": cl, "random_ltd": ltd}
    with pytest.raises(ValueError, match=message):
        pg.main(gpt_args(tiny_corpus, **flags))


IDENTITY_CASES = [
    ("seed", dict(seed=4321), r"seed: analysis 1234, this run 4321\).*--seed"),
    ("seq_length", dict(seq_length=16), r"seq_length: analysis 32, this run 16\).*--seq-length"),
    ("split", dict(split="80,10,10"), r"split: analysis \[0\.9, 0\.08, 0\.02\], this run \[0\.8, 0\.1, 0\.1\]"),
]


@pytest.mark.parametrize("case,flags,message", IDENTITY_CASES, ids=[c[0] for c in IDENTITY_CASES])
def test_analysis_of_another_split_is_rejected(case, flags, message, tiny_corpus, kjv_analysis, tmp_path):
    """An analysis made with another --seed (same sample count: only the order differs), --seq-length or --split
    than the training run is refused through pretrain_gpt.py, naming the setting with both values and its flag."""
    de = de_args(tmp_path / "ds.json", de_config({"vocab_rarity": vocab_rarity_metric(kjv_analysis)}))
    argv = gpt_args(tiny_corpus, train_iters=2, lr_warmup_iters=1, eval_iters=0, **{**de, **flags})
    with pytest.raises(ValueError, match=r"vocab_rarity_index_to_sample_percentile_merged was analyzed for another "
                                         r"training split \(" + message):
        load_entry_script().main(argv)


def test_settings_that_keep_the_split_do_not_reject_the_analysis(tiny_corpus, kjv_analysis, tmp_path):
    """Settings that change batches or loading but not the analyzed samples - loader workers, an explicit
    --train-data-exact-num-epochs 1 (the analyzer forces it), loss/attention masks, another index cache
    directory and a copy of the vocabulary elsewhere - do not make a false mismatch."""
    de = de_args(tmp_path / "ds.json", de_config({"vocab_rarity": vocab_rarity_metric(kjv_analysis)}))
    vocab = tmp_path / "moved" / "vocab.json"
    vocab.parent.mkdir()
    vocab.write_bytes(Path(tiny_corpus["vocab_file"]).read_bytes())
    result = load_entry_script().main(gpt_args(
        tiny_corpus, train_iters=2, lr_warmup_iters=1, eval_iters=0, num_workers=0, train_data_exact_num_epochs=1,
        eod_mask_loss=True, reset_position_ids=True, data_cache_path=tmp_path / "cache", vocab_file=vocab, **de))
    assert result.iteration == 2


def test_analysis_without_identity_warns_and_keeps_the_sample_count_check(tiny_corpus, kjv_analysis, tmp_path,
                                                                          megatron_logs):
    """An analysis made before identities were recorded is accepted with a warning that it cannot be checked; a
    sample count that differs from the one-epoch training dataset is still refused with the file and both counts."""
    old = tmp_path / "old_analysis"
    shutil.copytree(kjv_analysis, old)
    for marker in old.glob("*/*_reduce.done.json"):
        record = json.loads(marker.read_text(encoding="utf-8"))
        del record["identity"]
        marker.write_text(json.dumps(record), encoding="utf-8")
    de = de_args(tmp_path / "ds.json", de_config({"vocab_rarity": vocab_rarity_metric(old)}))
    load_entry_script().main(gpt_args(tiny_corpus, train_iters=2, lr_warmup_iters=1, eval_iters=0, **de))
    assert "predates identity records" in megatron_logs.text
    with pytest.raises(ValueError, match=r"vocab_rarity_index_to_sample_percentile_merged: lists \d+ samples but the "
                                         r"training dataset has \d+"):
        load_entry_script().main(gpt_args(tiny_corpus, seq_length=16, train_iters=2, lr_warmup_iters=1, eval_iters=0,
                                          **de))


@pytest.mark.parametrize("kind", ["legacy_seqlen", "seqlen_reshape"])
def test_seqlen_warmup_and_reshape_count_actual_tokens(kind, tiny_corpus, tmp_path, monkeypatch):
    """DeepSpeed's legacy top-level ``curriculum_learning`` seqlen warm-up (no switch, default sampler, step =
    iteration) truncates to its difficulty; ``seqlen_reshape`` cuts samples into more, shorter rows. Either way
    ``consumed_tokens`` is the sum of the tokens of the batches actually trained."""
    spy = BatchSpy(monkeypatch)
    schedule = {"schedule_type": "fixed_linear", "schedule_config": {"total_curriculum_step": 8, "difficulty_step": 8}}
    if kind == "legacy_seqlen":
        config = {"curriculum_learning": {"enabled": True, "curriculum_type": "seqlen", "min_difficulty": 8,
                                          "max_difficulty": SEQ, **schedule}}
        flags = {"deepspeed_config": tmp_path / "ds.json"}
        (tmp_path / "ds.json").write_text(json.dumps(config), encoding="utf-8")
    else:
        flags = de_args(tmp_path / "ds.json", de_config({"seqlen_reshape": {**seqlen_metric(steps=8)}}))
    result = load_entry_script().main(gpt_args(tiny_corpus, train_iters=10, eval_iters=0,
                                               metrics_file=tmp_path / "m.jsonl", **flags))
    key = "seqlen" if kind == "legacy_seqlen" else "seqlen_reshape"
    lengths = [r["difficulty"][key] for r in spy.records]
    assert lengths[0] == 8 and lengths[-1] == SEQ and lengths == sorted(lengths)
    assert all(r["shape"][1] == r["difficulty"][key] for r in spy.records)
    if kind == "seqlen_reshape":
        assert spy.records[0]["shape"][0] > 2, "reshape turns 2 samples into more rows"
    assert result.consumed_tokens == sum(r["shape"][0] * r["shape"][1] for r in spy.records)
    train = read_metrics(tmp_path / "m.jsonl")
    assert train[0]["difficulty"] == {key: 8}


@pytest.mark.slow
@pytest.mark.distributed
def test_blended_curriculum_dp2_matches_one_process(tiny_corpus, blend_analysis, tmp_path):
    """Blended CL at DP=2 (one micro-batch of 2 per rank) trains like one process accumulating both micro-batches:
    every rank draws the same curriculum global batch and takes its own slice (dropout off; fp32 sums in another
    order agree to ~1e-6 relative)."""
    from dist_utils import run_distributed

    _, flags, _ = blended_curriculum(blend_analysis, tmp_path / "ds.json")
    common = dict(train_iters=8, hidden_dropout=0.0, attention_dropout=0.0, eval_iters=0, data_path=None, **flags)
    argv = gpt_args(tiny_corpus, **common) + ["--data-path", *blend_analysis[0]]
    reference = load_entry_script().main(argv).train_losses
    for losses in run_distributed(_train_losses_body, 2, argv, timeout_s=300):
        assert losses == pytest.approx(reference, rel=1e-5)


def _train_losses_body(rank: int, world_size: int, argv: list[str]) -> dict:
    import torch

    torch.set_num_threads(1)
    return load_entry_script().main(argv).train_losses


@pytest.mark.slow
@pytest.mark.distributed
def test_random_ltd_tp2_matches_one_process(tiny_corpus, tmp_path):
    """Random-LTD through the training path at TP=2 trains like one unsharded process: both TP ranks draw the same
    kept tokens (token-routing RNG stream) and the sharded layers compute the same function (dropout off).
    fp32 sums in another order (row-parallel all-reduce) agree to ~1e-6 relative after 8 steps."""
    from dist_utils import run_distributed

    flags = de_args(tmp_path / "ds.json", de_config(ltd_layers=[1, 2]))
    common = dict(train_iters=8, hidden_dropout=0.0, attention_dropout=0.0, eval_iters=0, **flags)
    reference = load_entry_script().main(gpt_args(tiny_corpus, **common)).train_losses
    tp_argv = gpt_args(tiny_corpus, tensor_model_parallel_size=2, **common)
    for losses in run_distributed(_train_losses_body, 2, tp_argv, timeout_s=300):
        assert losses == pytest.approx(reference, rel=1e-5)

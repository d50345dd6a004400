"""End-to-end ``pretrain_bert.py`` runs on CPU over the tiny sentence-split KJV corpus.

Pins: the total loss is masked-LM + next-sentence and both are logged (train and evaluation records);
``--bert-no-binary-head`` trains the masked LM alone; a resumed run continues exactly; TP=2 trains like one process.
Random-LTD (``model_type: "encoder"``): kept tokens and layer-token accounting follow the schedule, r = S is the
plain run bitwise, resume mid-schedule is exact, TP=2 equals one process, a decoder block is refused.
Curriculum learning: ``tools/analyze_data.py --dataset-type bert`` indexes the training samples by position (real
tokens only); trained samples stay within the difficulty; batches are cut to the seqlen_truncate difficulty or
trimmed to their longest real sample (rounded up to 8); CL + random-LTD resume exactly.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from training.conftest import REPO, bert_args, gpt_args, load_entry_script, read_metrics
from training.test_data_efficiency import de_args, de_config, seqlen_metric, vocab_rarity_metric
from megatron.config import dataclass_from_namespace
from megatron.data.bert_dataset import BertDataConfig
from megatron.data.config import DataConfig
from megatron.data.tokenizers.config import TokenizerConfig
from megatron.data_efficiency.config import load_data_efficiency_config
from megatron.data_efficiency.curriculum.index_files import load_metric_value, output_prefix, read_flat
from megatron.data_efficiency.curriculum.bert_seqlen import BERT_POSITION_KEYS
from megatron.data_efficiency.curriculum.metrics import vocab_rarity_table
from megatron.data_efficiency.routing.scheduler import kept_tokens_fixed_linear
from megatron.training.checkpointing import read_tracker
from megatron.training.config import PretrainConfig
from megatron.training import data_efficiency as de_mod
from megatron.training.data_efficiency import DATA_EFFICIENCY_SECTION, check_data_efficiency


def test_bert_trains_on_masked_lm_plus_next_sentence(tiny_bert_corpus, tmp_path):
    """Each train record's loss equals loss/lm + loss/sop; evaluation records carry both components (summing to the
    validation loss); the masked-LM loss falls over 20 steps."""
    result = load_entry_script("pretrain_bert.py").main(bert_args(tiny_bert_corpus, metrics_file=tmp_path / "m.jsonl"))
    records = read_metrics(tmp_path / "m.jsonl")
    train = [r for r in records if r["kind"] == "train"]
    assert len(train) == 20
    for r in train:
        assert r["loss"] == pytest.approx(r["loss/lm"] + r["loss/sop"], rel=1e-5)
    valid = [r for r in records if r["kind"] == "valid"]
    assert [r["iteration"] for r in valid] == [10, 20]
    for r in valid:
        assert r["val_loss"] == pytest.approx(r["loss/lm"] + r["loss/sop"], rel=1e-5)
        assert r["val_loss"] == pytest.approx(result.val_losses[r["iteration"]])
    assert sum(r["loss/lm"] for r in train[-5:]) < sum(r["loss/lm"] for r in train[:5]) - 1.0
    sop = sum(r["loss/sop"] for r in train) / len(train)
    assert 0.5 < sop < 0.9, f"next-sentence loss {sop} should stay near ln 2 = 0.69 on a tiny run"


def test_bert_without_binary_head_trains_the_masked_lm_alone(tiny_bert_corpus, tmp_path):
    """Megatron's --bert-no-binary-head: no next-sentence head, so the loss is the masked-LM loss alone."""
    load_entry_script("pretrain_bert.py").main(bert_args(tiny_bert_corpus, train_iters=4, eval_iters=0,
                                                         bert_no_binary_head=True, metrics_file=tmp_path / "m.jsonl"))
    train = [r for r in read_metrics(tmp_path / "m.jsonl") if r["kind"] == "train"]
    assert len(train) == 4 and all("loss/sop" not in r and r["loss"] == r["loss/lm"] for r in train)


@pytest.mark.slow
def test_bert_resume_is_exact(tiny_bert_corpus, tmp_path):
    """20 iterations straight equal 10, a checkpoint and 10 resumed ones (dropout on): same losses, same final
    validation loss."""
    pb = load_entry_script("pretrain_bert.py")
    straight = pb.main(bert_args(tiny_bert_corpus))
    ckpt = tmp_path / "ckpt"
    first = pb.main(bert_args(tiny_bert_corpus, save=ckpt, exit_interval=10))
    assert first.exit_reason == "exit_interval" and read_tracker(ckpt) == 10
    second = pb.main(bert_args(tiny_bert_corpus, save=ckpt, load=ckpt))
    assert {**first.train_losses, **second.train_losses} == straight.train_losses
    assert second.val_losses[20] == straight.val_losses[20]


def _train_losses_body(rank: int, world_size: int, argv: list[str]) -> dict:
    import torch

    torch.set_num_threads(1)
    return load_entry_script("pretrain_bert.py").main(argv).train_losses


@pytest.mark.slow
@pytest.mark.distributed
def test_bert_tp2_matches_one_process(tiny_bert_corpus):
    """Two tensor-parallel ranks train BERT like one unsharded process (dropout off; fp32 sums in another order,
    row-parallel all-reduce and vocab-parallel cross entropy, agree to ~1e-6 relative after 6 steps). The 1,026-id
    vocabulary is padded alike at both sizes (divisible-by 1): Megatron pads to a multiple of 128 x TP, and the
    extra dummy rows would enter the softmax."""
    from dist_utils import run_distributed

    common = dict(train_iters=6, hidden_dropout=0.0, attention_dropout=0.0, eval_iters=0,
                  make_vocab_size_divisible_by=1)
    reference = load_entry_script("pretrain_bert.py").main(bert_args(tiny_bert_corpus, **common)).train_losses
    argv = bert_args(tiny_bert_corpus, tensor_model_parallel_size=2, **common)
    for losses in run_distributed(_train_losses_body, 2, argv, timeout_s=300):
        assert losses == pytest.approx(reference, rel=1e-5)


# ---- random-LTD (model_type "encoder") ----------------------------------------------------------------------------
BERT_SEQ = 64  # bert_args' sequence length
BERT_LTD_SCHEDULE = dict(min_value=16, max_value=BERT_SEQ, require_steps=16, seq_per_step=16)


def bert_ltd_flags(path: Path, *, layers: tuple[int, ...] = (1, 2), model_type: str = "encoder",
                   **schedule: int) -> dict[str, Any]:
    """``bert_args`` flags of a random-LTD run (``BERT_LTD_SCHEDULE`` overridden by ``schedule``) whose DeepSpeed
    config is written to ``path``."""
    config = de_config(ltd_layers=list(layers))
    ltd = config["data_efficiency"]["data_routing"]["random_ltd"]
    ltd["model_type"] = model_type
    s = {**BERT_LTD_SCHEDULE, **schedule}
    ltd["random_ltd_schedule"].update(min_value=s["min_value"], max_value=s["max_value"])
    ltd["random_ltd_schedule"]["schedule_config"] = {"require_steps": s["require_steps"],
                                                     "seq_per_step": s["seq_per_step"]}
    return de_args(path, config)


def test_bert_random_ltd_kept_tokens_follow_schedule(tiny_bert_corpus, tmp_path):
    """BERT random-LTD (layers 1-2 of 4): ``ltd_kept_tokens`` of iteration k is the fixed_linear value at step k-1
    (16 -> 64 over 16 steps, multiples of 16), ``consumed_layer_tokens`` sums rows * (S (L-n) + r n),
    ``consumed_tokens`` stays the data tokens (BERT batches are always seq-length long) and the LR schedule counts
    the layer-averaged tokens (``schedule_tokens``); training still lowers the masked-LM loss."""
    flags = bert_ltd_flags(tmp_path / "ds.json")
    result = load_entry_script("pretrain_bert.py").main(
        bert_args(tiny_bert_corpus, metrics_file=tmp_path / "m.jsonl", eval_iters=0, **flags))
    train = [r for r in read_metrics(tmp_path / "m.jsonl") if r["kind"] == "train"]
    kept = [kept_tokens_fixed_linear(k - 1, **BERT_LTD_SCHEDULE) for k in range(1, 21)]
    assert [r["ltd_kept_tokens"] for r in train] == kept
    assert kept[0] == 16 and kept[-1] == BERT_SEQ and kept == sorted(kept)
    rows, n, num_layers = 4, 2, 4
    assert [r["consumed_layer_tokens"] for r in train] == list(
        np.cumsum([rows * (BERT_SEQ * (num_layers - n) + k * n) for k in kept]))
    assert [r["consumed_tokens"] for r in train] == [rows * BERT_SEQ * k for k in range(1, 21)]
    assert [r["schedule_tokens"] for r in train] == list(
        np.cumsum([rows * ((BERT_SEQ * (num_layers - n) + k * n) // num_layers) for k in kept]))
    assert result.consumed_tokens == 20 * rows * BERT_SEQ
    assert sum(r["loss/lm"] for r in train[-5:]) < sum(r["loss/lm"] for r in train[:5]) - 1.0


def test_bert_random_ltd_keeping_every_token_is_the_plain_run(tiny_bert_corpus, tmp_path):
    """With min = max = seq-length the wrapped layers keep every token (r = S): the losses equal the plain run's
    bitwise (dropout on), so wrapping, the token-routing RNG stream and the accounting leave training untouched."""
    pb = load_entry_script("pretrain_bert.py")
    common = dict(train_iters=6, eval_iters=0)
    plain = pb.main(bert_args(tiny_bert_corpus, **common))
    flags = bert_ltd_flags(tmp_path / "ds.json", min_value=BERT_SEQ, max_value=BERT_SEQ)
    full = pb.main(bert_args(tiny_bert_corpus, **common, **flags))
    assert full.train_losses == plain.train_losses


def test_bert_random_ltd_resume_is_exact(tiny_bert_corpus, tmp_path):
    """BERT random-LTD resumed mid-schedule (the ramp ends at step 16): 10 + 10 iterations equal 20 straight - the
    same losses (dropout on), kept tokens, consumed layer tokens, schedule tokens and learning rates."""
    pb = load_entry_script("pretrain_bert.py")
    flags = bert_ltd_flags(tmp_path / "ds.json")
    straight = pb.main(bert_args(tiny_bert_corpus, eval_iters=0, metrics_file=tmp_path / "a.jsonl", **flags))
    ckpt = tmp_path / "ckpt"
    resumed = dict(eval_iters=0, save=ckpt, metrics_file=tmp_path / "b.jsonl", **flags)
    first = pb.main(bert_args(tiny_bert_corpus, exit_interval=10, **resumed))
    assert first.exit_reason == "exit_interval" and read_tracker(ckpt) == 10
    second = pb.main(bert_args(tiny_bert_corpus, load=ckpt, **resumed))
    assert {**first.train_losses, **second.train_losses} == straight.train_losses
    keys = ("iteration", "consumed_tokens", "schedule_tokens", "ltd_kept_tokens", "consumed_layer_tokens", "lr",
            "loss")
    a = [{k: r.get(k) for k in keys} for r in read_metrics(tmp_path / "a.jsonl") if r["kind"] == "train"]
    b = [{k: r.get(k) for k in keys} for r in read_metrics(tmp_path / "b.jsonl") if r["kind"] == "train"]
    assert len(a) == 20 and a == b


@pytest.mark.slow
@pytest.mark.distributed
def test_bert_random_ltd_tp2_matches_one_process(tiny_bert_corpus, tmp_path):
    """BERT random-LTD at TP=2 trains like one unsharded process: both TP ranks keep the same tokens per sample
    (token-routing stream) and gather the same padding-mask rows/columns (dropout off; vocabulary padded alike,
    divisible-by 1). fp32 sums in another order agree to ~1e-6 relative after 6 steps."""
    from dist_utils import run_distributed

    flags = bert_ltd_flags(tmp_path / "ds.json")
    common = dict(train_iters=6, hidden_dropout=0.0, attention_dropout=0.0, eval_iters=0,
                  make_vocab_size_divisible_by=1, **flags)
    reference = load_entry_script("pretrain_bert.py").main(bert_args(tiny_bert_corpus, **common)).train_losses
    argv = bert_args(tiny_bert_corpus, tensor_model_parallel_size=2, **common)
    for losses in run_distributed(_train_losses_body, 2, argv, timeout_s=300):
        assert losses == pytest.approx(reference, rel=1e-5)


def test_bert_random_ltd_decoder_config_is_refused(tiny_bert_corpus, tmp_path, monkeypatch):
    """A GPT-style random-LTD block (``model_type: "decoder"``) given to pretrain_bert.py is a ValueError naming the
    JSON key, the value and the one to use, raised before ``pretrain`` is reached; GPT still requires "decoder"."""
    pb = load_entry_script("pretrain_bert.py")
    monkeypatch.setattr(pb, "pretrain", lambda *a, **k: pytest.fail("pretrain reached with a bad config"))
    flags = bert_ltd_flags(tmp_path / "ds.json", model_type="decoder")
    with pytest.raises(ValueError, match=r'random_ltd\.model_type is \'decoder\' but BERT layers need \'encoder\'; '
                                         r'set "model_type": "encoder"'):
        pb.main(bert_args(tiny_bert_corpus, **flags))
    cfg = PretrainConfig.from_args(gpt_args(tiny_bert_corpus, seq_length=BERT_SEQ, **flags),
                                   extra_sections=DATA_EFFICIENCY_SECTION)
    de = load_data_efficiency_config(tmp_path / "ds.json")
    check_data_efficiency(cfg, de, "gpt")  # the decoder block is GPT's
    with pytest.raises(ValueError, match=r"model_type is 'encoder' but GPT layers need 'decoder'"):
        check_data_efficiency(cfg, load_data_efficiency_config(
            Path(bert_ltd_flags(tmp_path / "enc.json")["deepspeed_config"])), "gpt")


def test_bert_large_random_ltd_example_fits_bert_large():
    """``examples/random_ltd/bert_336m_random_ltd.json`` is the paper's BERT-Large block (layers 1-22 of 24, 128 ->
    512 kept tokens in multiples of 16 over 2M steps, encoder) and passes the BERT checks of a bert-large model at
    seq-length 512."""
    path = REPO / "examples" / "random_ltd" / "bert_336m_random_ltd.json"
    de = load_data_efficiency_config(path)
    ltd = de.data_routing.random_ltd
    assert ltd.random_ltd_layer_id == list(range(1, 23)) and ltd.model_type == "encoder"
    s = ltd.random_ltd_schedule
    assert (s.min_value, s.max_value, s.schedule_config.seq_per_step, s.schedule_config.require_steps) == (
        128, 512, 16, 2_000_000)
    cfg = PretrainConfig.from_args(["--model-flavor", "bert-large", "--seq-length", "512", "--micro-batch-size", "16",
                                    "--train-iters", "10", "--lr", "1e-4"], extra_sections=DATA_EFFICIENCY_SECTION)
    check_data_efficiency(cfg, de, "bert")
    with pytest.raises(ValueError, match="model_type is 'encoder' but GPT layers need 'decoder'"):
        check_data_efficiency(cfg, de, "gpt")


# ---- curriculum learning (analysis by dataset position, truncation / padding trim) ------------------------------
SHORT_SEQ_PROB = 0.5  # half the samples get a random shorter target, so seqlen spreads over [5, 64]


def analyze_bert_corpus(corpus: dict[str, str], save_path: Path) -> Path:
    """``tools/analyze_data.py --dataset-type bert`` with bert_args' data flags and ``SHORT_SEQ_PROB`` (seqlen and
    vocab_rarity)."""
    load_entry_script("tools/analyze_data.py").main(
        ["--dataset-type", "bert", "--data-path", corpus["data_path"], "--vocab-file", corpus["vocab_file"],
         "--tokenizer-type", "BertWordPieceLowerCase", "--split", "90,8,2", "--seq-length", str(BERT_SEQ),
         "--seed", "1234", "--short-seq-prob", str(SHORT_SEQ_PROB), "--metrics", "seqlen", "vocab_rarity",
         "--save-path", str(save_path), "--num-threads", "1", "--no-progress"])
    return save_path


@pytest.fixture(scope="module")
def bert_analysis(tiny_bert_corpus, tmp_path_factory) -> Path:
    """The tiny BERT corpus' seqlen and vocab-rarity analysis (module-wide, read-only)."""
    return analyze_bert_corpus(tiny_bert_corpus, tmp_path_factory.mktemp("bert_analysis"))


def sample_metric(analysis: Path, name: str) -> np.ndarray:
    """Per-sample values of an analyzed metric (row k = training sample k)."""
    return np.asarray(read_flat(output_prefix(str(analysis), name, "sample_to_metric"))[0])


def value_metric(analysis: Path, name: str, lo: int, hi: int) -> dict[str, Any]:
    """A value-based, schedule-based curriculum metric over ``name`` from ``lo`` to ``hi`` (fixed_root, 16 steps)."""
    return vocab_rarity_metric(analysis, difficulty_type="value", lo=lo, hi=hi) | {
        "index_to_sample_path": output_prefix(str(analysis), name, "index_to_sample"),
        "index_to_metric_path": output_prefix(str(analysis), name, "index_to_metric")}


class BertBatchSpy:
    """Records, per training micro-batch: dataset positions, difficulties, real lengths before and the shapes of
    every per-position field after the curriculum's post-processing."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.records: list[dict[str, Any]] = []
        original = de_mod.BertCurriculumExtension.process_batch

        def spy(ext, batch, iteration):
            out = original(ext, batch, iteration)
            self.records.append({
                "iteration": iteration, "indices": batch["dataset_sample_index"].tolist(),
                "difficulty": dict(ext._difficulties), "real": batch["padding_mask"].sum(1).tolist(),
                "shapes": {k: tuple(out[k].shape) for k in BERT_POSITION_KEYS}})
            return out

        monkeypatch.setattr(de_mod.BertCurriculumExtension, "process_batch", spy)


def test_bert_analysis_counts_real_tokens_of_unmasked_training_samples(tiny_bert_corpus, bert_analysis):
    """Row k of the BERT analysis belongs to sample k of the exact-epoch training dataset pretrain_bert.py builds
    (masking on): ``seqlen`` is its number of real tokens and ``vocab_rarity`` the floor of the rarity sum of its
    unmasked real tokens (masked positions restored from their labels) - padding never counts."""
    tool = load_entry_script("tools/analyze_data.py")
    ns, _ = tool.build_parser().parse_known_args(bert_args(tiny_bert_corpus))
    data_cfg = dataclass_from_namespace(DataConfig, ns)
    (train,), _ = tool.build_train_components(data_cfg, dataclass_from_namespace(TokenizerConfig, ns), 1234,
                                              BertDataConfig(short_seq_prob=SHORT_SEQ_PROB))
    train.mask_prob = 0.15  # what training sees; the tool itself builds the unmasked view
    seqlen, rarity = sample_metric(bert_analysis, "seqlen"), sample_metric(bert_analysis, "vocab_rarity")
    assert len(seqlen) == len(train) > 100
    table = vocab_rarity_table(load_metric_value(str(bert_analysis), "total_vocab_freq"))
    for k in range(0, len(train), 7):
        item = train[k]
        real = item["padding_mask"].astype(bool)
        unmasked = np.where(item["loss_mask"] == 1, item["labels"], item["tokens"])
        assert seqlen[k] == real.sum() < BERT_SEQ or seqlen[k] == real.sum() == BERT_SEQ
        assert rarity[k] == int(np.floor(table[unmasked[real]].sum())), k
    assert seqlen.min() < BERT_SEQ // 2 < seqlen.max(), "short samples exist (short_seq_prob), so CL can order them"


def test_bert_curriculum_never_exceeds_difficulty_and_trims_padding(tiny_bert_corpus, bert_analysis, tmp_path,
                                                                    monkeypatch):
    """A value curriculum on the analyzed ``seqlen``: every trained sample's real length (by the analysis, and as
    seen in its batch - the analysis is keyed by dataset position) is within the difficulty of its global batch;
    each micro-batch is trimmed to its longest real sample rounded up to 8, every per-position field alike; and
    ``consumed_tokens`` is the sum of the trimmed batches' tokens."""
    values = sample_metric(bert_analysis, "seqlen")
    lo, hi = int(np.percentile(values, 20)), int(values.max())
    spy = BertBatchSpy(monkeypatch)
    flags = de_args(tmp_path / "ds.json", de_config({"seqlen": value_metric(bert_analysis, "seqlen", lo, hi)}))
    result = load_entry_script("pretrain_bert.py").main(bert_args(tiny_bert_corpus, eval_iters=0,
                                                                          short_seq_prob=SHORT_SEQ_PROB, **flags))
    assert len(spy.records) == 20 * 2
    for r in spy.records:
        assert values[r["indices"]].tolist() == r["real"], r
        assert max(r["real"]) <= r["difficulty"]["seqlen"], r
        width = min(-(-max(r["real"]) // 8) * 8, BERT_SEQ)
        assert set(r["shapes"].values()) == {(2, width)}, r
    assert spy.records[0]["difficulty"]["seqlen"] < hi and spy.records[-1]["difficulty"]["seqlen"] == hi
    assert min(r["shapes"]["tokens"][1] for r in spy.records) < BERT_SEQ, "some batches were trimmed"
    assert result.consumed_tokens == sum(r["shapes"]["tokens"][0] * r["shapes"]["tokens"][1] for r in spy.records)


def test_bert_analysis_of_other_sample_settings_is_rejected(tiny_bert_corpus, bert_analysis, tmp_path):
    """A BERT analysis made with another --short-seq-prob than training (samples of other lengths at the same
    positions) is refused through pretrain_bert.py with both values, before training."""
    flags = de_args(tmp_path / "ds.json", de_config({"seqlen": value_metric(bert_analysis, "seqlen", 16, BERT_SEQ)}))
    with pytest.raises(ValueError, match=r"seqlen_index_to_sample was analyzed for another training split "
                                         r"\(bert\.short_seq_prob: analysis 0\.5, this run 0\.1\).*--short-seq-prob"):
        load_entry_script("pretrain_bert.py").main(bert_args(tiny_bert_corpus, eval_iters=0, **flags))


def test_bert_seqlen_truncate_cuts_every_field_to_the_difficulty(tiny_bert_corpus, bert_analysis, tmp_path,
                                                                 monkeypatch):
    """``seqlen_truncate`` (16 -> 64 positions) with a vocab-rarity curriculum: tokens, types, labels, loss mask
    and padding mask of every micro-batch are cut to the seqlen difficulty, and every sample's vocab rarity is
    within its batch's difficulty."""
    rarity = sample_metric(bert_analysis, "vocab_rarity")
    lo, hi = int(np.percentile(rarity, 20)), int(rarity.max())
    metrics = {"vocab_rarity": value_metric(bert_analysis, "vocab_rarity", lo, hi),
               "seqlen_truncate": seqlen_metric(lo=16, hi=BERT_SEQ)}
    spy = BertBatchSpy(monkeypatch)
    flags = de_args(tmp_path / "ds.json", de_config(metrics))
    load_entry_script("pretrain_bert.py").main(bert_args(tiny_bert_corpus, train_iters=10, eval_iters=0,
                                                                 short_seq_prob=SHORT_SEQ_PROB, **flags))
    for r in spy.records:
        assert set(r["shapes"].values()) == {(2, r["difficulty"]["seqlen_truncate"])}, r
        assert rarity[r["indices"]].max() <= r["difficulty"]["vocab_rarity"], r
    assert spy.records[0]["difficulty"]["seqlen_truncate"] == 16


def test_bert_curriculum_and_random_ltd_resume_exactly(tiny_bert_corpus, bert_analysis, tmp_path, monkeypatch):
    """Seqlen curriculum (padding trim, so micro-batches of one step differ in length) with random-LTD: 10 + 10
    iterations equal 20 straight - the same losses (dropout on), sampled positions, difficulties, shapes, kept
    tokens, layer tokens and learning rates; the layer tokens count each micro-batch at its own length."""
    values = sample_metric(bert_analysis, "seqlen")
    config = de_config({"seqlen": value_metric(bert_analysis, "seqlen", int(np.percentile(values, 20)),
                                               int(values.max()))}, ltd_layers=[1, 2])
    ltd = config["data_efficiency"]["data_routing"]["random_ltd"]
    ltd["model_type"] = "encoder"
    ltd["random_ltd_schedule"].update(min_value=16, max_value=BERT_SEQ)
    flags = {**de_args(tmp_path / "ds.json", config), "short_seq_prob": SHORT_SEQ_PROB}
    pb = load_entry_script("pretrain_bert.py")
    spy = BertBatchSpy(monkeypatch)
    straight = pb.main(bert_args(tiny_bert_corpus, eval_iters=0, metrics_file=tmp_path / "a.jsonl", **flags))
    straight_batches, spy.records[:] = list(spy.records), []
    ckpt = tmp_path / "ckpt"
    resumed = dict(eval_iters=0, save=ckpt, metrics_file=tmp_path / "b.jsonl", **flags)
    first = pb.main(bert_args(tiny_bert_corpus, exit_interval=10, **resumed))
    second = pb.main(bert_args(tiny_bert_corpus, load=ckpt, **resumed))
    assert first.exit_reason == "exit_interval" and spy.records == straight_batches
    assert {**first.train_losses, **second.train_losses} == straight.train_losses
    keys = ("iteration", "consumed_tokens", "schedule_tokens", "difficulty", "ltd_kept_tokens",
            "consumed_layer_tokens", "lr", "loss")
    a = [{k: r.get(k) for k in keys} for r in read_metrics(tmp_path / "a.jsonl") if r["kind"] == "train"]
    b = [{k: r.get(k) for k in keys} for r in read_metrics(tmp_path / "b.jsonl") if r["kind"] == "train"]
    assert len(a) == 20 and a == b
    lengths = [[r["shapes"]["tokens"][1] for r in straight_batches[2 * i: 2 * i + 2]] for i in range(20)]
    assert any(x != y for x, y in lengths), "some step had micro-batches of different lengths"
    kept = [r["ltd_kept_tokens"] for r in read_metrics(tmp_path / "a.jsonl") if r["kind"] == "train"]
    layer_tokens = np.cumsum([sum(2 * (s * 2 + min(k, s) * 2) for s in ls) for ls, k in zip(lengths, kept)])
    assert [r["consumed_layer_tokens"] for r in a] == list(layer_tokens)


@pytest.mark.parametrize("kind", ["seqlen_reshape", "legacy"])
def test_bert_gpt_only_seqlen_curricula_are_refused(kind, tiny_bert_corpus, tmp_path, monkeypatch):
    """``seqlen_reshape`` (cuts GPT token streams into rows) and the legacy top-level seqlen warm-up (GPT's) are
    NotImplementedError for BERT, naming the alternative, before ``pretrain`` is reached."""
    pb = load_entry_script("pretrain_bert.py")
    monkeypatch.setattr(pb, "pretrain", lambda *a, **k: pytest.fail("pretrain reached with a bad config"))
    if kind == "legacy":
        path = tmp_path / "ds.json"
        path.write_text(json.dumps({"curriculum_learning": {
            "enabled": True, "curriculum_type": "seqlen", "min_difficulty": 16, "max_difficulty": BERT_SEQ,
            "schedule_type": "fixed_linear", "schedule_config": {"total_curriculum_step": 8, "difficulty_step": 8}}}))
        flags: dict[str, Any] = {"deepspeed_config": path}
    else:
        flags = de_args(tmp_path / "ds.json", de_config({"seqlen_reshape": seqlen_metric(lo=16, hi=BERT_SEQ)}))
    with pytest.raises(NotImplementedError, match="use (a )?seqlen_truncate"):
        pb.main(bert_args(tiny_bert_corpus, **flags))


def _dp_trim_body(rank: int, world_size: int, argv: list[str]) -> tuple[dict, list]:
    import torch

    torch.set_num_threads(1)
    records = []
    original = de_mod.BertCurriculumExtension.process_batch

    def spy(ext, batch, iteration):
        out = original(ext, batch, iteration)
        records.append((int(batch["padding_mask"].sum(1).max()), int(out["tokens"].shape[1])))
        return out

    de_mod.BertCurriculumExtension.process_batch = spy
    return load_entry_script("pretrain_bert.py").main(argv).train_losses, records


@pytest.mark.slow
@pytest.mark.distributed
def test_bert_padding_trim_is_shared_by_dp_ranks(tiny_bert_corpus, bert_analysis, tmp_path):
    """At DP=2 the padding trim of each micro-batch step is the longest real sample over *both* ranks rounded up to
    8, so the two ranks cut to one width even where their own longest samples differ (which happens here); the
    trim drops padding only, so the losses equal one process accumulating the same global batches (fp32 sums in
    another order: ~1e-6 relative)."""
    from dist_utils import run_distributed

    values = sample_metric(bert_analysis, "seqlen")
    config = de_config({"seqlen": value_metric(bert_analysis, "seqlen", int(np.percentile(values, 20)),
                                               int(values.max()))})
    flags = {**de_args(tmp_path / "ds.json", config), "short_seq_prob": SHORT_SEQ_PROB}
    common = dict(train_iters=8, eval_iters=0, hidden_dropout=0.0, attention_dropout=0.0, **flags)
    reference = load_entry_script("pretrain_bert.py").main(bert_args(tiny_bert_corpus, **common)).train_losses
    argv = bert_args(tiny_bert_corpus, micro_batch_size=2, global_batch_size=4, **common)
    (losses0, rec0), (losses1, rec1) = run_distributed(_dp_trim_body, 2, argv, timeout_s=300)
    assert len(rec0) == len(rec1) == 8
    for (own0, width0), (own1, width1) in zip(rec0, rec1):
        assert width0 == width1 == min(-(-max(own0, own1) // 8) * 8, BERT_SEQ)
    assert any(-(-a // 8) != -(-b // 8) for (a, _), (b, _) in zip(rec0, rec1)), "ranks' own widths differ somewhere"
    assert losses0 == losses1 == pytest.approx(reference, rel=1e-5)

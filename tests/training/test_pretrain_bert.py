"""End-to-end ``pretrain_bert.py`` runs on CPU over the tiny sentence-split KJV corpus.

Pins: the total loss is masked-LM + next-sentence and both are logged (train and evaluation records);
``--bert-no-binary-head`` trains the masked LM alone; a resumed run continues exactly; TP=2 trains like one process.
Random-LTD (``model_type: "encoder"``): kept tokens and layer-token accounting follow the schedule, r = S is the
plain run bitwise, resume mid-schedule is exact, TP=2 equals one process, a decoder block is refused.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from training.conftest import REPO, bert_args, gpt_args, load_entry_script, read_metrics
from training.test_data_efficiency import de_args, de_config
from megatron.data_efficiency.config import load_data_efficiency_config
from megatron.data_efficiency.routing.scheduler import kept_tokens_fixed_linear
from megatron.training.checkpointing import read_tracker
from megatron.training.config import PretrainConfig
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

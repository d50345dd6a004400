"""End-to-end ``pretrain_bert.py`` runs on CPU over the tiny sentence-split KJV corpus.

Pins: the total loss is masked-LM + next-sentence and both are logged (train and evaluation records);
``--bert-no-binary-head`` trains the masked LM alone; a resumed run continues exactly; TP=2 trains like one process.
"""

from __future__ import annotations

import pytest

from training.conftest import bert_args, load_entry_script, read_metrics
from megatron.training.checkpointing import read_tracker


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

"""GPT fine-tuning (the paper's Table 6 setting): ``pretrain_gpt.py --finetune --load PRETRAINED`` on a second
corpus starts from the pretrained weights with a fresh optimizer, schedule and iteration count, works with random-LTD,
and an interrupted fine-tuning run resumes from its own ``--save`` exactly."""

from __future__ import annotations

import pytest
import torch

from training.conftest import gpt_args, load_entry_script
from training.test_data_efficiency import de_args, de_config, second_corpus
from megatron.training.checkpointing import read_checkpoint, read_tracker


@pytest.fixture(scope="module")
def pretrained(tiny_corpus, tmp_path_factory):
    """A GPT pretrained for 20 iterations on the tiny corpus, and a second corpus with the same vocabulary."""
    root = tmp_path_factory.mktemp("finetune")
    load_entry_script().main(gpt_args(tiny_corpus, save=root / "pre", eval_iters=0, skip_test=True))
    return root / "pre", second_corpus(tiny_corpus, root)


def finetune_args(corpus, data_path, **flags):
    return gpt_args(corpus, data_path=data_path, finetune=True, train_iters=10, lr=5e-4, lr_warmup_iters=0,
                    eval_iters=0, skip_test=True, **flags)


@pytest.mark.slow
def test_finetune_starts_from_pretrained_weights_and_resumes_exactly(tiny_corpus, pretrained, tmp_path):
    """The fine-tuning run counts its own 10 iterations from 0; its first loss is the pretrained model's (lower
    than a fresh model's on the same batch); 5 iterations, an exit and a rerun of the same command continue from
    the run's own checkpoint (not the pretrained one) and give bit-identical losses to 10 straight iterations."""
    pre, data = pretrained
    pg = load_entry_script()
    straight = pg.main(finetune_args(tiny_corpus, data, load=pre, save=tmp_path / "straight"))
    assert straight.iteration == 10 and read_tracker(tmp_path / "straight") == 10
    scratch = pg.main(gpt_args(tiny_corpus, data_path=data, train_iters=1, lr_warmup_iters=0, eval_iters=0,
                                  skip_test=True))
    assert straight.train_losses[1] < scratch.train_losses[1] - 0.25

    ft = tmp_path / "ft"
    first = pg.main(finetune_args(tiny_corpus, data, load=pre, save=ft, exit_interval=5))
    assert first.exit_reason == "exit_interval" and read_tracker(ft) == 5
    second = pg.main(finetune_args(tiny_corpus, data, load=pre, save=ft))
    assert sorted(second.train_losses) == list(range(6, 11))
    assert {**first.train_losses, **second.train_losses} == straight.train_losses
    a, _, _ = read_checkpoint(tmp_path / "straight")
    b, _, _ = read_checkpoint(ft)
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])


@pytest.mark.slow
def test_finetune_with_random_ltd(tiny_corpus, pretrained, tmp_path):
    """Random-LTD applies while fine-tuning a pretrained checkpoint: the kept-token schedule starts over at the
    fine-tuning run's step 1 and the losses differ from the plain fine-tuning run's."""
    pre, data = pretrained
    pg = load_entry_script()
    plain = pg.main(finetune_args(tiny_corpus, data, load=pre))
    flags = de_args(tmp_path / "ds.json", de_config(ltd_layers=[1, 2]))
    ltd = pg.main(finetune_args(tiny_corpus, data, load=pre, **flags))
    assert ltd.iteration == 10 and ltd.consumed_tokens == plain.consumed_tokens
    assert ltd.train_losses[1] != plain.train_losses[1]
    assert abs(ltd.train_losses[1] - plain.train_losses[1]) < 1.0  # both start from the pretrained weights

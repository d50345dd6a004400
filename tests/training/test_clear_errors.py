"""Bad inputs and environments reach the user as one clear message, early, through the real entry scripts.

Each case once ended in a raw exception (``TypeError``, torch's ``index out of range in self``, ``RuntimeError:
[enforce fail at inline_container.cc]``) or failed late (after training started); docs/fault_cases.md lists them.
"""

from __future__ import annotations

import errno
import io
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from data.conftest import toy_gpt2_dataset  # noqa: F401 - fixture
from training.conftest import REPO, bert_args, gpt_args, load_entry_script, tiny_bert_corpus  # noqa: F401

from megatron.training.checkpointing import TRACKER_FILENAME
from megatron.training.config import PretrainConfig

QUICK = dict(train_iters=2, lr_warmup_iters=0, eval_iters=0, skip_test=True)
"""Flags of a 2-iteration run without evaluation, for cases about the start or the end of a run."""


# ---- --split -----------------------------------------------------------------------------------------------
def test_split_without_training_documents_is_an_error(tiny_corpus):
    """--split 0,50,50 names the train split, the split and the file instead of a TypeError from len(None)."""
    with pytest.raises(ValueError, match=r"--split '0,50,50' gives the train split none of the 40 documents of "
                                         r".*kjv_text_document.*larger share in --split"):
        load_entry_script().main(gpt_args(tiny_corpus, split="0,50,50"))


def test_empty_split_is_skipped_when_unused_and_an_error_when_used(tiny_corpus, megatron_logs):
    """Megatron's default --split 969,30,1 leaves 40 documents no test document: with --skip-test the run trains
    and warns that the unused split was skipped; without it the error names the test split and --skip-test. A
    valid split rounded to no documents is an error while --eval-iters > 0 and fine with --eval-iters 0."""
    pg = load_entry_script()
    result = pg.main(gpt_args(tiny_corpus, split="969,30,1", train_iters=2, lr_warmup_iters=0, skip_test=True))
    assert result.exit_reason == "finished" and result.test_loss is None and result.val_losses
    assert "gives the test split none of the 40 documents; skipped, as nothing uses it" in megatron_logs.text
    with pytest.raises(ValueError, match=r"--split '969,30,1' gives the test split none.*unless --skip-test"):
        pg.main(gpt_args(tiny_corpus, split="969,30,1", train_iters=2, lr_warmup_iters=0))
    # 97,1,2 of 40 documents: train [0, 39), valid [39, 39) (empty), test [39, 40).
    with pytest.raises(ValueError, match=r"gives the valid split none.*--eval-iters 0"):
        pg.main(gpt_args(tiny_corpus, split="97,1,2", train_iters=2, lr_warmup_iters=0))
    result = pg.main(gpt_args(tiny_corpus, split="97,1,2", train_iters=2, lr_warmup_iters=0, eval_iters=0))
    assert result.exit_reason == "finished" and not result.val_losses


def test_zero_share_means_no_such_split(tiny_corpus):
    """A share of 0 is Megatron's way to have no test (or valid) split: --split 98,2,0 trains and validates
    without --skip-test and without an error."""
    result = load_entry_script().main(gpt_args(tiny_corpus, split="98,2,0", train_iters=2, lr_warmup_iters=0))
    assert result.exit_reason == "finished" and result.val_losses and result.test_loss is None


# ---- token ids and the vocabulary --------------------------------------------------------------------------
def test_token_ids_beyond_the_vocabulary_are_named(tiny_corpus, toy_gpt2_dataset):  # noqa: F811
    """Data tokenized with GPT-2 (ids up to 50256) trained with the 512-token BPE fails before training with the
    largest id, the vocabulary size and the file, not with torch's 'index out of range in self'."""
    with pytest.raises(ValueError, match=r"kjv_text_document\.bin holds token id 50256 \(ids 0\.\.50256\), but the "
                                         r"tokenizer has 512 ids \(0\.\.511\).*another tokenizer"):
        load_entry_script().main(gpt_args(tiny_corpus, data_path=toy_gpt2_dataset, **QUICK))


def test_bert_token_ids_beyond_the_vocabulary_are_named(tiny_bert_corpus, tmp_path):  # noqa: F811
    """BERT data made with a 1,024-token WordPiece vocabulary, trained with a 200-token one, fails with both sizes
    instead of an IndexError in masking."""
    small = tmp_path / "vocab200.txt"
    lines = Path(tiny_bert_corpus["vocab_file"]).read_text(encoding="utf-8").splitlines()
    small.write_text("\n".join(lines[:200]) + "\n", encoding="utf-8")
    # The tokenizer adds Megatron's extra special tokens to the 200 of the file.
    with pytest.raises(ValueError, match=r"kjv_text_sentence\.bin holds token id 10\d\d .*but the tokenizer has 20\d "
                                         r"ids \(0\.\.20\d\)"):
        load_entry_script("pretrain_bert.py").main(bert_args(tiny_bert_corpus, vocab_file=small, **QUICK))


# ---- --save ------------------------------------------------------------------------------------------------
def test_save_that_is_a_file_fails_before_training(tiny_corpus, tmp_path):
    """--save naming a file (or a path under one) is refused by validate(), before any model exists, instead of
    at the first save after training."""
    file = tmp_path / "notes.txt"
    file.write_text("x", encoding="utf-8")
    for save, message in ((file, "is a file, not a directory"), (file / "ckpt", f"{file} is a file")):
        cfg = PretrainConfig.from_args(gpt_args(tiny_corpus, save=save, **QUICK))
        with pytest.raises(ValueError, match=f"--save '{re.escape(str(save))}'.*{re.escape(message)}"):
            cfg.validate(world_size=1)
        with pytest.raises(ValueError, match=re.escape(message)):
            load_entry_script().main(gpt_args(tiny_corpus, save=save, **QUICK))
    assert file.read_text(encoding="utf-8") == "x"


class _DiskFullAfter(io.RawIOBase):
    """A writable file that takes ``limit`` bytes, then fails as a full disk does."""

    def __init__(self, f, limit: int) -> None:
        super().__init__()
        self.f, self.left = f, limit

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        if len(data) > self.left:
            raise OSError(errno.ENOSPC, "No space left on device")
        self.left -= len(data)
        return self.f.write(data)


def _oserror(obj, f):
    raise OSError(errno.ENOSPC, "No space left on device")


def _torch_short_write(obj, f, _save=torch.save):
    _save(obj, _DiskFullAfter(f, 4096))  # torch turns the OSError into "[enforce fail at inline_container.cc]"


def _torch_runtime_error(obj, f):
    raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598")


@pytest.mark.parametrize("writer", [_oserror, _torch_short_write, _torch_runtime_error],
                         ids=["ENOSPC", "torch short write", "torch RuntimeError"])
def test_disk_full_while_saving_names_device_and_file(tiny_corpus, tmp_path, monkeypatch, writer):
    """A full disk while saving (ENOSPC, or torch's inline_container.cc RuntimeError that hides it) is
    OSError(ENOSPC) 'no space left on DEVICE while writing PATH'; the partial iter_*.tmp directory is removed and
    no tracker names it."""
    ckpt = tmp_path / "ckpt"
    monkeypatch.setattr(torch, "save", writer)
    with pytest.raises(OSError, match=r"no space left on .* while writing .*iter_0000002\.tmp/mp_rank_00/"
                                      r"model_optim_rng\.pt") as info:
        load_entry_script().main(gpt_args(tiny_corpus, save=ckpt, save_interval=2, **QUICK))
    assert info.value.errno == errno.ENOSPC
    assert sorted(os.listdir(ckpt)) == []  # no staging directory, no tracker, no temp file
    assert not (ckpt / TRACKER_FILENAME).exists()


# ---- the command line --------------------------------------------------------------------------------------
def _run(args: list[str], env: dict[str, str] | None = None, timeout: int = 240) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    return subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=timeout,
                          env={**environ, "OMP_NUM_THREADS": "1", **(env or {})})


def test_user_error_prints_one_line_on_rank_0_and_exits_2(tiny_corpus, tmp_path):
    """python pretrain_gpt.py with a bad flag value prints 'error: ...' once, without a traceback, and exits 2;
    as any other rank (RANK=1) it prints nothing and exits 2 too. pretrain_bert.py behaves the same."""
    file = tmp_path / "file"
    file.write_text("", encoding="utf-8")
    for script, flags in (("pretrain_gpt.py", gpt_args(tiny_corpus, save=file)),
                          ("pretrain_bert.py", ["--position-embedding-type", "rope", "--model-flavor", "debug"])):
        proc = _run([sys.executable, script, *flags])
        assert proc.returncode == 2, proc.stderr
        lines = [line for line in proc.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
        assert "Traceback" not in proc.stderr
    proc = _run([sys.executable, "pretrain_gpt.py", *gpt_args(tiny_corpus, save=file)],
                env={"RANK": "1", "WORLD_SIZE": "2"})
    assert proc.returncode == 2 and proc.stderr.strip() == "", proc.stderr


@pytest.mark.distributed
def test_torchrun_prints_a_user_error_once(tiny_corpus, tmp_path):
    """Under torchrun with 2 processes a validation error appears once ('error: ...' from rank 0), not as one
    traceback per rank, and the job fails."""
    torchrun = shutil.which("torchrun", path=os.path.dirname(sys.executable))
    if torchrun is None:
        pytest.skip("torchrun is not installed next to this Python")
    file = tmp_path / "file"
    file.write_text("", encoding="utf-8")
    proc = _run([torchrun, "--standalone", "--nproc-per-node", "2", "pretrain_gpt.py",
                 *gpt_args(tiny_corpus, save=file)])
    assert proc.returncode != 0
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "is a file, not a directory" in errors[0], proc.stderr
    assert "pretrain_gpt.py\", line" not in proc.stderr  # no traceback through the entry script


def _help_entries(text: str) -> dict[str, str]:
    """``{"--seq-length SEQ_LENGTH": "its help text on one line"}`` from argparse's --help output."""
    entries: dict[str, str] = {}
    current = None
    for line in text.splitlines():
        if line.startswith("  -"):
            current, _, rest = line.strip().partition("  ")
            entries[current] = rest.strip()
        elif current is not None and line.startswith("      "):
            entries[current] = (entries[current] + " " + line.strip()).strip()
        else:
            current = None
    return entries


def test_help_shows_defaults_and_parsing_is_unchanged():
    """--help shows each flag's dataclass default ('(default: X)'; argparse cannot, its defaults are SUPPRESS),
    none for flags without one, and an empty command line still parses to nothing (absent flags keep the
    dataclass defaults)."""
    proc = _run([sys.executable, "pretrain_gpt.py", "--help"], timeout=120)
    assert proc.returncode == 0, proc.stderr
    entries = _help_entries(proc.stdout)
    for flag, default in (("--seq-length SEQ_LENGTH", "1024"), ("--split SPLIT", "'969, 30, 1'"),
                          ("--lr-decay-style {constant,linear,cosine,inverse-square-root}", "linear"),
                          ("--eval-iters EVAL_ITERS", "100"), ("--num-workers NUM_WORKERS", "2"),
                          ("--check-for-nan-in-loss-and-grad", "True")):
        assert entries[flag].endswith(f"(default: {default})"), (flag, entries[flag])
    assert "default" not in entries["--lr LR"]  # required: no default to show
    assert "default" not in entries["--fp16"]  # a switch is off unless given
    assert vars(PretrainConfig.build_parser().parse_args([])) == {}


def test_disable_bias_linear_is_accepted(tiny_corpus):
    """--disable-bias-linear, which the help of --add-bias-linear mentions, is Megatron's spelling of
    --no-add-bias-linear: it parses, trains, and the model has no linear biases."""
    argv = gpt_args(tiny_corpus, disable_bias_linear=True, **QUICK)
    assert PretrainConfig.from_args(argv).model.add_bias_linear is False
    pg = load_entry_script()
    seen = {}
    original = pg.model_provider

    def spy(cfg, pstate, vocab_size):
        model = original(cfg, pstate, vocab_size)
        seen["names"] = [name for name, _ in model.named_parameters()]
        return model

    pg.model_provider = spy
    try:
        assert pg.main(argv).exit_reason == "finished"
    finally:
        pg.model_provider = original
    assert not any(re.search(r"(qkv|dense|fc|h_to_4h|4h_to_h).*\.bias$", n) for n in seen["names"]), seen["names"]
    assert any(n.endswith(".bias") for n in seen["names"])  # LayerNorm biases stay


def test_end_of_run_names_its_outputs(tiny_corpus, tmp_path, megatron_logs):
    """The run's last log lines say where its checkpoints (with the latest iteration), metrics file and
    TensorBoard events are."""
    run = tmp_path / "run"
    load_entry_script().main(gpt_args(tiny_corpus, save=run / "checkpoints", metrics_file=run / "metrics.jsonl",
                                      tensorboard_dir=run / "tb", **QUICK))
    report = megatron_logs.records[-1].getMessage()
    assert report.startswith("> training finished at iteration 2; outputs:")
    assert f"checkpoints: {run / 'checkpoints'} (latest iteration 2)" in report
    assert f"metrics:     {run / 'metrics.jsonl'}" in report and f"tensorboard: {run / 'tb'}" in report
    load_entry_script().main(gpt_args(tiny_corpus, **QUICK))
    assert "checkpoints: none (no --save)" in megatron_logs.records[-1].getMessage()

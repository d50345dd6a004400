"""Resume and checkpoint guards through ``pretrain_gpt.py``: nothing about ``--load`` / ``--save`` goes silently wrong.

Pins: a ``--load`` that finds nothing is an error naming the likely mistake unless ``--allow-missing-checkpoint``;
a run never moves ``latest_checkpointed_iteration.txt`` back or replaces newer iterations unless
``--overwrite-checkpoints``; a resume that changes a defining argument or would drop curriculum / random-LTD state
is refused with both values unless ``--override-checkpoint-args``; ``--finetune`` needs only the architecture and
tokenizer; a checkpoint whose parameters hold nan/inf is never written. Every case is listed in
``docs/fault_cases.md``.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from training.conftest import gpt_args, load_entry_script
from training.test_data_efficiency import (  # noqa: F401 - fixture
    de_args,
    de_config,
    kjv_analysis,
    vocab_rarity_metric,
)
from megatron.training.checkpointing import TRACKER_FILENAME, checkpoint_path, read_tracker

FAST = dict(train_iters=4, eval_iters=0, lr_warmup_iters=1, log_interval=10)


def _main(corpus: dict[str, str], **flags):
    return load_entry_script().main(gpt_args(corpus, **{**FAST, **flags}))


@pytest.fixture(scope="module")
def ckpt20(tiny_corpus, tmp_path_factory) -> Path:
    """A --save directory holding iterations 10 and 20 of a plain run (copy it before writing)."""
    root = tmp_path_factory.mktemp("ckpt20") / "ckpt"
    _main(tiny_corpus, train_iters=20, save=root, save_interval=10)
    assert read_tracker(root) == 20
    return root


def _fingerprint(root: Path) -> dict[str, bytes]:
    """Tracker text and every checkpoint file's bytes."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


# ---- --load that finds nothing -----------------------------------------------------------------------------------
MISSING = [
    ("typo", lambda ckpt: ckpt.parent / "cktp", r"does not exist"),
    ("iteration dir", lambda ckpt: ckpt / "iter_0000010",
     r"is one iteration of a checkpoint; pass the directory above"),
    ("no tracker", lambda ckpt: ckpt, r"holds iter_\* directories but no latest_checkpointed_iteration\.txt"),
]


@pytest.mark.parametrize("case,make_load,message", MISSING, ids=[m[0] for m in MISSING])
def test_load_that_finds_nothing_is_an_error(case, make_load, message, tiny_corpus, ckpt20, tmp_path):
    """A mistyped --load, one pointing at an iter_XXXXXXX directory, or a directory whose tracker is gone is a
    ValueError naming the path, the likely cause and --allow-missing-checkpoint - never a fresh start with exit 0 -
    and the --save directory is left untouched."""
    ckpt = tmp_path / "ckpt"
    shutil.copytree(ckpt20, ckpt)
    if case == "no tracker":
        (ckpt / TRACKER_FILENAME).unlink()
    before = _fingerprint(ckpt)
    with pytest.raises(ValueError, match=rf"--load .*{message}.*--allow-missing-checkpoint"):
        _main(tiny_corpus, load=make_load(ckpt), save=ckpt, save_interval=2)
    assert _fingerprint(ckpt) == before


def test_allow_missing_checkpoint_starts_from_scratch_and_flags_are_checked(tiny_corpus, tmp_path):
    """--allow-missing-checkpoint lets an empty --load directory start from scratch (a resumable recipe's first
    run); Megatron's --exit-on-missing-checkpoint keeps the safe default; passing both is a contradiction."""
    ckpt = tmp_path / "ckpt"
    with pytest.raises(ValueError, match="does not exist"):
        _main(tiny_corpus, load=ckpt, save=ckpt, exit_on_missing_checkpoint=True)
    result = _main(tiny_corpus, load=ckpt, save=ckpt, allow_missing_checkpoint=True)
    assert result.iteration == 4 and read_tracker(ckpt) == 4
    with pytest.raises(ValueError, match="--allow-missing-checkpoint and --exit-on-missing-checkpoint contradict"):
        _main(tiny_corpus, load=ckpt, allow_missing_checkpoint=True, exit_on_missing_checkpoint=True)


def test_a_run_never_moves_latest_back(tiny_corpus, ckpt20, tmp_path):
    """The reported case: a mistyped --load (allowed to be missing) or no --load at all with the real --save
    directory (latest 20) is refused before training, leaving iter_0000010, iter_0000020 and the tracker as they
    were; --overwrite-checkpoints replaces them deliberately."""
    ckpt = tmp_path / "ckpt"
    shutil.copytree(ckpt20, ckpt)
    before = _fingerprint(ckpt)
    for load in ({"load": tmp_path / "typo", "allow_missing_checkpoint": True}, {}):
        with pytest.raises(ValueError, match=r"--save .*ckpt already holds checkpoint iteration 20, newer than this "
                                             r"run's start at iteration 0.*--overwrite-checkpoints"):
            _main(tiny_corpus, train_iters=10, save=ckpt, save_interval=10, **load)
        assert _fingerprint(ckpt) == before
    _main(tiny_corpus, train_iters=10, save=ckpt, save_interval=10, overwrite_checkpoints=True)
    assert read_tracker(ckpt) == 10


def test_resume_with_nothing_left_keeps_the_checkpoint(tiny_corpus, ckpt20, tmp_path):
    """Resuming a finished run (latest 20, --train-iters 20) trains nothing and does not rewrite iteration 20."""
    ckpt = tmp_path / "ckpt"
    shutil.copytree(ckpt20, ckpt)
    before = _fingerprint(ckpt)
    result = _main(tiny_corpus, train_iters=20, load=ckpt, save=ckpt, save_interval=10)
    assert result.iteration == 20 and result.exit_reason == "finished"
    assert _fingerprint(ckpt) == before


# ---- defining arguments ------------------------------------------------------------------------------------------
CHANGED = [
    ("heads", dict(num_attention_heads=8),
     r"model\.kv_channels: checkpoint 16, this run 8; model\.num_attention_heads: checkpoint 4, this run 8"),
    ("seq_length", dict(seq_length=16), r"data\.seq_length: checkpoint 32, this run 16"),
    ("tokenizer", dict(make_vocab_size_divisible_by=256), r"tokenizer\.make_vocab_size_divisible_by: checkpoint 128"),
]


@pytest.mark.parametrize("case,flags,message", CHANGED, ids=[c[0] for c in CHANGED])
def test_changed_defining_argument_is_refused(case, flags, message, tiny_corpus, tmp_path):
    """A resume with another --num-attention-heads (same tensor shapes: it would load silently), --seq-length or
    tokenizer setting is refused before any tensor is loaded, showing both values;
    --override-checkpoint-args continues deliberately (the tensors must still fit)."""
    ckpt = tmp_path / "ckpt"
    _main(tiny_corpus, exit_interval=2, save=ckpt)
    with pytest.raises(ValueError, match=r"checkpoint .*ckpt \(iteration 2\) was saved with other defining "
                                         r"arguments.*" + message + r".*--override-checkpoint-args"):
        _main(tiny_corpus, load=ckpt, save=ckpt, **flags)
    if case != "tokenizer":  # a padded vocabulary of another size cannot be loaded at all
        assert _main(tiny_corpus, load=ckpt, save=ckpt, override_checkpoint_args=True, **flags).iteration == 4


def _de_flags(tmp_path: Path, kind: str, analysis: Path, **ltd) -> dict:
    if kind == "curriculum_learning":
        return de_args(tmp_path / "ds.json", de_config({"vocab_rarity": vocab_rarity_metric(analysis)}))
    return de_args(tmp_path / "ds.json", de_config(ltd_layers=ltd.get("layers", [1, 2])))


@pytest.mark.parametrize("kind", ["curriculum_learning", "random_ltd"])
def test_data_efficiency_checkpoint_without_its_flags_is_refused(kind, tiny_corpus, kjv_analysis, tmp_path):
    """A curriculum-learning or random-LTD checkpoint resumed without its flags would continue as a plain run and
    drop the saved sampler / layer-token state: refused, naming the extension; so is a changed random-LTD layer
    set, and turning random-LTD on for a plain checkpoint. --override-checkpoint-args drops the state deliberately."""
    ckpt = tmp_path / "ckpt"
    _main(tiny_corpus, exit_interval=2, save=ckpt, **_de_flags(tmp_path, kind, kjv_analysis))
    with pytest.raises(ValueError, match=rf"data_efficiency\.{kind}: checkpoint \{{.*\}}, this run '<off>'; {kind}: "
                                         r"the checkpoint holds its state but this run has no " + kind):
        _main(tiny_corpus, load=ckpt, save=ckpt)
    if kind == "random_ltd":
        with pytest.raises(ValueError, match=r"data_efficiency\.random_ltd: checkpoint .*'random_ltd_layer_id': "
                                             r"\[1, 2\].*this run .*'random_ltd_layer_id': \[1\]"):
            _main(tiny_corpus, load=ckpt, save=ckpt, **_de_flags(tmp_path, kind, kjv_analysis, layers=[1]))
    assert _main(tiny_corpus, load=ckpt, save=ckpt, override_checkpoint_args=True).iteration == 4

    plain = tmp_path / "plain"
    _main(tiny_corpus, exit_interval=2, save=plain)
    with pytest.raises(ValueError, match=r"data_efficiency\.random_ltd: checkpoint '<off>', this run \{"):
        _main(tiny_corpus, load=plain, save=plain, **_de_flags(tmp_path, "random_ltd", kjv_analysis))


def test_finetune_needs_architecture_not_data_settings(tiny_corpus, tmp_path):
    """--finetune loads another run's weights: a new --seq-length and random-LTD are fine, another
    --num-attention-heads is refused with both values."""
    pretrained = tmp_path / "pretrained"
    _main(tiny_corpus, train_iters=2, save=pretrained)
    config = de_config(ltd_layers=[1, 2])
    config["data_efficiency"]["data_routing"]["random_ltd"]["random_ltd_schedule"]["max_value"] = 16
    ltd_16 = de_args(tmp_path / "ds.json", config)
    result = _main(tiny_corpus, finetune=True, load=pretrained, save=tmp_path / "ft", seq_length=16, **ltd_16)
    assert result.iteration == 4
    with pytest.raises(ValueError, match=r"--finetune needs the pretrained architecture and tokenizer.*"
                                         r"model\.num_attention_heads: checkpoint 4, this run 8"):
        _main(tiny_corpus, finetune=True, load=pretrained, save=tmp_path / "ft2", num_attention_heads=8)


# ---- non-finite parameters ---------------------------------------------------------------------------------------
def test_nan_parameters_are_never_saved(tiny_corpus, tmp_path):
    """A diverging run (fp16 master update far beyond the fp16 range, with --no-check-for-nan-in-loss-and-grad) is
    stopped by a FloatingPointError naming the iteration when it would save; the good checkpoint of iteration 2
    stays the latest and no later iteration directory appears."""
    ckpt = tmp_path / "ckpt"
    fp16 = dict(fp16=True, initial_loss_scale=1, no_check_for_nan_in_loss_and_grad=True)
    _main(tiny_corpus, exit_interval=2, save=ckpt, **fp16)
    with pytest.raises(FloatingPointError, match=r"refusing to save checkpoint iteration 4 to .*ckpt: \d+ model "
                                                 r"tensors hold nan/inf .*latest_checkpointed_iteration\.txt still "
                                                 r"names iteration 2"):
        _main(tiny_corpus, load=ckpt, save=ckpt, save_interval=2, lr=1e6, min_lr=0.0,
              override_opt_param_scheduler=True, **fp16)
    assert read_tracker(ckpt) == 2 and checkpoint_path(ckpt, 2, 0).is_file()
    assert sorted(p.name for p in ckpt.iterdir()) == ["iter_0000002", TRACKER_FILENAME]

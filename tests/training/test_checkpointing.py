"""Checkpoints: Megatron layout, exact round trip (weights_only), atomic publication, clear errors on damage."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch
from torch import nn

from megatron.parallel.random import RNGStatesTracker
from megatron.parallel.state import ParallelState
from megatron.training import checkpointing as ckpt
from megatron.training.lr_schedule import LRScheduleSpec, OptimizerParamScheduler
from megatron.training.optimizer import AdamWSettings, MegatronOptimizer


def _setup(seed: int = 0):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4)).to(torch.bfloat16)
    opt = MegatronOptimizer(model, AdamWSettings(), ParallelState.single())
    sched = OptimizerParamScheduler(opt, LRScheduleSpec(max_lr=1e-2, warmup_samples=4, decay_samples=40))
    return model, opt, sched


def _step(model, opt, sched):
    opt.zero_grad()
    opt.backward(model(torch.randn(3, 4).bfloat16()).float().pow(2).mean())
    opt.step()
    sched.step(2, 0)


def _save(root, iteration, model, opt, sched, **kw):
    return ckpt.save_checkpoint(
        root, iteration, model=model, optimizer=opt, scheduler=sched, pstate=ParallelState.single(),
        train_state={"consumed_train_samples": 2 * iteration}, config={"training": {"lr": 1e-2}}, **kw,
    )


def test_layout_and_roundtrip(tmp_path):
    """Files follow Megatron's layout; loading restores model, fp32 masters, Adam state, LR counters, RNG
    streams, train counters, sampler and extension state exactly."""
    model, opt, sched = _setup()
    for _ in range(3):
        _step(model, opt, sched)
    tracker = RNGStatesTracker.build(1234, ParallelState.single())
    random.seed(5)
    np.random.seed(6)
    torch.manual_seed(7)
    final = _save(tmp_path, 3, model, opt, sched, rng_tracker=tracker, sampler_state={"consumed_samples": 6},
                  extra_state={"curriculum": {"step": torch.tensor(3), "difficulty": 64}})
    assert final == tmp_path / "iter_0000003"
    assert (final / "mp_rank_00" / "model_optim_rng.pt").is_file()
    assert json.loads((final / "config.json").read_text())["training"]["lr"] == 1e-2
    assert (tmp_path / "latest_checkpointed_iteration.txt").read_text().strip() == "3"
    expected_draws = (random.random(), np.random.rand(), torch.rand(1))

    model2, opt2, sched2 = _setup(seed=1)
    tracker2 = RNGStatesTracker.build(99, ParallelState.single())
    loaded = ckpt.load_checkpoint(tmp_path, model=model2, optimizer=opt2, scheduler=sched2,
                                  pstate=ParallelState.single(), rng_tracker=tracker2)
    assert loaded.iteration == 3 and loaded.train_state["consumed_train_samples"] == 6
    assert loaded.sampler_state == {"consumed_samples": 6}
    assert loaded.extra_state["curriculum"]["difficulty"] == 64
    assert (random.random(), np.random.rand(), torch.rand(1)) == expected_draws
    for name, st in tracker.get_states().items():
        assert torch.equal(st["cpu"], tracker2.get_states()[name]["cpu"])
    assert sched2.num_samples == sched.num_samples and sched2.lr == sched.lr
    for a, b in zip(opt.masters, opt2.masters):
        assert torch.equal(a, b)
    assert opt2.optimizer.state_dict()["state"].keys() == opt.optimizer.state_dict()["state"].keys()


def test_exact_continuation_after_load(tmp_path):
    """Training on after a load gives bit-identical weights to training on without the interruption."""
    model, opt, sched = _setup()
    _step(model, opt, sched)
    _save(tmp_path, 1, model, opt, sched)
    torch.manual_seed(42)
    _step(model, opt, sched)
    model2, opt2, sched2 = _setup(seed=3)
    ckpt.load_checkpoint(tmp_path, model=model2, optimizer=opt2, scheduler=sched2, pstate=ParallelState.single(),
                         no_load_rng=True)
    torch.manual_seed(42)
    _step(model2, opt2, sched2)
    for a, b in zip(model.state_dict().values(), model2.state_dict().values()):
        assert torch.equal(a, b)
    for a, b in zip(opt.masters, opt2.masters):
        assert torch.equal(a, b)


def test_truncated_file_gives_clear_error(tmp_path):
    """A truncated checkpoint file raises ValueError naming that file, not an unpickling traceback."""
    model, opt, sched = _setup()
    final = _save(tmp_path, 2, model, opt, sched)
    path = final / "mp_rank_00" / "model_optim_rng.pt"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"model_optim_rng\.pt is corrupted or truncated"):
        ckpt.load_checkpoint(tmp_path, model=model, optimizer=opt, scheduler=sched, pstate=ParallelState.single())


def test_bad_tracker_and_missing_rank_file(tmp_path):
    """A garbled tracker file and a missing TP-rank file are reported with their paths."""
    (tmp_path / ckpt.TRACKER_FILENAME).write_text("iter ten\n")
    with pytest.raises(ValueError, match="latest_checkpointed_iteration.txt: expected an iteration number"):
        ckpt.read_tracker(tmp_path)
    (tmp_path / ckpt.TRACKER_FILENAME).write_text("7\n")
    model, opt, sched = _setup()
    with pytest.raises(ValueError, match=r"iter_0000007/mp_rank_00/model_optim_rng\.pt does not exist"):
        ckpt.load_checkpoint(tmp_path, model=model, optimizer=opt, scheduler=sched, pstate=ParallelState.single())
    assert ckpt.read_tracker(tmp_path / "nothing") is None


def test_crash_during_save_leaves_latest_on_previous_checkpoint(tmp_path, monkeypatch):
    """If writing iteration 4 dies half way, the tracker still names iteration 2 and loading uses it; the partial
    directory is never published, and the next save of iteration 4 succeeds."""
    model, opt, sched = _setup()
    _save(tmp_path, 2, model, opt, sched)
    real_save = torch.save

    def dying_save(obj, f, *a, **kw):
        f.write(b"PK\x03\x04 half a zip")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", dying_save)
    with pytest.raises(OSError, match="disk full"):
        _save(tmp_path, 4, model, opt, sched)
    monkeypatch.setattr(torch, "save", real_save)
    assert ckpt.read_tracker(tmp_path) == 2
    assert not (tmp_path / "iter_0000004").exists()
    loaded = ckpt.load_checkpoint(tmp_path, model=model, optimizer=opt, scheduler=sched,
                                  pstate=ParallelState.single())
    assert loaded.iteration == 2
    _save(tmp_path, 4, model, opt, sched)
    assert ckpt.read_tracker(tmp_path) == 4 and not (tmp_path / "iter_0000004.tmp").exists()


def test_finetune_and_no_load_optim(tmp_path):
    """--finetune restores only weights and restarts at iteration 0; --no-load-optim keeps counters but leaves the
    optimizer fresh (masters re-read from the loaded weights)."""
    model, opt, sched = _setup()
    _step(model, opt, sched)
    _save(tmp_path, 1, model, opt, sched)
    model2, opt2, sched2 = _setup(seed=5)
    loaded = ckpt.load_checkpoint(tmp_path, model=model2, optimizer=opt2, scheduler=sched2,
                                  pstate=ParallelState.single(), finetune=True)
    assert loaded.iteration == 0 and loaded.train_state == {}
    assert sched2.num_samples == 0 and not opt2.optimizer.state
    model3, opt3, sched3 = _setup(seed=6)
    loaded = ckpt.load_checkpoint(tmp_path, model=model3, optimizer=opt3, scheduler=sched3,
                                  pstate=ParallelState.single(), no_load_optim=True)
    assert loaded.iteration == 1 and not opt3.optimizer.state
    for p, m in zip(opt3.params, opt3.masters):
        assert torch.equal(p.float(), m)


def test_unsafe_state_is_rejected_with_its_key_path():
    """State that weights_only loading could not read back (a numpy array) is refused at save time, naming where."""
    with pytest.raises(TypeError, match=r"checkpoint\['extra_state'\]\['sampler'\]\['rng'\] holds a numpy.ndarray"):
        ckpt.check_weights_only_safe({"extra_state": {"sampler": {"rng": np.zeros(3)}}})

"""Data loading at scale: ``--num-workers`` prefetching and one read per tensor-parallel group.

Pins: a prefetching stream hands out the same batches as an in-process one while its checkpointed position is that
of the batches handed out, not of what the workers read ahead; a sampler that cannot report positions is read in
process; ``broadcast_batch`` delivers every field (tensors of every dtype, a batch-broadcast mask, None, the
curriculum's plain values); through ``pretrain_gpt.py``, --num-workers 2 trains and resumes exactly like 0, with
curriculum learning too; at TP=2 (and TP=2 x DP=2) only tensor-parallel rank 0 reads the dataset and the losses equal
one process's.
"""

from __future__ import annotations

import multiprocessing
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from dist_utils import run_distributed
from training.conftest import gpt_args, load_entry_script, read_metrics
from training.test_data_efficiency import (  # noqa: F401 - fixtures
    BatchSpy,
    de_args,
    de_config,
    kjv_analysis,
    seqlen_metric,
    vocab_rarity_metric,
)
from megatron.data.gpt_dataset import GPTDataset
from megatron.data.samplers import MegatronPretrainingSampler
from megatron.training.checkpointing import read_checkpoint, read_tracker
from megatron.training.data_loading import DataStream, broadcast_batch


class _Squares(torch.utils.data.Dataset):
    """Item i: ``{"x": [i, i*i]}``."""

    def __len__(self) -> int:
        return 64

    def __getitem__(self, i: int) -> dict:
        return {"x": np.array([i, i * i], dtype=np.int64)}


def _collate(samples: list[dict]) -> dict:
    return {"x": torch.from_numpy(np.stack([s["x"] for s in samples]))}


def _pull(stream: DataStream, n: int) -> list[list[int]]:
    return [stream.next()["x"][:, 0].tolist() for _ in range(n)]


def test_prefetching_stream_checkpoints_the_trained_position():
    """With two workers the stream yields the in-process stream's batches; after 5 micro-batches its state is 5
    micro-batches in (what training took) although the sampler itself has run further ahead; the DataLoader does
    not draw from the global RNG (dropout masks would change)."""
    def stream(workers: int) -> DataStream:
        sampler = MegatronPretrainingSampler(64, 8, 2, data_parallel_rank=1, data_parallel_size=2)
        return DataStream(_Squares(), sampler, _collate, num_workers=workers)

    plain = stream(0)
    rng = torch.get_rng_state()
    ahead = stream(2)
    assert torch.equal(torch.get_rng_state(), rng)
    assert _pull(ahead, 5) == _pull(plain, 5) == [[10, 11], [14, 15], [18, 19], [22, 23], [26, 27]]
    assert ahead.state_dict() == plain.state_dict() == {"consumed_samples": 8 + 5 * 4}
    assert ahead.sampler.consumed_samples > 8 + 5 * 4, "the workers read ahead"
    assert len(_pull(ahead, 9)) == 9 and ahead.next() is None and ahead.state_dict() == {"consumed_samples": 64}
    ahead.close()


def test_sampler_without_positions_is_read_in_process(megatron_logs):
    """A plain generator of index lists may have side effects the trainer relies on: with --num-workers it is
    still pulled exactly one micro-batch at a time, and the log says why no workers run."""
    pulled = []

    def gen():
        for i in range(0, 64, 2):
            pulled.append(i)
            yield [i, i + 1]

    stream = DataStream(_Squares(), gen(), _collate, num_workers=2)
    assert _pull(stream, 3) == [[0, 1], [2, 3], [4, 5]] and pulled == [0, 2, 4]
    assert "does not report the position of each micro-batch" in megatron_logs.text


def _broadcast_body(rank: int, world_size: int) -> list:
    batch = None
    if rank == 0:
        mask = torch.ones(4, 4, dtype=torch.bool).triu(1)[None, None].expand(3, 1, 4, 4)
        batch = {"tokens": torch.arange(12).view(3, 4), "loss_mask": torch.rand(3, 4), "attention_mask": mask,
                 "position_ids": None, "curriculum_step": 7, "difficulties": {"seqlen_truncate": 16},
                 "empty": torch.zeros(0, 4, dtype=torch.int32)}
    got = broadcast_batch(batch, src=0, group=None, device=torch.device("cpu"))
    done = broadcast_batch(None, src=0, group=None, device=torch.device("cpu"))
    return [{k: (v.tolist(), str(v.dtype), tuple(v.shape)) if isinstance(v, torch.Tensor) else v
             for k, v in got.items()}, done]


@pytest.mark.distributed
def test_broadcast_batch_delivers_every_field():
    """Every key arrives in order with its dtype, shape and values - int, float, bool (a causal mask expanded over
    the batch, sent once), empty tensors - and plain values (None, the curriculum step and difficulties); the end of
    the data (None) reaches every rank as None."""
    sent, received = run_distributed(_broadcast_body, 2, timeout_s=120)
    assert received == sent and sent[1] is None
    got = sent[0]
    assert list(got) == ["tokens", "loss_mask", "attention_mask", "position_ids", "curriculum_step", "difficulties",
                         "empty"]
    assert got["attention_mask"][1:] == ("torch.bool", (3, 1, 4, 4)) and got["tokens"][1] == "torch.int64"
    assert got["difficulties"] == {"seqlen_truncate": 16} and got["position_ids"] is None


@pytest.mark.slow
def test_workers_train_and_resume_like_in_process(tiny_corpus, tmp_path):
    """--num-workers 2 gives the losses of --num-workers 0 (train, validation, test; dropout on); a run saved with
    workers at iteration 7 checkpoints the trained position (7 global batches), not the prefetched one, and its
    resume with workers continues exactly."""
    pg = load_entry_script()
    plain = pg.main(gpt_args(tiny_corpus, num_workers=0, train_iters=12))
    ahead = pg.main(gpt_args(tiny_corpus, num_workers=2, train_iters=12))
    assert ahead.train_losses == plain.train_losses and ahead.val_losses == plain.val_losses
    assert ahead.test_loss == plain.test_loss
    ckpt = tmp_path / "ckpt"
    first = pg.main(gpt_args(tiny_corpus, num_workers=2, train_iters=12, save=ckpt, exit_interval=7))
    payload, _, _ = read_checkpoint(ckpt)
    assert read_tracker(ckpt) == 7 and payload["data_sampler"] == {"consumed_samples": 7 * 4}
    second = pg.main(gpt_args(tiny_corpus, num_workers=2, train_iters=12, save=ckpt, load=ckpt))
    assert {**first.train_losses, **second.train_losses} == plain.train_losses
    assert second.val_losses[12] == plain.val_losses[12] and second.test_loss == plain.test_loss


@pytest.mark.slow
def test_curriculum_with_workers_matches_in_process(tiny_corpus, kjv_analysis, tmp_path, monkeypatch):
    """Curriculum learning (vocab rarity + seqlen truncation) with two prefetching workers: the workers draw global
    batches ahead, each under its own curriculum step, so the same samples, difficulties, truncation and losses
    follow as in process; the checkpoint holds the committed (trained) curriculum step and the resume with workers
    is exact."""
    metrics = {"vocab_rarity": vocab_rarity_metric(kjv_analysis), "seqlen_truncate": seqlen_metric()}
    flags = dict(train_iters=12, eval_iters=0, **de_args(tmp_path / "ds.json", de_config(metrics)))
    pg = load_entry_script()
    spy = BatchSpy(monkeypatch)
    plain = pg.main(gpt_args(tiny_corpus, num_workers=0, **flags))
    records, spy.records[:] = list(spy.records), []
    ahead = pg.main(gpt_args(tiny_corpus, num_workers=2, **flags))
    assert spy.records == records and ahead.train_losses == plain.train_losses
    spy.records[:] = []
    ckpt = tmp_path / "ckpt"
    first = pg.main(gpt_args(tiny_corpus, num_workers=2, save=ckpt, exit_interval=5, **flags))
    payload, _, _ = read_checkpoint(ckpt)
    assert payload["extra_state"]["curriculum_learning"]["sampler"]["curriculum_step"] == 5
    second = pg.main(gpt_args(tiny_corpus, num_workers=2, save=ckpt, load=ckpt, **flags))
    assert spy.records == records
    assert {**first.train_losses, **second.train_losses} == plain.train_losses


def _allow_workers() -> None:
    """dist_utils starts its ranks as daemon processes, which multiprocessing forbids to have children (the stream
    would then read in process); a torchrun rank is no daemon, so make this one look like it."""
    multiprocessing.current_process().daemon = False


def _counting_body(rank: int, world_size: int, argv: list[str], reads_dir: str) -> dict:
    """Train with GPTDataset reads counted per global rank (one line per item, also from worker processes)."""
    torch.set_num_threads(1)
    _allow_workers()
    original = GPTDataset.__getitem__

    def counted(self, idx):
        with open(Path(reads_dir) / f"rank{os.environ['RANK']}", "a", encoding="utf-8") as f:
            f.write("1\n")
        return original(self, idx)

    GPTDataset.__getitem__ = counted
    try:
        return load_entry_script().main(argv).train_losses
    finally:
        GPTDataset.__getitem__ = original


def _reads(reads_dir: Path, world_size: int) -> list[int]:
    return [len((reads_dir / f"rank{r}").read_text().splitlines()) if (reads_dir / f"rank{r}").exists() else 0
            for r in range(world_size)]


COMMON = dict(train_iters=6, hidden_dropout=0.0, attention_dropout=0.0, eval_iters=1, eval_interval=6)


@pytest.mark.slow
@pytest.mark.distributed
def test_tp2_reads_once_per_group_and_matches_one_process(tiny_corpus, tmp_path):
    """TP=2 with two prefetching workers: tensor-parallel rank 1 never reads the dataset (training, validation and
    test batches all arrive by broadcast from rank 0) and the losses equal one unsharded process's (fp32 sums in
    another order: ~1e-6 relative). Without workers: the TP=2 x DP=2 test."""
    reference = load_entry_script().main(gpt_args(tiny_corpus, **COMMON)).train_losses
    argv = gpt_args(tiny_corpus, tensor_model_parallel_size=2, num_workers=2, **COMMON)
    for losses in run_distributed(_counting_body, 2, argv, str(tmp_path), timeout_s=300):
        assert losses == pytest.approx(reference, rel=1e-5)
    reads = _reads(tmp_path, 2)
    assert reads[1] == 0 and reads[0] >= 6 * 4 + 4 + 4, reads  # 6 global batches of 4, one valid, one test batch


@pytest.mark.slow
@pytest.mark.distributed
def test_tp2_dp2_reads_once_per_group_and_matches_one_process(tiny_corpus, tmp_path):
    """TP=2 x DP=2 (ranks 0,1 and 2,3 are the TP groups): each group's TP rank 0 reads its own data-parallel half,
    the TP rank 1s read nothing, and the losses equal one process accumulating the whole global batch."""
    flags = dict(global_batch_size=8, **COMMON)
    reference = load_entry_script().main(gpt_args(tiny_corpus, **flags)).train_losses
    argv = gpt_args(tiny_corpus, tensor_model_parallel_size=2, num_workers=0, **flags)
    for losses in run_distributed(_counting_body, 4, argv, str(tmp_path), timeout_s=500):
        assert losses == pytest.approx(reference, rel=1e-5)
    reads = _reads(tmp_path, 4)
    assert reads[1] == reads[3] == 0 and reads[0] == reads[2] == 6 * 4 + 4 + 4, reads


def _curriculum_tp_body(rank: int, world_size: int, argv: list[str]) -> tuple[dict, list]:
    torch.set_num_threads(1)
    _allow_workers()
    result = load_entry_script().main(argv)
    return result.train_losses, [r["difficulty"] for r in read_metrics(Path(argv[argv.index("--metrics-file") + 1]))
                                 if r["kind"] == "train"] if rank == 0 else []


@pytest.mark.slow
@pytest.mark.distributed
def test_curriculum_tp2_receives_difficulties_by_broadcast(tiny_corpus, kjv_analysis, tmp_path):
    """Curriculum learning at TP=2 with workers: rank 1 gets each batch's curriculum step and difficulties with the
    broadcast batch and truncates it alike, so the run equals one process (losses ~1e-6 relative, same
    difficulties)."""
    metrics = {"vocab_rarity": vocab_rarity_metric(kjv_analysis), "seqlen_truncate": seqlen_metric()}
    flags = dict(train_iters=8, hidden_dropout=0.0, attention_dropout=0.0, eval_iters=0,
                 **de_args(tmp_path / "ds.json", de_config(metrics)))
    pg = load_entry_script()
    reference = pg.main(gpt_args(tiny_corpus, metrics_file=tmp_path / "ref.jsonl", **flags)).train_losses
    want = [r["difficulty"] for r in read_metrics(tmp_path / "ref.jsonl") if r["kind"] == "train"]
    argv = gpt_args(tiny_corpus, tensor_model_parallel_size=2, num_workers=2, metrics_file=tmp_path / "tp.jsonl",
                    **flags)
    (losses0, got), (losses1, _) = run_distributed(_curriculum_tp_body, 2, argv, timeout_s=300)
    assert losses0 == losses1 == pytest.approx(reference, rel=1e-5)
    assert got == want


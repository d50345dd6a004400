"""Samplers: data-parallel shards are disjoint and complete, epochs reshuffle, a resumed sampler continues exactly."""

from __future__ import annotations

import itertools

import pytest

from megatron.data.samplers import MegatronPretrainingRandomSampler, MegatronPretrainingSampler


def _all_ranks(make, dp):
    return [list(make(rank)) for rank in range(dp)]


@pytest.mark.parametrize("total, consumed, mbs, dp", [(103, 0, 4, 3), (100, 24, 2, 4), (64, 0, 8, 1)])
def test_single_shards_disjoint_and_complete(total, consumed, mbs, dp):
    """Per micro-batch step, rank r holds [r*mbs, (r+1)*mbs) of the next mbs*dp block; over all ranks the
    sampler covers every sample from consumed_samples to the last full block exactly once."""
    per_rank = _all_ranks(lambda r: MegatronPretrainingSampler(total, consumed, mbs, r, dp), dp)
    steps = (total - consumed) // (mbs * dp)
    assert all(len(batches) == steps for batches in per_rank)
    for step in range(steps):
        block = consumed + step * mbs * dp
        for rank in range(dp):
            assert per_rank[rank][step] == list(range(block + rank * mbs, block + (rank + 1) * mbs))
    flat = sorted(i for batches in per_rank for b in batches for i in b)
    assert flat == list(range(consumed, consumed + steps * mbs * dp))


def test_single_keeps_last_partial_block_without_drop_last():
    """drop_last=False gives each rank its slice of the final partial block (shorter or empty), like Megatron."""
    batches = _all_ranks(lambda r: MegatronPretrainingSampler(10, 0, 2, r, 3, drop_last=False), 3)
    assert [b[-1] for b in batches] == [[6, 7], [8, 9], []]
    assert sorted(i for b in batches for x in b for i in x) == list(range(10))


@pytest.mark.parametrize("sampler_cls", ["single", "cyclic"])
def test_resume_continues_exactly(sampler_cls):
    """Saving state_dict after k micro-batches and loading it into a fresh sampler yields exactly the batches
    the uninterrupted sampler yields next, on every rank (across an epoch boundary for the cyclic one)."""
    def make(rank, consumed=0):
        if sampler_cls == "single":
            return MegatronPretrainingSampler(200, consumed, 3, rank, 2)
        return MegatronPretrainingRandomSampler(50, consumed, 3, rank, 2, seed=11)

    for rank in range(2):
        full = list(itertools.islice(iter(make(rank)), 20))
        first = make(rank)
        it = iter(first)
        head = [next(it) for _ in range(7)]
        state = first.state_dict()
        assert state == {"consumed_samples": 7 * 3 * 2}
        resumed = make(rank)
        resumed.load_state_dict(state)
        assert head + list(itertools.islice(iter(resumed), 13)) == full


@pytest.mark.parametrize("sharding", [True, False])
def test_cyclic_epochs_are_disjoint_complete_and_reshuffled(sharding):
    """Each cyclic epoch hands every rank the same number of micro-batches, the ranks' samples are disjoint,
    cover total - total % (mbs*dp) distinct samples, and the next epoch (seed + epoch) has a different order."""
    total, mbs, dp = 50, 3, 4  # 48 samples used per epoch
    per_epoch_steps = total // (mbs * dp)
    epochs = []
    for epoch in range(2):
        ranks = [list(itertools.islice(iter(MegatronPretrainingRandomSampler(
            total, epoch * 48, mbs, r, dp, seed=5, data_sharding=sharding)), per_epoch_steps)) for r in range(dp)]
        flat = [i for rank in ranks for b in rank for i in b]
        assert all(len(b) == mbs for rank in ranks for b in rank)
        assert len(flat) == len(set(flat)) == 48 and all(0 <= i < total for i in flat)
        epochs.append([b for rank in ranks for b in rank])
    assert epochs[0] != epochs[1]
    s = MegatronPretrainingRandomSampler(total, 96, mbs, 0, dp, seed=5, data_sharding=sharding)
    assert s.epoch == 2
    other_seed = list(itertools.islice(iter(MegatronPretrainingRandomSampler(total, 0, mbs, 0, dp, seed=6,
                                                                             data_sharding=sharding)), 4))
    assert other_seed != epochs[0][:4]


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(total_samples=0), "total_samples"),
        (dict(consumed_samples=-1), "consumed_samples"),
        (dict(micro_batch_size=0), "micro_batch_size"),
        (dict(data_parallel_rank=2), "data_parallel_rank"),
        (dict(consumed_samples=101), "exceeds"),
    ],
)
def test_single_sampler_rejects_bad_arguments(kwargs, match):
    """Invalid sizes, ranks or resume positions raise ValueError naming the argument."""
    args = dict(total_samples=100, consumed_samples=0, micro_batch_size=2, data_parallel_rank=0, data_parallel_size=2)
    with pytest.raises(ValueError, match=match):
        MegatronPretrainingSampler(**{**args, **kwargs})


def test_cyclic_sampler_requires_aligned_resume_point():
    """The cyclic sampler can only resume on a micro-batch boundary over all ranks (ValueError otherwise)."""
    with pytest.raises(ValueError, match="multiple"):
        MegatronPretrainingRandomSampler(100, 5, 2, 0, 2)
    sampler = MegatronPretrainingRandomSampler(100, 0, 2, 0, 2)
    with pytest.raises(ValueError, match="multiple"):
        sampler.load_state_dict({"consumed_samples": 6})

"""Batch samplers that hand each data-parallel rank its micro-batches, resumable from a consumed-sample count.

``MegatronPretrainingSampler`` (``dataloader_type="single"``) walks the dataset in order; the
``MegatronPretrainingRandomSampler`` (``"cyclic"``) reshuffles every epoch. Both yield lists of dataset
indices (one micro-batch for this rank) and keep their position as ``consumed_samples`` (summed over all
data-parallel ranks), which ``state_dict``/``load_state_dict`` save and restore so a resumed run continues
exactly where it stopped. Each list is a :class:`MicroBatchIndices` that also carries the position after it, so a
loader that runs the sampler ahead (worker prefetching) can still report the position of what was trained.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch

__all__ = ["MicroBatchIndices", "MegatronPretrainingSampler", "MegatronPretrainingRandomSampler"]


class MicroBatchIndices(list):
    """One micro-batch's dataset indices (a plain ``list`` to every consumer) plus ``info`` for the loader.

    ``info`` keys a loader understands (``megatron.training.data_loading``): ``consumed_samples`` (the sampler's
    position once this micro-batch is trained), ``commit`` (True on the last micro-batch of a global batch whose
    sampler must then be told ``commit()``), and ``batch`` (values to add to the collated batch, e.g. the curriculum
    step and difficulties it was drawn under, so they travel with it).
    """

    def __init__(self, indices: Any = (), info: dict[str, Any] | None = None) -> None:
        super().__init__(indices)
        self.info = info or {}


def _check_common(total_samples: int, consumed_samples: int, micro_batch_size: int, dp_rank: int, dp_size: int):
    if total_samples <= 0:
        raise ValueError(f"total_samples must be > 0, got {total_samples}")
    if consumed_samples < 0:
        raise ValueError(f"consumed_samples must be >= 0, got {consumed_samples}")
    if micro_batch_size <= 0:
        raise ValueError(f"micro_batch_size must be > 0, got {micro_batch_size}")
    if dp_size <= 0 or not 0 <= dp_rank < dp_size:
        raise ValueError(f"data_parallel_rank {dp_rank} must be in [0, data_parallel_size={dp_size})")


class MegatronPretrainingSampler:
    """In-order sampler: global sample ids ``consumed_samples, consumed_samples + 1, ...`` in blocks of
    ``micro_batch_size * data_parallel_size``; rank ``r`` takes ``[r * mbs, (r + 1) * mbs)`` of each block.

    Args:
        total_samples: dataset length.
        consumed_samples: global samples already consumed (resume point).
        micro_batch_size: samples per rank per micro-batch.
        data_parallel_rank: this rank in the data-parallel group.
        data_parallel_size: data-parallel group size.
        drop_last: drop a final incomplete block; otherwise each rank gets its slice of it (possibly shorter,
            possibly empty), as in Megatron.
    """

    prefetch_safe = True
    """Its micro-batches carry their position (``MicroBatchIndices.info``): a loader may run it ahead."""

    def __init__(
        self,
        total_samples: int,
        consumed_samples: int,
        micro_batch_size: int,
        data_parallel_rank: int,
        data_parallel_size: int,
        drop_last: bool = True,
    ) -> None:
        _check_common(total_samples, consumed_samples, micro_batch_size, data_parallel_rank, data_parallel_size)
        if consumed_samples > total_samples:
            raise ValueError(f"consumed_samples ({consumed_samples}) exceeds total_samples ({total_samples})")
        self.total_samples, self.consumed_samples = total_samples, consumed_samples
        self.micro_batch_size, self.drop_last = micro_batch_size, drop_last
        self.data_parallel_rank, self.data_parallel_size = data_parallel_rank, data_parallel_size
        self.block = micro_batch_size * data_parallel_size

    def __len__(self) -> int:
        """Micro-batches left for this rank."""
        left = self.total_samples - self.consumed_samples
        return left // self.block if self.drop_last else -(-left // self.block)

    def __iter__(self) -> Iterator[list[int]]:
        lo = self.data_parallel_rank * self.micro_batch_size
        while self.consumed_samples < self.total_samples:
            start = self.consumed_samples
            end = min(start + self.block, self.total_samples)
            if end - start < self.block and self.drop_last:
                return
            self.consumed_samples = end
            yield MicroBatchIndices(range(min(start + lo, end), min(start + lo + self.micro_batch_size, end)),
                                    {"consumed_samples": end})

    def state_dict(self) -> dict[str, int]:
        """``{"consumed_samples": ...}``: global samples handed out so far (all ranks)."""
        return {"consumed_samples": self.consumed_samples}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Continue from ``state["consumed_samples"]``."""
        consumed = int(state["consumed_samples"])
        if not 0 <= consumed <= self.total_samples:
            raise ValueError(f"consumed_samples {consumed} outside [0, total_samples={self.total_samples}]")
        self.consumed_samples = consumed


class MegatronPretrainingRandomSampler:
    """Cyclic sampler: endless epochs over the dataset, each in a fresh random order (``dataloader_type="cyclic"``).

    Per epoch only ``total_samples - total_samples % (mbs * dp)`` samples are used. With ``data_sharding``
    (Megatron's default) rank ``r`` owns the contiguous bucket ``[r * B, (r + 1) * B)``,
    ``B = (total_samples // (mbs * dp)) * mbs``, and walks it in the order ``randperm(B)`` seeded with
    ``seed + epoch``; without it one ``randperm`` of the whole range is dealt round-robin to the ranks.
    ``epoch = consumed_samples // used_per_epoch``, so the position is ``consumed_samples`` alone.

    Args:
        total_samples: dataset length.
        consumed_samples: global samples already consumed (resume point).
        micro_batch_size: samples per rank per micro-batch.
        data_parallel_rank: this rank in the data-parallel group.
        data_parallel_size: data-parallel group size.
        seed: base seed of the per-epoch permutations.
        data_sharding: see above.
    """

    prefetch_safe = True
    """Its micro-batches carry their position (``MicroBatchIndices.info``): a loader may run it ahead."""

    def __init__(
        self,
        total_samples: int,
        consumed_samples: int,
        micro_batch_size: int,
        data_parallel_rank: int,
        data_parallel_size: int,
        seed: int = 0,
        data_sharding: bool = True,
    ) -> None:
        _check_common(total_samples, consumed_samples, micro_batch_size, data_parallel_rank, data_parallel_size)
        self.block = micro_batch_size * data_parallel_size
        if total_samples < self.block:
            raise ValueError(
                f"total_samples ({total_samples}) is smaller than one micro-batch over all data-parallel ranks "
                f"({micro_batch_size} x {data_parallel_size})"
            )
        self.total_samples, self.consumed_samples, self.seed = total_samples, consumed_samples, seed
        self.micro_batch_size, self.data_sharding = micro_batch_size, data_sharding
        self.data_parallel_rank, self.data_parallel_size = data_parallel_rank, data_parallel_size
        self.per_epoch = total_samples - total_samples % self.block
        self._check_aligned(consumed_samples)

    def _check_aligned(self, consumed: int) -> None:
        if consumed % self.block:
            raise ValueError(
                f"consumed_samples ({consumed}) must be a multiple of micro_batch_size x data_parallel_size "
                f"({self.block}) for the cyclic sampler"
            )

    @property
    def epoch(self) -> int:
        """The epoch the next micro-batch comes from."""
        return self.consumed_samples // self.per_epoch

    def _epoch_order(self, epoch: int, done: int) -> list[int]:
        """This rank's remaining indices of ``epoch`` after ``done`` global samples of it."""
        g = torch.Generator()
        g.manual_seed(self.seed + epoch)
        if self.data_sharding:
            bucket = (self.total_samples // self.block) * self.micro_batch_size
            start = self.data_parallel_rank * bucket
            order = torch.randperm(bucket, generator=g)[done // self.data_parallel_size :]
            return (order + start).tolist()
        # Megatron permutes (total // mbs) * mbs here, which can leave ranks with different batch counts (and
        # hang the next collective); permuting only the samples used per epoch keeps every rank in step.
        order = torch.randperm(self.per_epoch, generator=g)[done:]
        return order[self.data_parallel_rank :: self.data_parallel_size].tolist()

    def __iter__(self) -> Iterator[list[int]]:
        """Endless: micro-batches of ``micro_batch_size`` indices; the epoch advances every ``per_epoch`` samples."""
        while True:
            epoch, done = divmod(self.consumed_samples, self.per_epoch)
            order = self._epoch_order(epoch, done)
            for i in range(0, len(order) - self.micro_batch_size + 1, self.micro_batch_size):
                self.consumed_samples += self.block
                yield MicroBatchIndices(order[i : i + self.micro_batch_size],
                                        {"consumed_samples": self.consumed_samples})

    def state_dict(self) -> dict[str, int]:
        """``{"consumed_samples": ...}``: global samples handed out so far (all ranks, all epochs)."""
        return {"consumed_samples": self.consumed_samples}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Continue from ``state["consumed_samples"]``."""
        consumed = int(state["consumed_samples"])
        if consumed < 0:
            raise ValueError(f"consumed_samples must be >= 0, got {consumed}")
        self._check_aligned(consumed)
        self.consumed_samples = consumed

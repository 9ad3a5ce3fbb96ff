"""Samplers whose order depends only on (seed, epoch), so that a run can stop anywhere and
resume bit for bit, on one process or many.

``TrainSampler`` yields ``(index, augmentation seed)`` pairs: the dataset seeds its
augmentation per sample from them, so that what a sample looks like depends neither on
the DataLoader worker that loads it nor on where the run was resumed.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
from torch.utils.data import Sampler


class TrainSampler(Sampler):
    """Shuffled each epoch and split across ``world_size`` processes (each takes every
    ``world_size``-th index of the shuffled order, as DistributedSampler; the tail that does
    not divide evenly is dropped so every process runs the same number of steps).

    ``set_epoch(epoch, start)`` selects the epoch's order and skips its first ``start``
    positions of this process's share: the samples a resumed run has already seen.
    """

    def __init__(self, size: int, seed: int = 0, rank: int = 0, world_size: int = 1) -> None:
        self.size = size
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.epoch = 0
        self.start = 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.epoch = epoch
        self.start = start

    def __len__(self) -> int:
        return self.size // self.world_size - self.start

    def __iter__(self) -> Iterator[tuple[int, int]]:
        rng = np.random.default_rng([self.seed, self.epoch])
        order = rng.permutation(self.size)
        augmentation_seeds = rng.integers(0, 2**32, self.size)
        share = self.size // self.world_size
        positions = range(self.rank, share * self.world_size, self.world_size)
        for position in list(positions)[self.start:]:
            yield int(order[position]), int(augmentation_seeds[position])


class ShardSampler(Sampler):
    """Evaluation: process ``rank`` takes indices ``rank, rank + world_size, ...``, in order
    and without padding, so that the shards together hold every sample exactly once."""

    def __init__(self, size: int, rank: int = 0, world_size: int = 1) -> None:
        self.indices = range(rank, size, world_size)

    def __len__(self) -> int:
        return len(self.indices)

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

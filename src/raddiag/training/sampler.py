"""A resumable, seeded sampler for one process or a DDP rank.

It *is* a :class:`torch.utils.data.DistributedSampler` (same shuffling as a function of
``seed + epoch``, same padding and rank slicing; ``num_replicas=1`` for one process) that can
also skip the first ``k`` indices of the epoch. Resuming a run mid-epoch therefore costs no
data loading: the batches already consumed are skipped by index.
"""
from __future__ import annotations

from typing import Iterator

from torch.utils.data import DistributedSampler


class ResumableSampler(DistributedSampler):
    def __init__(self, dataset, num_replicas: int = 1, rank: int = 0, shuffle: bool = True, seed: int = 0):
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed,
                         drop_last=False)
        self.start = 0

    def set_start(self, k: int) -> None:
        """Skip the first ``k`` indices of this rank's order for the current epoch only
        (reset by :meth:`set_epoch`)."""
        self.start = int(k)

    def set_epoch(self, epoch: int) -> None:
        super().set_epoch(epoch)
        self.start = 0

    def __iter__(self) -> Iterator[int]:
        order = list(super().__iter__())
        return iter(order[self.start:])

    def __len__(self) -> int:
        return max(0, self.num_samples - self.start)

    def state_dict(self) -> dict:
        return {"seed": int(self.seed), "epoch": int(self.epoch), "start": int(self.start)}

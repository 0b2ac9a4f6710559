"""A resumable, seeded sampler for one process or a DDP rank.

It *is* a :class:`torch.utils.data.DistributedSampler` (same shuffling as a function of
``seed + epoch``, same padding and rank slicing; ``num_replicas=1`` for one process) that can
also skip the first ``k`` indices of the epoch. Resuming a run mid-epoch therefore costs no
data loading: the batches already consumed are skipped by index.
"""
from __future__ import annotations

from typing import Iterator

import numpy as np

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


def repeat_factors(targets: np.ndarray, threshold: float) -> np.ndarray:
    """Repeat-factor sampling (Gupta et al., LVIS, CVPR 2019; detectron2's
    ``RepeatFactorTrainingSampler``): a class seen in a fraction ``f_c`` of the training cases
    has ``r_c = max(1, sqrt(threshold / f_c))``; a case repeats ``max_c r_c`` times per epoch over
    its classes (1 for a case without labels, e.g. a normal one under an abnormal-only space)."""
    targets = np.asarray(targets) > 0
    freq = targets.mean(0)
    r_class = np.maximum(1.0, np.sqrt(threshold / np.maximum(freq, 1e-12)))
    return np.where(targets, r_class[None, :], 1.0).max(1) if targets.shape[1] else np.ones(len(targets))


class RepeatFactorSampler(ResumableSampler):
    """:class:`ResumableSampler` over an epoch in which case ``i`` appears ``r_i`` times on average
    (:func:`repeat_factors`): ``floor(r_i)`` copies, plus one more for a seeded draw of cases
    weighted by the fractional parts, so that every epoch has the same length
    (``round(sum r)``, padded to the world size): the learning-rate schedule and DDP's equal
    batch counts rely on it. The order is a function of ``seed + epoch`` as in the base class."""

    def __init__(self, dataset, factors: np.ndarray, num_replicas: int = 1, rank: int = 0, seed: int = 0):
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed)
        self.factors = np.asarray(factors, dtype=np.float64)
        self.epoch_size = int(round(self.factors.sum()))
        self.num_samples = -(-self.epoch_size // num_replicas)
        self.total_size = self.num_samples * num_replicas

    def _epoch_order(self) -> list[int]:
        rng = np.random.default_rng([self.seed, self.epoch])
        whole = np.floor(self.factors).astype(int)
        frac = self.factors - whole
        extra = self.epoch_size - int(whole.sum())
        if extra > 0:
            pick = rng.choice(len(frac), size=extra, replace=False, p=frac / frac.sum())
            whole[pick] += 1
        order = rng.permutation(np.repeat(np.arange(len(whole)), whole)).tolist()
        order += order[: self.total_size - len(order)]          # pad as DistributedSampler does
        return order[self.rank: self.total_size: self.num_replicas]

    def __iter__(self) -> Iterator[int]:
        return iter(self._epoch_order()[self.start:])

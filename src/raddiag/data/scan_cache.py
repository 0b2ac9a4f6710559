"""Loaded scans kept in memory within a budget: MONAI's ``CacheDataset`` idea (cache what is the
same every epoch, draw the random part afresh), for :class:`raddiag.data.dataset.CaseDataset`.

Loading a stored scan reads its slices from the memory map, resamples its depth, widens float16 to
float32 and resizes when the store's geometry is larger than the run's: the same result every
epoch, for training and validation alike. A :class:`ScanCache` keeps that result (the ``[1, d, H, W]``
float32 image and the key slice's position), first come first kept until ``max_bytes`` is reached,
then keeps nothing more and evicts nothing: an epoch reads each scan once in a random order, so an
evicting cache of the same size would hit as often and copy more. The scan choice, augmentation and
key-slice swap stay random per epoch (they run after it).

A cached image is handed out as it is, never copied: whoever receives it must not write into it.
``raddiag.training.augment`` makes new tensors for every transform, and ``collate_cases`` copies into
the batch (``tests/test_scan_cache.py`` trains with every transform firing and checks each cached
image against a fresh load after). With loader worker processes, each process fills its own cache
(the trainer gives each its share of ``train.cache_mb``).

Measured (issue 29, the demo recipe, 2026-12-07): reading a 2 x 8 x 64 x 64 px case from the store
took 46 us of the 0.4-0.5 ms its loading costs; from the cache 2-3 us.
"""
from __future__ import annotations

from typing import Callable, Hashable

import torch

from raddiag.data.batch_buffers import fork_safe_lock

Loaded = tuple[torch.Tensor, int]     # ([1, d, H, W] float32 image, key slice position or -1)


class ScanCache:
    """At most ``max_bytes`` of loaded scans by key; ``max_bytes <= 0`` keeps none. Thread-safe."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes, self.nbytes = int(max_bytes), 0
        self._items: dict[Hashable, Loaded] = {}
        self._lock = fork_safe_lock(self)

    def __len__(self) -> int:
        return len(self._items)

    def get(self, key: Hashable, load: Callable[[], Loaded]) -> Loaded:
        """The scan of ``key``: kept, or ``load()``-ed and kept while the budget allows."""
        hit = self._items.get(key)
        if hit is not None:
            return hit
        loaded = load()
        size = loaded[0].element_size() * loaded[0].numel()
        with self._lock:
            if key not in self._items and self.nbytes + size <= self.max_bytes:
                self._items[key] = loaded
                self.nbytes += size
        return loaded

"""Reused memory for the batch's images (``collate_cases``), handed out only when nothing holds it.

A batch's images are a few MB of fresh memory each step; fresh memory is zeroed by the allocator
(``np.zeros``: a memset, or page faults on memory the kernel maps anew) and then written again by
the batch. Reusing the memory took the demo recipe's loading between steps from 0.41-0.42 to
0.35-0.37 s over 4 epochs on 2 cores, about 1 ms of the ~5 ms a batch of 8 cases took to load
(issue 29, interleaved runs in one process; ``benchmarks/train_overhead.py``). A
:class:`BufferPool` keeps the last few flat buffers and gives one out again only when no array or
tensor made from it is alive: ``torch.from_numpy`` holds a reference to the array it wraps and
every view keeps its base, so a buffer whose reference count is back to the pool's own is free (a
batch a caller keeps, or a step's saved input, keeps its buffer out of reuse). The caller writes
every element of what it is given (``collate_cases`` zeroes the padding it does not fill).
"""
from __future__ import annotations

import os
import sys
import threading
import weakref

import numpy as np


def _reference_counts(buffers: list) -> list[int]:
    return [sys.getrefcount(b) for b in buffers]


# what _reference_counts gives for a buffer only its list holds (measured by the same code, so
# it holds whatever the interpreter's counting of loop variables and arguments)
_POOL_ONLY = _reference_counts([np.empty(0)])[0]


class BufferPool:
    """At most ``keep`` flat buffers of ``dtype``, ``max_bytes`` in all; :meth:`take` gives an
    uninitialised array of a shape, a view of a free buffer large enough, or of a new one (pooled
    in place of the smallest free one, or beside the others while they are fewer than ``keep``,
    within ``max_bytes``). Three cover training: the batch in the step, the one loading and the one
    a prefetching thread has queued; the budget bounds what a long-lived process (the web service)
    keeps after its largest batches (the paper's batch of one case of 8 scans: 64 MiB). Thread-safe
    (a prefetching thread and the main thread may both collate)."""

    def __init__(self, keep: int = 3, max_bytes: int = 256 << 20, dtype=np.float32) -> None:
        self.keep, self.max_bytes, self.dtype = keep, max_bytes, np.dtype(dtype)
        self._buffers: list[np.ndarray] = []
        self._lock = fork_safe_lock(self)

    def take(self, shape: tuple[int, ...]) -> np.ndarray:
        """An array of ``shape``, its contents whatever its buffer held last (write every element)."""
        need = int(np.prod(shape, dtype=np.int64))
        with self._lock:
            free = [i for i, n in enumerate(_reference_counts(self._buffers)) if n == _POOL_ONLY]
            fits = [i for i in free if self._buffers[i].size >= need]
            if fits:
                buf = self._buffers[min(fits, key=lambda i: self._buffers[i].size)]
            else:
                buf = np.empty(need, dtype=self.dtype)
                if len(self._buffers) >= self.keep and free:   # replace the smallest free buffer
                    self._buffers.pop(min(free, key=lambda i: self._buffers[i].size))
                if len(self._buffers) < self.keep and \
                        sum(b.nbytes for b in self._buffers) + buf.nbytes <= self.max_bytes:
                    self._buffers.append(buf)
            return buf[:need].reshape(shape)


# A process forked while another thread held a pool's lock (a prefetching thread collating as a
# DataLoader forks its workers) would inherit it held, and its first take() would wait forever:
# each child starts with its owners' locks free (only the forking thread lives on in the child).
_LOCK_OWNERS: "weakref.WeakSet" = weakref.WeakSet()


def fork_safe_lock(owner) -> threading.Lock:
    """A lock for ``owner._lock`` that a forked child finds free: the child's ``owner._lock`` is a
    new lock (:class:`BufferPool`, ``raddiag.data.scan_cache.ScanCache``)."""
    _LOCK_OWNERS.add(owner)
    return threading.Lock()


def _unlock_after_fork() -> None:
    for owner in list(_LOCK_OWNERS):
        owner._lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_unlock_after_fork)

"""Batches loaded ahead in a background thread while the training step runs (``train.prefetch``).

The trainer's loader reads, augments and collates a batch in the step's own thread by default
(``train.num_workers=0``: a worker process on 2 cores cost more than it saved, issue 29); a
thread loading the next batch while the step computes hides that time wherever the step leaves a
core or the GIL free (torch's kernels release it). Results do not change: every random draw of
loading comes from generators seeded by ``(seed, epoch, case)`` or by the sampler's epoch, never
from the global random state the step uses, and the order is the loader's.
"""
from __future__ import annotations

import queue
import threading
from typing import Iterable, Iterator

_END = object()


class Prefetcher(Iterator):
    """Iterates ``source`` in a background thread, at most ``depth`` items ahead of the consumer.
    An exception raised by ``source`` is raised again by the ``next`` call that would have
    returned its item; :meth:`close` stops the thread (call it when leaving early)."""

    def __init__(self, source: Iterable, depth: int = 1) -> None:
        self._queue: queue.Queue = queue.Queue(maxsize=max(1, depth))
        self._stop = threading.Event()
        self._done = False
        self._thread = threading.Thread(target=self._run, args=(iter(source),), name="raddiag-prefetch",
                                        daemon=True)
        self._thread.start()

    def _run(self, it: Iterator) -> None:
        try:
            for item in it:
                if not self._put((item, None)):
                    return
            self._put((_END, None))
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, raised there
            self._put((_END, exc))

    def _put(self, entry) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(entry, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def __next__(self):
        if self._done:
            raise StopIteration
        item, exc = self._queue.get()
        if item is _END:
            self._done = True
            self._thread.join()
            if exc is not None:
                raise exc
            raise StopIteration
        return item

    def close(self) -> None:
        self._done = True
        self._stop.set()
        self._thread.join()

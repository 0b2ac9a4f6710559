"""Where loading runs beside the training step: :func:`loading_plan` and :func:`step_threads`
decide, :class:`Prefetcher` is the background thread (``train.prefetch``).

Measured on 2 cores (issue 29, ``benchmarks/train_overhead.py``): the step's intra-op threads are
an OpenMP team that waits for each other at every operator, so anything else that takes one of
their cores stalls the whole team. With torch on both cores, a thread loading the next batch
brought the demo recipe to 0.40x the bare model's rate and a loader process beside them to
0.28x-0.49x, both below loading in the step's own thread (0.57x-0.61x). So on a CPU:
- with ``train.num_workers`` loader processes, the step runs on the cores they leave, one each
  (:func:`step_threads`; 1 thread and 1 loader process on 2 cores: 0.9x the bare model on 1
  thread), and no thread is added (the loader's workers already load ahead);
- without them, a background thread loads ahead only when the step leaves a core free (fewer
  torch threads than cores); else loading runs between steps, in the step's own thread.
On a GPU the step leaves the CPU free, and the thread always loads ahead.

Where loading runs changes no draw and no batch: every random draw of loading comes from
generators seeded by ``(seed, epoch, case)`` or by the sampler's epoch, never from the global
random state the step uses, and the order is the loader's. The weights are the same bit for bit
wherever loading runs as long as the step has the same number of threads (tests); the plan can
change that number (a loader process takes a core from the step), and torch's sums in another
order then differ in the last digits (2e-4 after 2 epochs of ``tiny``).
"""
from __future__ import annotations

import os
import queue
import threading
from contextlib import contextmanager
from typing import Iterable, Iterator

import torch


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity), else the machine's count."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:   # not on Linux
        return os.cpu_count() or 1


def loading_plan(device: torch.device, workers: int, prefetch: int) -> tuple[int, bool]:
    """``(threads of the training step, whether a background thread loads ahead)`` for a loader
    with ``workers`` processes on ``device`` (see the module's text for why)."""
    threads = torch.get_num_threads()
    if device.type != "cpu":
        return threads, prefetch > 0 and workers == 0
    if workers > 0:
        return max(1, min(threads, available_cores() - workers)), False
    return threads, prefetch > 0 and threads < available_cores()


@contextmanager
def step_threads(n: int):
    """torch's intra-op threads set to ``n`` inside the block, put back after it."""
    kept = torch.get_num_threads()
    if n != kept:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        if n != kept:
            torch.set_num_threads(kept)

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

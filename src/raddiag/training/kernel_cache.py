"""The CPU step's kernel cache: :func:`widen_kernel_cache` (no torch import, so that the CLI can call
it before anything else)."""
from __future__ import annotations

import os

# oneDNN kernels the CPU step keeps (ONEDNN_PRIMITIVE_CACHE_CAPACITY; oneDNN's default is 1024)
KERNEL_CACHE = 16384


def widen_kernel_cache(capacity: int = KERNEL_CACHE) -> None:
    """Let oneDNN keep ``capacity`` compiled kernels, unless the user set
    ``ONEDNN_PRIMITIVE_CACHE_CAPACITY`` (theirs is kept).

    On a CPU every convolution of a new shape is a oneDNN kernel compiled at run time (forward and
    both backward passes). A batch's shape is its number of real slices, which changes from batch to
    batch (3D scans of 8-32 slices, 2D scans of one), so the ``tiny`` recipe met some 40 shapes an
    epoch, 1,500 kernels and more over a run: past oneDNN's 1,024 the oldest were dropped and
    compiled again, 20-30 times a step (issue 29: a fresh executable page each, faulted in). With
    16,384 the bare model's step was 7-20 % faster (``benchmarks/train_overhead.py``) at the same
    peak memory, the same kernels, the same numbers. oneDNN reads the setting when it makes its
    first kernel, so this must run before the process's first convolution (``raddiag``'s CLI and
    :func:`raddiag.training.train` call it first); later it changes nothing."""
    os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", str(capacity))

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
    both backward passes). A batch's shapes follow its numbers of real slices and scans, which change
    from batch to batch: ``tiny`` on 160 synthetic cases met 15 compositions an epoch, 84 in 12
    epochs, and compiled 2,591 kernels in its first 4 epochs. Past oneDNN's 1,024 the oldest were
    dropped and compiled again: 3,633 compilations in those 60 steps, each in fresh executable
    pages (counted as executable buffers with ``strace``). At 16,384 the bare ``tiny`` model stepped
    through 8 epochs of its batches at 154-163 cases/s against 122-127 (2 threads, a second pass, two
    processes each; the demo recipe's 1-thread step: 181-184 against 171-184), with the same kernels
    and numbers and the same peak memory (1.08-1.09 GB RSS at 4,096 and 16,384, 3 rounds of ``tiny``).
    oneDNN reads the setting when it makes its first kernel, so this must run before the process's
    first convolution (``raddiag``'s CLI and :func:`raddiag.training.train` call it first); later it
    changes nothing."""
    os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", str(capacity))

"""What the training benchmarks measure with (issue 29): the device's clock, its matmul rate, FLOP
counts, peak memory, and the floor of a step's convolutions; :mod:`train_speed` and
:mod:`train_overhead` import them from here."""
from __future__ import annotations

import os
import time
from dataclasses import dataclass

import torch


def autocast(device, amp: str):
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp == "bf16")


def batchnorm_eval(*models) -> list[tuple[torch.nn.Module, bool]]:
    """BatchNorm on its running statistics (``--bn-eval``): a slice's features then no longer depend
    on the other slices of the batch (their zero-padded ones, our chunks), the rest stays in training.
    Returns each BatchNorm with its mode before, to put back."""
    norms = [(m, m.training) for model in models for m in model.modules()
             if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    for m, _ in norms:
        m.eval()
    return norms


# -- measuring ----------------------------------------------------------------------------------
def sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def matmul_rate(device, amp: str = "none", n: int = 2048, reps: int = 3) -> float:
    """FLOP/s of an n^3 matmul (the best of ``reps``), in the step's precision: fp32, or bf16 under
    ``--amp bf16`` (on a CPU with AMX about 5x fp32's rate)."""
    dtype = torch.bfloat16 if amp == "bf16" else torch.float32
    a, b = torch.rand(n, n, device=device, dtype=dtype), torch.rand(n, n, device=device, dtype=dtype)
    best = float("inf")
    for _ in range(reps):
        sync(device)
        t = time.perf_counter()
        a @ b
        sync(device)
        best = min(best, time.perf_counter() - t)
    return 2 * n ** 3 / best


def counted_flops(run) -> float:
    """FLOPs of the forward and backward ``run()`` executes."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as fc:
        run()
    return float(fc.get_total_flops())


def peak_bytes(device) -> int:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device)
    # VmHWM, not ru_maxrss: a child's ru_maxrss keeps the high-water mark of the parent it was forked from
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM:"))


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


# -- the convolutions' floor ---------------------------------------------------------------------
@dataclass
class ConvCall:
    conv: torch.nn.Conv2d
    shape: tuple
    input_grad: bool          # the stem's image needs no gradient


def conv_calls(ours, ob) -> list[ConvCall]:
    """Every convolution of our step, once (no recomputation), with its input's shape: recorded by
    hooks on one forward (BatchNorm on running statistics, so that nothing of the model changes)."""
    calls = []

    def record(m, inp, out):
        calls.append(ConvCall(m, tuple(inp[0].shape), inp[0].requires_grad))

    hooks = [m.register_forward_hook(record) for m in ours.modules() if isinstance(m, torch.nn.Conv2d)]
    norms, kept = batchnorm_eval(ours), ours.encoder.grad_checkpoint
    ours.encoder.grad_checkpoint = False
    try:
        ours(**{k: ob[k] for k in ours.input_keys})
    finally:
        ours.encoder.grad_checkpoint = kept
        for h in hooks:
            h.remove()
        for m, mode in norms:
            m.train(mode)
    return calls


def conv_seconds(calls: list[ConvCall], device, amp: str) -> float:
    """Forward and backward of each convolution alone on a random input of its shape (weight
    gradients cleared after): no step that runs these convolutions, in this precision, on this
    machine, takes less. (The same convolutions as theirs: their padding aside, both run them.)"""
    total = 0.0
    for c in calls:
        x = torch.randn(c.shape, device=device, requires_grad=c.input_grad)
        sync(device)
        t = time.perf_counter()
        with autocast(device, amp):
            y = c.conv(x)
        y.backward(torch.ones_like(y))
        sync(device)
        total += time.perf_counter() - t
        c.conv.zero_grad(set_to_none=True)
    return total

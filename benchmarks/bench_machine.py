"""What machine a benchmark's figures come from, in one line (issue 29).

A ratio against a comparator depends on the processor: the demo recipe's framework overhead read
0.895x on an Intel CPU with AMX and AVX-512 (its model step 3.4x faster) and 0.92x on an AMD EPYC
with AVX2 only, the same code and command. So each benchmark prints the processor, the vector
units torch dispatches to and those that decide a bf16 or fp32 rate, beside the load average.
Imported by the scripts of this folder (``python benchmarks/NAME.py`` puts it on ``sys.path``).
"""
from __future__ import annotations

import os
import platform

# the CPU flags that move these benchmarks' figures: fp32 convolutions (AVX2 / AVX-512) and bf16 (AMX)
FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16")


def cpu_model(cpuinfo: str = "/proc/cpuinfo") -> tuple[str, set[str]]:
    """``(processor name, its flags)`` from ``/proc/cpuinfo`` (Linux), else the platform's name."""
    try:
        with open(cpuinfo) as f:
            text = f.read()
    except OSError:
        return platform.processor() or platform.machine() or "unknown processor", set()
    name, flags = "", set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and not name:
            name = value.strip()
        elif key == "flags" and not flags:
            flags = set(value.split())
    return name or platform.machine() or "unknown processor", flags


def machine_line() -> str:
    """One line: the processor, its relevant flags, torch's CPU kernels, CPUs and load average."""
    import torch

    name, flags = cpu_model()
    units = " ".join(f for f in FLAGS if f in flags) or "none of " + "/".join(FLAGS)
    gpu = f"; GPU {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""
    return (f"machine: {name} ({units}; torch's CPU kernels {torch.backends.cpu.get_cpu_capability()}), "
            f"{os.cpu_count()} CPUs{gpu}; load average {' '.join(f'{x:.1f}' for x in os.getloadavg())}")

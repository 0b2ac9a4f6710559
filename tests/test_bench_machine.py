"""The benchmarks' machine line (benchmarks/bench_machine.py): the processor and the flags that
move a training benchmark's figures are read from /proc/cpuinfo as the kernel writes it."""
import importlib.util
from pathlib import Path

SPEC = importlib.util.spec_from_file_location(
    "bench_machine", Path(__file__).resolve().parents[1] / "benchmarks" / "bench_machine.py")
bench_machine = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(bench_machine)

CPUINFO = """processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) Platinum 8480C
flags\t\t: fpu sse2 avx2 avx512f avx512_bf16 amx_bf16 amx_tile
bogomips\t: 4000.00

processor\t: 1
model name\t: Intel(R) Xeon(R) Platinum 8480C
flags\t\t: fpu sse2
"""


def test_cpu_model_reads_first_processor(tmp_path):
    f = tmp_path / "cpuinfo"
    f.write_text(CPUINFO)
    name, flags = bench_machine.cpu_model(str(f))
    assert name == "Intel(R) Xeon(R) Platinum 8480C"
    assert {"avx2", "avx512f", "avx512_bf16", "amx_bf16"} <= flags
    assert "bogomips" not in flags


def test_cpu_model_without_cpuinfo(tmp_path):
    name, flags = bench_machine.cpu_model(str(tmp_path / "absent"))
    assert name and flags == set()


def test_machine_line_names_flags_and_load(monkeypatch):
    monkeypatch.setattr(bench_machine, "cpu_model", lambda: ("AMD EPYC", {"avx2", "sse2"}))
    line = bench_machine.machine_line()
    assert line.startswith("machine: AMD EPYC (avx2;")
    assert "amx" not in line.split(";")[0] and "load average" in line

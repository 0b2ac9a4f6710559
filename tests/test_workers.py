"""Worker processes from a user's script without `if __name__ == "__main__":` (issue 18):
the work runs in-process with a warning that says what to add, never a BrokenProcessPool."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

SRC = str(Path(__file__).resolve().parents[1] / "src")

PREPARE = """
import numpy as np
from pathlib import Path
from raddiag.data.case import Case, Scan
from raddiag.data.store import prepare_cases

def run():
    tmp = Path({tmp!r})
    cases = []
    for i in range(12):
        np.save(tmp / f"{{i}}.npy", np.random.default_rng(i).normal(100, 20, (24, 24)).astype(np.float32))
        cases.append(Case(id=f"c{{i}}", labels=["Normal"], scans=[Scan(str(tmp / f"{{i}}.npy"), "X-ray")]))
    rep = prepare_cases(cases, tmp / "out", size=16, depth=2, workers=2)
    print("prepared", rep.cases_out)
"""


def _run_script(tmp_path: Path, body: str) -> subprocess.CompletedProcess:
    script = tmp_path / "user_script.py"
    script.write_text(textwrap.dedent(body))
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=300)


@pytest.mark.parametrize("tail", ["run()\n", "if True:\n    run()\n"])
def test_prepare_from_a_script_without_the_main_guard(tmp_path, tail):
    out = _run_script(tmp_path, PREPARE.format(tmp=str(tmp_path)) + tail)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "prepared 12" in out.stdout
    assert "BrokenProcessPool" not in out.stderr and "bootstrapping phase" not in out.stderr
    assert "user_script.py calls it at the top level" in out.stderr
    assert 'if __name__ == "__main__":' in out.stderr


def test_prepare_from_a_guarded_script_keeps_its_workers(tmp_path):
    out = _run_script(tmp_path, PREPARE.format(tmp=str(tmp_path)) + "if __name__ == '__main__':\n    run()\n")
    assert out.returncode == 0, out.stderr[-3000:]
    assert "prepared 12" in out.stdout and "RuntimeWarning" not in out.stderr


def test_spawned_data_loader_workers_from_an_unguarded_script(tmp_path):
    out = _run_script(tmp_path, """
        import multiprocessing
        import torch
        from raddiag.data.dataset import make_loader

        class Tiny(torch.utils.data.Dataset):
            class cfg:
                depth = 2
            def __len__(self):
                return 2
            def __getitem__(self, i):
                return i

        def keep(batch):
            return batch

        multiprocessing.set_start_method("spawn", force=True)
        loader = make_loader(Tiny(), batch_size=1, num_workers=1)
        loader.collate_fn = keep
        print("batches", len(list(loader)))
    """)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "bootstrapping phase" not in out.stderr
    assert "batches 2" in out.stdout and "calls it at the top level" in out.stderr

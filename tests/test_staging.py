"""raddiag.staging: a folder is replaced whole; a stage of a killed process is removed by the next
command, one that a live process is writing never is (process ids are reused, locks are not)."""
from __future__ import annotations

import subprocess
import sys

import pytest

from raddiag import staging
from raddiag.staging import make_stage, stage_beside, stage_prefix, swap_in, sweep_stale

HOLD = """
import sys, time
from pathlib import Path
from raddiag.staging import make_stage
print(make_stage(Path(sys.argv[1]), sys.argv[2]), flush=True)
time.sleep(60)
"""


def test_a_live_stage_is_kept_a_killed_ones_removed(tmp_path):
    prefix = stage_prefix(tmp_path / "out", "export")
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path), prefix], stdout=subprocess.PIPE, text=True)
    try:
        live = tmp_path / proc.stdout.readline().strip().split("/")[-1]
        assert live.is_dir() and live.name.startswith(prefix)
        assert sweep_stale(tmp_path, prefix) == [] and live.is_dir()     # its writer is alive
    finally:
        proc.kill()
        proc.wait()
    assert sweep_stale(tmp_path, prefix) == [live] and not live.exists()


def test_a_stage_without_a_lock_is_named_not_removed(tmp_path, caplog):
    old = tmp_path / (stage_prefix(tmp_path / "out", "export") + "123-abc")
    old.mkdir()
    assert sweep_stale(tmp_path, stage_prefix(tmp_path / "out", "export")) == []
    assert old.is_dir() and str(old) in caplog.text


@pytest.mark.parametrize("exchange", [True, False], ids=["renameat2", "two-renames"])
def test_swap_in_replaces_the_folder_whole(tmp_path, monkeypatch, exchange):
    if not exchange:                                   # a system or file system without RENAME_EXCHANGE
        monkeypatch.setattr(staging, "_exchange", lambda a, b: False)
    target = tmp_path / "out"
    target.mkdir()
    (target / "old.txt").write_text("old")
    stage = stage_beside(target, "export")
    (stage / "new.txt").write_text("new")
    swap_in(stage, target)
    assert sorted(p.name for p in target.iterdir()) == ["new.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]        # no stage, no old copy, no lock
    fresh = make_stage(tmp_path, stage_prefix(tmp_path / "new", "x"))   # a target that does not exist yet
    swap_in(fresh, tmp_path / "new")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["new", "out"] and not any((tmp_path / "new").iterdir())

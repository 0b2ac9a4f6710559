"""Kill a training run with SIGKILL mid-epoch, resume it, and get the uninterrupted result."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from raddiag.config import preset
from test_training_data import make_tiny_data, tiny_overrides

SETTINGS = {"train.epochs": 2, "train.checkpoint_every": 2, "train.deterministic": "true",
            "train.aug_prob": 0.15, "train.key_slice_swap": 0.2, "train.seed": 5}


def _env() -> dict:
    env = dict(os.environ)
    env["OMP_NUM_THREADS"] = str(torch.get_num_threads())  # same threads as the in-process run
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[1] / "src") + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _checkpoint_state(path: Path):
    from raddiag.training.checkpoint import load_checkpoint

    try:
        return load_checkpoint(path)
    except (FileNotFoundError, ValueError):
        return None


@pytest.mark.slow
@pytest.mark.parametrize("workers", [0, 1])
def test_sigkill_mid_epoch_then_resume_matches_uninterrupted_run(tmp_path, workers):
    """Also with a loader process (the next epoch's iterator opened before validation, the step
    on the cores the process leaves)."""
    from safetensors.torch import load_file

    from raddiag.training import train
    from raddiag.training.checkpoint import load_checkpoint

    data = make_tiny_data(tmp_path / "data", n_cases=48)   # 32 training cases: 8 steps an epoch
    overrides = tiny_overrides(**SETTINGS, **{"train.num_workers": workers})

    # the uninterrupted reference, in this process
    ref = train(data, tmp_path / "ref", preset("tiny", overrides), progress=False)
    assert ref.steps == 16

    # the same run as a CLI subprocess, killed with SIGKILL once a mid-epoch checkpoint exists
    run = tmp_path / "run"
    last = run / "checkpoints" / "last.pt"
    cmd = [sys.executable, "-m", "raddiag", "train", "--data", str(data), "--preset", "tiny", "--out", str(run),
           "--no-progress"] + [a for o in overrides for a in ("--set", o)]
    proc = subprocess.Popen(cmd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    killed_at = None
    deadline = time.time() + 240
    try:
        while time.time() < deadline and proc.poll() is None:
            st = _checkpoint_state(last) if last.exists() else None
            if st is not None and st["batches_done"] > 0:
                proc.send_signal(signal.SIGKILL)
                killed_at = st
                break
            time.sleep(0.02)
    finally:
        if proc.poll() is None and killed_at is None:
            proc.kill()
        out = proc.communicate()[0].decode(errors="replace")
    assert killed_at is not None, f"no mid-epoch checkpoint appeared before the run ended:\n{out[-2000:]}"
    assert proc.returncode == -signal.SIGKILL
    # the checkpoint that survived is a step checkpoint: at most checkpoint_every steps are lost
    survived = load_checkpoint(last)
    assert survived["batches_done"] > 0 and survived["step"] % 2 == 0 and survived["step"] < 16

    # resume through the same CLI (in this process: one torch/MONAI import less) from the run's
    # own config; it must finish and equal the uninterrupted run
    from raddiag.cli import main

    assert main(["train", "--data", str(data), "--out", str(run), "--resume", "--no-progress"]) == 0
    final_ref = load_checkpoint(tmp_path / "ref" / "checkpoints" / "last.pt")
    final = load_checkpoint(last)
    assert final["step"] == 16 and final["epoch"] == 2
    for k, v in final_ref["model"].items():
        assert torch.equal(v, final["model"][k]), k                # bit for bit
    best_ref, best = load_file(str(tmp_path / "ref" / "model.safetensors")), load_file(str(run / "model.safetensors"))
    assert all(torch.equal(best_ref[k], best[k]) for k in best_ref)
    rows = (run / "metrics.csv").read_text().strip().splitlines()
    assert len(rows) == 3                                           # header + one row per epoch, no duplicates


def test_a_run_stopped_again_before_any_validation_keeps_its_latest_weights(tmp_path):
    """No epoch has validated, so no weights are best yet: the run's weights file is the latest
    stop's (it kept the first stop's, while the closing line said it held the weights at the stop)."""
    from raddiag.models import load_model
    from raddiag.training import train
    from raddiag.training.checkpoint import load_checkpoint

    data = make_tiny_data(tmp_path, n_cases=24)
    cfg = preset("tiny", tiny_overrides(**{"train.epochs": 2}))
    run = tmp_path / "run"
    train(data, run, cfg, max_steps=1, progress=False)
    first = {k: v.clone() for k, v in load_model(run)[0].state_dict().items()}
    result = train(data, run, cfg, max_steps=3, progress=False, resume=True)
    assert (result.epochs_run, result.steps, result.best_epoch) == (0, 3, 0)
    latest = load_checkpoint(run / "checkpoints" / "last.pt")["model"]
    saved = load_model(run)[0].state_dict()
    assert all(torch.equal(saved[k], latest[k]) for k in latest)
    assert not all(torch.equal(saved[k], first[k]) for k in first)      # the steps after the first trained it

"""A real 2-process DistributedDataParallel job on CPU (gloo) through torchrun."""
from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest

from test_training_data import make_tiny_data, tiny_overrides


def _torchrun() -> list[str]:
    exe = Path(sys.executable).with_name("torchrun")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "torch.distributed.run"]


@pytest.mark.slow
def test_two_process_ddp_trains_and_validation_matches_single_process(tmp_path):
    from raddiag.data.dataset import CaseDataset
    from raddiag.models import load_model
    from raddiag.training import validate
    from raddiag.training.metrics import macro_auc

    data = make_tiny_data(tmp_path / "data", n_cases=48)
    run = tmp_path / "run"
    overrides = tiny_overrides(**{"train.epochs": 3, "train.batch_size": 4})
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[1] / "src") + os.pathsep + env.get("PYTHONPATH", "")
    cmd = _torchrun() + ["--standalone", "--nproc_per_node", "2", "-m", "raddiag", "train", "--data", str(data),
                         "--preset", "tiny", "--out", str(run), "--no-progress"]
    cmd += [a for o in overrides for a in ("--set", o)]
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=500)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-4000:]

    rows = list(csv.DictReader((run / "metrics.csv").open()))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3]
    # 32 training cases over 2 ranks at 4 a batch: 4 optimiser steps an epoch
    assert [int(r["step"]) for r in rows] == [4, 8, 12]
    losses = [float(r["train_loss"]) for r in rows]
    assert losses[-1] < losses[0]
    best = max(float(r["val_auc"]) for r in rows)
    assert float(rows[-1]["best_val_auc"]) == pytest.approx(best)
    assert "3 epochs, 12 steps" in res.stdout      # only rank 0 reports
    assert res.stdout.count("best val macro AUC") == 1

    # the gathered validation AUC equals a single-process evaluation of the saved best weights
    model, cfg, labels = load_model(run)
    val = CaseDataset(data, "val", labels, cfg.data)
    scores, y = validate(model, val, cfg)
    assert y.shape[0] == len(val) == 16
    assert macro_auc(scores, y) == pytest.approx(best, abs=1e-6)
    assert labels.thresholds is not None

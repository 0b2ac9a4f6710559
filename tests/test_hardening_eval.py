"""Hostile inputs to ``raddiag metrics`` / ``raddiag evaluate`` and the evaluation engine: one
test per finding, each failing before its fix. Errors are one line naming the file and the reason."""
from __future__ import annotations

import json

import numpy as np
import pytest

from raddiag.cli import main


def _npz(path, n=40, c=3, seed=0, **extra):
    rng = np.random.default_rng(seed)
    y = rng.random((n, c)) < 0.3
    y[0], y[1] = True, False                 # every class has a positive and a negative
    s = rng.random((n, c))
    np.savez(path, scores=extra.pop("scores", s), labels=extra.pop("labels", y), **extra)
    return str(path)


def _metrics(tmp_path, *args):
    return main(["metrics", "--out", str(tmp_path / "out"), *args])


@pytest.mark.parametrize("args, reason", [
    (["--n-boot", "1"], "at least 2"),
    (["--n-boot", "0", "--seed", "-1"], "--seed: must be an integer >= 0, got -1"),
])
def test_metrics_refuses_one_resample_and_a_negative_seed(tmp_path, capsys, args, reason):
    pred = _npz(tmp_path / "p.npz")
    with pytest.raises(SystemExit) as e:
        _metrics(tmp_path, "--pred", pred, *args)
    err = capsys.readouterr().err
    assert e.value.code == 2 and reason in err
    assert not (tmp_path / "out").exists()

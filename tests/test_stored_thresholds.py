"""The thresholds a run stores are those ``evaluate`` and ``predict`` meet (red team, issue 29
session): a max-F1 threshold is one validation positive's own score, and when the trainer chose it
on its own path's scores (the plain model; bf16 under ``train.amp``) ``evaluate``'s fp32 inference
twin scored that case a rounding lower, the case fell below its own threshold, and ``evaluate
--split val`` printed a macro F1 of 14.9 where it was 26.3."""
from __future__ import annotations

import numpy as np
import pytest

from test_training_data import make_tiny_data, tiny_overrides

from raddiag.evaluation.metrics import best_f1_thresholds


@pytest.fixture(scope="module")
def bf16_run(tmp_path_factory):
    """A ``tiny`` run trained under bf16 autocast, whose validation scores differ from fp32's in the
    third decimal: thresholds chosen on them would miss evaluate's scores by far more than a rounding."""
    from raddiag.config import preset
    from raddiag.training import train

    d = tmp_path_factory.mktemp("thresholds")
    data = make_tiny_data(d, n_cases=36)
    train(data, d / "run", preset("tiny", tiny_overrides(**{"train.epochs": 1, "train.amp": "bf16"})),
          progress=False)
    return d, data


def _val_scores(run, data, tmp_path):
    """``evaluate``'s own validation scores and labels (its predictions file)."""
    from raddiag.evaluation.run_eval import evaluate_run

    res = evaluate_run(run, data, "val", tmp_path / "ev", n_boot=0, progress=False)
    with np.load(tmp_path / "ev" / "predictions.npz") as z:
        return res, z["scores"], z["labels"]


def test_stored_thresholds_are_the_max_f1_thresholds_of_evaluates_scores(bf16_run, tmp_path):
    from raddiag.run import RunFolder

    d, data = bf16_run
    _, scores, labels = _val_scores(d / "run", data, tmp_path)
    want, fallback = best_f1_thresholds(scores, labels > 0.5, return_fallback=True)
    stored, missing = RunFolder(d / "run").load_labels().threshold_values()
    assert (~missing).any(), "no class had a validation positive: the test would check nothing"
    np.testing.assert_array_equal(missing, fallback)
    np.testing.assert_array_equal(stored[~missing], want[~missing])
    # every class's threshold-setting positive is at or above its threshold in evaluate's scores
    for c in np.flatnonzero(~missing):
        pos = scores[labels[:, c] > 0.5, c]
        assert (pos >= stored[c]).any()


def test_evaluating_the_validation_split_chooses_on_the_scores_it_computed(bf16_run, tmp_path):
    d, data = bf16_run
    res, scores, labels = _val_scores(d / "run", data, tmp_path)
    assert res["threshold_source"] == "validation"
    want = best_f1_thresholds(scores, labels > 0.5)
    np.testing.assert_array_equal(np.asarray(res["thresholds"], dtype=np.float64), want)

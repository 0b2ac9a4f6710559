"""The thresholds a run stores are those ``evaluate`` and ``predict`` meet (red team, issue 29
session): a max-F1 threshold is one validation positive's own score, and when the trainer chose it
on its own path's scores (the plain model; bf16 under ``train.amp``) ``evaluate``'s fp32 inference
twin scored that case a rounding lower, the case fell below its own threshold, and ``evaluate
--split val`` printed a macro F1 of 14.9 where it was 26.3."""
from __future__ import annotations

import numpy as np
import pytest

from test_training_data import make_tiny_data, tiny_overrides

from hypothesis import given, settings
from hypothesis import strategies as st

from raddiag.evaluation.metrics import best_f1_thresholds
from raddiag.training.metrics import STORED_MARGIN, f1_thresholds


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
    for c in np.flatnonzero(~missing):
        # a hair below the max-F1 threshold (training.metrics.STORED_MARGIN): the same decisions on
        # evaluate's validation scores, and the case that set it stays above it when scored again
        assert 0 < want[c] - stored[c] <= STORED_MARGIN * (1 + 1e-6)      # float64 rounding of the difference
        np.testing.assert_array_equal(scores[:, c] >= stored[c], scores[:, c] >= want[c])
        pos = scores[labels[:, c] > 0.5, c]
        assert (pos - 5e-8 >= stored[c]).any()


def test_evaluating_the_validation_split_chooses_on_the_scores_it_computed(bf16_run, tmp_path):
    d, data = bf16_run
    res, scores, labels = _val_scores(d / "run", data, tmp_path)
    assert res["threshold_source"] == "validation"
    want = best_f1_thresholds(scores, labels > 0.5)
    np.testing.assert_array_equal(np.asarray(res["thresholds"], dtype=np.float64), want)


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(2, 60), c=st.integers(1, 5), ties=st.booleans())
def test_stored_thresholds_keep_every_validation_decision_a_margin_below(seed, n, c, ties):
    """On random validation predictions (ties, classes without positives): each stored threshold makes
    the max-F1 threshold's decisions, lies below it by at most the margin, and by half the gap to
    the next lower score where that is smaller."""
    rng = np.random.default_rng(seed)
    scores = rng.random((n, c)).astype(np.float32)
    if ties:
        scores = np.round(scores * 4) / 4
    labels = rng.random((n, c)) < 0.3
    want, fallback = best_f1_thresholds(scores, labels, return_fallback=True)
    stored = f1_thresholds(scores, labels)
    for j in range(c):
        if fallback[j]:
            assert stored[j] is None
            continue
        s = scores[:, j].astype(np.float64)
        np.testing.assert_array_equal(s >= stored[j], s >= want[j])
        below = s[s < want[j]]
        bound = min(STORED_MARGIN, (want[j] - below.max()) / 2 if below.size else 1)
        assert 0 < want[j] - stored[j] <= bound * (1 + 1e-6)                # float64 rounding

"""Exactness of the vectorised metrics against scikit-learn (ties included), thresholds from
validation, exclusion of undefined classes, and the bootstrap engine."""
from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import (accuracy_score, average_precision_score, f1_score, matthews_corrcoef,
                             roc_auc_score)

from raddiag.evaluation.bootstrap import bootstrap_per_class, percentile_ci, resample_weights
from raddiag.evaluation.metrics import FPR_TARGETS, best_f1_thresholds, macro, per_class_metrics


def _data(seed=0, n=240, c=25, levels=8):
    rng = np.random.default_rng(seed)
    y = rng.random((n, c)) < rng.uniform(0.02, 0.5, c)
    s = np.round((rng.random((n, c)) + 0.6 * y) * levels) / levels / 1.6  # integer-rounded: many ties
    return s, y


def _recall_at_fpr_brute(y, s, f):
    """Brute force: every threshold (each distinct score and +inf), predict score >= t."""
    best = 0.0
    for t in list(np.unique(s)) + [np.inf]:
        p = s >= t
        fpr = (p & ~y).sum() / (~y).sum()
        if fpr <= f:
            best = max(best, (p & y).sum() / y.sum())
    return best


def test_equal_to_sklearn_with_ties():
    s, y = _data()
    thr = np.quantile(s, 0.7, axis=0)
    m = per_class_metrics(s, y, thr, block=7)  # small blocks exercise the block loop
    for c in range(s.shape[1]):
        yc, sc, p = y[:, c], s[:, c], s[:, c] >= thr[c]
        assert len(np.unique(sc)) < len(sc) / 4  # ties really present
        assert m["auc"][c] == pytest.approx(roc_auc_score(yc, sc), abs=1e-6)
        assert m["ap"][c] == pytest.approx(average_precision_score(yc, sc), abs=1e-6)
        assert m["f1"][c] == pytest.approx(f1_score(yc, p), abs=1e-6)
        assert m["mcc"][c] == pytest.approx(matthews_corrcoef(yc, p), abs=1e-6)
        assert m["acc"][c] == pytest.approx(accuracy_score(yc, p), abs=1e-6)
        for f in FPR_TARGETS:
            assert m[f"recall_at_fpr_{f:g}"][c] == pytest.approx(_recall_at_fpr_brute(yc, sc, f), abs=1e-12)


def test_undefined_classes_are_nan_and_counted():
    s, y = _data(1, c=6)
    y[:, 0] = False   # no positives
    y[:, 1] = True    # no negatives
    m = per_class_metrics(s, y, np.full(6, 0.5))
    for k, v in m.items():
        assert np.isnan(v[:2]).all(), k
        assert not np.isnan(v[2:]).any(), k
    mean, n_used, n_excl = macro(m["auc"])
    assert (n_used, n_excl) == (4, 2)
    assert mean == pytest.approx(np.mean(m["auc"][2:]))
    mean, n_used, n_excl = macro(m["auc"], np.array([True, False, True, True, False, False]))
    assert (n_used, n_excl) == (2, 1)


def test_best_f1_threshold_is_maximal_on_validation():
    s, y = _data(2)
    y[:, 3] = False
    thr, fb = best_f1_thresholds(s, y, return_fallback=True)
    assert fb.tolist() == [c == 3 for c in range(s.shape[1])] and thr[3] == 0.5
    for c in range(s.shape[1]):
        if c == 3:
            continue
        best = max(f1_score(y[:, c], s[:, c] >= t) for t in np.unique(s[:, c]))
        assert f1_score(y[:, c], s[:, c] >= thr[c]) == pytest.approx(best, abs=1e-12)
        assert thr[c] in s[:, c]


def test_bootstrap_engine_equals_recomputation_on_resampled_cases():
    s, y = _data(3, n=150, c=12)
    thr = best_f1_thresholds(s, y)
    ones = bootstrap_per_class(s, y, thr, weights=np.ones((1, len(s))))
    point = per_class_metrics(s, y, thr)
    W = resample_weights(len(s), 4, seed=5)
    boot = bootstrap_per_class(s, y, thr, weights=W)
    for k in point:
        np.testing.assert_allclose(ones[k][0], point[k], atol=1e-6)
    for b in range(len(W)):
        idx = np.repeat(np.arange(len(s)), W[b].astype(int))
        ref = per_class_metrics(s[idx], y[idx], thr)
        for k in ref:
            np.testing.assert_allclose(boot[k][b], ref[k], atol=1e-6, err_msg=k)


def test_bootstrap_ci_contains_point_and_shrinks_with_more_data():
    rng = np.random.default_rng(4)
    widths = []
    for n in (200, 3200):
        y = rng.random((n, 5)) < 0.2
        s = rng.normal(size=(n, 5)) + 1.0 * y
        point = macro(per_class_metrics(s, y)["auc"])[0]
        boot = bootstrap_per_class(s, y, None, n_boot=300, seed=1, metrics=("auc",))
        lo, hi = percentile_ci(macro(boot["auc"])[0])
        assert lo <= point <= hi
        widths.append(hi - lo)
    assert widths[1] < widths[0] / 2


def test_inputs_are_checked():
    with pytest.raises(ValueError, match="must both be"):
        per_class_metrics(np.zeros((3, 2)), np.zeros((3, 3)))
    with pytest.raises(ValueError, match="0/1"):
        per_class_metrics(np.zeros((3, 2)), np.full((3, 2), 2))

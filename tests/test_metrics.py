"""Exactness of the vectorised metrics against scikit-learn (ties included), thresholds from
validation, exclusion of undefined classes, and the bootstrap engine."""
from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import (accuracy_score, average_precision_score, f1_score, matthews_corrcoef,
                             roc_auc_score)

from raddiag.evaluation.bootstrap import bootstrap_ci, bootstrap_per_class, percentile_ci, resample_weights
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
        _assert_class_equals_sklearn(m, c, yc, sc, p)


def _assert_class_equals_sklearn(m, c, yc, sc, p, tol=1e-12):
    assert m["auc"][c] == pytest.approx(roc_auc_score(yc, sc), abs=tol)
    assert m["ap"][c] == pytest.approx(average_precision_score(yc, sc), abs=tol)
    assert m["f1"][c] == pytest.approx(f1_score(yc, p), abs=tol)
    assert m["mcc"][c] == pytest.approx(matthews_corrcoef(yc, p), abs=tol)
    assert m["acc"][c] == pytest.approx(accuracy_score(yc, p), abs=tol)
    for f in FPR_TARGETS:
        assert m[f"recall_at_fpr_{f:g}"][c] == pytest.approx(_recall_at_fpr_brute(yc, sc, f), abs=tol)


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


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_bootstrap_engine_equals_recomputation_on_resampled_cases(dtype):
    s, y = _data(3, n=150, c=12)
    s = s.astype(dtype)
    y[:, 0] = False
    y[:2, 0] = True                      # a rare class: some resamples draw none of its positives
    thr = best_f1_thresholds(s, y)
    thr[1::2] = 0.3                      # between float32 values
    ones = bootstrap_per_class(s, y, thr, weights=np.ones((1, len(s))))
    point = per_class_metrics(s, y, thr)
    W = resample_weights(len(s), 12, seed=5)
    np.testing.assert_array_equal(W.sum(1), len(s))
    boot = bootstrap_per_class(s, y, thr, weights=W)
    for k in point:
        np.testing.assert_allclose(ones[k][0], point[k], atol=1e-6)
    redrawn = 0
    for b in range(len(W)):
        idx = np.repeat(np.arange(len(s)), W[b].astype(int))
        ref = per_class_metrics(s[idx], y[idx], thr)
        for k in ref:
            assert not np.isnan(boot[k][b]).any(), k       # every class stays defined
            ok = ~np.isnan(ref[k])                          # the resample itself kept the class defined
            np.testing.assert_allclose(boot[k][b][ok], ref[k][ok], atol=1e-6, err_msg=k)
        redrawn += int(np.isnan(ref["auc"]).sum())
    assert redrawn > 0                                      # the redraw path was exercised


def test_bootstrap_redraws_a_missing_positive_from_the_class():
    """A class with one positive: a resample that misses it gets it back once (stratified
    redraw), so the replicate is the metric on the resampled negatives plus that positive."""
    rng = np.random.default_rng(7)
    n = 60
    s = rng.random((n, 2))
    y = np.zeros((n, 2), bool)
    y[3, 0] = True
    y[:, 1] = rng.random(n) < 0.5
    y[3, 1] = True
    W = resample_weights(n, 40, seed=1)
    boot = bootstrap_per_class(s, y, None, weights=W)
    missed = np.nonzero(W[:, 3] == 0)[0]
    assert len(missed) > 5
    for b in missed:
        idx = np.r_[np.repeat(np.arange(n), W[b].astype(int)), 3]   # negatives as drawn + the positive once
        yy, ss = y[idx, 0], s[idx, 0]
        assert boot["auc"][b, 0] == pytest.approx(roc_auc_score(yy, ss), abs=1e-6)
        assert boot["ap"][b, 0] == pytest.approx(average_precision_score(yy, ss), abs=1e-6)


def test_interval_covers_a_known_macro_auc():
    """Small version of ``benchmarks/ci_coverage.py`` (200 repetitions there): Gaussian scores
    with a known AUC per class, rare classes that are also the hard ones."""
    from raddiag.evaluation.coverage import Design, coverage

    res = coverage(Design(n_cases=400, rare_prevalence=0.015), reps=40, n_boot=200, seed=0)
    for method in ("guarded", "logit", "percentile"):
        assert res[method]["contains_point"] == 1.0, method
        assert res[method]["coverage"] >= 0.85, method
    assert res["guarded"]["max_width_ratio"] <= 1.5


def test_hard_scenarios_have_the_truth_they_claim():
    """The closed-form truths of benchmarks/ci_coverage.py's scenarios, against a large sample."""
    from raddiag.evaluation.coverage import SCENARIOS, Scenario, simulate

    for sc in SCENARIOS[1:]:
        big = Scenario(sc.name, sc.separation, [0.5] * len(sc.separation), n_cases=200_000, metric=sc.metric,
                       threshold=sc.threshold, rho=sc.rho)
        s, y = simulate(big, np.random.default_rng(1))
        thr = np.full(len(sc.separation), sc.threshold) if sc.metric == "f1" else None
        got = per_class_metrics(s, y, thr)[sc.metric]
        np.testing.assert_allclose(got, big.truth(), atol=0.01, err_msg=sc.name)


def test_logit_interval_by_hand_and_around_a_biased_bootstrap():
    from scipy.stats import norm

    from raddiag.evaluation.bootstrap import bootstrap_ci

    rng = np.random.default_rng(0)
    z = rng.normal(0.0, 0.3, size=2000)                       # replicates drawn on the logit scale
    lo, hi = bootstrap_ci(1 / (1 + np.exp(-z)), 0.5)
    half = norm.ppf(0.975) * z.std(ddof=1)
    assert (lo, hi) == pytest.approx((1 / (1 + np.exp(half)), 1 / (1 + np.exp(-half))), rel=1e-9)
    # replicates all above the estimate (AP of a class with few positives): the percentile
    # interval misses its point, the logit one contains it and stays in [0, 1]
    reps = 0.19 + 0.08 * rng.random(1000)
    p_lo, _ = bootstrap_ci(reps, 0.184, method="percentile")
    lo, hi = bootstrap_ci(reps, 0.184)
    assert p_lo > 0.184 and lo < 0.184 < hi and 0 < lo and hi < 1
    # MCC lives in [-1, 1] (Fisher z scale); a point on the edge stays inside its interval
    lo, hi = bootstrap_ci(np.array([-0.2, 0.1, 0.3, 0.0]), 0.05, metric="mcc")
    assert -1 < lo < 0.05 < hi < 1
    lo, hi = bootstrap_ci(np.array([1.0, 0.98, 0.99, 1.0]), 1.0)
    assert lo < 1.0 and hi == 1.0
    with pytest.raises(ValueError, match="interval method"):
        bootstrap_ci(reps, 0.2, method="bca")


def test_bootstrap_ci_contains_point_and_shrinks_with_more_data():
    rng = np.random.default_rng(4)
    widths = []
    for n in (200, 3200):
        y = rng.random((n, 5)) < 0.2
        s = rng.normal(size=(n, 5)) + 1.0 * y
        point = macro(per_class_metrics(s, y)["auc"])[0]
        boot = bootstrap_per_class(s, y, None, n_boot=300, seed=1, metrics=("auc",))
        for lo, hi in (percentile_ci(macro(boot["auc"])[0]), bootstrap_ci(macro(boot["auc"])[0], point)):
            assert lo <= point <= hi
        widths.append(hi - lo)
    assert widths[1] < widths[0] / 2


def test_inputs_are_checked():
    with pytest.raises(ValueError, match="must have the same shape"):
        per_class_metrics(np.zeros((3, 2)), np.zeros((3, 3)))
    with pytest.raises(ValueError, match="0/1"):
        per_class_metrics(np.zeros((3, 2)), np.full((3, 2), 2))


def test_float32_threaded_fast_path_equals_sklearn():
    """The point path (one float32 sort per class, binary searches, class blocks on threads):
    ties, -0.0 == 0.0, thresholds between float32 values and at a score, classes without
    positives or negatives, and validation thresholds, all against scikit-learn."""
    rng = np.random.default_rng(11)
    n, c = 300, 23
    y = rng.random((n, c)) < rng.uniform(0.01, 0.6, c)
    s = (np.round((rng.random((n, c)) + 0.5 * y) * 6) / 6 - 0.5).astype(np.float32)
    s[rng.random((n, c)) < 0.1] = np.float32(-0.0)
    y[:, 4] = False
    y[:, 5] = True
    thr = np.where(np.arange(c) % 2, 0.3, s[0].astype(np.float64))      # off-grid and on a score
    m = per_class_metrics(s, y, thr, block=4, n_threads=2)
    vthr, fb = best_f1_thresholds(s, y, block=4, n_threads=2, return_fallback=True)
    ref = best_f1_thresholds(s.astype(np.float64), y, block=1000, n_threads=1)
    np.testing.assert_array_equal(vthr, ref)
    assert fb[4] and not fb[5]
    for j in range(c):
        yc, sc, p = y[:, j], s[:, j].astype(np.float64), s[:, j] >= thr[j]
        if j in (4, 5):
            assert all(np.isnan(m[k][j]) for k in m)
            continue
        _assert_class_equals_sklearn(m, j, yc, sc, p)
        best = max(f1_score(yc, sc >= t) for t in np.unique(sc))
        assert f1_score(yc, sc >= vthr[j]) == pytest.approx(best, abs=1e-12)


def test_bootstrap_roc_band_is_the_group_mean_of_per_class_curves():
    """The bootstrap sums a group's ROC curves as weighted step histograms; on one resample it
    must equal the mean of the per-class curves recomputed on the resampled cases."""
    s, y = _data(5, n=200, c=9)
    grid = np.linspace(0, 1, 21)
    W = resample_weights(len(s), 3, seed=2)
    groups = {"a": np.arange(9) < 4, "b": np.arange(9) >= 2}
    boot = bootstrap_per_class(s, y, None, weights=W, metrics=("auc",), fpr_grid=grid, roc_groups=groups)
    for b in range(len(W)):
        idx = np.repeat(np.arange(len(s)), W[b].astype(int))
        curves = per_class_metrics(s[idx], y[idx], fpr_grid=grid)["roc"]
        for g, mask in groups.items():
            np.testing.assert_allclose(boot["roc"][g][b], np.nanmean(curves[mask], 0), atol=1e-6)


def test_scores_wider_than_float64_are_refused_only_where_the_cast_changes_them():
    """Red team: long-double scores 1e-18 apart were cast to float64 without a word and tied: AUC 0.5
    where scikit-learn, ranking the long doubles, gives 1.0. Such a cast is refused, naming the
    input; scores float64 holds exactly (long doubles made from float64, int64 below 2**53) pass."""
    from raddiag.evaluation.metrics import check_inputs

    y = np.array([0, 0, 0, 1, 1, 1], bool)
    close = np.longdouble(1) + np.arange(6, dtype=np.longdouble) * np.longdouble(1e-18)
    if np.finfo(np.longdouble).eps < 1e-18:          # a platform whose long double is wider
        with pytest.raises(ValueError, match="my predictions: scores of float128 lose precision"):
            check_inputs(close, y, "my predictions")
    exact = np.linspace(0, 1, 6).astype(np.longdouble)
    np.testing.assert_array_equal(check_inputs(exact, y)[0][:, 0], np.linspace(0, 1, 6))
    with pytest.raises(ValueError, match="scores of int64 lose precision"):
        check_inputs(np.array([2**60, 2**60 + 1, 0, 1, 2, 3], np.int64), y)
    np.testing.assert_array_equal(check_inputs(np.arange(6, dtype=np.int64), y)[0][:, 0], np.arange(6.0))

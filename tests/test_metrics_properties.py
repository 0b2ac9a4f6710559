"""Property-based checks of every per-class metric against independent references (issue 25).

Hypothesis draws the number of cases (5-400) and classes (1-4), the memory layout (C or Fortran
order), the score dtype (float16 / float32 / float64), the label dtype (bool, int8, uint8,
int64), tie patterns (scores rounded to a few levels, constant columns) and columns with no
positive or no negative case. Each per-class value of :mod:`raddiag.evaluation.metrics` is
compared with scikit-learn (AUC, AP, F1, MCC, ACC) or with a brute-force definition written
here (recall at FPR, the max-F1 threshold), and the inputs must be unchanged afterwards. The
bootstrap engine is checked against recomputation on explicitly resampled cases, the ``.npz``
reader against ``np.load``, and ``raddiag metrics --n-boot 0`` end to end against scikit-learn.

Run time is bounded: ``RADDIAG_FUZZ_EXAMPLES`` examples per property (default 25; the CLI
property a fifth of that). A longer run (README):
``RADDIAG_FUZZ_EXAMPLES=2000 python -m pytest tests/test_metrics_properties.py``.
"""
from __future__ import annotations

import csv
import os

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st
from hypothesis.extra import numpy as hnp
from sklearn.metrics import (accuracy_score, average_precision_score, f1_score, matthews_corrcoef,
                             roc_auc_score)

from raddiag.evaluation.bootstrap import bootstrap_per_class
from raddiag.evaluation.commands import read_npz
from raddiag.evaluation.metrics import FPR_TARGETS, best_f1_thresholds, per_class_metrics

EXAMPLES = int(os.environ.get("RADDIAG_FUZZ_EXAMPLES", "25"))
PROPS = settings(max_examples=EXAMPLES, deadline=None, database=None, print_blob=True,
                 suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
CLI_PROPS = settings(PROPS, max_examples=max(5, EXAMPLES // 5))
SCORE_DTYPES = (np.float16, np.float32, np.float64)
LABEL_DTYPES = (np.bool_, np.int8, np.uint8, np.int64)


@st.composite
def predictions(draw, max_cases: int = 400, max_classes: int = 4):
    """``(scores, labels)`` ``[n, c]`` with ties, constant columns, one-sided columns, any
    layout and dtype."""
    n = draw(st.integers(5, max_cases))
    c = draw(st.integers(1, max_classes))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    prevalence = rng.uniform(0.05, 0.7, c)
    y = rng.random((n, c)) < prevalence
    for j in range(c):
        kind = draw(st.sampled_from(["mixed"] * 4 + ["all positive", "all negative", "one positive", "one negative"]))
        if kind == "all positive":
            y[:, j] = True
        elif kind == "all negative":
            y[:, j] = False
        elif kind in ("one positive", "one negative"):
            y[:, j] = kind == "one negative"
            y[rng.integers(n), j] = kind == "one positive"
    s = rng.normal(size=(n, c)) + rng.uniform(0, 2.5, c) * y
    levels = draw(st.sampled_from([None, 1, 2, 3, 8]))         # 1: a constant column; 2-8: heavy ties
    if levels is not None:
        lo, hi = s.min(0), s.max(0)
        s = np.round((s - lo) / np.where(hi > lo, hi - lo, 1) * (levels - 1)) / max(levels - 1, 1)
    s = 1 / (1 + np.exp(-s)) if draw(st.booleans()) else s       # probabilities or raw scores
    s = s.astype(draw(st.sampled_from(SCORE_DTYPES)))
    y = y.astype(draw(st.sampled_from(LABEL_DTYPES)))
    if draw(st.booleans()):
        s, y = np.asfortranarray(s), np.asfortranarray(y)
    return s, y


def _recall_at_fpr(y, s, f):
    """Brute force: predict ``score >= t`` for every distinct score and +inf; the largest TPR
    whose FPR is at most ``f``."""
    best = 0.0
    for t in list(np.unique(s)) + [np.inf]:
        p = s >= t
        if (p & ~y).sum() <= f * (~y).sum():
            best = max(best, (p & y).sum() / y.sum())
    return best


def _frozen(*arrays):
    return [(a.copy(order="K"), a.flags["C_CONTIGUOUS"], a.flags["F_CONTIGUOUS"], a.dtype) for a in arrays]


def _assert_unchanged(arrays, frozen):
    for a, (copy, c, f, dtype) in zip(arrays, frozen):
        assert np.array_equal(a, copy) and a.dtype == dtype
        assert (a.flags["C_CONTIGUOUS"], a.flags["F_CONTIGUOUS"]) == (c, f)


@PROPS
@given(data=predictions(), use_thr=st.booleans())
def test_every_per_class_metric_equals_scikit_learn_or_brute_force(data, use_thr):
    s, y = data
    n, c = s.shape
    s64, yb = s.astype(np.float64), y.astype(bool)      # the references see the same values
    thr = np.array([s64[n // 3, j] for j in range(c)]) if use_thr else None
    frozen = _frozen(s, y)
    m = per_class_metrics(s, y, thr, block=3)
    _assert_unchanged((s, y), frozen)
    for j in range(c):
        yj, sj = yb[:, j], s64[:, j]
        if yj.all() or not yj.any():                    # undefined: nan, never a number
            assert all(np.isnan(v[j]) for v in m.values())
            continue
        assert m["auc"][j] == pytest.approx(roc_auc_score(yj, sj), abs=1e-12)
        assert m["ap"][j] == pytest.approx(average_precision_score(yj, sj), abs=1e-12)
        for f in FPR_TARGETS:
            assert m[f"recall_at_fpr_{f:g}"][j] == pytest.approx(_recall_at_fpr(yj, sj, f), abs=1e-12)
        if thr is not None:
            p = sj >= thr[j]
            assert m["f1"][j] == pytest.approx(f1_score(yj, p, zero_division=0), abs=1e-12)
            assert m["mcc"][j] == pytest.approx(matthews_corrcoef(yj, p), abs=1e-12)
            assert m["acc"][j] == pytest.approx(accuracy_score(yj, p), abs=1e-12)


@PROPS
@given(data=predictions())
def test_max_f1_threshold_is_the_highest_score_of_maximal_f1(data):
    s, y = data
    s64, yb = s.astype(np.float64), y.astype(bool)
    frozen = _frozen(s, y)
    thr, fallback = best_f1_thresholds(s, y, return_fallback=True, block=2)
    _assert_unchanged((s, y), frozen)
    for j in range(s.shape[1]):
        yj, sj = yb[:, j], s64[:, j]
        if not yj.any():
            assert fallback[j] and thr[j] == 0.5
            continue
        f1 = {t: 2 * (yj & (sj >= t)).sum() / ((sj >= t).sum() + yj.sum()) for t in np.unique(sj)}
        best = max(f1.values())
        assert not fallback[j]
        assert thr[j] == max(t for t, v in f1.items() if v == best)


@PROPS
@given(data=predictions(max_cases=120), seed=st.integers(0, 2**16))
def test_bootstrap_replicates_equal_metrics_of_the_resampled_cases(data, seed):
    s, y = data
    n, c = s.shape
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, size=(3, n))
    weights = np.stack([np.bincount(i, minlength=n) for i in idx]).astype(np.float32)
    thr = np.full(c, float(np.median(s.astype(np.float64))))
    frozen = _frozen(s, y)
    boot = bootstrap_per_class(s, y, thr, n_boot=3, weights=weights)
    _assert_unchanged((s, y), frozen)
    full_defined = y.astype(bool).any(0) & ~y.astype(bool).all(0)
    for b in range(3):
        ref = per_class_metrics(s[idx[b]], y[idx[b]], thr)
        yb = y[idx[b]].astype(bool)
        # a resample that misses a class's positives (negatives) redraws them (bootstrap module
        # doc): compare the classes this resample defines by itself
        own = full_defined & yb.any(0) & ~yb.all(0)
        for k, v in ref.items():
            np.testing.assert_allclose(boot[k][b, own], v[own], atol=2e-6, err_msg=k)
            assert np.isnan(boot[k][b, ~full_defined]).all()


@PROPS
@given(arr=hnp.arrays(st.sampled_from([np.float16, np.float32, np.float64, ">f4", ">f8", np.int16, np.uint8, np.bool_]),
                      hnp.array_shapes(min_dims=1, max_dims=3, max_side=7)),
       fortran=st.booleans())
def test_npz_reader_equals_numpy(tmp_path_factory, arr, fortran):
    if fortran:
        arr = np.asfortranarray(arr)
    path = tmp_path_factory.mktemp("npz") / "p.npz"
    np.savez(path, scores=arr, other=arr.T)
    got = read_npz(path)
    with np.load(path) as ref:
        for k in ("scores", "other"):
            assert got[k].dtype == ref[k].dtype and got[k].shape == ref[k].shape
            assert np.array_equal(got[k], ref[k], equal_nan=True)


@CLI_PROPS
@given(data=predictions(max_classes=3))
def test_metrics_cli_writes_scikit_learn_auc_and_ap(tmp_path_factory, data):
    """``raddiag metrics --n-boot 0`` on an .npz saved as given (layout and dtype kept):
    per_class.csv's AUC and AP equal scikit-learn's within 1e-6."""
    from raddiag.cli import main

    s, y = data
    if s.dtype == np.float16:
        s = s.astype(np.float32)                       # the CLI reads float32/64 files (float16 too, via numpy)
    d = tmp_path_factory.mktemp("cli")
    np.savez(d / "pred.npz", scores=s, labels=y)
    assert main(["metrics", "--pred", str(d / "pred.npz"), "--out", str(d / "out"), "--n-boot", "0"]) == 0
    with open(d / "out" / "per_class.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == s.shape[1]
    yb = y.astype(bool)
    for j, row in enumerate(rows):
        if yb[:, j].all() or not yb[:, j].any():
            assert row["auc"] == "" and row["ap"] == ""
            continue
        assert float(row["auc"]) == pytest.approx(roc_auc_score(yb[:, j], s[:, j].astype(np.float64)), abs=1e-6)
        assert float(row["ap"]) == pytest.approx(average_precision_score(yb[:, j], s[:, j].astype(np.float64)), abs=1e-6)


@pytest.mark.parametrize("order", ["C", "F"])
@pytest.mark.parametrize("c", [1, 2])
def test_the_reported_one_class_and_fortran_cases(order, c):
    """The reports that opened issue 25: one class gave AUC 45.4 for scikit-learn's 87.3 and
    overwrote its input; Fortran order gave 54.9 / 51.3 for 91.7 / 91.9."""
    rng = np.random.default_rng(3)
    y = rng.random((300, c)) < 0.4
    s = np.array(rng.random((300, c)) + 0.6 * y, order=order)
    before = s.copy()
    m = per_class_metrics(s, y)
    assert np.array_equal(s, before)
    for j in range(c):
        assert m["auc"][j] == pytest.approx(roc_auc_score(y[:, j], s[:, j]), abs=1e-12)

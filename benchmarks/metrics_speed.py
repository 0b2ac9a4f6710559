"""Metrics speed: the vectorised suite vs a per-class scikit-learn loop, and the bootstrap.

Usage: ``.venv/bin/python benchmarks/metrics_speed.py [--n 7772] [--c 5569] [--boot 1000]``
On 7,772 x 5,569 random scores with ~1 % positives: all metrics plus validation thresholds,
timed against scikit-learn in the same run with the values compared; then the 1,000-resample
bootstrap of the grouped (head / medium / tail / all) macro AUC.
"""
from __future__ import annotations

import argparse
import os
import time

import numpy as np


def sklearn_suite(val_s, val_y, s, y):
    from sklearn.metrics import (accuracy_score, average_precision_score, f1_score, matthews_corrcoef,
                                 precision_recall_curve, roc_auc_score, roc_curve)

    c = s.shape[1]
    out = {k: np.full(c, np.nan) for k in ("auc", "ap", "f1", "mcc", "acc", "recall_at_fpr_0.01",
                                            "recall_at_fpr_0.05", "recall_at_fpr_0.1")}
    thr = np.full(c, 0.5)
    for j in range(c):
        yv = val_y[:, j]
        if yv.any():
            p, r, t = precision_recall_curve(yv, val_s[:, j])
            f1 = np.where(p + r > 0, 2 * p * r / np.maximum(p + r, 1e-300), 0)[:-1]
            thr[j] = t[len(f1) - 1 - np.argmax(f1[::-1])]
        yt = y[:, j]
        if not yt.any() or yt.all():
            continue
        out["auc"][j] = roc_auc_score(yt, s[:, j])
        out["ap"][j] = average_precision_score(yt, s[:, j])
        pred = s[:, j] >= thr[j]
        out["f1"][j] = f1_score(yt, pred)
        out["mcc"][j] = matthews_corrcoef(yt, pred)
        out["acc"][j] = accuracy_score(yt, pred)
        fpr, tpr, _ = roc_curve(yt, s[:, j], drop_intermediate=False)
        for f in (0.01, 0.05, 0.1):
            out[f"recall_at_fpr_{f:g}"][j] = tpr[fpr <= f].max()
    return thr, out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=7772)
    ap.add_argument("--c", type=int, default=5569)
    ap.add_argument("--boot", type=int, default=1000)
    ap.add_argument("--skip-sklearn", action="store_true")
    a = ap.parse_args()
    from raddiag.data.labels import LabelSpace
    from raddiag.evaluation.bootstrap import bootstrap_per_class, percentile_ci
    from raddiag.evaluation.metrics import best_f1_thresholds, macro, per_class_metrics

    rng = np.random.default_rng(0)
    n, c = a.n, a.c
    s = rng.random((n, c)).astype(np.float32)
    y = rng.random((n, c)) < 0.01
    vs = rng.random((n // 7, c)).astype(np.float32)
    vy = rng.random((n // 7, c)) < 0.01
    print(f"{n} x {c} scores, {y.mean():.2%} positives, {os.cpu_count()} CPUs visible")

    t0 = time.perf_counter()
    thr = best_f1_thresholds(vs, vy)
    ours = per_class_metrics(s, y, thr)
    t_ours = time.perf_counter() - t0
    print(f"raddiag suite (val thresholds + 8 metrics): {t_ours:.1f} s")
    if not a.skip_sklearn:
        t0 = time.perf_counter()
        thr_ref, ref = sklearn_suite(vs, vy, s, y)
        t_ref = time.perf_counter() - t0
        print(f"scikit-learn per-class loop:               {t_ref:.1f} s")
        print(f"speed-up: {t_ref / t_ours:.1f}x")
        # compare F1 achieved on validation (the threshold value itself may differ on exact F1 ties)
        same_thr = np.mean(thr == thr_ref.astype(np.float64))
        print(f"thresholds identical for {same_thr:.2%} of classes")
        ours_at_ref = per_class_metrics(s, y, thr_ref)
        for k in ref:
            got = ours_at_ref[k] if k in ("f1", "mcc", "acc") else ours[k]
            both = ~np.isnan(ref[k])
            assert (np.isnan(got) == ~both).all(), k
            print(f"  {k:<20} max |diff| = {np.max(np.abs(got[both] - ref[k][both])):.2e}")

    counts = rng.integers(0, 400, c)
    space = LabelSpace(names=[f"c{i}" for i in range(c)], counts=list(counts))
    t0 = time.perf_counter()
    boot = bootstrap_per_class(s, y, None, n_boot=a.boot, seed=0, metrics=("auc",))
    t_boot = time.perf_counter() - t0
    print(f"bootstrap, {a.boot} resamples of per-class AUC: {t_boot:.1f} s")
    for g in ("all", "head", "medium", "tail"):
        mask = space.group_mask(g)
        lo, hi = percentile_ci(macro(boot["auc"], mask)[0])
        print(f"  {g:<7} macro AUC {macro(ours['auc'], mask)[0]:.4f}  95% CI [{lo:.4f}, {hi:.4f}]")


if __name__ == "__main__":
    main()

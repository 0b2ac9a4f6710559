"""Validation figures the trainer needs: macro AUC and per-class max-F1 thresholds.

These delegate to :mod:`raddiag.evaluation.metrics` (the one place metrics are computed)
when it is installed; until then a scikit-learn fallback with the same meaning is used.
"""
from __future__ import annotations

import numpy as np


def macro_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Mean ROC AUC over the classes that have both positives and negatives; NaN if none."""
    scores, labels = np.asarray(scores, dtype=np.float64), np.asarray(labels)
    try:
        from raddiag.evaluation.metrics import per_class_metrics  # type: ignore
    except ImportError:
        per_class_metrics = None
    if per_class_metrics is not None:
        m = per_class_metrics(scores, labels)
        auc = np.asarray(m["auc"] if isinstance(m, dict) else getattr(m, "auc"), dtype=np.float64)
        auc = auc[np.isfinite(auc)]
        return float(auc.mean()) if auc.size else float("nan")
    from sklearn.metrics import roc_auc_score

    pos = labels.sum(0)
    ok = (pos > 0) & (pos < labels.shape[0])
    if not ok.any():
        return float("nan")
    return float(np.mean([roc_auc_score(labels[:, c], scores[:, c]) for c in np.flatnonzero(ok)]))


def f1_thresholds(scores: np.ndarray, labels: np.ndarray) -> list[float]:
    """Per-class threshold maximising F1 on these (validation) predictions; 0.5 for classes
    without positives."""
    try:
        from raddiag.evaluation.metrics import best_f1_thresholds  # type: ignore
    except ImportError:
        best_f1_thresholds = None
    if best_f1_thresholds is not None:
        return [float(t) for t in np.asarray(best_f1_thresholds(scores, labels), dtype=np.float64)]
    from sklearn.metrics import precision_recall_curve

    out = []
    for c in range(labels.shape[1]):
        y = labels[:, c]
        if y.sum() == 0:
            out.append(0.5)
            continue
        p, r, t = precision_recall_curve(y, scores[:, c])
        f1 = 2 * p[:-1] * r[:-1] / np.clip(p[:-1] + r[:-1], 1e-12, None)
        out.append(float(t[int(np.argmax(f1))]))
    return out

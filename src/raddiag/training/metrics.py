"""Validation figures the trainer needs, from :mod:`raddiag.evaluation.metrics` (the one place
metrics are computed): macro AUC over the classes defined in validation, and per-class
max-F1 thresholds."""
from __future__ import annotations

import numpy as np


def macro_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Mean ROC AUC over the classes that have both positives and negatives; NaN if none."""
    from raddiag.evaluation.metrics import macro, per_class_metrics

    mean, _, _ = macro(per_class_metrics(scores, labels)["auc"])
    return float(mean)


def f1_thresholds(scores: np.ndarray, labels: np.ndarray) -> list[float]:
    """Per-class threshold maximising F1 on these (validation) predictions; 0.5 for classes
    without positives."""
    from raddiag.evaluation.metrics import best_f1_thresholds

    return [float(t) for t in np.asarray(best_f1_thresholds(scores, labels), dtype=np.float64)]

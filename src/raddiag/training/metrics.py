"""Validation figures the trainer needs, from :mod:`raddiag.evaluation.metrics` (the one place
metrics are computed): macro AUC over the classes defined in validation, and per-class
max-F1 thresholds."""
from __future__ import annotations

from typing import Optional

import numpy as np


def macro_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Mean ROC AUC over the classes that have both positives and negatives; NaN if none."""
    from raddiag.evaluation.metrics import macro, per_class_metrics

    mean, _, _ = macro(per_class_metrics(scores, labels)["auc"])
    return float(mean)


def f1_thresholds(scores: np.ndarray, labels: np.ndarray) -> list[Optional[float]]:
    """Per-class threshold maximising F1 on these (validation) predictions, as a label space stores
    them: ``None`` for a class without a positive to choose one on (a later evaluation then uses the
    fallback and counts it as one; a stored 0.5 was counted as a choice)."""
    from raddiag.data.labels import stored_thresholds
    from raddiag.evaluation.metrics import best_f1_thresholds

    thr, fallback = best_f1_thresholds(scores, labels, return_fallback=True)
    return stored_thresholds(thr, fallback)

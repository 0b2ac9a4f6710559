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


# how far below the validation score it was chosen at a stored threshold lies (at most half the gap
# to the next lower validation score, so no validation decision changes)
STORED_MARGIN = 1e-6


def f1_thresholds(scores: np.ndarray, labels: np.ndarray) -> list[Optional[float]]:
    """Per-class threshold maximising F1 on these (validation) predictions, as a label space stores
    them: ``None`` for a class without a positive to choose one on (a later evaluation then uses the
    fallback and counts it as one; a stored 0.5 was counted as a choice). A max-F1 threshold is one
    validation case's own score; the stored one lies :data:`STORED_MARGIN` below it (or half-way to
    the next lower score), the same decisions on these predictions: the same case scored again (alone,
    in another batch, by the inference twin) differs by float rounding, 5e-8 measured, and fell
    below its own threshold (red team)."""
    from raddiag.data.labels import stored_thresholds
    from raddiag.evaluation.metrics import best_f1_thresholds

    scores = np.asarray(scores, dtype=np.float64)
    thr, fallback = best_f1_thresholds(scores, labels, return_fallback=True)
    thr = np.array(thr, dtype=np.float64)
    for c in np.flatnonzero(~np.asarray(fallback, dtype=bool)):
        below = scores[:, c][scores[:, c] < thr[c]]
        gap = thr[c] - below.max() if below.size else np.inf
        thr[c] -= min(STORED_MARGIN, gap / 2)
    return stored_thresholds(thr, fallback)

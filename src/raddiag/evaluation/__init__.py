"""raddiag.evaluation: metrics, thresholds, bootstrap, plots and report (paper Section 4.3.4).

- :func:`evaluate_predictions`: the one engine behind ``raddiag metrics`` and ``raddiag evaluate``.
- :mod:`.metrics`: :func:`per_class_metrics`, :func:`best_f1_thresholds`, :func:`macro`
  (vectorised over classes, equal to scikit-learn).
- :mod:`.bootstrap`: :func:`bootstrap_per_class` (case resampling, vectorised over resamples).
- :mod:`.run_eval`: :func:`evaluate_run` (a run folder on a prepared dataset split).
"""
from .engine import evaluate_predictions
from .metrics import METRICS, best_f1_thresholds, macro, per_class_metrics

__all__ = ["evaluate_predictions", "per_class_metrics", "best_f1_thresholds", "macro", "METRICS"]

"""raddiag.evaluation: metrics, thresholds, bootstrap, plots and report (paper Section 4.3.4).

- :func:`evaluate_predictions`: the one engine behind ``raddiag metrics`` and ``raddiag evaluate``.
- :mod:`.metrics`: :func:`per_class_metrics`, :func:`best_f1_thresholds`, :func:`macro`
  (vectorised over classes, equal to scikit-learn).
- :mod:`.bootstrap`: :func:`bootstrap_per_class` (case resampling, vectorised over resamples).
- :mod:`.run_eval`: :func:`evaluate_run` (a run folder on a prepared dataset split).
"""
from raddiag._lazy import lazy_exports

_EXPORTS = {"evaluate_predictions": ".engine", "METRICS": ".metrics", "best_f1_thresholds": ".metrics",
            "macro": ".metrics", "per_class_metrics": ".metrics"}
__getattr__ = lazy_exports(__name__, _EXPORTS)
__all__ = list(_EXPORTS)

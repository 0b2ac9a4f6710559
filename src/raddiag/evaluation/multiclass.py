"""Single-label (``data.task=multiclass``) figures: the most probable class is each case's
prediction; accuracy, balanced accuracy (mean recall over the classes present), the macro
one-vs-rest AUC, per-class precision / recall / F1 and the confusion matrix, all from
scikit-learn, with bootstrap intervals over cases (the engine's interval rule:
:func:`raddiag.evaluation.bootstrap.bootstrap_ci`).

Written into ``metrics.json`` as ``"multiclass"``, shown in the terminal
(:mod:`raddiag.evaluation.summary`) and in ``report.html``."""
from __future__ import annotations

import warnings
from typing import Sequence

import numpy as np

from raddiag.task import check_single_label

FIGURES = ("accuracy", "balanced_accuracy", "auc_ovr")


def _ovr_auc(y: np.ndarray, scores: np.ndarray, classes: np.ndarray) -> float:
    """Macro one-vs-rest AUC over ``classes`` (those with cases). scikit-learn's
    ``roc_auc_score(multi_class="ovr")`` requires every column of ``scores`` to be a class with
    cases and rows summing to 1; a label space often holds a class no test case has (``Normal``
    in a set of three tumours), so the same macro mean of binary AUCs is taken over the classes
    present, each on its own softmax column (tests/test_multiclass.py checks both agree)."""
    from sklearn.metrics import roc_auc_score

    aucs = [roc_auc_score(y == c, scores[:, c]) for c in classes if 0 < (y == c).sum() < len(y)]
    return float(np.mean(aucs)) if aucs else float("nan")


def _figures(y: np.ndarray, scores: np.ndarray, classes: np.ndarray) -> dict[str, float]:
    from sklearn.metrics import accuracy_score, balanced_accuracy_score

    pred = scores.argmax(1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)   # "y_pred contains classes not in y_true": expected
        balanced = balanced_accuracy_score(y, pred)
    return {"accuracy": float(accuracy_score(y, pred)), "balanced_accuracy": float(balanced),
            "auc_ovr": _ovr_auc(y, scores, classes)}


def multiclass_metrics(scores: np.ndarray, labels: np.ndarray, names: Sequence[str], n_boot: int = 1000,
                       seed: int = 0, alpha: float = 0.05, case_ids=None, where: str = "test predictions") -> dict:
    """The ``"multiclass"`` section of ``metrics.json`` for probabilities ``scores [N, C]`` (softmax)
    and one-hot ``labels [N, C]`` (a case with several classes or none: ValueError naming it)."""
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

    scores = np.asarray(scores, dtype=np.float64)
    y = check_single_label(labels, case_ids, names, where)
    pred = scores.argmax(1)
    classes = np.unique(y)
    point = _figures(y, scores, classes)
    ci = _bootstrap(y, scores, classes, point, n_boot, seed, alpha) if n_boot > 0 else {}
    every = np.arange(scores.shape[1])
    precision, recall, f1, support = precision_recall_fscore_support(y, pred, labels=every, zero_division=0)
    shown = sorted(set(y) | set(pred))           # classes with a case or a prediction
    return {
        **{k: {"value": v, "ci_low": ci.get(k, (None, None))[0], "ci_high": ci.get(k, (None, None))[1]}
           for k, v in point.items()},
        "n_cases": int(len(y)), "n_boot": int(n_boot),
        "ci": f"{100 * (1 - alpha):g}% bootstrap over cases" if n_boot > 0 else "none (n_boot=0)",
        "per_class": [{"name": str(names[c]), "cases": int(support[c]), "predicted": int((pred == c).sum()),
                       "precision": float(precision[c]), "recall": float(recall[c]), "f1": float(f1[c])}
                      for c in shown],
        "confusion": {"classes": [str(names[c]) for c in shown],
                      "matrix": confusion_matrix(y, pred, labels=shown).tolist(),
                      "rows": "true class", "columns": "predicted class (the most probable)"},
    }


def _bootstrap(y, scores, classes, point: dict, n_boot: int, seed: int, alpha: float) -> dict[str, tuple]:
    """Intervals of the three figures over ``n_boot`` resamples of the cases, by the engine's rule."""
    from .bootstrap import bootstrap_ci

    rng = np.random.default_rng(seed)
    reps = {k: [] for k in FIGURES}
    for _ in range(n_boot):
        rows = rng.integers(0, len(y), len(y))
        for k, v in _figures(y[rows], scores[rows], classes).items():
            reps[k].append(v)
    out = {}
    for k, r in reps.items():
        lo, hi = bootstrap_ci(np.asarray(r, dtype=np.float64), point[k], alpha)
        out[k] = (None, None) if np.isnan(lo) else (lo, hi)
    return out

"""The release's own evaluation protocol (``raddiag evaluate --protocol release``).

The authors' code (RP3D-Diag, ``src/Eval/eval.py``: ``compute_metrics`` and ``eval_strategy``)
makes choices the paper does not state. This module computes its figures from the same
predictions, so a user can set raddiag's numbers beside the release README's table:

* **groups**: fixed ranges of the label order, not training counts: disorder level head =
  classes 0-84, medium 85-554, tail 555+; ICD-10-CM level 0-164, 165-394, 395+
  (:data:`raddiag.data.labels.RELEASE_GROUP_CUTS`); no ``all`` row in the release, given here;
* **F1 and MCC**: per class the maximal F1 over the precision-recall curve *of the evaluated
  split itself* (``precision_recall_curve``; the lowest threshold on ties, as ``np.argmax`` of the
  reversed curve picks it), MCC at that threshold (``score >= t``);
* **recall at FPR**: the TPR of the ROC point (scikit-learn's ``roc_curve`` with its default
  ``drop_intermediate=True``, plus the (0, 0) point) whose FPR is *nearest* to the target, the
  first one on ties; raddiag's own protocol takes the largest TPR with FPR <= target;
* AUC and AP as everywhere (identical definitions); classes without both labels are skipped.

raddiag's default (the "paper" protocol) keeps thresholds chosen on validation and
R@FPR at FPR <= target: the release's choices are optimistic (thresholds tuned on the test
split) and not monotone (a nearest point may lie above the target FPR).

Written from the release's definitions, not from its code, and vectorised per class on one
sort; ``tests/test_release_protocol.py`` checks it against a transcription of the release's
functions over random inputs.
"""
from __future__ import annotations

import numpy as np

from raddiag.data.labels import RELEASE_GROUP_CUTS

from .metrics import check_inputs, per_class_metrics

RELEASE_FPR_TARGETS = (0.01, 0.05, 0.1, 0.2, 0.5)
RELEASE_METRICS = ("auc", "ap", "f1max", "mcc") + tuple(f"recall_at_fpr_{f:g}" for f in RELEASE_FPR_TARGETS)
RELEASE_GROUPS = ("all", "head", "medium", "tail")


def operating_points(s: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(tps, fps, thresholds)`` at each distinct score, thresholds descending (predict
    ``score >= t``): one stable sort of the class's scores."""
    order = np.argsort(-s, kind="stable")
    s, y = s[order], y[order]
    last = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]               # last case of each distinct score
    tps = np.cumsum(y)[last].astype(np.float64)
    return tps, (last + 1) - tps, s[last]


def max_f1_point(tps: np.ndarray, fps: np.ndarray) -> int:
    """Index (into descending thresholds) of maximal F1, the lowest threshold on ties. F1 is
    computed from precision and recall in floating point, as the release does."""
    precision = tps / (tps + fps)
    recall = tps / tps[-1]
    with np.errstate(invalid="ignore"):
        f1 = 2 * precision * recall / (precision + recall)
    f1 = np.nan_to_num(f1, nan=0.0)
    return len(f1) - 1 - int(np.argmax(f1[::-1]))


def nearest_fpr_recall(tps: np.ndarray, fps: np.ndarray, targets) -> list[float]:
    """TPR at the ROC point nearest each FPR target (scikit-learn's collinear points dropped,
    the (0, 0) point prepended; the first point on ties)."""
    if len(fps) > 2:
        keep = np.r_[True, np.logical_or(np.diff(fps, 2), np.diff(tps, 2)), True]
        tps, fps = tps[keep], fps[keep]
    tpr, fpr = np.r_[0.0, tps] / tps[-1], np.r_[0.0, fps] / fps[-1]
    return [float(tpr[np.argmin(np.abs(fpr - f))]) for f in targets]


def release_per_class(scores, labels) -> dict[str, np.ndarray]:
    """``{metric: [C]}`` for :data:`RELEASE_METRICS`, ``nan`` where a class lacks positives or
    negatives, plus ``"threshold"`` (the max-F1 threshold on these predictions)."""
    scores, labels = check_inputs(scores, labels)
    n, c = scores.shape
    base = per_class_metrics(scores, labels)
    out = {k: np.full(c, np.nan) for k in RELEASE_METRICS + ("threshold",)}
    out["auc"], out["ap"] = base["auc"], base["ap"]
    for j in np.flatnonzero(~np.isnan(base["auc"])):
        y = labels[:, j]
        tps, fps, thr = operating_points(np.asarray(scores[:, j], np.float64), y)
        k = max_f1_point(tps, fps)
        tp, fp = tps[k], fps[k]
        fn, tn = tps[-1] - tp, fps[-1] - fp
        precision, recall = tp / (tp + fp), tp / tps[-1]
        out["f1max"][j] = 2 * precision * recall / (precision + recall) if tp else 0.0
        den = np.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
        out["mcc"][j] = (tp * tn - fp * fn) / den if den > 0 else 0.0
        out["threshold"][j] = thr[k]
        for f, r in zip(RELEASE_FPR_TARGETS, nearest_fpr_recall(tps, fps, RELEASE_FPR_TARGETS)):
            out[f"recall_at_fpr_{f:g}"][j] = r
    return out


def release_group_masks(n_classes: int, granularity: str = "disorder") -> dict[str, np.ndarray]:
    a, b = RELEASE_GROUP_CUTS[granularity]
    idx = np.arange(n_classes)
    return {"all": np.ones(n_classes, bool), "head": idx < a, "medium": (idx >= a) & (idx < b), "tail": idx >= b}


def release_protocol(scores, labels, granularity: str = "disorder") -> dict:
    """The release's macro figures per group (``{group: {metric: value or None, "n_classes": k}}``)
    and a ``meta`` note: what :func:`raddiag.evaluation.evaluate_predictions` adds as
    ``release_protocol`` with ``protocol="release"``."""
    per = release_per_class(scores, labels)
    out: dict = {}
    for g, mask in release_group_masks(len(per["auc"]), granularity).items():
        defined = mask & ~np.isnan(per["auc"])
        out[g] = {k: (float(np.mean(per[k][defined])) if defined.any() else None) for k in RELEASE_METRICS}
        out[g]["n_classes"] = int(defined.sum())
    a, b = RELEASE_GROUP_CUTS[granularity]
    groups = f"label order ranges: head 0-{a - 1}, medium {a}-{b - 1}, tail {b}+"
    if len(per["auc"]) <= a:   # a user's own label space: the release's ranges put every class in head
        groups += (f"; all {len(per['auc'])} classes here lie in head: the ranges are the release's label order, "
                   "sorted by its training counts")
    out["meta"] = {"protocol": "release (RP3D-Diag src/Eval/eval.py)", "granularity": granularity,
                   "groups": groups,
                   "f1max": "maximal F1 on the evaluated split itself (optimistic); MCC at that threshold",
                   "recall_at_fpr": "TPR at the ROC point with the nearest FPR (may exceed the target)"}
    return out


def format_release_protocol(res: dict) -> str:
    """The release protocol's table as printed by ``evaluate`` / ``metrics --protocol release``."""
    keys = ("auc", "ap", "f1max", "mcc", "recall_at_fpr_0.01", "recall_at_fpr_0.05", "recall_at_fpr_0.1")
    heads = ("AUC", "AP", "F1max", "MCC", "R@0.01", "R@0.05", "R@0.1")
    lines = [f"release protocol ({res['meta']['groups']}; F1max and MCC at thresholds chosen on this split; "
             "R@FPR at the nearest FPR), percent",
             f"{'group':<8}{'classes':>8}" + "".join(f"{h:>8}" for h in heads)]
    for g in RELEASE_GROUPS:
        row = res[g]
        cells = "".join(f"{'-' if row[k] is None else f'{100 * row[k]:.1f}':>8}" for k in keys)
        lines.append(f"{g:<8}{row['n_classes']:>8}{cells}")
    return "\n".join(lines)

"""Per-class ranking and threshold metrics, vectorised over classes and exact.

Paper Section 4.3.4: AUC, AP, F1, MCC, ACC and Recall@FPR, per class, then macro-averaged.

How it works (one concept, shared with the bootstrap in :mod:`.bootstrap`)
--------------------------------------------------------------------------
For a block of classes, each score column is sorted once (``argsort`` over cases). The
*distinct positive scores* ``v_0 < ... < v_{m-1}`` of a class cut its cases into bins:

* ``gap_k`` (k = 0..m): negatives strictly between ``v_{k-1}`` and ``v_k``;
* ``tie_k``: negatives whose score equals ``v_k`` (ties are handled exactly, like scikit-learn);
* ``pos_k``: positives whose score equals ``v_k``;
* ``hi``: negatives of the gap that contains the decision threshold ``t`` with score ``>= t``.

Every metric is a function of the (weighted) bin totals only: AUC is the Mann-Whitney
statistic (ties count 1/2), AP is scikit-learn's step sum over distinct thresholds, F1/MCC/ACC
use the confusion matrix at ``t``. With unit weights the totals are counts (``np.bincount``);
the bootstrap gets them for 1,000 resamples at once as one sparse product per class block
(:func:`raddiag.evaluation.bootstrap.bootstrap_per_class`). A hand-written kernel is used
instead of a per-class scikit-learn loop because it is >10x faster and equal to it within
float rounding (``benchmarks/metrics_speed.py``; ``tests/test_metrics.py``).

Definitions
-----------
* A class is *defined* in a split when it has at least one positive and one negative case;
  otherwise every metric is ``nan`` for it and :func:`macro` excludes (and counts) it.
* A case is predicted positive iff ``score >= threshold``.
* ``recall_at_fpr_f``: the largest true-positive rate over the ROC operating points
  (thresholds at each distinct score, plus the all-negative point (0, 0)) whose false-positive
  rate is ``<= f``. No interpolation between operating points.
* :func:`best_f1_thresholds`: per class, the distinct score whose operating point has the
  highest F1 (the highest such score on ties); classes without positives get
  ``FALLBACK_THRESHOLD`` (0.5) and are counted.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

FPR_TARGETS = (0.01, 0.05, 0.1)
RANK_METRICS = ("auc", "ap") + tuple(f"recall_at_fpr_{f:g}" for f in FPR_TARGETS)
THRESHOLD_METRICS = ("f1", "mcc", "acc")
METRICS = ("auc", "ap", "f1", "mcc", "acc") + RANK_METRICS[2:]
FALLBACK_THRESHOLD = 0.5
BLOCK = 256  # classes per sorted block: bounds memory at ~10 arrays of BLOCK x N


def check_inputs(scores, labels, name: str = "predictions") -> tuple[np.ndarray, np.ndarray]:
    scores, labels = np.asarray(scores), np.asarray(labels)
    for what, arr in (("scores", scores), ("labels", labels)):
        if arr.dtype.kind not in "biuf":      # strings such as "0.7" would silently convert
            raise ValueError(f"{name}: {what} must be numbers, got an array of {arr.dtype} ({arr.dtype.name})")
    scores = scores.astype(np.float64)
    if scores.ndim == 1:
        scores, labels = scores[:, None], labels.reshape(-1, 1)
    if scores.ndim != 2 or scores.shape != labels.shape:
        raise ValueError(f"{name}: scores {scores.shape} and labels {labels.shape} must both be [N, C]")
    if scores.shape[0] == 0 or scores.shape[1] == 0:
        raise ValueError(f"{name}: no predictions (scores of shape {scores.shape}); need at least one case and class")
    if not np.isfinite(scores).all():
        raise ValueError(f"{name}: scores contain NaN or infinite values")
    if labels.dtype != bool:
        u = np.unique(labels)
        if not np.isin(u, (0, 1)).all():
            raise ValueError(f"{name}: labels must be 0/1 (found values {u[:5].tolist()})")
        labels = labels.astype(bool)
    return scores, labels


@dataclass
class Bins:
    """Bin layout of one class block (see module doc). ``col[c, i]`` is the bin of case
    ``order[c, i]`` (the i-th smallest score of class c)."""

    order: np.ndarray     # [Cb, N] ascending order of each class's scores
    col: np.ndarray       # [Cb, N] bin index in 0 .. ncols-1
    m_max: int            # distinct positive values in the block (padded width)
    values: np.ndarray    # [Cb, m_max] distinct positive scores, ascending (nan padding)
    k_t: np.ndarray       # [Cb] number of distinct positive scores < threshold

    @property
    def ncols(self) -> int:
        return 3 * self.m_max + 2

    def counts(self) -> np.ndarray:
        """Unit-weight bin totals ``[Cb, ncols]``."""
        cb = self.col.shape[0]
        flat = (np.arange(cb)[:, None] * self.ncols + self.col).ravel()
        return np.bincount(flat, minlength=cb * self.ncols).reshape(cb, self.ncols).astype(np.float64)


def make_bins(S: np.ndarray, Y: np.ndarray, thr: Optional[np.ndarray]) -> Bins:
    """``S``, ``Y``: class-major ``[Cb, N]`` scores and bool labels; ``thr`` ``[Cb]`` or None."""
    cb, n = S.shape
    order = np.argsort(S, axis=1, kind="stable")
    s = np.take_along_axis(S, order, 1)
    y = np.take_along_axis(Y, order, 1)
    idx = np.arange(n)
    start = np.ones((cb, n), bool)
    start[:, 1:] = s[:, 1:] != s[:, :-1]
    end = np.ones((cb, n), bool)
    end[:, :-1] = start[:, 1:]
    cpos = np.cumsum(y, axis=1, dtype=np.int32)
    a = np.maximum.accumulate(np.where(start, idx, 0), axis=1)          # first row of the tie group
    e = np.minimum.accumulate(np.where(end, idx, n - 1)[:, ::-1], axis=1)[:, ::-1]  # last row
    before = np.where(a > 0, np.take_along_axis(cpos, np.maximum(a - 1, 0), 1), 0)
    haspos = np.take_along_axis(cpos, e, 1) > before                     # tie group holds a positive
    pstart = start & haspos
    npg = np.cumsum(pstart, axis=1, dtype=np.int32)                      # positive values <= row's
    m_max = int(npg[:, -1].max()) if n else 0
    m1 = m_max + 1
    col = np.where(haspos, np.where(y, m1 + m_max + npg - 1, m1 + npg - 1), npg)
    values = np.full((cb, max(m_max, 1)), np.nan)[:, :m_max]
    r, i = np.nonzero(pstart)
    values[r, npg[r, i] - 1] = s[r, i]
    if thr is not None:
        t = np.asarray(thr, dtype=np.float64)[:, None]
        k_t = np.sum(pstart & (s < t), axis=1)
        hi = ~haspos & (s >= t) & (npg == k_t[:, None])
        col = np.where(hi, 3 * m_max + 1, col)
    else:
        k_t = np.zeros(cb, dtype=np.int64)
    return Bins(order=order, col=col, m_max=m_max, values=values, k_t=k_t)


def metrics_from_bins(bins: np.ndarray, m_max: int, k_t: np.ndarray, with_threshold: bool = True,
                      which: tuple[str, ...] = METRICS, fpr_grid: Optional[np.ndarray] = None
                      ) -> dict[str, np.ndarray]:
    """Metrics from bin totals ``[..., Cb, 3*m_max+2]`` (leading axes: resamples).

    With ``fpr_grid`` (``[G]``) also ``"roc"``: ``[..., Cb, G]`` the ROC curve sampled as
    recall at each FPR of the grid (same definition as ``recall_at_fpr``)."""
    bins = np.asarray(bins)
    if bins.dtype not in (np.float32, np.float64):
        bins = bins.astype(np.float64)
    m1 = m_max + 1
    gap, tie = bins[..., :m1], bins[..., m1:m1 + m_max]
    pos, hi = bins[..., m1 + m_max:m1 + 2 * m_max], bins[..., -1]
    gapf = gap.copy()
    gapf[..., np.arange(len(k_t)), np.asarray(k_t)] += hi                # partial gap back in place
    wpos = pos.sum(-1, dtype=np.float64)
    wneg = gapf.sum(-1, dtype=np.float64) + tie.sum(-1, dtype=np.float64)
    ok = (wpos > 0) & (wneg > 0)
    need_curve = fpr_grid is not None or any(k in which for k in RANK_METRICS[1:])
    with np.errstate(invalid="ignore", divide="ignore"):
        out: dict[str, np.ndarray] = {}
        negbelow = np.cumsum(gapf, -1)[..., :m_max]
        negbelow += np.cumsum(tie, -1)
        negbelow -= tie
        if "auc" in which:
            out["auc"] = np.einsum("...k,...k->...", pos, negbelow + 0.5 * tie, dtype=np.float64) / (wpos * wneg)
        if need_curve:
            tp = np.cumsum(pos[..., ::-1], -1)[..., ::-1]               # positives >= v_k
            fp = wneg[..., None].astype(negbelow.dtype) - negbelow      # negatives >= v_k
            if "ap" in which:
                d = tp + fp
                prec = np.where(d > 0, tp / np.where(d > 0, d, 1), 0.0)
                out["ap"] = np.einsum("...k,...k->...", pos, prec, dtype=np.float64) / wpos
            tpr = tp / wpos[..., None]
            fpr = fp / wneg[..., None]
            for f in FPR_TARGETS:
                key = f"recall_at_fpr_{f:g}"
                if key in which:
                    out[key] = np.max(np.where(fpr <= f, tpr, 0.0), axis=-1, initial=0.0)
            if fpr_grid is not None:
                out["roc"] = _roc_on_grid(tpr, fpr, np.asarray(fpr_grid, dtype=np.float64))
        if with_threshold and any(k in which for k in THRESHOLD_METRICS):
            above = np.arange(m_max) >= k_t[:, None]                     # v_k >= t
            gap_above = np.arange(m1) > k_t[:, None]                     # whole gap above t
            TP = np.sum(pos * above, -1, dtype=np.float64)
            FP = (hi.astype(np.float64) + np.sum(gap * gap_above, -1, dtype=np.float64)
                  + np.sum(tie * above, -1, dtype=np.float64))
            FN, TN = wpos - TP, wneg - FP
            d = 2 * TP + FP + FN
            out["f1"] = np.where(d > 0, 2 * TP / np.where(d > 0, d, 1), 0.0)
            den = np.sqrt((TP + FP) * (TP + FN) * (TN + FP) * (TN + FN))
            out["mcc"] = np.where(den > 0, (TP * TN - FP * FN) / np.where(den > 0, den, 1), 0.0)
            out["acc"] = (TP + TN) / (wpos + wneg)
    for k in out:
        out[k] = np.where(ok[..., None] if k == "roc" else ok, out[k], np.nan)
    return out


def _roc_on_grid(tpr: np.ndarray, fpr: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """Recall at each grid FPR: the first operating point (fpr non-increasing in k) whose
    fpr <= f. ``kstar[g] = #{k: fpr_k > grid[g]}`` from a histogram of each point's grid index."""
    lead, m = tpr.shape[:-1], tpr.shape[-1]
    G = len(grid)
    rows = int(np.prod(lead)) if lead else 1
    idx = np.searchsorted(grid, np.nan_to_num(fpr, nan=-1.0).reshape(rows, m), side="left")  # grid points < fpr_k
    hist = np.bincount((np.arange(rows)[:, None] * (G + 1) + idx).ravel(), minlength=rows * (G + 1))
    hist = hist.reshape(rows, G + 1)
    kstar = np.cumsum(hist[:, ::-1], -1)[:, ::-1][:, 1:]                 # #{k: idx_k > g}
    tpr0 = np.concatenate([tpr.reshape(rows, m), np.zeros((rows, 1), tpr.dtype)], -1)
    return np.take_along_axis(tpr0, kstar, -1).reshape(lead + (G,))


def _blocks(c: int, block: int):
    for c0 in range(0, c, block):
        yield slice(c0, min(c, c0 + block))


def per_class_metrics(scores, labels, thresholds=None, block: int = BLOCK,
                      fpr_grid: Optional[np.ndarray] = None) -> dict[str, np.ndarray]:
    """``{metric: [C]}`` for ``METRICS`` (without F1/MCC/ACC when ``thresholds`` is None);
    ``nan`` for classes with no positive or no negative case. With ``fpr_grid`` also
    ``"roc"``: ``[C, G]`` recall at each FPR of the grid."""
    scores, labels = check_inputs(scores, labels)
    n, c = scores.shape
    if thresholds is not None:
        thresholds = np.asarray(thresholds, dtype=np.float64).reshape(-1)
        if thresholds.shape != (c,):
            raise ValueError(f"{thresholds.shape[0]} thresholds for {c} classes")
    keys = METRICS if thresholds is not None else RANK_METRICS
    out = {k: np.full(c, np.nan) for k in keys}
    if fpr_grid is not None:
        out["roc"] = np.full((c, len(fpr_grid)), np.nan)
    for sl in _blocks(c, block):
        S = np.ascontiguousarray(scores[:, sl].T)
        Y = np.ascontiguousarray(labels[:, sl].T)
        thr = thresholds[sl] if thresholds is not None else None
        b = make_bins(S, Y, thr)
        res = metrics_from_bins(b.counts(), b.m_max, b.k_t, with_threshold=thr is not None, which=keys,
                                fpr_grid=fpr_grid)
        for k in res:
            out[k][sl] = res[k]
    return out


def best_f1_thresholds(val_scores, val_labels, fallback: float = FALLBACK_THRESHOLD,
                       block: int = BLOCK, return_fallback: bool = False):
    """Per-class threshold of maximal F1 on the validation split (see module doc).

    Returns ``thresholds [C]`` (and, with ``return_fallback=True``, the bool mask of classes
    that had no validation positive and got ``fallback``)."""
    scores, labels = check_inputs(val_scores, val_labels, "validation predictions")
    n, c = scores.shape
    thr = np.full(c, float(fallback))
    used_fallback = np.ones(c, dtype=bool)
    for sl in _blocks(c, block):
        b = make_bins(np.ascontiguousarray(scores[:, sl].T), np.ascontiguousarray(labels[:, sl].T), None)
        if b.m_max == 0:
            continue
        bins = b.counts()
        m1 = b.m_max + 1
        gap, tie, pos = bins[:, :m1], bins[:, m1:m1 + b.m_max], bins[:, m1 + b.m_max:m1 + 2 * b.m_max]
        wpos = pos.sum(-1)
        wneg = gap.sum(-1) + tie.sum(-1)
        negbelow = np.cumsum(gap, -1)[:, :b.m_max] + (np.cumsum(tie, -1) - tie)
        tp = np.cumsum(pos[:, ::-1], -1)[:, ::-1]
        fp = wneg[:, None] - negbelow
        with np.errstate(invalid="ignore", divide="ignore"):
            f1 = np.where(np.isnan(b.values), -1.0, 2 * tp / (tp + fp + wpos[:, None]))
        k = b.m_max - 1 - np.argmax(f1[:, ::-1], axis=1)               # highest threshold on ties
        has = wpos > 0
        thr[sl] = np.where(has, b.values[np.arange(len(k)), k], fallback)
        used_fallback[sl] = ~has
    return (thr, used_fallback) if return_fallback else thr


def macro(values, mask=None) -> tuple[np.ndarray, int, int]:
    """Macro average over the classes in ``mask`` that are defined (not nan).

    ``values``: ``[C]`` or ``[B, C]``. Returns ``(mean, n_classes, n_excluded)`` where
    ``n_classes`` counts the defined classes of the point estimate (``[C]``) or of the first
    row, and ``n_excluded`` the masked classes left out as undefined. ``mean`` is nan when no
    class is defined."""
    v = np.asarray(values, dtype=np.float64)
    if mask is None:
        mask = np.ones(v.shape[-1], dtype=bool)
    v = v[..., np.asarray(mask, dtype=bool)]
    defined = ~np.isnan(v)
    cnt = defined.sum(-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(cnt > 0, np.nansum(v, -1) / np.maximum(cnt, 1), np.nan)
    first = defined if defined.ndim == 1 else defined[0]
    return mean, int(first.sum()), int(first.size - first.sum())

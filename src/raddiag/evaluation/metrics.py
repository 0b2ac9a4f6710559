"""Per-class ranking and threshold metrics, vectorised over classes and exact.

Paper Section 4.3.4: AUC, AP, F1, MCC, ACC and Recall@FPR, per class, then macro-averaged.

How it works (one concept, shared with the bootstrap in :mod:`.bootstrap`)
--------------------------------------------------------------------------
The *distinct positive scores* ``v_0 < ... < v_{m-1}`` of a class cut its cases into bins:

* ``gap_k`` (k = 0..m): negatives strictly between ``v_{k-1}`` and ``v_k``;
* ``tie_k``: negatives whose score equals ``v_k`` (ties are handled exactly, like scikit-learn);
* ``pos_k``: positives whose score equals ``v_k``;
* ``hi``: negatives of the gap that contains the decision threshold ``t`` with score ``>= t``.

Every metric is a function of the (weighted) bin totals only: AUC is the Mann-Whitney
statistic (ties count 1/2), AP is scikit-learn's step sum over distinct thresholds, F1/MCC/ACC
use the confusion matrix at ``t`` (:func:`metrics_from_bins`).

* Point estimates and validation thresholds (:func:`sorted_groups`): per block of classes one
  sort of each class's scores (float32 stays float32: exact, and half the memory of a float64
  copy), the few positives sorted on their own, and two binary searches per distinct positive
  score give the unit-weight totals. Blocks run on two threads (numpy's sort and searches
  release the GIL).
* The bootstrap (:func:`make_bins`, :func:`raddiag.evaluation.bootstrap.bootstrap_per_class`)
  needs each case's bin, a binary search of its score among the class's distinct positive
  scores, and gets the weighted totals of 1,000 resamples as one sparse product per block.

A hand-written kernel is used instead of a per-class scikit-learn loop because it is >20x
faster and equal to it within float rounding (``benchmarks/metrics_speed.py``;
``tests/test_metrics.py``).

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

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Optional

import numpy as np

from raddiag.data.labels import DEFAULT_THRESHOLD

FPR_TARGETS = (0.01, 0.05, 0.1)
RANK_METRICS = ("auc", "ap") + tuple(f"recall_at_fpr_{f:g}" for f in FPR_TARGETS)
THRESHOLD_METRICS = ("f1", "mcc", "acc")
METRICS = ("auc", "ap", "f1", "mcc", "acc") + RANK_METRICS[2:]
FALLBACK_THRESHOLD = DEFAULT_THRESHOLD    # a class with no validation positive (the label space's default)
BLOCK = 128  # classes per sorted block: bounds memory at a few arrays of BLOCK x N


def check_inputs(scores, labels, name: str = "predictions") -> tuple[np.ndarray, np.ndarray]:
    """Scores as float32 when given as float32 (sorting float32 is exact and twice as fast;
    nothing is copied), else float64; labels as bool. Clear errors for bad types/shapes/values."""
    scores, labels = np.asarray(scores), np.asarray(labels)
    for what, arr in (("scores", scores), ("labels", labels)):
        if arr.dtype.kind not in "biuf":      # strings such as "0.7" would silently convert
            raise ValueError(f"{name}: {what} must be numbers, got an array of {arr.dtype} ({arr.dtype.name})")
    if scores.ndim not in (1, 2) or scores.shape != labels.shape:    # never broadcast [N] against [N, C]
        raise ValueError(f"{name}: scores {scores.shape} and labels {labels.shape} must have the same shape, "
                         "[N, C] (or [N] for one class)")
    if scores.dtype != np.float32:
        scores = _as_float64(scores, name)
    if scores.ndim == 1:
        scores, labels = scores[:, None], labels.reshape(-1, 1)
    if scores.shape[0] == 0 or scores.shape[1] == 0:
        raise ValueError(f"{name}: no predictions (scores of shape {scores.shape}); need at least one case and class")
    if not np.isfinite(scores).all():
        raise ValueError(f"{name}: scores contain NaN or infinite values")
    if labels.dtype != bool:
        if labels.dtype.kind in "iu" and labels.size:   # min/max: two passes, no sort (np.unique sorts)
            ok = labels.min() >= 0 and labels.max() <= 1
        else:
            ok = bool(((labels == 0) | (labels == 1)).all())
        if not ok:
            u = np.unique(labels)
            raise ValueError(f"{name}: labels must be 0/1 (found values {u[:5].tolist()})")
        labels = labels.view(bool) if labels.dtype.itemsize == 1 and labels.dtype.kind in "iu" else labels.astype(bool)
    return scores, labels


def _as_float64(scores: np.ndarray, name: str) -> np.ndarray:
    """``scores`` as float64, refused where that changes a value (extended precision, or integers
    beyond 2**53): scores 1e-18 apart became one value, and an AUC of 1 read 0.5."""
    if scores.dtype == np.float64:
        return scores
    out = scores.astype(np.float64)
    if scores.dtype.itemsize > 4 and not np.array_equal(out.astype(scores.dtype), scores):
        raise ValueError(f"{name}: scores of {scores.dtype} lose precision as float64, which the metrics use "
                         "(values that differ would tie); pass float64 scores (rescale them first if needed)")
    return out


@dataclass
class Bins:
    """Bin layout of one class block (see module doc): ``col[c, i]`` is the bin of case ``i``
    for class ``c``."""

    col: np.ndarray       # [Cb, N] bin index in 0 .. ncols-1
    m_max: int            # distinct positive values in the block (padded width)
    k_t: np.ndarray       # [Cb] number of distinct positive scores < threshold

    @property
    def ncols(self) -> int:
        return 3 * self.m_max + 2

    def counts(self) -> np.ndarray:
        """Unit-weight bin totals ``[Cb, ncols]``."""
        cb = self.col.shape[0]
        flat = (np.arange(cb)[:, None] * self.ncols + self.col).ravel()
        return np.bincount(flat, minlength=cb * self.ncols).reshape(cb, self.ncols).astype(np.float64)


def distinct_positives(r: np.ndarray, pv: np.ndarray, cb: int):
    """Positives given as (class row ``r``, score ``pv``) pairs -> their distinct scores per
    class: ``row``, ``value`` (ascending within a row), ``pos`` (count) and ``start``
    (``[cb + 1]`` offsets of each row's values). The positives are few: one small lexsort."""
    o = np.lexsort((pv, r))
    r, pv = r[o], pv[o]
    new = np.ones(len(r), bool)
    new[1:] = (r[1:] != r[:-1]) | (pv[1:] != pv[:-1])
    row, value = r[new], pv[new]
    pos = np.bincount(np.cumsum(new) - 1, minlength=len(row))
    return row, value, pos, np.searchsorted(row, np.arange(cb + 1))


def make_bins(S: np.ndarray, Y: np.ndarray, thr: Optional[np.ndarray]) -> Bins:
    """``S``, ``Y``: class-major ``[Cb, N]`` scores and bool labels; ``thr`` ``[Cb]`` or None.
    Each case's bin is a binary search of its score among its class's distinct positive
    scores (no sort of all cases)."""
    cb, n = S.shape
    r, i = np.nonzero(Y)
    row, value, _, start = distinct_positives(r, S[r, i], cb)
    m_max = int(np.diff(start).max()) if cb else 0
    m1 = m_max + 1
    col = np.empty((cb, n), np.int32)
    k_t = np.zeros(cb, dtype=np.int64)
    for j in range(cb):
        v, s = value[start[j]:start[j + 1]], S[j]
        k = np.searchsorted(v, s)                                        # distinct positive scores < s
        eq = v[np.minimum(k, len(v) - 1)] == s if len(v) else np.zeros(n, bool)
        c = np.where(eq, np.where(Y[j], m1 + m_max + k, m1 + k), k)     # pos / tie / gap
        if thr is not None:
            k_t[j] = np.searchsorted(v, thr[j])
            c[~eq & (k == k_t[j]) & (s >= thr[j])] = 3 * m_max + 1      # hi: gap k_t, score >= t
        col[j] = c
    return Bins(col=col, m_max=m_max, k_t=k_t)


def metrics_from_bins(bins: np.ndarray, m_max: int, k_t: np.ndarray, with_threshold: bool = True,
                      which: tuple[str, ...] = METRICS, fpr_grid: Optional[np.ndarray] = None,
                      ties: Optional[bool] = None, roc_steps: bool = False) -> dict[str, np.ndarray]:
    """Metrics from bin totals ``[..., Cb, 3*m_max+2]`` (leading axes: resamples).

    With ``fpr_grid`` (``[G]``) also ``"roc"``: ``[..., Cb, G]`` the ROC curve sampled as
    recall at each FPR of the grid (same definition as ``recall_at_fpr``); with ``roc_steps``
    instead ``"roc_steps"``: ``(idx, step, ok)``, the curve as steps: recall at grid point
    ``g`` is the sum of ``step`` over the points with ``idx <= g`` (``idx``: grid points below
    the point's FPR; ``step``: its TPR minus the next point's, 0 for undefined classes), so a
    group's summed curve is one weighted histogram, not ``G`` values per class. ``ties=False``
    (no negative shares a score with a positive in the block) skips the tie bins. Arithmetic
    stays in the bins' dtype (float32 for the bootstrap's integer counts: exact below 2**24)
    except the AUC/AP sums, which accumulate in float64. Every curve quantity is a suffix sum,
    so TPR and FPR are non-increasing in ``k``: a recall at FPR <= f is the TPR at the first
    point with FPR <= f, found by counting, and TP/FP at a threshold are read at ``k_t``."""
    bins = np.asarray(bins)
    if bins.dtype not in (np.float32, np.float64):
        bins = bins.astype(np.float64)
    lead, cb = bins.shape[:-2], bins.shape[-2]
    keys = [k for k in which if with_threshold or k not in THRESHOLD_METRICS]
    if m_max == 0:                                                       # no class has a positive
        out = {k: np.full(lead + (cb,), np.nan) for k in keys}
        if fpr_grid is not None and roc_steps:                          # no steps; every class undefined
            out["roc_steps"] = (np.zeros(lead + (cb, 0), np.int64), np.zeros(lead + (cb, 0)),
                                np.zeros(lead + (cb,), bool))
        elif fpr_grid is not None:
            out["roc"] = np.full(lead + (cb, len(fpr_grid)), np.nan)
        return out
    m1 = m_max + 1
    gap, tie = bins[..., :m1], bins[..., m1:m1 + m_max]
    pos, hi = bins[..., m1 + m_max:m1 + 2 * m_max], bins[..., -1]
    ties = bool(tie.any()) if ties is None else ties
    k_t = np.asarray(k_t)
    cg = np.cumsum(gap, -1)
    wpos = pos.sum(-1)
    wneg = cg[..., -1] + hi + (tie.sum(-1) if ties else 0)
    negbelow = cg[..., :m_max] + hi[..., None] * (np.arange(m_max) >= k_t[:, None])  # hi is in gap k_t
    if ties:
        negbelow += np.cumsum(tie, -1)
        negbelow -= tie
    ok = (wpos > 0) & (wneg > 0)
    out: dict[str, np.ndarray] = {}
    with np.errstate(invalid="ignore", divide="ignore"):
        if "auc" in keys:
            num = np.einsum("...k,...k->...", pos, negbelow, dtype=np.float64)
            if ties:
                num += 0.5 * np.einsum("...k,...k->...", pos, tie, dtype=np.float64)
            out["auc"] = num / (wpos.astype(np.float64) * wneg)
        tp = np.ascontiguousarray(np.cumsum(pos[..., ::-1], -1)[..., ::-1])  # positives >= v_k
        fp = wneg[..., None] - negbelow                                 # negatives >= v_k
        if "ap" in keys:
            d = tp + fp
            prec = np.divide(tp, d, out=np.zeros_like(d), where=d > 0)
            out["ap"] = np.einsum("...k,...k->...", pos, prec, dtype=np.float64) / wpos
        tpr = tp / wpos[..., None]
        fpr = fp / wneg[..., None]
        tpr0 = np.concatenate([tpr, np.zeros(tpr.shape[:-1] + (1,), tpr.dtype)], -1)  # the (0, 0) point
        for f in FPR_TARGETS:
            if f"recall_at_fpr_{f:g}" in keys:
                kstar = np.count_nonzero(fpr > f, axis=-1)
                out[f"recall_at_fpr_{f:g}"] = _pick(tpr0, kstar)
        if fpr_grid is not None and roc_steps:
            step = np.where(ok[..., None], tpr0[..., :-1] - tpr0[..., 1:], 0.0)
            roc = (np.searchsorted(np.asarray(fpr_grid, dtype=fpr.dtype), fpr), step, ok)
        elif fpr_grid is not None:
            out["roc"] = _roc_on_grid(tpr0, fpr, np.asarray(fpr_grid, dtype=fpr.dtype))
        if any(k in keys for k in THRESHOLD_METRICS):
            at = np.broadcast_to(np.minimum(k_t, m_max - 1), tp.shape[:-1])
            inside = k_t < m_max
            TP = np.where(inside, _pick(tp, at), 0)
            FP = hi + np.where(inside, _pick(fp, at), 0)
            TP, FP = TP.astype(np.float64), FP.astype(np.float64)
            FN, TN = wpos - TP, wneg - FP
            d = 2 * TP + FP + FN
            out["f1"] = np.where(d > 0, 2 * TP / np.where(d > 0, d, 1), 0.0)
            den = np.sqrt((TP + FP) * (TP + FN) * (TN + FP) * (TN + FN))
            out["mcc"] = np.where(den > 0, (TP * TN - FP * FN) / np.where(den > 0, den, 1), 0.0)
            out["acc"] = (TP + TN) / (wpos + wneg)
    for k in out:
        out[k] = np.where(ok[..., None] if k == "roc" else ok, out[k], np.nan)
    if fpr_grid is not None and roc_steps:
        out["roc_steps"] = roc
    return out


def _roc_on_grid(tpr0: np.ndarray, fpr: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """Recall at each grid FPR: the first operating point (fpr non-increasing in k) whose
    fpr <= f. ``kstar[g] = #{k: fpr_k > grid[g]}`` from a histogram of each point's grid index.
    ``tpr0``: ``[..., m + 1]`` TPRs with the (0, 0) point appended."""
    lead, m = fpr.shape[:-1], fpr.shape[-1]
    G = len(grid)
    rows = int(np.prod(lead)) if lead else 1
    idx = np.searchsorted(grid, fpr.reshape(rows, m), side="left")     # grid points < fpr_k
    idx += (np.arange(rows) * (G + 1))[:, None]
    hist = np.bincount(idx.ravel(), minlength=rows * (G + 1)).reshape(rows, G + 1)
    kstar = np.cumsum(hist[:, :0:-1], -1)[:, ::-1]                       # #{k: idx_k > g}, g < G
    return _pick(tpr0.reshape(rows, m + 1), kstar).reshape(lead + (G,))


def _pick(a: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """``a[..., idx[...]]`` along the last axis (``idx``: ``a.shape[:-1]`` or that plus a last
    axis): one flat ``np.take``, much faster than ``take_along_axis`` on these shapes."""
    a = np.ascontiguousarray(a)
    rows = int(np.prod(a.shape[:-1]))
    idx = np.asarray(idx)
    extra = idx.ndim > a.ndim - 1
    flat = idx.reshape(rows, -1) + (np.arange(rows) * a.shape[-1])[:, None]
    res = np.take(a.reshape(-1), flat)
    return res.reshape(idx.shape) if extra else res.reshape(a.shape[:-1])


@dataclass
class Groups:
    """The distinct positive scores of a block of classes, ragged: group ``g`` is the ``k``-th
    smallest distinct positive score ``value[g]`` of class ``row[g]``; ``start[j]:start[j+1]``
    are the groups of class ``j``. Counts are exact integers."""

    sorted: np.ndarray    # [Cb, N] each class's scores, ascending
    row: np.ndarray       # [G] class (row of the block), ascending
    value: np.ndarray     # [G] distinct positive score, ascending within a row
    pos: np.ndarray       # [G] positives with that score
    posbelow: np.ndarray  # [G] positives with a smaller score
    negbelow: np.ndarray  # [G] negatives with a smaller score
    tie: np.ndarray       # [G] negatives with that score
    start: np.ndarray     # [Cb + 1] offsets of each class's groups
    npos: np.ndarray      # [Cb]
    nneg: np.ndarray      # [Cb]


def sorted_groups(scores: np.ndarray, labels: np.ndarray, sl: slice) -> Groups:
    """Groups of the classes ``sl`` of ``[N, C]`` inputs: one sort of each class's scores
    (float32 stays float32), the positives (few) sorted on their own, and two binary searches
    per distinct positive score for the negatives below and tied. No argsort, no gather of
    the labels in score order: this is the point-estimate fast path."""
    # A copy, always: ``scores[:, sl].T`` is already C-contiguous for one class or a
    # Fortran-ordered array, and ``np.ascontiguousarray`` would then return a view that the
    # in-place sort scrambles (the caller's array, and the positives read from it below).
    S = np.array(scores[:, sl].T, order="C", copy=True)
    S.sort(axis=1)
    cb, n = S.shape
    case, r = np.nonzero(labels[:, sl])
    row, value, pos, start = distinct_positives(r, scores[case, sl.start + r], cb)
    npos = np.bincount(r, minlength=cb)
    lt = np.empty(len(row), np.int64)
    le = np.empty(len(row), np.int64)
    for j in np.nonzero(start[1:] > start[:-1])[0]:
        a, b = start[j], start[j + 1]
        lt[a:b] = np.searchsorted(S[j], value[a:b], "left")
        le[a:b] = np.searchsorted(S[j], value[a:b], "right")
    cum = np.concatenate([[0], np.cumsum(pos)])
    posbelow = cum[:-1] - cum[start[row]]
    negbelow = lt - posbelow
    return Groups(sorted=S, row=row, value=value, pos=pos, posbelow=posbelow, negbelow=negbelow,
                  tie=le - lt - pos, start=start, npos=npos, nneg=n - npos)


def bins_from_groups(g: Groups, thr: Optional[np.ndarray]) -> tuple[np.ndarray, int, np.ndarray]:
    """The bin totals of :class:`Bins` (``[Cb, 3*m_max+2]``), ``m_max`` and ``k_t`` from groups."""
    cb = len(g.npos)
    m = np.diff(g.start)
    m_max = int(m.max()) if cb else 0
    m1 = m_max + 1
    k = np.arange(len(g.row)) - g.start[g.row]
    upto = g.negbelow + g.tie                                            # negatives <= v_k
    prev = np.zeros_like(upto)
    prev[1:] = upto[:-1]
    prev[k == 0] = 0
    bins = np.zeros((cb, 3 * m_max + 2))
    bins[g.row, k] = g.negbelow - prev                                   # gap_k
    last = np.zeros(cb)
    has = m > 0
    last[has] = upto[g.start[1:][has] - 1]
    bins[np.arange(cb), m] = g.nneg - last                               # the gap above v_{m-1}
    bins[g.row, m1 + k] = g.tie
    bins[g.row, m1 + m_max + k] = g.pos
    k_t = np.zeros(cb, dtype=np.int64)
    if thr is not None:
        t = np.asarray(thr, dtype=np.float64)
        below = g.value < t[g.row]
        k_t = np.bincount(g.row, weights=below, minlength=cb).astype(np.int64)
        pos_lt = np.bincount(g.row, weights=g.pos * below, minlength=cb)
        neg_lt = np.count_nonzero(g.sorted < t[:, None], axis=1) - pos_lt  # negatives < t
        at = np.minimum(g.start[:-1] + k_t, max(len(g.row) - 1, 0))
        neg_below_kt = np.where(k_t < m, g.negbelow[at] if len(g.row) else 0, g.nneg)
        hi = neg_below_kt - neg_lt                                       # gap k_t, score >= t
        bins[np.arange(cb), k_t] -= hi
        bins[:, -1] = hi
    return bins, m_max, k_t


def _blocks(c: int, block: int):
    for c0 in range(0, c, block):
        yield slice(c0, min(c, c0 + block))


def map_blocks(fn, c: int, block: int, n_threads: Optional[int] = None) -> None:
    """Call ``fn(slice)`` for each block of ``c`` classes on ``n_threads`` threads (default:
    up to 2): the work splits by class block and numpy's sort and searches release the GIL."""
    blocks = list(_blocks(c, block))
    n_threads = min(len(blocks), n_threads or min(2, os.cpu_count() or 1))
    if n_threads <= 1:
        for sl in blocks:
            fn(sl)
        return
    with ThreadPoolExecutor(n_threads) as ex:
        for f in [ex.submit(fn, sl) for sl in blocks]:
            f.result()


def per_class_metrics(scores, labels, thresholds=None, block: int = BLOCK,
                      fpr_grid: Optional[np.ndarray] = None, n_threads: Optional[int] = None
                      ) -> dict[str, np.ndarray]:
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

    def run(sl: slice) -> None:
        thr = thresholds[sl] if thresholds is not None else None
        bins, m_max, k_t = bins_from_groups(sorted_groups(scores, labels, sl), thr)
        res = metrics_from_bins(bins, m_max, k_t, with_threshold=thr is not None, which=keys, fpr_grid=fpr_grid)
        for k in res:
            out[k][sl] = res[k]

    map_blocks(run, c, block, n_threads)
    return out


def best_f1_thresholds(val_scores, val_labels, fallback: float = FALLBACK_THRESHOLD,
                       block: int = BLOCK, return_fallback: bool = False, n_threads: Optional[int] = None):
    """Per-class threshold of maximal F1 on the validation split (see module doc).

    Returns ``thresholds [C]`` (and, with ``return_fallback=True``, the bool mask of classes
    that had no validation positive and got ``fallback``)."""
    scores, labels = check_inputs(val_scores, val_labels, "validation predictions")
    n, c = scores.shape
    thr = np.full(c, float(fallback))

    def run(sl: slice) -> None:
        g = sorted_groups(scores, labels, sl)
        npos = g.npos[g.row]
        tp = npos - g.posbelow                                           # positives >= v_k
        fp = g.nneg[g.row] - g.negbelow                                  # negatives >= v_k
        f1 = 2.0 * tp / (tp + fp + npos)
        best = np.lexsort((g.value, f1, g.row))                          # highest value on F1 ties
        has = g.start[1:] > g.start[:-1]
        thr[sl][has] = g.value[best[g.start[1:][has] - 1]]

    map_blocks(run, c, block, n_threads)
    used_fallback = labels.sum(0) == 0
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

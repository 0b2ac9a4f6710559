"""Bootstrap over cases with the class set fixed, vectorised across resamples.

Scheme (what an interval means). A resample draws the test cases with replacement
(multinomial counts ``w [N]``, one draw shared by all classes, so the macro averages keep the
correlation between classes). The classes a macro metric averages are fixed from the full test
set: every class with at least one positive and one negative there. A case resample can miss
all positives of a rare class (a class with one positive is missing from 37 % of resamples);
averaging only the classes still defined would change the set from resample to resample (rare
classes, often the hard ones, drop out and the interval can miss its own point estimate). So
when a resample draws none of a fixed class's positives (or negatives), that class's positives
(negatives) are redrawn for that resample with replacement from its own positives (negatives)
- the stratified bootstrap by label (pROC's ``stratified=TRUE``), used only where the shared
draw leaves the class undefined. Every fixed class is defined in every resample, and its
prevalence is kept there. ``benchmarks/ci_coverage.py`` simulates a known macro AUC (rare
classes that are also the hard ones) and measures the coverage of the 95 % interval.

Interval (:func:`bootstrap_ci`). The default (``method="guarded"``) is a Wald interval on the
logit scale with the bootstrap standard error (MCC, which lives in [-1, 1], on Fisher's z scale),
``expit(logit(point) +- z * sd(logit(replicates)))``, guarded by the percentile interval
``[q_lo, q_hi]`` of the same replicates (width ``w``):

    reach = (max(0, q_lo - wald_low), max(0, wald_high - q_hi))     # beyond each end
    k     = min(1, (w / 2) / (reach_lo + reach_hi))                    # half a width in all
    low, high = min(q_lo - k reach_lo, point), max(q_hi + k reach_hi, point)

Why each part:

* The logit scale follows the skew of a bounded metric near its ends (an AUC of 0.97 on 30
  positives has a long left tail), where the percentile interval undercovers (85 % at nominal
  95 % in ``benchmarks/ci_coverage.py``).
* The Wald interval alone balloons when replicates sit on the edge of the range (an F1 of 0 or a
  recall of 1 in a resample: their logit is clipped at +-9.2). A group of one to five classes
  printed F1 1.7 [0.0, 68.4] and R@0.05 96.2 [5.6, 100.0]. The guard lets it reach half the
  percentile width beyond the percentile interval in all, shared between the ends in proportion
  to how far the Wald interval reaches (the skewed side keeps more): never wider than 1.5 x the
  percentile interval. Bounding each end to a quarter instead covered 89.7 % in one scenario.
* Where the Wald interval is narrower than the percentile one (replicates piled on an edge make
  the logit spread meaningless in both directions), the percentile interval is kept.
* The interval always holds its point estimate. The percentile interval alone can miss it when
  the bootstrap distribution is biased, as for average precision on classes with few positives
  (a macro AP of 18.4 [18.5, 26.9] on 21 cases).

``method="logit"`` (the Wald interval alone) and ``method="percentile"`` remain for comparison;
``benchmarks/ci_coverage.py`` prints the coverage of all three on scenarios with a known truth,
including groups of one to five rare classes and estimates near 0 and 100 %.

Engine. Every metric of :mod:`.metrics` is a function of per-class *bin totals* (see there),
so the totals for all resamples are one sparse product per class block:
``bins[B, Cb*ncols] = W[B, N] @ M[N, Cb*ncols]`` with one non-zero per (case, class) in
``M``. The classes are sorted once, never per resample; a redraw is a multinomial over the
class's unit-weight positive (negative) bins, which is the same as drawing its cases.

Cost is ``B * N * C`` multiply-adds (43e9 at 1,000 x 7,772 x 5,569), run in chunks of
resamples so that the columns of ``W`` stay in cache, on ``n_threads`` threads (scipy's sparse
kernels release the GIL). ``benchmarks/metrics_speed.py`` times it.
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor, as_completed
from typing import Iterable, Optional

import numpy as np

from .metrics import METRICS, RANK_METRICS, check_inputs, make_bins, metrics_from_bins

_COLS_PER_BLOCK = 60_000   # bin columns per class block (bounds memory of one chunk's product)
_MAX_BLOCK = 256
_CHUNK = 64                # resamples per sparse product
MIN_BOOT = 2               # an interval needs the spread of at least two resamples


def check_n_boot(n_boot: int, seed: int = 0) -> None:
    """ValueError unless ``n_boot`` is 0 (no intervals) or >= ``MIN_BOOT`` and ``seed`` >= 0."""
    if n_boot < 0 or 0 < n_boot < MIN_BOOT:
        raise ValueError(f"n_boot (bootstrap resamples) must be 0 (no confidence intervals) or at least "
                         f"{MIN_BOOT} (an interval needs the spread of the resamples), got {n_boot}")
    if seed < 0:
        raise ValueError(f"seed (of the bootstrap) must be >= 0, got {seed}")


def resample_weights(n: int, n_boot: int, seed: int = 0) -> np.ndarray:
    """``[n_boot, n]`` float32 multinomial counts (each row sums to ``n``): ``n`` case indices
    drawn uniformly per resample and counted (``rng.multinomial`` is 30x slower here)."""
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, size=(n_boot, n)) + (np.arange(n_boot) * n)[:, None]
    return np.bincount(idx.ravel(), minlength=n_boot * n).reshape(n_boot, n).astype(np.float32)


def redraw_undefined(bins: np.ndarray, unit: np.ndarray, m_max: int, rng: np.random.Generator,
                     total_weight: np.ndarray) -> None:
    """In place: for each (resample, class) of ``bins`` ``[B, Cb, ncols]`` whose positive (or
    negative) total is 0 while the class has positives (negatives) in ``unit`` ``[Cb, ncols]``
    (the unit-weight bins of the full test set), replace the positive (negative) bins by a
    multinomial draw of that many cases from the class's own positives (negatives).
    ``total_weight`` ``[B]``: each resample's total case weight (every case is in exactly one
    bin of every class, so negatives = total - positives without a pass over all bins)."""
    m1 = m_max + 1
    is_pos = np.zeros(unit.shape[1], bool)
    is_pos[m1 + m_max:m1 + 2 * m_max] = True
    wpos = bins[..., m1 + m_max:m1 + 2 * m_max].sum(-1)
    for part, w in ((is_pos, wpos), (~is_pos, total_weight[:, None] - wpos)):
        u = unit[:, part]
        total = u.sum(1)
        b_idx, c_idx = np.nonzero((w == 0) & (total > 0))
        cols = np.nonzero(part)[0]
        for c in np.unique(c_idx):
            rows = b_idx[c_idx == c]
            draw = rng.multinomial(int(total[c]), u[c] / total[c], size=len(rows))
            bins[rows[:, None], c, cols[None, :]] = draw


def _class_blocks(m_per_class: np.ndarray) -> list[np.ndarray]:
    """Classes grouped by their number of distinct positive scores, so that padding is small."""
    order = np.argsort(m_per_class, kind="stable")
    blocks, cur, cur_m = [], [], 0
    for c in order:
        m = int(m_per_class[c])
        width = 3 * max(m, cur_m) + 2
        if cur and ((len(cur) + 1) * width > _COLS_PER_BLOCK or len(cur) >= _MAX_BLOCK):
            blocks.append(np.array(cur))
            cur, cur_m = [], 0
        cur.append(c)
        cur_m = max(cur_m, m)
    if cur:
        blocks.append(np.array(cur))
    return blocks


def bootstrap_per_class(scores, labels, thresholds=None, n_boot: int = 1000, seed: int = 0,
                        metrics: Iterable[str] = METRICS, weights: Optional[np.ndarray] = None,
                        n_threads: Optional[int] = None, progress: bool = False,
                        fpr_grid: Optional[np.ndarray] = None, roc_groups: Optional[dict] = None
                        ) -> dict[str, np.ndarray]:
    """``{metric: [n_boot, C]}`` (float32; nan only for classes without positives or negatives
    in the full test set: every other class is defined in every resample, see module doc).

    ``weights`` (``[B, N]``) overrides the random resamples (tests use unit weights).
    With ``fpr_grid`` and ``roc_groups`` (``{name: bool mask [C]}``) also ``"roc"``:
    ``{name: [n_boot, G]}`` the group's macro ROC curve (mean recall at each grid FPR over the
    group's defined classes), reduced on the fly so memory stays ``B x G``."""
    import threading

    import scipy.sparse as sp

    scores, labels = check_inputs(scores, labels)
    n, c = scores.shape
    metrics = tuple(metrics)
    unknown = set(metrics) - set(METRICS)
    if unknown:
        raise ValueError(f"unknown metrics {sorted(unknown)}; choose from {list(METRICS)}")
    if thresholds is None:
        metrics = tuple(k for k in metrics if k in RANK_METRICS)
    else:
        thresholds = np.asarray(thresholds, dtype=np.float64).reshape(-1)
    W = resample_weights(n, n_boot, seed) if weights is None else np.asarray(weights, dtype=np.float32)
    B = W.shape[0]
    Wt_chunks = [np.ascontiguousarray(W[b0:b0 + _CHUNK].T) for b0 in range(0, B, _CHUNK)]
    out = {k: np.full((B, c), np.nan, dtype=np.float32) for k in metrics}

    # distinct positive values per class decide the block layout (cheap: one unique per class
    # would be a Python loop, so count positives instead - an upper bound of the distinct ones)
    npos = labels.sum(0)
    blocks = _class_blocks(npos)
    n_threads = n_threads or min(2, os.cpu_count() or 1)
    want_roc = fpr_grid is not None and roc_groups
    if want_roc:
        G = len(fpr_grid)
        roc_sum = {g: np.zeros((B, G)) for g in roc_groups}
        roc_cnt = {g: np.zeros((B, 1)) for g in roc_groups}
        lock = threading.Lock()

    def run_block(cls: np.ndarray) -> None:
        S = np.ascontiguousarray(scores[:, cls].T)
        Y = np.ascontiguousarray(labels[:, cls].T)
        b = make_bins(S, Y, thresholds[cls] if thresholds is not None else None)
        cb, ncols = len(cls), b.ncols
        R = np.arange(cb, dtype=np.int32)[:, None] * ncols + b.col      # R[c, case]: the case's bin row
        # built as CSC (each case: one row per class, already ascending), then CSR without a sort
        M = sp.csc_matrix((np.ones(R.size, np.float32), R.T.ravel(), np.arange(0, R.size + 1, cb)),
                          shape=(cb * ncols, n)).tocsr()
        unit = b.counts()
        ties = bool(unit[:, b.m_max + 1:2 * b.m_max + 1].any())
        rng = np.random.default_rng([seed, int(cls[0])])   # per block: the same draws on any thread
        b0 = 0
        for Wt in Wt_chunks:
            bins = (M @ Wt).T.reshape(Wt.shape[1], cb, ncols)           # [bc, Cb, ncols]
            redraw_undefined(bins, unit, b.m_max, rng, Wt.sum(0))
            res = metrics_from_bins(bins, b.m_max, b.k_t, thresholds is not None, metrics,
                                    fpr_grid if want_roc else None, ties=ties, roc_steps=True)
            for k in metrics:
                out[k][b0:b0 + Wt.shape[1], cls] = res[k]
            if want_roc:
                idx, step, ok = res["roc_steps"]                        # [bc, Cb, m] each, ok [bc, Cb]
                bc = Wt.shape[1]
                with lock:
                    for g, mask in roc_groups.items():
                        sel = np.asarray(mask, bool)[cls]
                        if sel.any():
                            flat = (np.arange(bc)[:, None, None] * (G + 1) + idx[:, sel]).ravel()
                            h = np.bincount(flat, step[:, sel].ravel(), minlength=bc * (G + 1)).reshape(bc, G + 1)
                            roc_sum[g][b0:b0 + bc] += np.cumsum(h[:, :G], 1)
                            roc_cnt[g][b0:b0 + bc, 0] += ok[:, sel].sum(1)
            b0 += Wt.shape[1]

    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(blocks), desc="bootstrap", unit="block")
    with ThreadPoolExecutor(max(1, n_threads)) as ex:
        for f in as_completed([ex.submit(run_block, bl) for bl in blocks]):
            f.result()
            if bar is not None:
                bar.update(1)
    if bar is not None:
        bar.close()
    if want_roc:
        with np.errstate(invalid="ignore", divide="ignore"):
            out["roc"] = {g: np.where(roc_cnt[g] > 0, roc_sum[g] / np.maximum(roc_cnt[g], 1), np.nan)
                          for g in roc_groups}
    return out


CI_METHODS = ("guarded", "logit", "percentile")
DEFAULT_CI_METHOD = "guarded"
METRIC_RANGE = {"mcc": (-1.0, 1.0), "difference": (-1.0, 1.0)}   # every other metric lives in [0, 1]
_EDGE = 1e-4                            # a point at the range's edge is moved this far in (logit finite)
GUARD = 0.5                             # the guarded interval reaches at most this share of the
                                        # percentile width beyond it, both ends together (1.5x at most)


def bootstrap_ci(samples: np.ndarray, point: Optional[float], alpha: float = 0.05,
                 method: str = DEFAULT_CI_METHOD, metric: str = "auc") -> tuple[float, float]:
    """``(low, high)`` of a ``1 - alpha`` interval from bootstrap replicates of a statistic whose
    estimate is ``point`` (module docstring, "Interval"). ``(nan, nan)`` without two finite
    replicates or a finite point (the percentile method needs no point)."""
    if method not in CI_METHODS:
        raise ValueError(f"unknown interval method {method!r}; choose from {CI_METHODS}")
    if method == "percentile":
        return percentile_ci(samples, alpha)
    s = np.asarray(samples, dtype=np.float64)
    s = s[np.isfinite(s)]
    if s.size < 2 or point is None or not np.isfinite(point):
        return float("nan"), float("nan")
    low, high = wald_logit_ci(s, float(point), alpha, metric)
    if method == "guarded":
        low, high = guard(low, high, *percentile_ci(s, alpha))
    return float(min(low, point)), float(max(high, point))


def guard(low: float, high: float, q_lo: float, q_hi: float) -> tuple[float, float]:
    """The Wald interval ``[low, high]`` kept to the percentile interval ``[q_lo, q_hi]`` widened by
    at most ``GUARD`` of its width in all: where the Wald interval reaches further, both ends'
    reaches are scaled down alike (the skewed side keeps the larger share), and it is never
    narrower than the percentile interval."""
    w = q_hi - q_lo
    reach_lo, reach_hi = max(0.0, q_lo - low), max(0.0, high - q_hi)
    k = min(1.0, GUARD * w / (reach_lo + reach_hi)) if reach_lo + reach_hi > 0 else 1.0
    return q_lo - k * reach_lo, q_hi + k * reach_hi


def wald_logit_ci(s: np.ndarray, point: float, alpha: float, metric: str) -> tuple[float, float]:
    """``expit(logit(point) +- z * sd(logit(s)))`` on the metric's range (Fisher's z for [-1, 1])."""
    from scipy.special import expit, logit
    from scipy.stats import norm

    lo, hi = METRIC_RANGE.get(metric, (0.0, 1.0))
    to01 = lambda x: np.clip((np.asarray(x, dtype=np.float64) - lo) / (hi - lo), _EDGE, 1 - _EDGE)
    centre, se = logit(to01(point)), np.std(logit(to01(s)), ddof=1)
    z = norm.ppf(1 - alpha / 2)
    a, b = (lo + (hi - lo) * expit(centre + k * z * se) for k in (-1, 1))
    return float(a), float(b)


def percentile_ci(samples: np.ndarray, alpha: float = 0.05) -> tuple[float, float]:
    """Percentile interval of a 1-D array of bootstrap replicates (nan replicates dropped)."""
    s = np.asarray(samples, dtype=np.float64)
    s = s[~np.isnan(s)]
    if s.size == 0:
        return float("nan"), float("nan")
    lo, hi = np.percentile(s, [100 * alpha / 2, 100 * (1 - alpha / 2)])
    return float(lo), float(hi)

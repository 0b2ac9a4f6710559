"""95 % intervals for the knowledge encoder's held-out retrieval, by held-out category.

Queries of one category are not independent (its synonyms resemble each other), so a resample
draws the held-out *categories* with replacement and keeps all queries (and hierarchy triples)
of each drawn one: the cluster bootstrap. A before/after gain is paired: one draw of categories
serves both encoders, and the interval is the percentile interval of the differences (it
excludes 0 when the gain is beyond resampling noise). Works on what
:func:`raddiag.knowledge.train.evaluate_retrieval` returns (``ranks`` / ``query_groups``,
``closer`` / ``triple_groups``).
"""
from __future__ import annotations

import math
from typing import Optional

import numpy as np

from raddiag.evaluation.bootstrap import percentile_ci

METRICS = ("recall@1", "recall@10", "mean_rank", "hierarchy")
N_BOOT = 2000


def _per_item(res: dict) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """metric -> (per-item values, per-item cluster ids)."""
    out = {}
    if res.get("ranks"):
        r = np.asarray(res["ranks"], dtype=np.float64)
        g = np.asarray(res["query_groups"])
        out["recall@1"] = (r < 1, g)
        out["recall@10"] = (r < 10, g)
        out["mean_rank"] = (r + 1, g)
    if res.get("closer"):
        out["hierarchy"] = (np.asarray(res["closer"], dtype=np.float64), np.asarray(res["triple_groups"]))
    return out


def _replicates(values: list[np.ndarray], groups: np.ndarray, n_boot: int, seed: int) -> list[np.ndarray]:
    """Cluster-bootstrap means of each array in ``values`` (same items, same clusters, one draw)."""
    ids, inv = np.unique(groups, return_inverse=True)
    counts = np.bincount(inv, minlength=len(ids)).astype(np.float64)
    w = np.random.default_rng(seed).multinomial(len(ids), np.full(len(ids), 1.0 / len(ids)), size=n_boot)
    denom = w @ counts
    return [(w @ np.bincount(inv, weights=np.asarray(v, dtype=np.float64), minlength=len(ids))) / denom
            for v in values]


def intervals(res: dict, n_boot: int = N_BOOT, seed: int = 0) -> dict[str, tuple[float, float]]:
    """``{metric: (low, high)}`` 95 % cluster-bootstrap intervals of one evaluation."""
    out = {}
    for m, (v, g) in _per_item(res).items():
        out[m] = percentile_ci(_replicates([v], g, n_boot, seed)[0])
    return out


def gains(before: dict, after: dict, n_boot: int = N_BOOT, seed: int = 0) -> dict[str, tuple[float, float, float]]:
    """``{metric: (after - before, low, high)}`` with paired intervals; both evaluations must be
    on the same held-out items (same queries in the same order)."""
    a, b = _per_item(before), _per_item(after)
    out = {}
    for m in a.keys() & b.keys():
        (va, ga), (vb, gb) = a[m], b[m]
        if len(va) != len(vb) or not np.array_equal(ga, gb):
            raise ValueError(f"{m}: the two evaluations are not on the same held-out items")
        ra, rb = _replicates([va, vb], ga, n_boot, seed)
        out[m] = (float(vb.mean() - va.mean()), *percentile_ci(rb - ra))
    return out


def format_table(result: dict, n_boot: int = N_BOOT, labels: Optional[dict] = None) -> str:
    """``before`` / ``after`` rows (each with 95 % intervals where per-item data are there) and,
    with both, the paired gain (``after - before``); ``labels`` renames the rows."""
    rows = [("", *METRICS)]
    for name in ("before", "after"):
        m = result.get(name)
        if m:
            ci = intervals(m, n_boot)
            rows.append(((labels or {}).get(name, name),
                         *(_cell(m.get(k, float("nan")), ci.get(k), k) for k in METRICS)))
    if result.get("before") and result.get("after"):
        try:
            g = gains(result["before"], result["after"], n_boot)
        except ValueError:
            g = {}
        if g:
            rows.append(("gain", *(_cell(g[k][0], g[k][1:], k, signed=True) if k in g else "n/a"
                                   for k in METRICS)))
    w = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w[i]) for i, c in enumerate(r)).rstrip() for r in rows)


def _cell(v: float, ci: Optional[tuple[float, float]], metric: str, signed: bool = False) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    fmt = ("{:+.1f}" if signed else "{:.1f}") if metric == "mean_rank" else ("{:+.3f}" if signed else "{:.3f}")
    plain = "{:.1f}" if metric == "mean_rank" else "{:.3f}"
    s = fmt.format(v)
    if ci is not None and not any(math.isnan(x) for x in ci):
        s += f" [{plain.format(ci[0])}, {plain.format(ci[1])}]"
    return s

"""Intervals of the knowledge encoder's held-out retrieval: cluster bootstrap over categories."""
from __future__ import annotations

import numpy as np
import pytest

from raddiag.knowledge.intervals import format_table, gains, intervals


def _res(ranks, groups, closer=None, triple_groups=None):
    r = np.asarray(ranks)
    return {"recall@1": float((r < 1).mean()), "recall@10": float((r < 10).mean()),
            "mean_rank": float((r + 1).mean()), "hierarchy": float(np.mean(closer)) if closer else float("nan"),
            "ranks": list(ranks), "query_groups": list(groups),
            **({"closer": closer, "triple_groups": triple_groups} if closer else {})}


def _brute_force_ci(values, groups, n_boot=4000, seed=1):
    """A loop: draw categories with replacement, pool their queries, take the mean."""
    rng = np.random.default_rng(seed)
    cats = sorted(set(groups))
    by_cat = {c: [v for v, g in zip(values, groups) if g == c] for c in cats}
    means = []
    for _ in range(n_boot):
        pooled = [v for c in rng.choice(cats, size=len(cats), replace=True) for v in by_cat[c]]
        means.append(np.mean(pooled))
    return np.percentile(means, [2.5, 97.5])


def test_intervals_match_a_brute_force_cluster_bootstrap():
    rng = np.random.default_rng(0)
    groups = np.repeat(np.arange(30), rng.integers(1, 8, size=30))
    ranks = np.where(rng.random(len(groups)) < (groups % 3) / 3, 0, rng.integers(1, 40, size=len(groups)))
    ci = intervals(_res(ranks.tolist(), groups.tolist()), n_boot=4000)
    lo, hi = _brute_force_ci((ranks < 1).astype(float), groups.tolist())
    assert abs(ci["recall@1"][0] - lo) < 0.03 and abs(ci["recall@1"][1] - hi) < 0.03
    lo, hi = _brute_force_ci(ranks + 1.0, groups.tolist())
    assert abs(ci["mean_rank"][0] - lo) < 1.0 and abs(ci["mean_rank"][1] - hi) < 1.0
    # a query-level bootstrap would ignore that a category's queries move together: narrower here
    assert ci["recall@1"][1] - ci["recall@1"][0] > 0


def test_constant_per_category_and_paired_gains():
    groups = [0, 0, 1, 1, 2, 2, 3]
    before = _res([3, 3, 3, 3, 3, 3, 3], groups, closer=[1, 0, 1, 0], triple_groups=[0, 0, 1, 1])
    ci = intervals(before)
    assert ci["recall@1"] == (0.0, 0.0) and ci["recall@10"] == (1.0, 1.0) and ci["mean_rank"] == (4.0, 4.0)
    g = gains(before, before)
    assert all(v == (0.0, 0.0, 0.0) for k, v in g.items() if k != "hierarchy")
    # the rank drops in every category: the whole interval of the recall@1 gain is above 0
    after = _res([0, 0, 0, 3, 0, 0, 0], groups, closer=[1, 1, 1, 0], triple_groups=[0, 0, 1, 1])
    g = gains(before, after)
    assert g["recall@1"][0] == pytest.approx(6 / 7) and g["recall@1"][1] > 0
    assert g["mean_rank"][0] == pytest.approx(-18 / 7) and g["mean_rank"][2] < 0
    assert g["hierarchy"][0] == pytest.approx(0.25)
    with pytest.raises(ValueError, match="same held-out items"):
        gains(before, _res([0, 0], [0, 0]))


def test_format_table_shows_intervals_and_gain():
    groups = [0, 1, 2, 3]
    text = format_table({"before": _res([5, 5, 0, 12], groups), "after": _res([0, 0, 0, 12], groups)},
                        labels={"before": "base"})
    lines = text.splitlines()
    assert lines[0].split() == ["recall@1", "recall@10", "mean_rank", "hierarchy"]
    assert lines[1].startswith("base ") and lines[2].startswith("after ") and lines[3].startswith("gain ")
    assert "+0.500 [" in lines[3] and "n/a" in lines[3]
    # stored metrics without per-query data (older runs): values, no intervals
    old = format_table({"after": {"recall@1": 0.4, "recall@10": 0.6, "hierarchy": 0.9}})
    assert "0.400" in old and "[" not in old

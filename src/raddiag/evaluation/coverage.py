"""Does a 95 % bootstrap interval cover the truth? Simulations with a known answer
(``benchmarks/ci_coverage.py`` runs every scenario at 300 repetitions; a test at a small size).

Scores of class ``c`` are Gaussian: negatives ``N(0, 1)``, positives ``N(d_c, 1)``, so the
truth is closed-form:

* AUC ``P(pos > neg) = Phi(d_c / sqrt(2))``;
* recall at FPR ``f``: ``1 - Phi(Phi^-1(1 - f) - d_c)``;
* F1 at a fixed threshold ``t`` and prevalence ``p``: ``2 p TPR / (p TPR + (1 - p) FPR + p)`` with
  ``TPR = 1 - Phi(t - d_c)``, ``FPR = 1 - Phi(t)``.

Labels are Bernoulli with a per-class prevalence. A case effect shared by all classes
(correlation ``rho`` between a case's scores) makes the classes' estimates correlated, as in a
real model. The truth of one simulated test set is the mean truth over the classes defined in
it (the classes the point estimate averages).

:data:`SCENARIOS` holds the original design (20 common easy classes and 10 rare hard ones) and
the hard cases of issue 25: groups of one to five classes, few positives, estimates near 0 and
near 100 %. Each is sized so that its bootstrap is not degenerate: with a handful of positives
and an estimate on the edge (every positive above every negative), every resample gives the
same value, no bootstrap interval can say anything, and the engine reports ``ci_no_spread``
instead of an interval (the share is printed as ``no spread``)."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.stats import norm

from .bootstrap import CI_METHODS


@dataclass
class Scenario:
    name: str
    separation: list[float]              # d_c per class
    prevalence: list[float]              # per class
    n_cases: int = 1000
    metric: str = "auc"                  # auc | recall_at_fpr_0.05 | f1
    threshold: float = 0.0               # the fixed decision threshold of "f1"
    rho: float = 0.3

    def truth(self) -> np.ndarray:
        d, p = np.asarray(self.separation, float), np.asarray(self.prevalence, float)
        if self.metric == "auc":
            return norm.cdf(d / np.sqrt(2))
        if self.metric.startswith("recall_at_fpr_"):
            f = float(self.metric.rsplit("_", 1)[1])
            return 1 - norm.cdf(norm.ppf(1 - f) - d)
        if self.metric == "f1":
            tpr, fpr = 1 - norm.cdf(self.threshold - d), 1 - norm.cdf(self.threshold)
            return 2 * p * tpr / (p * tpr + (1 - p) * fpr + p)
        raise ValueError(f"no closed-form truth for {self.metric!r}")


@dataclass
class Design(Scenario):
    """The original design: 1,000 cases, 20 common easy classes (prevalence 20 %, AUC 0.856) and
    10 rare hard ones (prevalence 0.6 %, ~6 positives, AUC 0.611)."""

    name: str = "20 common easy + 10 rare hard classes"
    n_common: int = 20
    n_rare: int = 10
    common_prevalence: float = 0.2
    rare_prevalence: float = 0.006
    common_separation: float = 1.5
    rare_separation: float = 0.4
    separation: list[float] = field(default_factory=list)
    prevalence: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.separation = [self.common_separation] * self.n_common + [self.rare_separation] * self.n_rare
        self.prevalence = [self.common_prevalence] * self.n_common + [self.rare_prevalence] * self.n_rare

    @property
    def true_auc(self) -> np.ndarray:
        return self.truth()


SCENARIOS = (
    Design(),
    Scenario("1 class, 30 positives, AUC near 100 % (0.97)", [2.66], [0.03]),
    Scenario("1 class, 30 positives, AUC near 0 % (0.05)", [-2.33], [0.03]),
    Scenario("1 rare hard class, 10 positives (AUC 0.61)", [0.4], [0.01]),
    Scenario("3 rare hard classes, 10 positives each", [0.4] * 3, [0.01] * 3),
    Scenario("5 classes, 10 positives each, AUC 0.24 to 0.98", [0.4, 1.0, 2.0, 3.0, -1.0], [0.01] * 5),
    Scenario("1 class, F1 near 0 % (0.10)", [1.0], [0.15], metric="f1", threshold=2.6),
    Scenario("3 classes, 10 positives each, F1 0.14", [1.0] * 3, [0.02] * 3, n_cases=500, metric="f1",
             threshold=2.0),
    Scenario("1 class, R@0.05 near 100 % (0.95)", [3.3], [0.1], metric="recall_at_fpr_0.05"),
    Scenario("1 class, R@0.05 near 0 % (0.05)", [0.0], [0.1], metric="recall_at_fpr_0.05"),
    Scenario("5 classes, 20 positives each, R@0.05 0.94", [3.2] * 5, [0.02] * 5, metric="recall_at_fpr_0.05"),
)


def simulate(design: Scenario, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One test set: float32 scores and bool labels ``[n_cases, n_classes]``."""
    d = np.asarray(design.separation, float)
    y = rng.random((design.n_cases, len(d))) < np.asarray(design.prevalence, float)
    case = rng.normal(size=(design.n_cases, 1))
    z = np.sqrt(design.rho) * case + np.sqrt(1 - design.rho) * rng.normal(size=y.shape)
    return (z + d * y).astype(np.float32), y


def coverage(design: Scenario, reps: int, n_boot: int, seed: int = 0, alpha: float = 0.05,
             methods: tuple = CI_METHODS) -> dict:
    """For each interval method (:func:`~raddiag.evaluation.bootstrap.bootstrap_ci`) on the same
    simulated sets and resamples: ``coverage`` (share of intervals holding the truth),
    ``contains_point`` (share holding their own estimate), ``mean_width``, ``max_width_ratio``
    (the largest width over the percentile interval's width on the same replicates; a
    percentile interval of no width counts 1 when the other has none either) and
    ``no_spread`` (the share of sets whose replicates were all equal)."""
    from .bootstrap import bootstrap_ci, bootstrap_per_class, percentile_ci
    from .metrics import macro, per_class_metrics

    k = design.metric
    rng = np.random.default_rng(seed)
    truth_c = design.truth()
    thr = np.full(len(truth_c), design.threshold) if k == "f1" else None
    hits = {m: {"covered": 0, "contains_point": 0, "widths": [], "ratios": []} for m in methods}
    flat = 0
    for r in range(reps):
        s, y = simulate(design, rng)
        per = per_class_metrics(s, y, thr)[k]
        fixed = ~np.isnan(per)
        truth, point = truth_c[fixed].mean(), per[fixed].mean()
        boot = bootstrap_per_class(s, y, thr, n_boot=n_boot, seed=seed * 100_003 + r, metrics=(k,))
        replicates = macro(boot[k], fixed)[0]
        p_lo, p_hi = percentile_ci(replicates, alpha)
        flat += p_lo == p_hi
        for m, h in hits.items():
            lo, hi = bootstrap_ci(replicates, point, alpha, m, metric=k)
            h["covered"] += lo <= truth <= hi
            h["contains_point"] += lo <= point <= hi
            h["widths"].append(hi - lo)
            h["ratios"].append((hi - lo) / (p_hi - p_lo) if p_hi > p_lo else (1.0 if hi == lo else np.inf))
    return {m: {"reps": reps, "coverage": h["covered"] / reps, "contains_point": h["contains_point"] / reps,
                "mean_width": float(np.mean(h["widths"])), "max_width_ratio": float(np.max(h["ratios"])),
                "no_spread": flat / reps} for m, h in hits.items()}

"""Does a 95 % bootstrap interval of a macro AUC cover the truth? A simulation with a known
answer (``benchmarks/ci_coverage.py`` runs it at 200 repetitions; a test at a small size).

Scores of class ``c`` are Gaussian: negatives ``N(0, 1)``, positives ``N(d_c, 1)``, so the
class's true AUC is ``P(pos > neg) = Phi(d_c / sqrt(2))``. Labels are Bernoulli with a
per-class prevalence: common classes that are easy and rare classes (a few positives per test
set) that are hard, the situation in which dropping rare classes from resamples biases an
interval. A case effect shared by all classes (correlation ``rho`` between a case's scores)
makes the classes' estimates correlated, as in a real model. The truth of one simulated test
set is the mean true AUC over the classes defined in it (the classes the point estimate
averages)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.stats import norm


@dataclass
class Design:
    n_cases: int = 1000
    n_common: int = 20
    n_rare: int = 10
    common_prevalence: float = 0.2
    rare_prevalence: float = 0.006        # ~6 positives per test set of 1,000
    common_separation: float = 1.5        # AUC 0.856
    rare_separation: float = 0.4          # AUC 0.611: the rare classes are the hard ones
    rho: float = 0.3

    @property
    def separation(self) -> np.ndarray:
        return np.r_[np.full(self.n_common, self.common_separation), np.full(self.n_rare, self.rare_separation)]

    @property
    def prevalence(self) -> np.ndarray:
        return np.r_[np.full(self.n_common, self.common_prevalence), np.full(self.n_rare, self.rare_prevalence)]

    @property
    def true_auc(self) -> np.ndarray:
        return norm.cdf(self.separation / np.sqrt(2))


def simulate(design: Design, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One test set: float32 scores and bool labels ``[n_cases, n_classes]``."""
    d = design.separation
    y = rng.random((design.n_cases, len(d))) < design.prevalence
    case = rng.normal(size=(design.n_cases, 1))
    z = np.sqrt(design.rho) * case + np.sqrt(1 - design.rho) * rng.normal(size=y.shape)
    return (z + d * y).astype(np.float32), y


def coverage(design: Design, reps: int, n_boot: int, seed: int = 0, alpha: float = 0.05,
             methods: tuple = ("logit", "percentile")) -> dict:
    """For each interval method (:func:`~raddiag.evaluation.bootstrap.bootstrap_ci`): the share
    of ``reps`` simulated test sets whose macro-AUC interval contains the truth, the share whose
    interval contains its own point estimate, and the mean width. The methods share the
    simulated sets and the resamples."""
    from .bootstrap import bootstrap_ci, bootstrap_per_class
    from .metrics import macro, per_class_metrics

    rng = np.random.default_rng(seed)
    hits = {m: {"covered": 0, "contains_point": 0, "widths": []} for m in methods}
    for r in range(reps):
        s, y = simulate(design, rng)
        auc = per_class_metrics(s, y)["auc"]
        fixed = ~np.isnan(auc)
        truth = design.true_auc[fixed].mean()
        point = auc[fixed].mean()
        boot = bootstrap_per_class(s, y, None, n_boot=n_boot, seed=seed * 100_003 + r, metrics=("auc",))
        for m, h in hits.items():
            lo, hi = bootstrap_ci(macro(boot["auc"], fixed)[0], point, alpha, m)
            h["covered"] += lo <= truth <= hi
            h["contains_point"] += lo <= point <= hi
            h["widths"].append(hi - lo)
    return {m: {"reps": reps, "coverage": h["covered"] / reps, "contains_point": h["contains_point"] / reps,
                "mean_width": float(np.mean(h["widths"]))} for m, h in hits.items()}

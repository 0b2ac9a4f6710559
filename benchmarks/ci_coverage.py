"""Coverage of the 95 % bootstrap interval of a macro AUC in a simulation with a known truth.

Usage: ``.venv/bin/python benchmarks/ci_coverage.py [--reps 200] [--n-boot 1000]``
Design (``raddiag.evaluation.coverage``): 1,000 cases, 20 common easy classes (prevalence 20 %,
AUC 0.856) and 10 rare hard ones (prevalence 0.6 %, ~6 positives, AUC 0.611), Gaussian scores
with a shared case effect. Prints the share of intervals that contain the true macro AUC
(goal >= 90 % at nominal 95 %) and the share that contain their own point estimate, for the
default logit interval and the percentile interval, on the same resamples.
"""
from __future__ import annotations

import argparse
import time

from raddiag.evaluation.coverage import Design, coverage


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=200)
    ap.add_argument("--n-boot", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    d = Design()
    t0 = time.perf_counter()
    res = coverage(d, a.reps, a.n_boot, seed=a.seed)
    print(f"{d.n_cases} cases, {d.n_common} common classes (prevalence {d.common_prevalence:g}, AUC "
          f"{d.true_auc[0]:.3f}) + {d.n_rare} rare hard ones (prevalence {d.rare_prevalence:g}, AUC "
          f"{d.true_auc[-1]:.3f}); {a.reps} repetitions x {a.n_boot} resamples ({time.perf_counter() - t0:.0f} s)")
    for method, r in res.items():
        print(f"{method:<10} 95% interval covers the true macro AUC: {r['coverage']:.1%} (goal >= 90%); "
              f"contains its point estimate: {r['contains_point']:.1%}; mean width {r['mean_width']:.4f}")


if __name__ == "__main__":
    main()

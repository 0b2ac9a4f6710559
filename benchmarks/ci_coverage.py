"""Coverage of the 95 % bootstrap intervals in simulations with a known truth.

Usage: ``.venv/bin/python benchmarks/ci_coverage.py [--reps 300] [--n-boot 500] [--only SUBSTRING]``

Scenarios (``raddiag.evaluation.coverage.SCENARIOS``): the original design (1,000 cases, 20
common easy classes and 10 rare hard ones, macro AUC) and the hard cases: groups of one to five
classes with 10 to 30 positives, and AUC, F1 and recall at 5 % FPR near 0 and near 100 %.
For each scenario and interval method (``guarded``, the default; ``logit``, the Wald interval
alone; ``percentile``), on the same simulated sets and resamples, it prints the share of
intervals that hold the truth (goal >= 90 % at nominal 95 %), the share that hold their own
estimate, the mean width, and the largest width over the percentile interval's on the same
replicates (goal <= 1.5).
"""
from __future__ import annotations

import argparse
import time

from raddiag.evaluation.coverage import SCENARIOS, coverage


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=300)
    ap.add_argument("--n-boot", type=int, default=500)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--only", default="", help="run the scenarios whose name holds this text")
    a = ap.parse_args()
    worst = {}
    t_all = time.perf_counter()
    for sc in SCENARIOS:
        if a.only not in sc.name:
            continue
        t0 = time.perf_counter()
        res = coverage(sc, a.reps, a.n_boot, seed=a.seed)
        print(f"== {sc.name}: {sc.metric}, {sc.n_cases} cases, {a.reps} sets x {a.n_boot} resamples, "
              f"no spread in {next(iter(res.values()))['no_spread']:.1%} ({time.perf_counter() - t0:.0f} s)")
        for method, r in res.items():
            print(f"   {method:<10} covers the truth {r['coverage']:6.1%}   holds its estimate "
                  f"{r['contains_point']:6.1%}   mean width {r['mean_width']:.4f}   "
                  f"width / percentile <= {r['max_width_ratio']:.2f}")
            w = worst.setdefault(method, [1.0, 1.0, 0.0])
            w[0], w[1], w[2] = min(w[0], r["coverage"]), min(w[1], r["contains_point"]), max(w[2], r["max_width_ratio"])
    print(f"\nover all scenarios ({time.perf_counter() - t_all:.0f} s):")
    for method, (cov, held, ratio) in worst.items():
        ok = cov >= 0.90 and held == 1.0 and ratio <= 1.5 + 1e-9     # 1.5 up to rounding
        print(f"   {method:<10} lowest coverage {cov:6.1%}   lowest share holding the estimate {held:6.1%}   "
              f"largest width / percentile {ratio:.2f}   {'PASS' if ok else 'fails a goal'}")


if __name__ == "__main__":
    main()

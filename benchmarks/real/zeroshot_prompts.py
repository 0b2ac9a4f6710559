"""Zero-shot text mode: prompt sets vs the single class name, paired, with 95 % intervals.

Runs ``raddiag zeroshot --mode text`` twice on the same run and target data (with prompt sets,
the default, and with ``--single-name``) unless both output folders exist, then resamples the
test cases (one draw shared by both, so the interval is of the paired difference) and prints the
macro AUC / AP of each and of the difference (logit intervals, :func:`bootstrap_ci`).
``run_real.py`` calls :func:`paired_rows` for its RESULTS.md. Usage:

    python benchmarks/real/zeroshot_prompts.py RUN DATA WORK [--n-boot 1000]
"""
import argparse
import subprocess
import sys
from pathlib import Path

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score

from raddiag.evaluation.bootstrap import bootstrap_ci

MODES = (("single name", ["--single-name"]), ("prompt set", []))


def macro(metric, scores, labels) -> float:
    vals = [metric(labels[:, c], scores[:, c]) for c in range(labels.shape[1])
            if 0 < labels[:, c].sum() < len(labels)]
    return float(np.mean(vals))


def paired_rows(preds: dict, n_boot: int = 1000, seed: int = 0) -> list[dict]:
    """``preds``: {"single name": npz, "prompt set": npz} of the same cases. One row per metric:
    ``{metric, <mode>: (point, lo, hi), difference: (point, lo, hi)}`` (prompt set - single name)."""
    labels = preds["single name"]["labels"]
    if not np.array_equal(labels, preds["prompt set"]["labels"]):
        raise ValueError("the two zero-shot runs scored different cases")
    rng = np.random.default_rng(seed)
    draws = [rng.integers(len(labels), size=len(labels)) for _ in range(n_boot)]
    rows = []
    for name, metric in (("AUC", roc_auc_score), ("AP", average_precision_score)):
        row = {"metric": name}
        reps = {}
        for m in preds:
            point = macro(metric, preds[m]["scores"], labels)
            reps[m] = np.array([macro(metric, preds[m]["scores"][d], labels[d]) for d in draws])
            row[m] = (point, *bootstrap_ci(reps[m], point))
        diff = row["prompt set"][0] - row["single name"][0]
        row["difference"] = (diff, *bootstrap_ci(reps["prompt set"] - reps["single name"], diff, metric="difference"))
        rows.append(row)
    return rows


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("run")
    p.add_argument("data")
    p.add_argument("work", type=Path)
    p.add_argument("--n-boot", type=int, default=1000)
    a = p.parse_args()
    preds = {}
    for mode, flag in MODES:
        out = a.work / mode.replace(" ", "-")
        if not (out / "text" / "predictions.npz").is_file():
            subprocess.run([sys.executable, "-m", "raddiag", "zeroshot", a.run, "--data", a.data, "--out", str(out),
                            "--mode", "text", *flag], check=True)
        preds[mode] = np.load(out / "text" / "predictions.npz", allow_pickle=True)
    n, c = preds["single name"]["labels"].shape
    print(f"{n} test cases, {c} classes; paired case bootstrap, {a.n_boot} resamples")
    for row in paired_rows(preds, a.n_boot):
        print(f"macro {row['metric']}: " + "; ".join(
            f"{k} {100 * v[0]:+.2f} [{100 * v[1]:+.2f}, {100 * v[2]:+.2f}]" for k, v in row.items() if k != "metric"))
    return 0


if __name__ == "__main__":
    sys.exit(main())

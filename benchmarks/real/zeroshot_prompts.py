"""Zero-shot text mode: prompt sets vs the single class name, paired, with 95 % intervals.

Runs ``raddiag zeroshot --mode text`` twice on the same run and target data (with prompt sets,
the default, and with ``--single-name``) unless both output folders exist, then resamples the
test cases (one draw shared by both, so the interval is of the paired difference) and prints the
macro AUC / AP of each and of the difference. Usage:

    python benchmarks/real/zeroshot_prompts.py RUN DATA WORK [--n-boot 1000]
"""
import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score

from raddiag.evaluation.bootstrap import percentile_ci


def macro(metric, scores, labels) -> float:
    vals = [metric(labels[:, c], scores[:, c]) for c in range(labels.shape[1])
            if 0 < labels[:, c].sum() < len(labels)]
    return float(np.mean(vals))


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("run")
    p.add_argument("data")
    p.add_argument("work", type=Path)
    p.add_argument("--n-boot", type=int, default=1000)
    a = p.parse_args()
    preds = {}
    for mode, flag in (("prompt set", []), ("single name", ["--single-name"])):
        out = a.work / mode.replace(" ", "-")
        if not (out / "text" / "predictions.npz").is_file():
            subprocess.run([sys.executable, "-m", "raddiag", "zeroshot", a.run, "--data", a.data, "--out", str(out),
                            "--mode", "text", *flag], check=True)
        preds[mode] = np.load(out / "text" / "predictions.npz", allow_pickle=True)
    labels = preds["single name"]["labels"]
    assert np.array_equal(labels, preds["prompt set"]["labels"])
    rng = np.random.default_rng(0)
    draws = [rng.integers(len(labels), size=len(labels)) for _ in range(a.n_boot)]
    print(f"{len(labels)} test cases, {labels.shape[1]} classes; paired case bootstrap, {a.n_boot} resamples")
    for name, metric in (("AUC", roc_auc_score), ("AP", average_precision_score)):
        point = {m: macro(metric, preds[m]["scores"], labels) for m in preds}
        reps = {m: np.array([macro(metric, preds[m]["scores"][d], labels[d]) for d in draws]) for m in preds}
        diff = reps["prompt set"] - reps["single name"]
        lo, hi = percentile_ci(diff)
        cells = [f"{m} {100 * point[m]:.2f} [{100 * percentile_ci(reps[m])[0]:.2f}, "
                 f"{100 * percentile_ci(reps[m])[1]:.2f}]" for m in preds]
        print(f"macro {name}: " + "; ".join(cells) +
              f"; difference {100 * (point['prompt set'] - point['single name']):+.2f} [{100 * lo:+.2f}, {100 * hi:+.2f}]")
    per_class = json.loads((a.work / "prompt-set" / "zeroshot.json").read_text()) if \
        (a.work / "prompt-set" / "zeroshot.json").is_file() else {}
    if per_class.get("n_cases"):
        print(f"target: {per_class['n_cases']} {per_class.get('split', 'test')} cases")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Which printed intervals the guarded interval changed, and by how much (issue 25).

    .venv/bin/python scripts/interval_change.py EVAL_DIR [EVAL_DIR ...] [--n-boot 1000] [--min 0.1]

Each EVAL_DIR is an evaluation output (``metrics.json``, ``per_class.csv`` and ``predictions.npz``
with its thresholds: what ``raddiag evaluate`` / ``metrics``, the demo and
``benchmarks/real/run_real.py`` write; folders are searched for them). The same predictions,
thresholds and resamples are scored twice, with the Wald interval on the logit scale alone (the
default before issue 25) and with the guarded interval (the default now); every macro figure whose
interval moved by at least ``--min`` points is printed with both intervals. Point estimates are the
same by construction (the kernel fix changed only one-class and Fortran-ordered inputs).
"""
from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np

from raddiag.data.labels import LabelSpace
from raddiag.evaluation import evaluate_predictions
from raddiag.evaluation.commands import read_npz

METRICS = ("auc", "ap", "f1", "mcc", "acc", "recall_at_fpr_0.01", "recall_at_fpr_0.05", "recall_at_fpr_0.1")


def label_space(folder: Path, thresholds: np.ndarray) -> LabelSpace:
    """The evaluated label space as per_class.csv records it (names, training counts and the
    groups the evaluation used, whatever its cut-offs were)."""
    with open(folder / "per_class.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    counts = [int(r["train_count"] or 0) for r in rows]
    groups = [r["group"] for r in rows] if any(counts) else None
    return LabelSpace(names=[r["name"].removeprefix("'") for r in rows], counts=counts, fixed_groups=groups,
                      thresholds=[float(t) for t in thresholds])


def both(folder: Path, n_boot: int, seed: int) -> tuple[dict, dict]:
    z = read_npz(folder / "predictions.npz")
    ls = label_space(folder, z["thresholds"])
    anatomy = z.get("anatomy")
    kw = dict(anatomy=None if anatomy is None else list(anatomy), n_boot=n_boot, seed=seed)
    old = evaluate_predictions(z["scores"], z["labels"].astype(bool), ls, ci_method="logit", **kw)["metrics"]
    new = evaluate_predictions(z["scores"], z["labels"].astype(bool), ls, **kw)["metrics"]
    return old, new


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("folders", nargs="+")
    ap.add_argument("--n-boot", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--min", type=float, default=0.1, help="points (percent) an end must move to be listed")
    a = ap.parse_args()
    found = sorted({p.parent for f in a.folders for p in Path(f).rglob("predictions.npz")
                    if (p.parent / "per_class.csv").exists()})
    for folder in found:
        old, new = both(folder, a.n_boot, a.seed)
        rows = []
        for g in new:
            if g == "meta" or not isinstance(new[g], dict) or "auc" not in new[g]:
                continue
            for k in METRICS:
                o, n = old[g].get(k), new[g].get(k)
                if not o or not n or o["ci_low"] is None or n["ci_low"] is None:
                    continue
                moved = max(abs(o["ci_low"] - n["ci_low"]), abs(o["ci_high"] - n["ci_high"])) * 100
                if moved >= a.min:
                    rows.append(f"  {g:<28} {k:<20} {100 * n['value']:6.1f}   [{100 * o['ci_low']:5.1f}, "
                                f"{100 * o['ci_high']:5.1f}] -> [{100 * n['ci_low']:5.1f}, {100 * n['ci_high']:5.1f}]"
                                f"   (moved {moved:.1f})")
        print(f"== {folder}: {len(rows)} interval(s) moved by >= {a.min} points"
              + ("" if rows else "; none"))
        for r in rows:
            print(r)


if __name__ == "__main__":
    main()

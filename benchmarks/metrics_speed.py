"""Metrics speed against the authors' evaluation loop, side by side in one run (issue 14).

Usage: ``.venv/bin/python benchmarks/metrics_speed.py [--n 7772] [--c 5569] [--boot 1000]
[--baseline 6e5cadc]``

Inputs: ``n`` test and ``n // 4`` validation cases x ``c`` classes, float32 logits, long-tailed
labels (class ``j`` has about ``1500 / (j + 1) ** 0.75`` test positives: a few head classes
with hundreds, thousands of tail classes with 1-5, some with none).

1. The authors' evaluation, rebuilt (the comparator): sigmoid of the logits, then per class
   with both labels present ``roc_auc_score`` + ``roc_curve``; ``precision_recall_curve`` +
   ``average_precision_score``; ``precision_recall_curve`` again (on the validation split:
   thresholds from validation), F1 at every point, the threshold of the largest F1,
   ``matthews_corrcoef`` at it on test; the TPR at the FPR point nearest to 0.01, 0.05, 0.1,
   0.2, 0.5 of the ROC curve.
2. The WHOLE ``raddiag metrics --n-boot 0`` call on the same inputs (probabilities saved as an
   .npz, as a model writes them): load, validation thresholds, every metric, per-class CSV,
   predictions.npz, report.html. Timed in this process; then once more under cProfile for
   the time split.
3. Values: largest difference of every metric against scikit-learn (AUC, AP, MCC / F1 / ACC
   at the same thresholds, recall at FPR <= 0.01 / 0.05 / 0.1 from ``roc_curve``).
4. The 1,000-resample bootstrap as the engine runs it (every metric + ROC bands), today's
   (``--baseline`` revision, extracted with ``git archive`` and run in a subprocess on the
   same inputs) and this checkout's, side by side.
"""
from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from scipy.special import expit

ROOT = Path(__file__).resolve().parents[1]


def make_inputs(n: int, c: int, n_val: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    rate = np.minimum(0.3, 1500.0 / n * (np.arange(c) + 1.0) ** -0.75)
    sep = rng.uniform(0.5, 3.0, c).astype(np.float32)            # per-class difficulty

    def split(m):
        y = rng.random((m, c), dtype=np.float32) < rate
        logits = rng.standard_normal((m, c), dtype=np.float32) - 3.0 + sep * y
        return logits, y

    counts = np.maximum(0, np.round(rate * 4 * n)).astype(int)   # "training" counts for head/medium/tail
    return split(n), split(n_val), counts


def authors_eval(test_logits, test_y, val_logits, val_y) -> dict:
    from sklearn.metrics import (average_precision_score, matthews_corrcoef, precision_recall_curve,
                                 roc_auc_score, roc_curve)

    p, pv = expit(test_logits), expit(val_logits)                 # their first step: sigmoid
    c = p.shape[1]
    out = {k: np.full(c, np.nan) for k in ("auc", "ap", "mcc", "f1", "acc", "recall_at_fpr_0.01",
                                            "recall_at_fpr_0.05", "recall_at_fpr_0.1")}
    out["thr"] = np.full(c, 0.5)
    near = {f: np.full(c, np.nan) for f in (0.01, 0.05, 0.1, 0.2, 0.5)}
    for j in range(c):
        y, s = test_y[:, j], p[:, j]
        if not y.any() or y.all():
            continue
        out["auc"][j] = roc_auc_score(y, s)
        fpr, tpr, _ = roc_curve(y, s)
        precision_recall_curve(y, s)
        out["ap"][j] = average_precision_score(y, s)
        if val_y[:, j].any():                                     # threshold of the largest F1 on validation
            pr, rc, t = precision_recall_curve(val_y[:, j], pv[:, j])
            f1 = np.where(pr + rc > 0, 2 * pr * rc / np.maximum(pr + rc, 1e-300), 0)[:-1]
            out["thr"][j] = t[len(f1) - 1 - np.argmax(f1[::-1])]   # highest threshold on ties (as raddiag)
        pred = s >= out["thr"][j]
        out["mcc"][j] = matthews_corrcoef(y, pred)
        for f in near:
            near[f][j] = tpr[np.argmin(np.abs(fpr - f))]
        tp, fp = np.sum(pred & y), np.sum(pred & ~y)               # for the comparison only
        out["f1"][j] = 2 * tp / (tp + fp + y.sum())
        out["acc"][j] = np.mean(pred == y)
        for f in (0.01, 0.05, 0.1):
            out[f"recall_at_fpr_{f:g}"][j] = tpr[fpr <= f].max()
    out["near"] = near
    return out


def run_cli(args: list[str], profile: bool = False):
    from raddiag.cli import main

    prof = cProfile.Profile() if profile else None
    t0 = time.perf_counter()
    if prof:
        prof.enable()
    with open(os.devnull, "w") as null:
        old, sys.stdout = sys.stdout, null
        try:
            rc = main(args)
        finally:
            sys.stdout = old
    if prof:
        prof.disable()
    assert rc in (0, None), rc
    return time.perf_counter() - t0, prof


SPLIT = [("load_predictions", "load .npz"), ("check_inputs", "input checks (finite, 0/1)"),
         ("best_f1_thresholds", "validation thresholds"), ("per_class_metrics", "per-class metrics (sort + kernel)"),
         ("_summarise", "group macro averages"), ("write_outputs", "all outputs"),
         ("write_per_class_csv", "  per_class.csv"), ("savez", "  predictions.npz (2nd thread)"), ("write_report", "  report.html"),
         ("roc_figure", "    ROC figure"), ("distribution_figure", "    distribution figure")]


def print_split(prof: cProfile.Profile, total: float) -> None:
    st = pstats.Stats(prof, stream=io.StringIO())
    cum: dict[str, float] = {}
    for (_, _, name), (_, _, _, ct, _) in st.stats.items():
        cum[name] = cum.get(name, 0.0) + ct
    print(f"time split of `raddiag metrics --n-boot 0` (a second call, under cProfile: {total:.2f} s; cumulative):")
    for fn, what in SPLIT:
        if fn in cum:
            print(f"  {what:<36} {cum[fn]:6.2f} s")


BASELINE_BOOT = """
import sys, time, numpy as np
from raddiag.evaluation.bootstrap import bootstrap_per_class
from raddiag.evaluation.engine import FPR_GRID, _group_masks
from raddiag.data.labels import LabelSpace
from raddiag.cli import main
z = np.load(sys.argv[1]); s, y = z["scores"], z["labels"].astype(bool)
thr = np.load(sys.argv[2]); space = LabelSpace.load(sys.argv[3])
masks = {g: m for g, m in _group_masks(space).items() if g != "normal"}
t0 = time.perf_counter()
bootstrap_per_class(s, y, thr, n_boot=int(sys.argv[4]), seed=0, fpr_grid=FPR_GRID, roc_groups=masks)
print(time.perf_counter() - t0)
"""


def bootstrap_side_by_side(d: Path, s, y, thr, space_path: Path, n_boot: int, baseline: str) -> None:
    from raddiag.data.labels import LabelSpace
    from raddiag.evaluation.bootstrap import bootstrap_per_class
    from raddiag.evaluation.engine import FPR_GRID, _group_masks

    np.save(d / "thr.npy", thr)
    base_src = d / "baseline"
    base_src.mkdir()
    arch = subprocess.run(["git", "-C", str(ROOT), "archive", baseline, "src"], capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(base_src)], input=arch.stdout, check=True)
    env = dict(os.environ, PYTHONPATH=str(base_src / "src"))
    r = subprocess.run([sys.executable, "-c", BASELINE_BOOT, str(d / "test.npz"), str(d / "thr.npy"),
                        str(space_path), str(n_boot)], env=env, capture_output=True, text=True)
    if r.returncode:
        raise RuntimeError(r.stderr[-2000:])
    t_old = float(r.stdout.strip().splitlines()[-1])
    masks = {g: m for g, m in _group_masks(LabelSpace.load(space_path)).items() if g != "normal"}
    t0 = time.perf_counter()
    bootstrap_per_class(s, y, thr, n_boot=n_boot, seed=0, fpr_grid=FPR_GRID, roc_groups=masks)
    t_new = time.perf_counter() - t0
    print(f"bootstrap, {n_boot} resamples, every metric + ROC bands (as `raddiag metrics` runs it):")
    print(f"  today ({baseline}): {t_old:.1f} s   this checkout: {t_new:.1f} s   speed-up {t_old / t_new:.1f}x")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=7772)
    ap.add_argument("--c", type=int, default=5569)
    ap.add_argument("--boot", type=int, default=1000, help="bootstrap resamples (0: skip the bootstrap part)")
    ap.add_argument("--baseline", default="6e5cadc", help="git revision timed as 'today' for the bootstrap")
    ap.add_argument("--skip-authors", action="store_true")
    a = ap.parse_args()
    from raddiag.data.labels import LabelSpace
    from raddiag.evaluation.metrics import per_class_metrics

    (tl, ty), (vl, vy), counts = make_inputs(a.n, a.c, a.n // 4)
    print(f"{a.n} test + {a.n // 4} validation cases x {a.c} classes; test positives per class: "
          f"max {ty.sum(0).max()}, median {int(np.median(ty.sum(0)))}, {int((ty.sum(0) == 0).sum())} classes "
          f"without; {os.cpu_count()} CPUs")
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        np.savez(d / "test.npz", scores=expit(tl), labels=ty.astype(np.uint8))
        np.savez(d / "val.npz", scores=expit(vl), labels=vy.astype(np.uint8))
        space = LabelSpace(names=[f"class {j}" for j in range(a.c)], counts=list(counts))
        space.save(d / "labels.json")
        args = ["metrics", "--pred", str(d / "test.npz"), "--val", str(d / "val.npz"), "--labels",
                str(d / "labels.json"), "--out", str(d / "eval"), "--n-boot", "0"]
        t_ours, _ = run_cli(args)
        print(f"raddiag metrics --n-boot 0 (whole call):  {t_ours:6.2f} s")
        if not a.skip_authors:
            t0 = time.perf_counter()
            ref = authors_eval(tl, ty, vl, vy)
            t_ref = time.perf_counter() - t0
            print(f"authors' evaluation loop (scikit-learn): {t_ref:6.2f} s")
            print(f"speed-up: {t_ref / t_ours:.1f}x (goal >= 20x)")
            s = expit(tl)
            ours = per_class_metrics(s, ty, ref["thr"])
            from raddiag.evaluation.metrics import best_f1_thresholds

            vs = expit(vl)
            thr = best_f1_thresholds(vs, vy)
            scored = ~np.isnan(ref["auc"])                        # the loop sets thresholds only for these
            same = (thr == ref["thr"])[scored]
            thr, ref_thr = thr[scored], ref["thr"][scored]
            vs, vy_s = vs[:, scored], vy[:, scored]

            def f1_at(t, cols):                                   # exact F1 from counts on validation
                p = vs[:, cols] >= t[cols]
                tp = np.count_nonzero(p & vy_s[:, cols], axis=0)
                return 2 * tp / (np.count_nonzero(p, axis=0) + np.count_nonzero(vy_s[:, cols], axis=0))

            gap = np.max(np.abs(f1_at(thr, ~same) - f1_at(ref_thr, ~same)), initial=0.0)
            print(f"validation thresholds identical to scikit-learn's for {same.mean():.2%} of scored classes; "
                  f"elsewhere the validation F1 at both differs by at most {gap:.1e} (F1 ties)")
            worst = 0.0
            for k in ("auc", "ap", "f1", "mcc", "acc", "recall_at_fpr_0.01", "recall_at_fpr_0.05", "recall_at_fpr_0.1"):
                both = ~np.isnan(ref[k])
                assert (np.isnan(ours[k]) == ~both).all(), k
                diff = float(np.max(np.abs(ours[k][both] - ref[k][both])))
                worst = max(worst, diff)
                print(f"  {k:<20} max |raddiag - scikit-learn| = {diff:.1e}")
            print(f"largest difference: {worst:.1e} (goal <= 1e-9)")
        t_prof, prof = run_cli(args, profile=True)
        print_split(prof, t_prof)
        if a.boot:
            from raddiag.evaluation.metrics import best_f1_thresholds

            thr = best_f1_thresholds(expit(vl), vy)
            bootstrap_side_by_side(d, expit(tl), ty, thr, d / "labels.json", a.boot, a.baseline)


if __name__ == "__main__":
    main()

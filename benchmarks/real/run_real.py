"""The paper's experiments in miniature, on the real public data in ../shared/data.

    .venv/bin/python benchmarks/real/run_real.py [--data ../shared/data] [--work /tmp/raddiag-real]
    .venv/bin/python benchmarks/real/run_real.py --quick      # the whole pipeline on a tiny cap, minutes

1. Pre-training mix that shares the target's modality (the paper's situation: RP3D holds chest
   X-rays, its external sets include chest X-ray ones): COVID-19 chest X-ray/CT (multi-scan cases
   by patient), brain tumour MRI (2D), AdrenalMNIST3D (3D CT) and ``--target-share`` of the
   paediatric chest X-ray pneumonia set's *training* patients, relabelled coarsely (``Pneumonia``,
   J18: the target's bacterial / viral distinction is never shown). The rest of that set is the
   held-out target: its other training patients (the fine-tuning pool), its val and its official
   test split, patient-disjoint from everything in pre-training, one case per image (as patient
   cases the label can be read off the number of images). ``--target-share 0`` gives the
   external-only mix (the COVID-19 chest X-rays are then the only shared modality).
2. Ablation as Table 2 on the pre-training mix: the paper's baselines (a scan-level classifier
   trained on single scans, its probabilities pooled per case by max / mean / a random scan: one
   training, three poolings) vs the fusion module vs fusion + knowledge, with bootstrap CIs,
   overall and on the multi-scan COVID-19 cases.
3. Transfer as Tables 3-4 on the target: zero-shot, then from scratch, linear probe (frozen
   encoder, new head) and fine-tuned (new head, encoder at ``--encoder-lr-scale`` times the head's
   learning rate; single-image target, so the fusion module is dropped as in the paper) on 1/10/30/100 % of the fine-tuning pool, test AUC with CIs,
   and a plain verdict on whether pre-training helps.

Geometry: the ``tiny`` model at the largest input size of ``--sizes`` whose estimated run time
fits ``--budget-min`` on this machine: a few training and inference steps are timed per size and
multiplied by the protocol's scan passes (printed with the reason; ``--size`` forces one).
Writes ``RESULTS.md`` (``--quick``: into the work folder) and one report per evaluation.
Skips with a message when the data folder is absent.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import shutil
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
PRETRAIN_SETS = [("covid-chestxray", "covid-chestxray"), ("brain-tumor-mri", "brain-tumor-mri"),
                 ("adrenalmnist3d", "medmnist3d")]
TARGET = ("chest-xray-pneumonia", "chest-xray-pneumonia")
COARSE = ("Pneumonia", "J18")            # the target's pre-training share: pneumonia, type unsaid
IMAGE_KINDS = {"bacteria": ("Bacterial pneumonia", "J15"), "virus": ("Viral pneumonia", "J12")}
KEYS = ["auc", "ap", "f1", "mcc", "recall_at_fpr_0.05"]
HEADS = ["AUC", "AP", "F1", "MCC", "R@0.05"]
PROTOCOLS = ("scratch", "probe", "finetune")
PROTOCOL_NAMES = {"scratch": "from scratch", "probe": "linear probe (frozen pre-trained encoder)",
                  "finetune": "fine-tuned from pre-trained"}
OVERHEAD = 1.5        # data loading, validation bookkeeping, evaluation reports: over pure model time


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# -- data ---------------------------------------------------------------------------------
def cap_splits(cases, caps: dict, seed: int):
    """At most ``caps[split]`` cases per split (seeded; an unsplit set, COVID-19, counts as train)."""
    rng = np.random.default_rng(seed)
    out = []
    for split in sorted({c.split for c in cases}, key=str):
        part = [c for c in cases if c.split == split]
        cap = caps.get(split or "train")
        if cap is not None and len(part) > cap:
            part = [part[i] for i in sorted(rng.choice(len(part), cap, replace=False))]
        out += part
    return out


def load_set(data: Path, folder: str, fmt: str, caps: dict, seed: int):
    """Cases of one public set with unique ids, each split capped (seeded) by ``caps``."""
    from raddiag.data.adapters import load_source

    res = load_source(fmt, data / folder)
    for c in res.cases:
        c.id, c.patient = f"{folder}/{c.id}", f"{folder}/{c.patient or c.id}"
        c.meta["source"] = folder
    return cap_splits(res.cases, caps, seed), res.skipped


def per_image(cases):
    """One case per image, labelled from its own file name. The set labels images; as patient cases
    the label can be read off the number of images (normal patients have ~1, patients with both
    bacterial and viral images 3-5), which no diagnosis should rest on."""
    from raddiag.data.case import NORMAL, Case

    out = []
    for c in cases:
        for sc in c.scans:
            kind = next((k for k in IMAGE_KINDS if f"_{k}_" in sc.id.lower()), None)
            labels, codes = ([IMAGE_KINDS[kind][0]], [IMAGE_KINDS[kind][1]]) if kind else ([NORMAL], [])
            out.append(Case(id=f"{c.id}/{sc.id}", scans=[sc], labels=labels, icd10=codes, split=c.split,
                            anatomy=c.anatomy, patient=c.patient, meta=dict(c.meta)))
    return out


def split_target(cases, share: float, cap_pre: int | None, seed: int):
    """Move the images of ``share`` of the target's training patients (at most ``cap_pre`` images)
    into pre-training, relabelled coarsely; return (moved, kept)."""
    rng = np.random.default_rng(seed + 1)
    patients = sorted({c.patient for c in cases if c.split == "train"})
    chosen = {patients[i] for i in rng.permutation(len(patients))[: int(round(share * len(patients)))]}
    moved = [c for c in cases if c.patient in chosen]
    kept = [c for c in cases if c.patient not in chosen]
    moved = cap_splits(moved, {"train": cap_pre}, seed)
    for c in moved:
        if not c.is_normal:
            c.labels, c.icd10 = [COARSE[0]], [COARSE[1]]
        c.meta["role"] = "pre-training share of the target set"
    return moved, kept


def prepare(out: Path, cases, skipped, args) -> Path:
    from raddiag.data.store import prepare_cases

    if (out / "meta.json").exists():
        log(f"reusing prepared {out}")
        return out
    rep = prepare_cases(cases, out, size=args.size, depth=args.depth, seed=args.seed, progress=not args.quiet,
                        pre_skipped=skipped)
    log(f"prepared {out.name}: {rep.cases_out} cases, {rep.scans_out} scans, {len(rep.skipped_scans)} skipped scans")
    return out


def scan_counts(cases, max_scans: int = 4) -> dict:
    """{split: (2D scans, 3D scans)} fed to a case model (at most ``max_scans`` per case)."""
    out: dict = {}
    for c in cases:
        split = c.split or "train"          # unsplit sets (COVID-19) are split at preparation, mostly train
        two, three = out.get(split, (0, 0))
        sc = c.scans[:max_scans]
        three_here = sum(bool(s.is_3d) for s in sc)
        out[split] = (two + len(sc) - three_here, three + three_here)
    return out


# -- geometry -----------------------------------------------------------------------------
def time_steps(size: int, depth: int, reps: int = 3) -> dict:
    """Seconds per scan of a tiny-model training step and inference, 2D and 3D, at this size."""
    import torch

    from raddiag.config import preset
    from raddiag.models import build_model

    cfg = preset("tiny", [f"data.size={size}", f"data.depth={depth}"])
    torch.manual_seed(0)
    model = build_model(cfg, 16)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    B = cfg.train.batch_size
    out = {}
    for kind, d in (("2d", 1), ("3d", depth)):
        x = torch.rand(B, 1, 1, depth, size, size)
        sm, dm = torch.ones(B, 1, dtype=torch.bool), torch.zeros(B, 1, depth, dtype=torch.bool)
        dm[..., :d] = True
        mod = torch.ones(B, 1, dtype=torch.long)
        for phase in ("train", "eval"):
            model.train(phase == "train")
            ts = []
            for _ in range(reps + 1):
                t = time.perf_counter()
                if phase == "train":
                    loss = model(x, sm, dm, mod).float().mean()
                    loss.backward()
                    opt.step()
                    opt.zero_grad()
                else:
                    with torch.no_grad():
                        model(x, sm, dm, mod)
                ts.append(time.perf_counter() - t)
            out[f"{phase}_{kind}"] = float(np.median(ts[1:])) / B
    return out


def estimate_seconds(t: dict, pre: dict, tgt: dict, args) -> float:
    """The protocol's scan passes times the timed per-scan costs (plus OVERHEAD)."""
    def cost(counts, phase):
        return counts[0] * t[f"{phase}_2d"] + counts[1] * t[f"{phase}_3d"]

    z = (0, 0)
    pre_tr, pre_val, pre_te = pre.get("train", z), pre.get("val", z), pre.get("test", z)
    s = 3 * args.epochs * (cost(pre_tr, "train") + cost(pre_val, "eval"))          # 3 pre-training runs
    s += 3 * cost(pre_val, "eval") + 5 * (cost(pre_val, "eval") + cost(pre_te, "eval"))  # thresholds, 5 evals
    tg_tr, tg_val, tg_te = tgt.get("train", z), tgt.get("val", z), tgt.get("test", z)
    s += 3 * cost(tg_te, "eval")                                                      # zero-shot
    for f in args.fraction_list:
        n = max(1, f * (tg_tr[0] + tg_tr[1]))
        ep = finetune_epochs(f, n, args)
        part = (f * tg_tr[0], f * tg_tr[1])
        for proto in PROTOCOLS:
            train = cost(part, "eval" if proto == "probe" else "train")
            s += ep * (train + cost(tg_val, "eval")) + 2 * cost(tg_val, "eval") + cost(tg_te, "eval")
    return OVERHEAD * s


def finetune_epochs(fraction: float, n_scans: float, args) -> int:
    """``--finetune-epochs``, raised so that every fraction takes at least ``--min-finetune-steps``
    optimiser steps (1 % of the pool is a handful of batches per epoch)."""
    per_epoch = max(1, math.ceil(n_scans / 8))
    return max(args.finetune_epochs, math.ceil(args.min_finetune_steps / per_epoch))


def choose_geometry(pre_cases, tgt_cases, args) -> str:
    pre, tgt = scan_counts(pre_cases), scan_counts(tgt_cases)
    knowledge = 0 if args.knowledge_cached else 60 + 1.0 * args.knowledge_steps   # README: 200 steps ~ 4 min
    sizes = [args.size] if args.size else args.size_list
    est = {}
    for size in sizes:
        est[size] = estimate_seconds(time_steps(size, args.depth), pre, tgt, args) + knowledge + args.prep_s
        log(f"geometry {size} x {size} x {args.depth}: estimated {est[size] / 60:.1f} min")
    fits = [s for s in sizes if est[s] <= 60 * args.budget_min]
    args.size = max(fits) if fits else min(sizes)
    why = (f"input {args.size} x {args.size} px, depth {args.depth}: "
           + ("the only candidate" if len(sizes) == 1 else
              f"the largest of {sizes} whose estimate fits --budget-min {args.budget_min:g}"
              if fits else f"none of {sizes} fits --budget-min {args.budget_min:g}; the smallest")
           + f" (estimated {est[args.size] / 60:.0f} min from timed steps on this machine; estimates: "
           + ", ".join(f"{s} px {v / 60:.0f} min" for s, v in est.items()) + ")")
    log(why)
    args.estimate_s = est[args.size]
    return why


# -- runs and evaluation ------------------------------------------------------------------
def train_run(base: Path, data_dir: Path, name: str, overrides: list[str], args, encoder=None) -> Path:
    from raddiag.config import preset
    from raddiag.training import train

    run = base / "runs" / name
    reused = (run / "done").exists()
    args.trainings = getattr(args, "trainings", []) + [reused]     # the header says how many were reused
    if reused:
        log(f"reusing run {run}")
        return run
    cfg = preset("tiny", [f"data.size={args.size}", f"data.depth={args.depth}", f"train.epochs={args.epochs}",
                          f"train.seed={args.seed}", *overrides])
    t = time.time()
    train(data_dir, run, cfg, knowledge_encoder=encoder, progress=not args.quiet,
          resume=(run / "checkpoints" / "last.pt").exists())
    (run / "done").write_text(f"{time.time() - t:.0f}\n")
    log(f"trained {name} in {time.time() - t:.0f} s")
    return run


def predict(run: Path, data_dir: Path, split: str, pooling: str | None, args):
    from raddiag.data.dataset import CaseDataset
    from raddiag.inference import predict_dataset
    from raddiag.models import load_model

    model, cfg, labels = load_model(run)
    if pooling:
        model.set_pooling(pooling)
    ds = CaseDataset(str(data_dir), split, labels, cfg.data)
    n_scans = [len(r["scans"]) for r in ds.records]
    return predict_dataset(model, ds, batch_size=16, progress=not args.quiet, desc=f"{run.name} {split}"), labels, n_scans


def evaluate(run: Path, data_dir: Path, outs: dict, args, pooling: str | None = None) -> dict:
    """Predict test and val once; evaluate each named subset of test cases (``outs``: name ->
    (report folder, case filter or None)) with thresholds chosen on val."""
    from raddiag.evaluation import evaluate_predictions

    test, labels, n_scans = predict(run, data_dir, "test", pooling, args)
    val, _, _ = predict(run, data_dir, "val", pooling, args)
    results = {}
    for name, (out, keep) in outs.items():
        rows = np.array([i for i in range(len(test.case_ids)) if keep is None or keep(test.case_ids[i], n_scans[i])])
        res = evaluate_predictions(test.scores[rows], test.labels[rows], labels, val_scores=val.scores,
                                   val_labels=val.labels, anatomy=[test.anatomy[i] for i in rows],
                                   case_ids=[test.case_ids[i] for i in rows], out_dir=out, n_boot=args.n_boot)
        res["metrics"]["n_cases"] = int(len(rows))
        results[name] = res["metrics"]
    return results


def pct(e) -> str:
    if not e or e.get("value") is None:
        return "n/a"
    v = f"{100 * e['value']:.1f}"
    if e.get("ci_low") is not None:
        v += f" [{100 * e['ci_low']:.1f}, {100 * e['ci_high']:.1f}]"
    return v


def ablation_table(results: dict, subset: str) -> str:
    lines = ["| model | group | classes | " + " | ".join(HEADS) + " |", "|---|---|---|" + "---|" * len(HEADS)]
    for name, metrics in results.items():
        m = metrics[subset]
        for group in ("all", "head", "medium", "tail"):
            g = m.get(group)
            if not g or g["auc"].get("value") is None:
                continue
            lines.append(f"| {name} | {group} | {g['auc'].get('n_classes', '')} | "
                         + " | ".join(pct(g.get(k)) for k in KEYS) + " |")
    return "\n".join(lines)


def compare(a: dict, b: dict) -> str:
    """'better' / 'worse' when the 95 % CIs of ``a`` and ``b`` are disjoint, else 'no clear difference'."""
    if a.get("value") is None or b.get("value") is None:
        return "not evaluable"
    if a.get("ci_low") is None or b.get("ci_low") is None:
        return "no CI"
    if a["ci_low"] > b["ci_high"]:
        return "better"
    if a["ci_high"] < b["ci_low"]:
        return "worse"
    return "no clear difference"


def verdict(transfer: dict, fractions: list[float]) -> list[str]:
    """Plain statements, read off the table (CIs disjoint or not)."""
    lines = []
    for proto in ("finetune", "probe"):
        parts = []
        for f in fractions:
            a, b = transfer[(proto, f)], transfer[("scratch", f)]
            parts.append(f"{100 * f:g} %: {pct(a)} vs {pct(b)} ({compare(a, b)})")
        lines.append(f"- {PROTOCOL_NAMES[proto]} vs from scratch, test AUC: " + "; ".join(parts) + ".")
    helps = [f for f in fractions if compare(transfer[("finetune", f)], transfer[("scratch", f)]) == "better"]
    hurts = [f for f in fractions if compare(transfer[("finetune", f)], transfer[("scratch", f)]) == "worse"]
    if helps and not hurts:
        s = f"Pre-training helps here at {', '.join(f'{100 * f:g} %' for f in helps)} of the target data"
    elif hurts and not helps:
        s = f"Pre-training hurts here at {', '.join(f'{100 * f:g} %' for f in hurts)} of the target data"
    elif helps:
        s = (f"Mixed: pre-training helps at {', '.join(f'{100 * f:g} %' for f in helps)} and hurts at "
             f"{', '.join(f'{100 * f:g} %' for f in hurts)}")
    else:
        s = "Pre-training makes no difference beyond the confidence intervals at any fraction"
    lines.append(f"- **Verdict:** {s} (fine-tuned vs from scratch; 'better'/'worse' = disjoint 95 % CIs).")
    return lines


# -- main -----------------------------------------------------------------------------------
def parse(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
    p.add_argument("--work", default=None, help="work folder (default /tmp/raddiag-real, --quick: /tmp/raddiag-real-quick)")
    p.add_argument("--out", default=None, help="RESULTS.md to write (default benchmarks/real/RESULTS.md; "
                                               "--quick: in the work folder)")
    p.add_argument("--quick", action="store_true", help="the whole pipeline on a tiny cap (a few minutes)")
    p.add_argument("--budget-min", type=float, default=45.0, help="run-time budget that picks the geometry")
    p.add_argument("--sizes", default="64,96,128,160", help="candidate input sizes, px")
    p.add_argument("--size", type=int, default=None, help="force this input size (skips the choice)")
    p.add_argument("--depth", type=int, default=8)
    p.add_argument("--epochs", type=int, default=6, help="pre-training epochs")
    p.add_argument("--finetune-epochs", type=int, default=4)
    p.add_argument("--min-finetune-steps", type=int, default=20,
                   help="small fractions train more epochs, so that each run takes at least this many steps")
    p.add_argument("--encoder-lr-scale", type=float, default=0.1,
                   help="fine-tuned: encoder + fusion learning rate = this x the new head's")
    p.add_argument("--max-train-per-set", type=int, default=600, help="training cases per public set (seeded)")
    p.add_argument("--max-val-per-set", type=int, default=150, help="validation cases per set (seeded)")
    p.add_argument("--max-test-per-set", type=int, default=None, help="test cases per set (default: all)")
    p.add_argument("--target-share", type=float, default=0.5,
                   help="share of the target's training patients moved into pre-training (coarse labels)")
    p.add_argument("--fractions", default="0.01,0.1,0.3,1.0")
    p.add_argument("--knowledge-steps", type=int, default=200)
    p.add_argument("--n-boot", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    p.add_argument("--prep-s", type=float, default=90.0, help="allowance for data preparation in the estimate, s")
    p.add_argument("--knowledge-encoder", help="a fine-tuned knowledge encoder folder to use "
                   "(default: fine-tune one with --knowledge-steps, cached)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    args = p.parse_args(argv)
    if args.quick:
        args.max_train_per_set, args.max_val_per_set, args.max_test_per_set = 24, 12, 24
        # 64 px: at 32 px the tiny ResNet's last map is 1 x 1, and a batch of one 2D scan cannot train BatchNorm
        args.sizes, args.depth, args.epochs, args.finetune_epochs = "64", 4, 1, 1
        args.min_finetune_steps, args.knowledge_steps, args.n_boot, args.prep_s = 2, 2, 50, 10.0
    args.work = Path(args.work or ("/tmp/raddiag-real-quick" if args.quick else "/tmp/raddiag-real"))
    args.out = Path(args.out) if args.out else (args.work / "RESULTS.md" if args.quick
                                                else ROOT / "benchmarks" / "real" / "RESULTS.md")
    args.size_list = [int(s) for s in args.sizes.split(",")]
    args.fraction_list = [float(f) for f in args.fractions.split(",")]
    return args


def knowledge_encoder_path(args) -> Path:
    from raddiag.knowledge.train import cached_encoder_dir

    return Path(args.knowledge_encoder) if args.knowledge_encoder else cached_encoder_dir(args.knowledge_steps, args.seed)


def get_knowledge_encoder(args) -> Path:
    from raddiag.knowledge.train import train_knowledge_encoder

    enc = knowledge_encoder_path(args)
    if args.knowledge_encoder and not (enc / "raddiag_text_encoder.json").exists():
        raise FileNotFoundError(f"{enc}: not a finished knowledge encoder")
    if not (enc / "config.json").exists():
        log("fine-tuning the knowledge encoder")
        train_knowledge_encoder(enc, steps=args.knowledge_steps, seed=args.seed, progress=not args.quiet,
                                evaluate=not args.quick)   # --quick: no retrieval figures before/after
    return enc


def load_cases(args):
    """The pre-training mix (public sets + ``--target-share`` of the target's training patients,
    coarse labels) and the held-out target, one case per image, capped per split."""
    data = Path(args.data)
    caps = {"train": args.max_train_per_set, "val": args.max_val_per_set, "test": args.max_test_per_set}
    pre_cases, pre_skipped = [], []
    for folder, fmt in PRETRAIN_SETS:
        c, s = load_set(data, folder, fmt, caps, args.seed)
        log(f"{folder}: {len(c)} cases")
        pre_cases, pre_skipped = pre_cases + c, pre_skipped + s
    tgt_all, tgt_skipped = load_set(data, *TARGET, {}, args.seed)
    moved, tgt_cases = split_target(per_image(tgt_all), args.target_share, args.max_train_per_set, args.seed)
    tgt_cases = cap_splits(tgt_cases, caps, args.seed + 2)
    log(f"target {TARGET[0]} (one case per image): {len(moved)} images of {len({c.patient for c in moved})} "
        f"training patients moved into pre-training (coarse labels), "
        f"{sum(c.split == 'train' for c in tgt_cases)} in the fine-tuning pool, "
        f"{sum(c.split == 'val' for c in tgt_cases)} val, {sum(c.split == 'test' for c in tgt_cases)} test")
    return (pre_cases + moved, pre_skipped), (tgt_cases, tgt_skipped), moved, caps


def work_folder(args, caps) -> Path:
    """``WORK/s{size}d{depth}-{hash of the settings}``: a rerun with the same settings reuses its runs."""
    tag = hashlib.sha1(json.dumps([args.size, args.depth, caps, args.target_share, args.seed, args.epochs,
                                   args.finetune_epochs, args.min_finetune_steps, args.encoder_lr_scale,
                                   args.knowledge_steps]).encode()).hexdigest()[:8]
    base = args.work / f"s{args.size}d{args.depth}-{tag}"
    base.mkdir(parents=True, exist_ok=True)
    return base


def pretrain_and_ablate(base: Path, pre: Path, args):
    """Table 2: the scan-level baseline (pooled three ways), fusion, fusion + knowledge."""
    multi = lambda cid, n: cid.startswith("covid-chestxray/") and n > 1
    trainings = [("scan-level", ["model.fusion=max", "model.head=mlp"], None),
                 ("fusion", ["model.fusion=transformer", "model.head=mlp"], None),
                 ("fusion-knowledge", ["model.fusion=transformer", "model.head=knowledge"], get_knowledge_encoder)]
    runs, timings = {}, {}
    for name, ov, encoder in trainings:
        runs[name] = train_run(base, pre, f"pre-{name}", ov, args, encoder(args) if encoder else None)
        timings[name] = float((runs[name] / "done").read_text())
    variants = [("max pooling (scan-level baseline)", "scan-level", "max"),
                ("mean pooling (scan-level baseline)", "scan-level", "mean"),
                ("random scan (scan-level baseline)", "scan-level", "random"),
                ("fusion module", "fusion", None), ("fusion + knowledge", "fusion-knowledge", None)]
    ablation = {}
    for i, (label, run, pooling) in enumerate(variants):
        ablation[label] = evaluate(runs[run], pre, {
            "overall": (base / "reports" / f"ablation-{i}-overall", None),
            "covid multi-scan": (base / "reports" / f"ablation-{i}-covid", multi)}, args, pooling)
    return runs, ablation, timings


def zero_shot(best: Path, held: Path, base: Path, args):
    """Table 3, plus text mode with prompt sets (the default) against single names, paired."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from zeroshot_prompts import paired_rows

    from raddiag.transfer.zeroshot import zeroshot

    log("zero-shot on the held-out set")
    zs = zeroshot(best, held, base / "reports" / "zeroshot", progress=not args.quiet)
    single = base / "reports" / "zeroshot-single-name"
    zeroshot(best, held, single, modes=("text",), prompts=False, progress=not args.quiet)
    preds = {"single name": np.load(single / "text" / "predictions.npz", allow_pickle=True),
             "prompt set": np.load(base / "reports" / "zeroshot" / "text" / "predictions.npz", allow_pickle=True)}
    return zs, paired_rows(preds, args.n_boot, args.seed)


def transfer_runs(best: Path, held: Path, base: Path, pool_scans: int, args):
    """Table 4: from scratch, linear probe and fine-tuned at each fraction of the target's pool."""
    from raddiag.transfer.finetune import finetune

    transfer, ft_info = {}, {}
    for f in args.fraction_list:
        epochs = finetune_epochs(f, f * pool_scans, args)
        for proto in PROTOCOLS:
            name = f"ft-{proto}-{f:g}"
            out = base / "runs" / name
            args.trainings = getattr(args, "trainings", []) + [(out / "done").exists()]
            if not (out / "done").exists():
                if out.exists():
                    shutil.rmtree(out)
                t = time.time()
                finetune(best, held, out, fraction=f, scratch=proto == "scratch", seed=args.seed, epochs=epochs,
                         progress=not args.quiet, linear_probe=proto == "probe",
                         encoder_lr_scale=args.encoder_lr_scale if proto == "finetune" else None)
                (out / "done").write_text(f"{time.time() - t:.0f}\n")
            m = evaluate(out, held, {"all": (base / "reports" / name, None)}, args)
            transfer[(proto, f)] = m["all"]["all"]["auc"]
            ft_info[(proto, f)] = json.loads((out / "finetune.json").read_text())
    return transfer, ft_info


def prompt_table(rows: list[dict]) -> list[str]:
    cell = lambda v, sign="": f"{100 * v[0]:{sign}.1f} [{100 * v[1]:{sign}.1f}, {100 * v[2]:{sign}.1f}]"
    return ["| text embedding | " + " | ".join(f"macro {r['metric']}" for r in rows) + " |",
            "|---|" + "---|" * len(rows),
            *[f"| {label} | " + " | ".join(cell(r[key], sign) for r in rows) + " |"
              for label, key, sign in (("single name (`--single-name`)", "single name", ""),
                                       ("prompt set (default)", "prompt set", ""),
                                       ("difference", "difference", "+"))]]


def reused_note(trainings: list[bool]) -> str:
    """How many of this call's trainings were reused from an earlier call into the same --work."""
    n = sum(trainings)
    if not n:
        return f"all {len(trainings)} trainings run by this call"
    return f"{n} of {len(trainings)} trainings reused from an earlier run of the same settings in --work"


def results_md(r: dict, args) -> list[str]:
    """RESULTS.md from the collected results ``r``."""
    fr, labels, moved, tgt_cases = args.fraction_list, r["labels"], r["moved"], r["tgt_cases"]
    groups = dict(zip(*np.unique(labels.groups, return_counts=True)))
    cmd = "--quick" if args.quick else (f"--size {args.size} --epochs {args.epochs} "
                                        f"--finetune-epochs {args.finetune_epochs} --max-train-per-set "
                                        f"{args.max_train_per_set} --target-share {args.target_share:g} "
                                        f"--encoder-lr-scale {args.encoder_lr_scale:g}")
    ab, transfer, ft_info = r["ablation"], r["transfer"], r["ft_info"]
    return [
        "# Real-data benchmark (the paper's experiments in miniature)", "",
        f"Command: `.venv/bin/python benchmarks/real/run_real.py {cmd}` ({r['seconds'] / 60:.0f} min on this machine, "
        f"{reused_note(getattr(args, 'trainings', []))}; each training's own time at the end). "
        f"Geometry: {r['geometry']}. Preset `tiny`.",
        f"Pre-training mix: COVID-19 chest X-ray/CT + brain tumour MRI + AdrenalMNIST3D + {len(moved)} images of "
        f"{len({c.patient for c in moved})} training patients of the paediatric chest X-ray pneumonia set, "
        f"labelled only `Pneumonia`/`Normal` ({len(labels)} disorder classes: {groups.get('head', 0)} head, "
        f"{groups.get('medium', 0)} medium, {groups.get('tail', 0)} tail by training counts; at most "
        f"{args.max_train_per_set} training cases per set). Target: the other patients of that set, one case "
        f"per image labelled Normal / Bacterial / Viral pneumonia (fine-tuning pool "
        f"{sum(c.split == 'train' for c in tgt_cases)} images, official test split "
        f"{sum(c.split == 'test' for c in tgt_cases)} images), patient-disjoint from pre-training. Per image, "
        "because as patient cases the label can be read off the number of images (normal patients have about "
        "1, patients with both bacterial and viral images 3-5): a shortcut, not a diagnosis.",
        "Percent, test split, macro over classes with both positives and negatives; 95 % bootstrap CI "
        f"({args.n_boot:,} case resamples; the guarded logit interval, "
        "README 'Evaluation'); F1/MCC at thresholds chosen on validation.", "",
        "## Ablation (Table 2): overall", "",
        "The three baselines are one scan-level classifier (trained on single scans, each with its case's "
        "labels) whose per-scan probabilities are pooled per case by max, mean or one random scan.", "",
        ablation_table(ab, "overall"), "",
        f"## Ablation (Table 2): multi-scan COVID-19 cases ({ab['fusion module']['covid multi-scan']['n_cases']} "
        "test cases)", "", ablation_table(ab, "covid multi-scan"), "",
        "## Zero-shot on the held-out set (Table 3)", "", "```", r["format_zs"], "```", "",
        "## Zero-shot text mode: prompt sets vs single names", "",
        "Text mode scores each target class through its label embedding. A class the run was not trained on "
        "is embedded as the mean of its prompt set (its name, the name on each of the target's modalities, "
        "synonyms and ICD-10-CM description from the knowledge base) or by its name alone (`--single-name`); "
        "trained classes keep their trained embeddings. Paired case bootstrap (one draw for both).", "",
        *prompt_table(r["prompt_rows"]), "",
        "## Transfer to the held-out set (Table 4): test macro AUC", "",
        f"New classification layer in every run; single-image target, so the pre-trained visual encoder is "
        f"inherited and the fusion module dropped (paper Section 2.4). Linear probe: the encoder frozen. "
        f"Fine-tuned: the encoder at {args.encoder_lr_scale:g} x the head's learning rate. Epochs per fraction: "
        + ", ".join(f"{100 * f:g} %: {ft_info[('scratch', f)]['train_cases']} images, "
                    f"{finetune_epochs(f, f * r['pool_scans'], args)} epochs" for f in fr) + ".", "",
        "| protocol | " + " | ".join(f"{100 * f:g} %" for f in fr) + " |", "|---|" + "---|" * len(fr),
        *[f"| {PROTOCOL_NAMES[p]} | " + " | ".join(pct(transfer[(p, f)]) for f in fr) + " |" for p in PROTOCOLS],
        "", "## Does pre-training help?", "", *verdict(transfer, fr), "",
        "Training times (s): " + ", ".join(f"{k}: {v:.0f}" for k, v in r["timings"].items())
        + "; fine-tuning: " + ", ".join(f"{k[0]} {100 * k[1]:g} %: {v:.0f}" for k, v in r["ft_seconds"].items()),
    ]


def main(argv=None) -> int:
    args = parse(argv)
    if not Path(args.data).is_dir():
        print(f"skipped: the real data folder {args.data} is absent (pass --data)")
        return 0
    import torch

    from raddiag.run import RunFolder
    from raddiag.transfer.commands import format_results

    torch.set_num_threads(args.threads)
    t0 = time.time()
    (pre_cases, pre_skipped), (tgt_cases, tgt_skipped), moved, caps = load_cases(args)
    args.knowledge_cached = (knowledge_encoder_path(args) / "config.json").exists()
    geometry = choose_geometry(pre_cases, tgt_cases, args)
    base = work_folder(args, caps)
    pre = prepare(base / "pretrain", pre_cases, pre_skipped, args)
    held = prepare(base / "heldout", tgt_cases, tgt_skipped, args)
    runs, ablation, timings = pretrain_and_ablate(base, pre, args)
    best = runs["fusion-knowledge"]
    zs, prompt_rows = zero_shot(best, held, base, args)
    pool_scans = sum(len(c.scans) for c in tgt_cases if c.split == "train")
    transfer, ft_info = transfer_runs(best, held, base, pool_scans, args)
    r = {"ablation": ablation, "transfer": transfer, "ft_info": ft_info, "timings": timings, "moved": moved,
         "tgt_cases": tgt_cases, "labels": RunFolder(best).load_labels(), "geometry": geometry,
         "format_zs": format_results(zs), "prompt_rows": prompt_rows, "pool_scans": pool_scans,
         "seconds": time.time() - t0,
         "ft_seconds": {(p, f): float((base / "runs" / f"ft-{p}-{f:g}" / "done").read_text())
                        for f in args.fraction_list for p in PROTOCOLS}}
    md = results_md(r, args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(md) + "\n")
    (base / "results.json").write_text(json.dumps(
        {"ablation": ablation, "zeroshot": zs, "geometry": geometry, "seconds": r["seconds"], "prompt_sets": prompt_rows,
         "transfer": {f"{p}-{f:g}": v for (p, f), v in transfer.items()}}, indent=1, default=str))
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    sys.exit(main())

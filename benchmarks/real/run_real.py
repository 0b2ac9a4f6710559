"""The paper's experiments in miniature, on the real public data in ../shared/data.

    .venv/bin/python benchmarks/real/run_real.py [--data ../shared/data] [--work /tmp/raddiag-real]

1. A mini RP3D from the public sets: COVID-19 chest X-ray/CT (multi-scan cases by patient),
   brain tumour MRI (2D) and AdrenalMNIST3D (3D CT), labels mapped to disorder names and
   ICD-10-CM categories, head/medium/tail from the training split (the paper's 100/30 cut-offs).
   The paediatric chest X-ray pneumonia set is held out of pre-training for transfer.
2. Ablations as Table 2: max-pooling baseline vs fusion module vs fusion + knowledge
   enhancement, per group with bootstrap CIs, on the multi-scan COVID-19 cases and overall.
3. Transfer as Tables 3-4 on the held-out set: zero-shot (class mapping, normal/abnormal, text),
   and fine-tuning on 1/10/30/100 % of its training split from the pre-trained run vs from scratch.

Reduced input (default 64 x 64 px, depth 8) and the ``tiny`` preset, so that it runs on 2 CPU
cores in about an hour. Writes ``RESULTS.md`` (markdown tables) and one report per evaluation.
Skips with a message when the data folder is absent.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
PRETRAIN_SETS = [("covid-chestxray", "covid-chestxray", {}),
                 ("brain-tumor-mri", "brain-tumor-mri", {}),
                 ("adrenalmnist3d", "medmnist3d", {})]
HELD_OUT = ("chest-xray-pneumonia", "chest-xray-pneumonia", {})
KEYS = ["auc", "ap", "f1", "mcc", "recall_at_fpr_0.05"]
HEADS = ["AUC", "AP", "F1", "MCC", "R@0.05"]


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def load_set(data: Path, folder: str, fmt: str, opts: dict, cap: int | None, seed: int):
    from raddiag.data.adapters import load_source

    res = load_source(fmt, data / folder, **opts)
    cases = res.cases
    for c in cases:  # unique ids across sets
        c.id = f"{folder}/{c.id}"
        c.patient = f"{folder}/{c.patient or c.id}"
        c.meta["source"] = folder
    if cap:
        rng = np.random.default_rng(seed)
        train = [c for c in cases if c.split == "train"]
        if len(train) > cap:
            keep = {c.id for c in (train[i] for i in rng.choice(len(train), cap, replace=False))}
            cases = [c for c in cases if c.split != "train" or c.id in keep]
    return cases, res.skipped


def prepare(work: Path, name: str, sets, data: Path, args) -> Path:
    from raddiag.data.store import prepare_cases

    out = work / name
    if (out / "meta.json").exists():
        log(f"reusing prepared {out}")
        return out
    cases, skipped = [], []
    for folder, fmt, opts in sets:
        c, s = load_set(data, folder, fmt, opts, args.max_train_per_set, args.seed)
        log(f"{folder}: {len(c)} cases")
        cases += c
        skipped += s
    rep = prepare_cases(cases, out, size=args.size, depth=args.depth, seed=args.seed, progress=True,
                        pre_skipped=skipped)
    log(f"prepared {name}: {rep.cases_out} cases, {rep.scans_out} scans, {len(rep.skipped_scans)} skipped scans")
    return out


def train_run(work: Path, data_dir: Path, name: str, overrides: list[str], args, encoder=None) -> Path:
    from raddiag.config import preset
    from raddiag.training import train

    run = work / "runs" / name
    if (run / "model.safetensors").exists() and not (run / "checkpoints" / "last.pt").exists() or \
            (run / "done").exists():
        log(f"reusing run {run}")
        return run
    cfg = preset("tiny", [f"train.epochs={args.epochs}", f"train.seed={args.seed}", *overrides])
    t = time.time()
    train(data_dir, run, cfg, knowledge_encoder=encoder, progress=True, resume=(run / "checkpoints" / "last.pt").exists())
    (run / "done").write_text(f"{time.time() - t:.0f}\n")
    log(f"trained {name} in {time.time() - t:.0f} s")
    return run


def predict(run: Path, data_dir: Path, split: str):
    from raddiag.data.dataset import CaseDataset
    from raddiag.inference import predict_dataset
    from raddiag.models import load_model

    model, cfg, labels = load_model(run)
    ds = CaseDataset(str(data_dir), split, labels, cfg.data)
    n_scans = [len(r["scans"]) for r in ds.records]
    return predict_dataset(model, ds, batch_size=16, progress=True, desc=f"{run.name} {split}"), labels, n_scans


def evaluate(run: Path, data_dir: Path, outs: dict, n_boot: int = 1000) -> dict:
    """Predict test and val once; evaluate each named subset of test cases (``outs``: name ->
    (report folder, case filter or None)) with thresholds chosen on val."""
    from raddiag.evaluation import evaluate_predictions

    test, labels, n_scans = predict(run, data_dir, "test")
    val, _, _ = predict(run, data_dir, "val")
    results = {}
    for name, (out, keep) in outs.items():
        rows = np.array([i for i in range(len(test.case_ids)) if keep is None or keep(test.case_ids[i], n_scans[i])])
        res = evaluate_predictions(test.scores[rows], test.labels[rows], labels, val_scores=val.scores,
                                   val_labels=val.labels, anatomy=[test.anatomy[i] for i in rows],
                                   case_ids=[test.case_ids[i] for i in rows], out_dir=out, n_boot=n_boot)
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
    lines = [f"| model | group | classes | " + " | ".join(HEADS) + " |",
             "|---|---|---|" + "---|" * len(HEADS)]
    for name, metrics in results.items():
        m = metrics[subset]
        for group in ("all", "head", "medium", "tail"):
            g = m.get(group)
            if not g or g["auc"].get("value") is None:
                continue
            lines.append(f"| {name} | {group} | {g['auc'].get('n_classes', '')} | "
                         + " | ".join(pct(g.get(k)) for k in KEYS) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
    p.add_argument("--work", default="/tmp/raddiag-real")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "real" / "RESULTS.md"))
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--depth", type=int, default=8)
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--finetune-epochs", type=int, default=4)
    p.add_argument("--max-train-per-set", type=int, default=2000,
                   help="cap on training cases per public set (seeded), to fit the time budget")
    p.add_argument("--fractions", default="0.01,0.1,0.3,1.0")
    p.add_argument("--knowledge-steps", type=int, default=200)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    p.add_argument("--knowledge-encoder", help="a fine-tuned knowledge encoder folder to use "
                   "(default: fine-tune one with --knowledge-steps, cached)")
    args = p.parse_args(argv)

    data = Path(args.data)
    if not data.is_dir():
        print(f"skipped: the real data folder {data} is absent (pass --data)")
        return 0
    import torch

    torch.set_num_threads(args.threads)
    from raddiag.knowledge.train import cache_dir, train_knowledge_encoder
    from raddiag.run import RunFolder
    from raddiag.transfer.finetune import finetune
    from raddiag.transfer.zeroshot import zeroshot
    from raddiag.transfer.commands import format_results

    t0 = time.time()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    pre = prepare(work, "pretrain", PRETRAIN_SETS, data, args)
    held = prepare(work, "heldout", [HELD_OUT], data, args)

    def knowledge_encoder() -> Path:
        """Resolved only when the knowledge variant is trained (it may be produced meanwhile)."""
        enc = Path(args.knowledge_encoder) if args.knowledge_encoder else \
            cache_dir() / f"knowledge-minilm-s{args.knowledge_steps}-seed{args.seed}"
        if args.knowledge_encoder and not (enc / "raddiag_text_encoder.json").exists():
            raise FileNotFoundError(f"{enc}: not a finished knowledge encoder")
        if not (enc / "config.json").exists():
            log("fine-tuning the knowledge encoder")
            train_knowledge_encoder(enc, steps=args.knowledge_steps, seed=args.seed, progress=True)
        return enc

    variants = {
        "max pooling (baseline)": (["model.fusion=max", "model.head=mlp"], None),
        "fusion module": (["model.fusion=transformer", "model.head=mlp"], None),
        "fusion + knowledge": (["model.fusion=transformer", "model.head=knowledge"], knowledge_encoder),
    }
    ablation, runs = {}, {}
    timings = {}
    for i, (name, (ov, encoder)) in enumerate(variants.items()):
        t = time.time()
        run = train_run(work, pre, f"ablation-{i}", ov, args, encoder() if encoder else None)
        runs[name] = run
        multi = lambda cid, n: cid.startswith("covid-chestxray/") and n > 1
        ablation[name] = evaluate(run, pre, {
            "overall": (work / "reports" / f"ablation-{i}-overall", None),
            "covid multi-scan": (work / "reports" / f"ablation-{i}-covid", multi)})
        timings[name] = time.time() - t
    best = runs["fusion + knowledge"]

    log("zero-shot on the held-out set")
    zs = zeroshot(best, held, work / "reports" / "zeroshot", progress=True)

    fractions = [float(f) for f in args.fractions.split(",")]
    transfer = {}
    for f in fractions:
        for scratch in (False, True):
            name = f"ft-{'scratch' if scratch else 'pretrained'}-{f:g}"
            out = work / "runs" / name
            if not (out / "done").exists():
                if out.exists():
                    import shutil

                    shutil.rmtree(out)
                t = time.time()
                finetune(best, held, out, fraction=f, scratch=scratch, seed=args.seed,
                         epochs=args.finetune_epochs, progress=True)
                (out / "done").write_text(f"{time.time() - t:.0f}\n")
            m = evaluate(out, held, {"all": (work / "reports" / name, None)}, n_boot=200)
            transfer[(f, scratch)] = m["all"]["all"]["auc"]

    labels = RunFolder(best).load_labels()
    groups = dict(zip(*np.unique(labels.groups, return_counts=True)))
    total = time.time() - t0
    md = [
        "# Real-data benchmark (the paper's experiments in miniature)",
        "",
        f"Command: `.venv/bin/python benchmarks/real/run_real.py --size {args.size} --depth {args.depth} "
        f"--epochs {args.epochs} --finetune-epochs {args.finetune_epochs} --max-train-per-set {args.max_train_per_set}` "
        f"({total / 60:.0f} min on this machine). Input {args.size} x {args.size} px, depth {args.depth}, "
        f"preset `tiny`; pre-training on COVID-19 chest X-ray/CT + brain tumour MRI + AdrenalMNIST3D "
        f"({len(labels)} disorder classes: {groups.get('head', 0)} head, {groups.get('medium', 0)} medium, "
        f"{groups.get('tail', 0)} tail by training counts); held out: paediatric chest X-ray pneumonia.",
        "Percent, test split, macro over classes with both positives and negatives; 95 % bootstrap CI "
        "(1,000 case resamples); F1/MCC at thresholds chosen on validation.",
        "",
        "## Ablation (Table 2): overall",
        "", ablation_table(ablation, "overall"), "",
        f"## Ablation (Table 2): multi-scan COVID-19 cases ({ablation['fusion module']['covid multi-scan']['n_cases']} test cases)",
        "", ablation_table(ablation, "covid multi-scan"), "",
        "## Zero-shot on the held-out set (Table 3)", "", "```", format_results(zs), "```", "",
        "## Fine-tuning on the held-out set (Table 4): test AUC", "",
        "| training data | " + " | ".join(f"{100 * f:g} %" for f in fractions) + " |",
        "|---|" + "---|" * len(fractions),
        "| from scratch | " + " | ".join(pct(transfer[(f, True)]) for f in fractions) + " |",
        "| from pre-trained RadDiag | " + " | ".join(pct(transfer[(f, False)]) for f in fractions) + " |",
        "",
        "Training times (s): " + ", ".join(f"{k}: {v:.0f}" for k, v in timings.items()),
    ]
    Path(args.out).write_text("\n".join(md) + "\n")
    (work / "results.json").write_text(json.dumps({"ablation": ablation, "zeroshot": zs,
                                                   "transfer": {f"{k[0]}-{'scratch' if k[1] else 'pretrained'}": v
                                                                for k, v in transfer.items()}}, indent=1))
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    sys.exit(main())

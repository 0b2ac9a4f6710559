"""``raddiag demo``: the main job end to end on an embedded default.

1. generate a synthetic, long-tailed, multi-modal case dataset (2D + 3D scans, real ICD-10-CM codes);
2. fine-tune the knowledge encoder on ICD-10-CM briefly (or reuse a cached one);
3. train a RadDiag of the ``cpu`` preset (64 px, the ResNet-based encoder, the fusion module and the
   knowledge-guided head);
4. evaluate on the test split (thresholds from validation) and write ``report.html`` and ``metrics.json``.
"""
from __future__ import annotations

import json
import os
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Optional

from raddiag.staging import write_json


# The demo trains the `cpu` preset (raddiag.config: the recipe and why); 4,000 cases over 8 epochs
# give each anatomy's test figure 85-290 cases (2,000 cases: 30-150) in under 8 minutes.
DEMO_PRESET = "cpu"
DEMO_CASES = 4000
DEMO_MARK = "demo.json"     # in --out: its run/ is the demo's own, which a rerun replaces


def run_demo(out_dir: str | Path, n_cases: int = DEMO_CASES, seed: int = 0, epochs: Optional[int] = None,
             knowledge_steps: Optional[int] = None, overrides: Optional[list[str]] = None, progress: bool = True) -> dict:
    from raddiag.config import preset
    from raddiag.data.synth import synthesize
    from raddiag.evaluation.run_eval import evaluate_run
    from raddiag.knowledge.train import cached_encoder_dir, train_knowledge_encoder
    from raddiag.training import train

    from raddiag.knowledge.defaults import DEFAULTS

    knowledge_steps = knowledge_steps or DEFAULTS["steps"]
    out = Path(out_dir)
    run_dir = out / "run"
    _claim(out, run_dir)
    clock = _Clock()

    data_dir = out / "data"
    with clock.stage("data"):
        if (data_dir / "meta.json").exists():
            _say(f"[1/4] reusing the generated dataset in {data_dir}")
        else:
            _say(f"[1/4] generating {n_cases} synthetic cases into {data_dir}")
            synthesize(data_dir, n_cases=n_cases, seed=seed, progress=progress)

    enc_dir = cached_encoder_dir(knowledge_steps, seed)
    with clock.stage("knowledge"):
        # train_knowledge_encoder returns at once when enc_dir holds a finished run (and resumes a broken one)
        _say(f"[2/4] knowledge encoder fine-tuned on ICD-10-CM ({knowledge_steps} steps, cached) -> {enc_dir}")
        k = train_knowledge_encoder(enc_dir, steps=knowledge_steps, seed=seed, progress=progress)
        if "before" in k and "after" in k:
            _say("      held-out retrieval  " + "  ".join(
                f"{m} {k['before'][m]:.3f} -> {k['after'][m]:.3f}" for m in ("recall@1", "recall@10", "hierarchy")))

    cfg = preset(DEMO_PRESET, [f"train.seed={seed}", *([f"train.epochs={epochs}"] if epochs else []),
                          *(overrides or [])])
    with clock.stage("train"):
        if run_dir.exists():  # the demo's own output: a rerun trains afresh, swapped in when complete
            _say(f"      replacing the previous demo run in {run_dir}")
        _say(f"[3/4] training a RadDiag of the {DEMO_PRESET} preset ({cfg.model.encoder} encoder, fusion + "
             f"knowledge head, {cfg.train.epochs} epochs) -> {run_dir}")
        train(data_dir, run_dir, cfg, knowledge_encoder=enc_dir, progress=progress, summary=progress,
              overwrite=True)

    with clock.stage("evaluate"):
        _say(f"[4/4] evaluating on the test split -> {out / 'report.html'}")
        metrics = evaluate_run(run_dir, data_dir, "test", out, progress=progress)["metrics"]
    timings = clock.total()
    write_json(out / "timings.json", timings)
    print(headline(metrics))
    print(f"\nreport:  {out / 'report.html'}\nmetrics: {out / 'metrics.json'}\nrun:     {run_dir}"
          f"\ntotal time: {timings['total_s']:.0f} s (CPU {timings['total_cpu_s']:.0f} s, "
          f"{timings['torch_threads']} torch threads)")
    return metrics


def _claim(out: Path, run_dir: Path) -> None:
    """Mark ``out`` as the demo's (``demo.json``), refusing, before any work, an ``out`` whose
    ``run/`` is not the demo's: ``raddiag demo --out .`` in a project folder deleted the user's own
    trained ``run/``. A folder of an earlier demo (its ``timings.json``) is the demo's too."""
    from raddiag.data.errors import OutputExists

    mine = (out / DEMO_MARK).exists() or (out / "timings.json").exists()
    if run_dir.exists() and (not run_dir.is_dir() or any(run_dir.iterdir())) and not mine:
        raise OutputExists(f"{run_dir}: exists and is no run of raddiag demo, which would replace it; choose "
                           "another --out (the demo replaces only its own run)")
    out.mkdir(parents=True, exist_ok=True)
    (out / DEMO_MARK).write_text(json.dumps({"made_by": "raddiag demo", "run": run_dir.name}) + "\n")


class _Clock:
    """Wall and CPU seconds per stage. CPU counts every thread of this process and of the child
    processes it waited for (not the data preparation's pool workers, which a fork server starts):
    on a shared machine it estimates what an idle one needs, which wall time does not."""

    def __init__(self) -> None:
        self.times: dict = {}
        self._start = (time.time(), _cpu_seconds())

    @contextmanager
    def stage(self, name: str):
        wall, cpu = time.time(), _cpu_seconds()
        try:
            yield
        finally:
            self.times[f"{name}_s"] = time.time() - wall
            self.times[f"{name}_cpu_s"] = _cpu_seconds() - cpu

    def total(self) -> dict:
        import torch

        return {**self.times, "total_s": time.time() - self._start[0],
                "total_cpu_s": _cpu_seconds() - self._start[1], "torch_threads": torch.get_num_threads()}


def _cpu_seconds() -> float:
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


# An anatomy's within-anatomy AUC counts in the summary when its test cases have positives of at
# least this many classes (with one or two the macro mean is one or two noisy AUCs).
MIN_ANATOMY_CLASSES = 3


def within_anatomy(metrics: dict, min_classes: int = MIN_ANATOMY_CLASSES) -> tuple[Optional[float], dict]:
    """The within-anatomy macro AUC: for each anatomy, the macro AUC over the classes with a positive
    among that anatomy's test cases, ranked against the other cases *of the same anatomy* (the
    report's table "by anatomy of the cases"); returns ``(mean over the anatomies with at least
    min_classes classes or None, {anatomy: {auc, ci_low, ci_high, n_classes, n_cases, counted}})``."""
    from raddiag.evaluation.engine import anatomy_groups, anatomy_name

    cases = metrics.get("meta", {}).get("anatomy_cases", {})
    rows = {}
    for key in anatomy_groups(metrics):
        name = anatomy_name(key)
        auc = metrics[key].get("auc", {})
        n = int(auc.get("n_classes", 0))
        rows[name] = {"auc": auc.get("value"), "ci_low": auc.get("ci_low"), "ci_high": auc.get("ci_high"),
                      "n_classes": n, "n_cases": cases.get(name, {}).get("n_cases"),
                      "counted": n >= min_classes and auc.get("value") is not None}
    counted = [r["auc"] for r in rows.values() if r["counted"]]
    return (sum(counted) / len(counted) if counted else None), rows


def headline(metrics: dict) -> str:
    from raddiag.evaluation.summary import group_table, pct

    lines = ["", *group_table(metrics, "test split")]
    mean, rows = within_anatomy(metrics)
    if rows:
        lines += ["", "within one anatomy: each class ranked against the other cases of the same anatomy",
                  f"{'anatomy':<20}{'cases':>6}{'classes':>8}{'AUC':>8}   AUC CI"]
        for name, r in rows.items():
            ci = f"[{pct(r['ci_low'])}, {pct(r['ci_high'])}]" if r["ci_low"] is not None else ""
            note = "" if r["counted"] else f"   (not counted: < {MIN_ANATOMY_CLASSES} classes)"
            lines.append(f"{name:<20}{r['n_cases'] or '':>6}{r['n_classes']:>8}{pct(r['auc']):>8}   {ci}{note}")
    n_counted = sum(r["counted"] for r in rows.values())
    lines += ["", f"test macro AUC: overall {pct(metrics.get('all', {}).get('auc', {}).get('value'))}, "
                  f"within anatomy {pct(mean)} (mean of the {n_counted} anatomies with >= "
                  f"{MIN_ANATOMY_CLASSES} classes)"]
    return "\n".join(lines)


def _say(msg: str) -> None:
    print(msg, flush=True)


def register(sub) -> None:
    p = sub.add_parser("demo", help="run the main job end to end on generated data",
                       description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="demo-out", help="output folder (default: demo-out)")
    p.add_argument("--cases", type=int, default=DEMO_CASES, help=f"synthetic cases to generate (default: {DEMO_CASES})")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--epochs", type=int, help=f"training epochs (default: the {DEMO_PRESET} preset's)")
    p.add_argument("--knowledge-steps", type=int, help="knowledge-encoder fine-tuning steps (default: 200)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override")
    p.set_defaults(func=lambda a: (run_demo(a.out, a.cases, a.seed, a.epochs, a.knowledge_steps, a.set), 0)[1])

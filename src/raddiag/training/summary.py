"""What ``train`` / ``finetune`` print before the first step: the data (cases per split, class
counts, the classes without training cases by name, the abnormal training cases without a class of
the run's granularity), where it runs (device, threads, processes), the model (parameters), the
input geometry and any resampling, the scan caps and what they leave out, and where metrics and
logs go."""
from __future__ import annotations

import math
from collections import Counter
from typing import Optional

import numpy as np
import torch

from .prefetch import loading_plan
from .runfiles import trained_records

SHOWN_CLASSES = 12
SHOWN_EMPTY = 10   # classes without training cases named, then "and N more"
# what a training case without a class of a granularity lacks, and what gives it one
CLASSLESS = {"icd10": ("ICD-10-CM code", "--granularity disorder trains on their disorder names, or give them "
                                         "'icd10' codes in the manifest"),
             "disorder": ("disorder name", "--granularity icd10 trains on their codes, or give them 'labels' in "
                                           "the manifest")}
SMALL_VAL = 50     # val cases below which the printed line says the best epoch is partly chance


def _caps_left_out(data, cfg, train_indices=None) -> str:
    """How many of the training cases' scans the caps leave out per epoch (prepared data only)."""
    from raddiag.data.dataset import select_scans

    records = trained_records(data, train_indices)
    if not records:
        return ""
    left: Counter = Counter()
    cases = 0
    for r in records:
        kept = set(select_scans(r["scans"], cfg.data, None))
        out = [s["modality"] for j, s in enumerate(r["scans"]) if j not in kept]
        left.update(out)
        cases += bool(out)
    if not left:
        return "; every training scan fits them"
    return (f"; they leave out {sum(left.values())} training scan(s) of {cases} case(s) each epoch ("
            + ", ".join(f"{m} {n}" for m, n in left.most_common()) + ")")


def _classes(labels) -> str:
    """The classes line: how many, those without training cases by name (never learned; a new
    user's 'classes (4; 1 without training cases)' left them to guess which), the training cases
    of each."""
    from raddiag.data.errors import examples
    from raddiag.data.stats import counts_text

    counts = sorted(zip(labels.names, labels.counts), key=lambda x: -x[1])
    shown = counts_text((n, c) for n, c in counts[:SHOWN_CLASSES] if c)
    more = sum(1 for _, c in counts[SHOWN_CLASSES:] if c)
    empty = [repr(n) for n, c in counts if not c]
    return (f"  classes ({len(labels)}" + (f"; {len(empty)} without training cases, never learned: "
                                           f"{examples(empty, shown=SHOWN_EMPTY)}" if empty else "")
            + f"), training cases each: {shown}" + (f", ... ({more} more)" if more else ""))


def _classless(data, labels, train_indices=None) -> list[str]:
    """A line on the training cases that carry no class of the run's granularity and are not
    normal (abnormal cases without ICD-10-CM codes at ``icd10``): they train as negatives of every
    class (prepared data only)."""
    records = trained_records(data, train_indices)
    n = sum(1 for r in records or [] if not labels.case_labels(r))
    if not n:
        return []
    what, hint = CLASSLESS["icd10" if labels.granularity == "icd10" else "disorder"]
    return [f"  without a class: {n} of the {len(records)} training cases are abnormal but carry no {what}, so they "
            f"train as negatives of every class; {hint}"]


def _validation(val_targets: Optional[np.ndarray], n_classes: int) -> list[str]:
    """How the best epoch is chosen, on how many classes and cases (a new user's fine-tuned run
    kept its first epoch, chosen on 16 validation cases, without a word about it)."""
    if val_targets is None or not len(val_targets):
        return []
    y = np.asarray(val_targets) > 0.5
    pos = y.sum(0)
    scored = (pos > 0) & (pos < len(y))
    line = (f"  best epoch: the highest validation macro AUC, over the {int(scored.sum())} of {n_classes} classes "
            f"with a positive and a negative among the {len(y)} val cases")
    if scored.any():
        line += f" ({int(pos[scored].min())}-{int(pos[scored].max())} positives each)"
    if len(y) < SMALL_VAL:
        line += "; a small validation split: which epoch scores best is partly chance"
    return [line]


FEW_STEPS = 100    # optimiser steps below which a run is said to be short (make demo's run takes thousands)


def _few_steps(tc, batches_per_epoch: int) -> Optional[str]:
    """A note when the whole run takes fewer than :data:`FEW_STEPS` optimiser steps: a new user's
    ``cpu`` run on 43 training cases took 48 and predicted every class near its base rate, and the
    same data learned at 40 epochs."""
    per_epoch = math.ceil(batches_per_epoch / tc.grad_accum)
    steps = per_epoch * tc.epochs
    if steps >= FEW_STEPS:
        return None
    more = math.ceil(FEW_STEPS / max(1, per_epoch))
    return (f"  note: {steps} optimiser steps in all, fewer than {FEW_STEPS}: few to learn from; on a small set, "
            f"more epochs (--set train.epochs={max(more, tc.epochs + 1)} or more)")


GPU_RECIPES = ("paper", "official", "gpu")       # made for a GPU: a CPU takes minutes a case


def _gpu_recipe_on_cpu(cfg, device) -> Optional[str]:
    """A note when a GPU recipe trains on a CPU (``train`` without ``--preset`` is ``paper``: a new
    user left the flag off and got the heaviest model on a laptop without a word)."""
    if torch.device(device).type != "cpu" or cfg.preset not in GPU_RECIPES:
        return None
    return (f"  note: the {cfg.preset} preset is made for a GPU ({cfg.data.size} px x {cfg.data.depth} slices); on a "
            "CPU a step takes minutes: for a CPU try-out, --preset cpu (README 'Which preset for which job')")


def start_summary(data, run, cfg, labels, model, d, batches_per_epoch: int, train_cases: int,
                  val_targets: Optional[np.ndarray] = None, *, workers: int, train_indices=None) -> str:
    """The lines ``train`` prints before its first step (``train_cases``: the training cases used,
    ``train_indices`` of the train split when not all of it; ``val_targets``: the validation split's
    multi-hot labels, for the line on the best epoch; ``workers``: the train loader's processes)."""
    from raddiag.models.describe import scan_caps_text

    dc, tc = cfg.data, cfg.train
    splits = ", ".join(f"{s} {data.count(s)}" for s in ("train", "val", "test") if data.count(s))
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    size, depth = data.meta.get("size"), data.meta.get("depth")
    geometry = f"{dc.size} x {dc.size} px, at most {dc.depth} slice(s) a 3D scan"
    if (size, depth) != (dc.size, dc.depth):
        geometry += f" (the data were prepared at {size} px x {depth}: resampled on load)"
    threads = f"{torch.get_num_threads()} threads" + (f", {d.world_size} processes" if d.world_size > 1 else "")
    step, ahead = loading_plan(d.device, workers, tc.prefetch)
    if workers:
        threads += f"; {workers} loader process(es), the step on {step} thread(s)"
    else:
        threads += "; loading " + ("ahead in a background thread" if ahead else "between steps")
    target = run.final or run     # a replacing run's target, not the hidden folder it trains in
    staged = (f"  replacing the run there: training in {run.root.name} beside it, swapped in when training "
              "completes (a failure leaves the old run as it was)") if run.final else None
    return "\n".join(line for line in [
        f"training {target.root} (preset {cfg.preset}, task {dc.task}, {dc.granularity} labels) on {data.root}",
        staged,
        f"  cases: {splits}" + (f"; training on {train_cases} of them" if train_cases != data.count("train") else ""),
        _classes(labels),
        *_classless(data, labels, train_indices),
        f"  device: {d.device}, {threads}",
        _gpu_recipe_on_cpu(cfg, d.device),
        f"  model: {cfg.model.encoder} encoder, {cfg.model.fusion} fusion, {cfg.model.head} head; "
        f"{total:,} parameters ({trainable:,} trained)",
        f"  input: {geometry}",
        f"  scan caps: {scan_caps_text(dc)}{_caps_left_out(data, cfg, train_indices)}",
        f"  schedule: {tc.epochs} epochs of {batches_per_epoch} batches of {tc.batch_size}, lr {tc.lr:g}"
        + (f", repeat-factor sampling t = {tc.repeat_factor:g}" if tc.repeat_factor else ""),
        _few_steps(tc, batches_per_epoch),
        *_validation(val_targets, len(labels)),
        f"  metrics: {target.metrics_csv} (a row per epoch); best weights: {target.weights}",
        f"  TensorBoard logs: {target.tensorboard} (tensorboard --logdir {target.tensorboard})",
    ] if line)

"""What a training run writes in its folder: the staged folder a replacing run trains in, the
files inference needs, and ``metrics.csv`` (one row per epoch, trimmed on resume)."""
from __future__ import annotations

import csv
from pathlib import Path

from raddiag.run import RunFolder
from raddiag.staging import atomic_write, stage_beside

from . import distributed as dist_utils

METRIC_FIELDS = ["epoch", "step", "train_loss", "val_loss", "val_auc", "lr", "best_val_auc", "seconds"]


def stage_run(target: RunFolder, d) -> RunFolder:
    """The hidden folder beside ``target`` a replacing run trains in (rank 0 makes it, every rank
    uses it), swapped in whole when the run completes (:mod:`raddiag.staging`)."""
    stage = str(stage_beside(target.root, "train")) if d.is_main else None
    return RunFolder(dist_utils.broadcast_object(stage, d), final=target)


def remove_unfinished(run) -> None:
    """A run folder this call created, whose training failed before its first checkpoint, holds
    nothing to resume or use (a config and label files that look like a run): remove it."""
    import shutil

    from raddiag.run import LAST_CHECKPOINT

    if run.root.is_dir() and not (run.checkpoints / LAST_CHECKPOINT).exists() and not run.weights.exists():
        shutil.rmtree(run.root, ignore_errors=True)


def write_run_folder(run, cfg, labels, emb, epoch: int, data, resume: bool, train_indices=None) -> None:
    """The run folder: everything inference needs (config, labels, label embeddings, the training
    data's intensity convention), with the run's id (:mod:`raddiag.run`), and the cases it trains on."""
    from raddiag.data.intensity import write_run_intensity
    from raddiag.run import new_run_id

    run.create()
    run.checkpoints.mkdir(exist_ok=True)
    run_id = run.run_id() if resume else new_run_id()     # a resumed run keeps its id (None: written before ids)
    run.save_config(cfg, run_id)
    write_run_intensity(run.root, data.meta, data.root)
    write_train_cases(run, data, train_indices)
    run.save_labels(labels, run_id)
    if emb is not None:
        run.save_label_embeddings(emb, run_id)
    trim_metrics(run, epoch)


def trained_records(data, train_indices=None):
    """The records of the training cases used (``train_indices`` of the train split, default all of
    it; a fine-tuning fraction trains on a part), or None for data without records (shards)."""
    if not hasattr(data, "records_for"):
        return None
    records = data.records_for("train")
    return records if train_indices is None else [records[int(i)] for i in train_indices]


def write_train_cases(run, data, train_indices=None) -> None:
    """``RUN/train_cases.json``: the ids of the cases trained on (``train_indices`` of the train split,
    default all of it) and their scans' files, so that ``evaluate`` can warn of evaluated cases among
    them (:mod:`raddiag.evaluation.data_checks`; by file, since ids repeat across data sets). A shard
    folder keeps no case list here; evaluate then reads the train split of the prepared folder the
    shards were made from."""
    import json

    from raddiag.data.store import scan_file

    chosen = trained_records(data, train_indices)
    if chosen is None:
        return
    files = sorted({f for r in chosen for f in map(scan_file, r["scans"]) if f})
    record = {"data": str(Path(data.root).resolve()), "split": "train", "case_ids": [str(r["id"]) for r in chosen],
              "scans": files}
    atomic_write(run.train_cases, lambda f: f.write((json.dumps(record, indent=1) + "\n").encode("utf-8")))


def read_metrics(run: RunFolder) -> list[dict]:
    if not run.metrics_csv.exists():
        return []
    with run.metrics_csv.open() as f:
        return list(csv.DictReader(f))


def trim_metrics(run: RunFolder, next_epoch: int) -> None:
    """Keep only rows of epochs a resumed run will not redo (or none for a fresh run)."""
    rows = [r for r in read_metrics(run) if int(r["epoch"]) <= next_epoch]
    with run.metrics_csv.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=METRIC_FIELDS)
        w.writeheader()
        w.writerows(rows)


def append_metrics(run: RunFolder, row: dict) -> None:
    with run.metrics_csv.open("a", newline="") as f:
        csv.DictWriter(f, fieldnames=METRIC_FIELDS).writerow(row)

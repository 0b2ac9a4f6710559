"""Evaluate a trained run folder on a split of a prepared dataset or a shard folder."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional


log = logging.getLogger(__name__)


def predict_split(model, cfg, label_space, data_dir, split: str, batch_size: Optional[int] = None,
                  device: str = "cpu", progress: bool = True) -> dict:
    """Probabilities ``[N, C]`` (sigmoid of the logits; softmax for ``data.task=multiclass``), labels,
    case ids and anatomy of a split
    of a prepared dataset or a shard folder (a path, or opened by ``open_training_data``; read whole,
    in split order)."""
    from raddiag.data.shards import open_training_data, split_dataset
    from raddiag.inference import predict_dataset

    data = open_training_data(data_dir) if isinstance(data_dir, (str, Path)) else data_dir   # or opened
    ds = split_dataset(data, split, label_space, cfg.data)
    p = predict_dataset(model, ds, batch_size or cfg.train.eval_batch_size, device=device, progress=progress,
                        desc=f"predict {split}")
    return {"scores": p.scores, "labels": p.labels > 0.5, "case_ids": p.case_ids, "anatomy": p.anatomy}


def evaluate_run(run_dir, data_dir, split: str = "test", out_dir=None, val_split: Optional[str] = "val",
                 n_boot: int = 1000, seed: int = 0, device: str = "cpu", batch_size: Optional[int] = None,
                 store_thresholds: bool = False, progress: bool = True, plot_classes=None,
                 protocol: str = "paper") -> dict:
    """Load the model of ``run_dir``, predict ``split`` (and ``val_split`` for the thresholds)
    and run :func:`raddiag.evaluation.evaluate_predictions`; outputs go to ``out_dir``
    (default ``RUN/eval-<split>``). With ``store_thresholds`` the validation thresholds are
    written into the run's ``label_space.json``. ``protocol="release"`` adds the release's own
    figures (:mod:`raddiag.evaluation.release`). Evaluated cases the run trained on and a store
    coarser than its input are warned of and recorded in the meta (:mod:`.data_checks`)."""
    from raddiag.data.case import check_split
    from raddiag.data.errors import check_out_folder
    from raddiag.models import load_model
    from raddiag.models.fastpath import prepare_for_inference
    from raddiag.run import resolve_run

    from .data_checks import check_data
    from .engine import evaluate_predictions

    check_split(split, "--split")
    if val_split:
        check_split(val_split, "--val-split")   # a typo must not fall back to thresholds chosen on test
    if out_dir is not None:
        check_out_folder(out_dir)      # before any work, even the run's: found only when writing, it cost a run
    run = resolve_run(run_dir)
    from raddiag.data.shards import is_url, open_training_data

    if not is_url(data_dir) and not Path(data_dir).exists():    # a URL (pipe:, https://) is read below
        raise FileNotFoundError(f"{data_dir}: prepared dataset (or shard) folder does not exist")
    if out_dir is None:
        out_dir = run.root / f"eval-{split}"
        check_out_folder(out_dir)
    out_dir = Path(out_dir)
    model, cfg, labels = load_model(run, device=device)
    model = prepare_for_inference(model.eval())     # the fast path: same scores, less time
    data = open_training_data(data_dir)
    test = predict_split(model, cfg, labels, data, split, batch_size, device, progress)
    if not test["labels"].any():
        # every figure would be left out: an empty table with exit 0 read as a result
        shown = ", ".join(repr(n) for n in labels.names[:8]) + (", ..." if len(labels) > 8 else "")
        raise ValueError(f"{data_dir}: none of the {len(test['labels'])} cases of split {split!r} carries a class "
                         f"of the run's label space ({len(labels)} classes: {shown}), so nothing can be evaluated "
                         "(a class is matched by its exact name)")
    checked = check_data(run, cfg, data, data_dir, split, test["case_ids"])   # warns: trained-on cases, geometry
    val = None
    if split == val_split == "val":
        # the split the stored thresholds were chosen on: chosen again on the scores just computed,
        # which a stored threshold (one positive's own score) may miss by a rounding
        val = test
    elif val_split and val_split != split:
        try:
            val = predict_split(model, cfg, labels, data, val_split, batch_size, device, progress)
        except ValueError as exc:  # no cases in that split
            log.warning("no validation predictions (%s); thresholds fall back", exc)
    anatomy = test["anatomy"] if any(a for a in test["anatomy"]) else None
    res = evaluate_predictions(test["scores"], test["labels"], labels,
                               val_scores=None if val is None else val["scores"],
                               val_labels=None if val is None else val["labels"],
                               anatomy=anatomy, case_ids=test["case_ids"], out_dir=out_dir, n_boot=n_boot,
                               seed=seed, plot_classes=plot_classes, progress=progress, protocol=protocol,
                               title=f"raddiag evaluation: {run.root.name} on {split}", task=cfg.data.task,
                               input_names={"val_split": val_split} if val_split not in (None, "val") else None,
                               extra_meta=checked)
    if store_thresholds and res["threshold_source"] == "validation":
        from raddiag.training.metrics import f1_thresholds

        labels.thresholds = f1_thresholds(val["scores"], val["labels"])   # a margin below (training.metrics)
        run.save_labels(labels)        # keeps the run id (raddiag.run)
    res["out_dir"] = out_dir
    return res

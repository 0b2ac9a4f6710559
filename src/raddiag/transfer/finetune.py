"""Fine-tuning a pre-trained run on another dataset with 1 / 10 / 30 / 100 % of its training
split (paper Section 2.4 and Table 4).

As in the paper: the pre-trained visual encoder is kept; the fusion module is kept for
multi-scan data and dropped for single-image data (the case embedding is then the single
scan's embedding: fusion switches to ``mean`` pooling, which for one scan is the identity);
the classification layer is always new, for the target label space. ``scratch=True`` trains
the same architecture from random weights with the same schedule, for the comparison.

The standard transfer protocols beside it: ``encoder_lr_scale=F`` trains the inherited
encoder (and fusion) at ``F`` times the head's learning rate (``train.encoder_lr_scale``),
``linear_probe=True`` freezes them and trains the head alone (``train.linear_probe``). A
knowledge head embeds a new label space with the source run's own text encoder
(:meth:`raddiag.run.RunFolder.text_encoder`), never silently with another one.
"""
from __future__ import annotations

import copy
import os
import warnings
from collections import defaultdict
from pathlib import Path
from typing import Optional

import numpy as np

from raddiag.data.errors import InputWarning
from raddiag.staging import write_json

FRACTIONS = (0.01, 0.1, 0.3, 1.0)


def stratified_subset(targets: np.ndarray, fraction: float, seed: int = 0) -> np.ndarray:
    """Sorted indices of a seeded, stratified ``fraction`` of the rows of ``targets [n, C]``.

    Each case is stratified on its rarest label (multi-label data: the label that is hardest
    to keep); every stratum contributes ``round(fraction * size)`` cases, at least one; then
    any class with training cases that is still missing gets one case that carries it. So
    every class keeps at least one case, at the cost of slightly more than ``fraction`` when
    there are many rare classes.
    """
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    targets = np.asarray(targets) > 0
    n = targets.shape[0]
    if fraction >= 1.0 or n == 0:
        return np.arange(n)
    rng = np.random.default_rng(seed)
    order = rng.permutation(n)
    counts = targets.sum(0)
    strata: dict[int, list[int]] = defaultdict(list)
    for i in order:
        pos = np.flatnonzero(targets[i])
        key = int(pos[np.argmin(counts[pos])]) if pos.size else -1
        strata[key].append(int(i))
    chosen: set[int] = set()
    for key in sorted(strata):
        members = strata[key]
        chosen.update(members[:max(1, int(round(fraction * len(members))))])
    have = targets[sorted(chosen)].any(0)
    for c in np.flatnonzero((counts > 0) & ~have):
        for i in order:
            if targets[i, c]:
                chosen.add(int(i))
                break
    return np.array(sorted(chosen), dtype=np.int64)


def subset_note(fraction: float, chosen: int, total: int, classes: int) -> Optional[str]:
    """What to tell when the subset is far above the asked ``fraction`` (more than twice its cases,
    and more than one case over): every class kept in at least one case outweighs the fraction
    (1 % of 84 cases of 44 classes trains on 40: the 1 / 10 / 30 % runs would train on one subset)."""
    asked = max(1, round(fraction * total))
    if chosen <= max(2 * asked, asked + 1):
        return None
    return (f"--fraction {fraction:g} of {total} training cases asks for {asked}; keeping each of the "
            f"{classes} classes in at least one case takes {chosen} ({100 * chosen / total:.0f} % of the cases), "
            "which is what trains (finetune.json records it as train_fraction)")


def finetune(
    run_dir: str | Path,
    data_dir: str | Path,
    out_dir: str | Path,
    fraction: float,
    scratch: bool = False,
    seed: int = 0,
    epochs: Optional[int] = None,
    overrides: Optional[list[str]] = None,
    granularity: Optional[str] = None,
    label_embeddings=None,
    knowledge_encoder: Optional[str | Path] = None,
    resume: bool = False,
    progress: bool = True,
    max_steps: Optional[int] = None,
    pretrained: Optional[str | Path] = None,
    overwrite: bool = False,
    encoder_lr_scale: Optional[float] = None,
    linear_probe: bool = False,
    summary: bool = False,
):
    """Fine-tune the pre-trained run ``run_dir`` on prepared data ``data_dir`` into ``out_dir``
    using a seeded stratified ``fraction`` of its training split; returns a
    :class:`raddiag.training.TrainResult`. ``scratch`` trains the same model from random init
    (or, with ``pretrained``, from that torchvision/timm ResNet file: ``model.pretrained``);
    ``encoder_lr_scale`` / ``linear_probe`` set ``train.encoder_lr_scale`` / ``train.linear_probe``."""
    from raddiag.data.dataset import CaseDataset
    from raddiag.data.store import PreparedData
    from raddiag.models import load_model
    from raddiag.run import resolve_run
    from raddiag.training import train

    if not 0.0 < float(fraction) <= 1.0:
        raise ValueError(f"--fraction must be in (0, 1] (e.g. {', '.join(map(str, FRACTIONS))}), got {fraction}")
    src = resolve_run(run_dir)
    model, src_cfg, src_labels = load_model(src)
    data = PreparedData(data_dir)

    cfg = copy.deepcopy(src_cfg)
    cfg.train.seed = int(seed)
    if epochs is not None:
        cfg.train.epochs = int(epochs)
    cfg.model.pretrained = None  # the source run's own file was a training-time input: never re-read it
    cfg.train.encoder_lr_scale, cfg.train.linear_probe = 1.0, False   # transfer settings are per run
    cfg.override(overrides)
    if pretrained is not None:
        cfg.model.pretrained = str(pretrained)
    if cfg.model.pretrained and not scratch:
        raise ValueError(f"model.pretrained={cfg.model.pretrained}: only with --scratch "
                         f"(otherwise the encoder comes from {src.root})")
    if encoder_lr_scale is not None:
        cfg.train.encoder_lr_scale = float(encoder_lr_scale)
    if linear_probe:
        cfg.train.linear_probe = True
    if scratch and cfg.train.linear_probe:
        raise ValueError("--linear-probe with --scratch would train a head on random frozen features")
    if granularity is not None:
        cfg.data.granularity = granularity
    labels = data.label_space(cfg.data.granularity)

    multi_scan = any(len(r["scans"]) > 1 for r in data.records)
    if not multi_scan and cfg.model.fusion == "transformer":
        cfg.model.fusion = "mean"  # single-image data: discard the fusion module (paper 2.4)

    init_state = None
    if not scratch:
        keep = ("encoder.", "fusion.") if multi_scan and cfg.model.fusion == "transformer" else ("encoder.",)
        init_state = {k: v for k, v in model.state_dict().items() if k.startswith(keep)}

    emb = label_embeddings
    if cfg.model.head == "knowledge" and emb is None and knowledge_encoder is None:
        if list(labels.names) == list(src_labels.names):
            emb = src.load_label_embeddings()
        else:  # new class names: embedded by the text encoder the source run trained with
            from raddiag.knowledge.encoder import default_model_path

            # None recorded: the packaged base encoder, named (train's own default is a fine-tuned one)
            knowledge_encoder = source_text_encoder(src) or default_model_path()

    targets = CaseDataset(data, "train", labels, cfg.data, train=False).targets
    idx = stratified_subset(targets, float(fraction), seed)
    note = subset_note(float(fraction), len(idx), len(targets), int((targets > 0).any(0).sum()))
    if note:
        warnings.warn(InputWarning(f"{data_dir}: {note}"), stacklevel=2)

    if summary and int(os.environ.get("RANK", "0")) == 0:
        print(_start_line(src.root, src_cfg, cfg, init_state, len(labels)), flush=True)
    result = train(data_dir, out_dir, cfg, label_embeddings=emb, knowledge_encoder=knowledge_encoder,
                   resume=resume, progress=progress, max_steps=max_steps, init_state=init_state,
                   train_indices=idx.tolist(), overwrite=overwrite, summary=summary)
    if int(os.environ.get("RANK", "0")) == 0:
        info = {"source_run": str(src.root), "data": str(Path(data_dir)), "fraction": float(fraction),
                "scratch": bool(scratch), "seed": int(seed), "train_cases": int(len(idx)),
                "train_cases_total": int(len(targets)), "train_fraction": len(idx) / max(1, len(targets)),
                "kept": sorted({k.split(".")[0] for k in init_state or {}}),
                "fusion": cfg.model.fusion, "encoder_lr_scale": cfg.train.encoder_lr_scale,
                "linear_probe": cfg.train.linear_probe,
                "text_encoder": str(knowledge_encoder) if knowledge_encoder is not None else None,
                "best_val_auc": result.best_val_auc}
        write_json(Path(out_dir) / "finetune.json", info)
    return result


def _start_line(src_root, src_cfg, cfg, init_state: Optional[dict], n_classes: int) -> str:
    """What fine-tuning takes from the source run, printed above the start summary (a new user
    could not tell whether the fusion module was kept, nor that the task was the source's)."""
    if init_state is None:
        took = f"from random weights (--scratch), {src_root}'s model"
    else:
        fusion = ("fusion module kept" if any(k.startswith("fusion.") for k in init_state)
                  else f"fusion module dropped ({cfg.model.fusion} pooling: single-image data)"
                  if src_cfg.model.fusion == "transformer" else f"{cfg.model.fusion} pooling")
        took = f"from {src_root}: encoder kept, {fusion}"
    task = cfg.data.task + (" (the source run's)" if cfg.data.task == src_cfg.data.task
                            else f" (the source run's: {src_cfg.data.task})")
    return f"fine-tuning {took}; a new classification layer for {n_classes} classes; task {task}"


def source_text_encoder(src) -> Optional[Path]:
    """The text encoder folder a run's label embeddings were made with (None: the packaged
    default, recorded as such); a clear error when it is unrecorded or gone."""
    if not (src.text_encoder_dir.is_dir() or src.text_encoder_ref.exists()):
        raise FileNotFoundError(
            f"{src.root}: the run does not record which text encoder made its label embeddings "
            f"({src.text_encoder_ref.name} is missing), so new class names cannot be embedded in its "
            "space; pass --knowledge-encoder DIR or --label-embeddings FILE")
    try:
        return src.text_encoder()
    except FileNotFoundError as e:
        raise FileNotFoundError(f"{e} (raddiag finetune: --knowledge-encoder DIR or --label-embeddings FILE)") from None

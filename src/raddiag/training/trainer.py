"""The trainer (paper Sections 11.1 and 4.4).

BCE over all classes (cross-entropy for ``data.task=multiclass``: :mod:`raddiag.task`; + optionally
the key-slice attention term), AdamW, cosine schedule
with linear warm-up stepped per optimiser step, gradient clipping and accumulation, bf16
autocast, seeded / deterministic runs, validation macro AUC every epoch with the best
checkpoint kept, optional early stopping, atomic resumable checkpoints, and DDP under
``torchrun`` (see :mod:`raddiag.training.distributed`).

Exact resume: the data order of an epoch is a function of ``(seed, epoch)``
(:class:`~raddiag.training.sampler.ResumableSampler`), augmentation of a case a function of
``(seed, epoch, index)`` (the dataset seeds it), and checkpoints hold the model, optimiser,
scheduler and RNG states, taken only at optimiser-step boundaries. A resumed run skips the
batches already consumed by index and continues bit for bit.
"""
from __future__ import annotations

import copy
import logging
import math
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from raddiag.config import RunConfig
from raddiag.data.labels import GRANULARITIES, LabelSpace
from raddiag.run import LAST_CHECKPOINT, RunFolder
from raddiag.staging import discard, swap_in

from . import distributed as dist_utils
from .checkpoint import load_checkpoint
from .label_embeddings import run_label_embeddings
from .metrics import f1_thresholds
from .optim import lr_factor, make_optimizer
from .kernel_cache import widen_kernel_cache
from .prefetch import loading_plan
from .runfiles import remove_unfinished, stage_run, write_run_folder
from .sampler import RepeatFactorSampler, ResumableSampler, repeat_factors
from raddiag.data.shards import ShardData

log = logging.getLogger(__name__)
LAST = LAST_CHECKPOINT


@dataclass
class TrainResult:
    run: RunFolder
    best_val_auc: float
    best_epoch: int
    epochs_run: int                 # epochs completed (in total, across resumes)
    steps: int                      # optimiser steps taken (in total)
    stopped_early: bool = False
    history: list[dict] = field(default_factory=list)


class CaseSubset(Dataset):
    """Some cases of a CaseDataset, keeping what loaders need (``cfg``, ``targets``, ``set_epoch``).
    Items keep the parent's index, so their augmentation seed does not depend on the subset."""

    def __init__(self, parent, indices: Sequence[int]):
        self.parent = parent
        self.indices = [int(i) for i in indices]
        self.cfg = parent.cfg
        self.labels = parent.labels

    @property
    def targets(self) -> np.ndarray:
        return self.parent.targets[self.indices]

    def set_epoch(self, epoch: int) -> None:
        self.parent.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> dict:
        return self.parent[self.indices[i]]


# -- schedule -----------------------------------------------------------------------
# -- set-up helpers -----------------------------------------------------------------------
def seed_everything(seed: int, deterministic: bool = False) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False


def _init_pretrained(model, cfg: RunConfig, say: bool = True) -> None:
    """Load ``model.pretrained`` into the per-slice ResNet, or say that it starts from random weights."""
    from raddiag.models.pretrained import load_pretrained_backbone

    mc = cfg.model
    if mc.pretrained:
        report = load_pretrained_backbone(model, mc.pretrained)
        if say:
            log.info("model.pretrained: %s", report.summary())
    elif say and mc.encoder == "resnet_vit":
        level = logging.WARNING if cfg.preset in ("paper", "official") else logging.INFO
        # torchvision and timm publish ResNet-18/34/50/101 weights, not ResNet-10 (tiny): no file to name
        hint = (f"the release starts from ImageNet weights: --set model.pretrained=imagenet, or --pretrained PATH "
                f"to a torchvision/timm ResNet-{mc.resnet_depth} state dict, see README"
                if mc.resnet_depth in (18, 34, 50, 101)
                else f"torchvision and timm publish no ImageNet ResNet-{mc.resnet_depth}")
        log.log(level, "model.pretrained is not set: the per-slice ResNet-%d starts from random weights (%s)",
                mc.resnet_depth, hint)


def _autocast(cfg: RunConfig, device: torch.device):
    if cfg.train.amp not in ("none", "bf16"):
        raise ValueError(f"train.amp={cfg.train.amp!r}; choose 'none' or 'bf16'")
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=cfg.train.amp == "bf16")


def _unwrap(model):
    return model.module if hasattr(model, "module") else model


def _save_weights_atomic(model, run: RunFolder) -> None:
    """model.safetensors, written whole or not at all, with the run's id (RunFolder.save_weights)."""
    run.save_weights(_unwrap(model))


def validate(model, dataset, cfg: RunConfig, d: Optional[dist_utils.Dist] = None,
             progress: bool = False, amp: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Validation ``(scores [N, C], labels [N, C])`` over all of ``dataset``, in dataset order
    (under ``train.amp``'s autocast unless ``amp`` is False).

    Under DDP each rank predicts a strided share (no padding duplicates) and the predictions
    are gathered before any metric is computed."""
    from raddiag.inference import predict_dataset

    from raddiag.data.shards import ShardDataset

    d = d or dist_utils.Dist()
    m = _unwrap(model)
    if d.enabled:
        # BatchNorm running statistics drift apart per rank after each forward (DDP broadcasts
        # rank 0's at the *next* forward): validate rank 0's model, the one that is saved.
        for buf in m.buffers():
            torch.distributed.broadcast(buf, src=0)
    if isinstance(dataset, ShardDataset):
        return _validate_shards(m, dataset, cfg, d, progress, amp)
    idx = list(range(d.rank, len(dataset), d.world_size))
    part = CaseSubset(dataset, idx) if d.enabled else dataset
    if len(idx):
        with _autocast(cfg, d.device) if amp else _null():
            pred = predict_dataset(m, part, batch_size=cfg.train.eval_batch_size, device=str(d.device),
                                   progress=progress, desc="validate")
        mine = (idx, pred.scores, pred.labels)
    else:
        mine = (idx, None, None)
    parts = dist_utils.gather_objects(mine, d)
    n = len(dataset)
    scores = np.zeros((n, int(m.num_classes)), dtype=np.float32)
    labels = np.zeros((n, dataset.targets.shape[1]), dtype=np.float32)
    for ids, s, y in parts:
        if ids:
            scores[ids], labels[ids] = s, y
    return scores, labels


def _validate_shards(m, dataset, cfg: RunConfig, d, progress: bool, amp: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """:func:`validate` over a shard split: each rank predicts its contiguous share (in split order,
    one reader), the shares are concatenated in rank order and the padding (the last
    ``world_size * ceil(n / world_size) - n``, repeats of the first cases) dropped."""
    from raddiag.inference import predict_dataset

    share = dataset.for_rank(d.rank, d.world_size)
    with _autocast(cfg, d.device) if amp else _null():
        pred = predict_dataset(m, share, batch_size=cfg.train.eval_batch_size, device=str(d.device),
                               progress=progress, desc="validate")
    parts = dist_utils.gather_objects((pred.scores, pred.labels), d)
    n = dataset.n_cases
    return (np.concatenate([s for s, _ in parts])[:n].astype(np.float32),
            np.concatenate([y for _, y in parts])[:n].astype(np.float32))


def _shard_datasets(data, cfg: RunConfig, labels, transform, train_indices, d):
    """(train, val, progress) of a shard folder: the training split read by this rank's share."""
    from raddiag.data.shards import ShardDataset, ShardProgress
    from raddiag.models import trains_on_scans

    if train_indices is not None or trains_on_scans(cfg.model.fusion):
        raise ValueError(f"{data.root}: a shard folder feeds whole cases of whole splits; train_indices and the "
                         f"scan-level fusion {cfg.model.fusion!r} need a prepared dataset (raddiag data prepare)")
    tc = cfg.train
    train_ds = ShardDataset(data.root, "train", labels, cfg.data, train=True, scan_transform=transform,
                            seed=tc.seed, rank=d.rank, world_size=d.world_size)
    val_ds = ShardDataset(data.root, "val", labels, cfg.data, train=False, rank=0, world_size=1)
    return train_ds, val_ds, ShardProgress(train_ds, tc.seed)


def _check_finite_loss(loss: torch.Tensor, batch: dict, epoch: int, step: int) -> None:
    """Stop at the first NaN / inf loss, naming the batch's cases (before it reaches the weights)."""
    if not torch.isfinite(loss.detach()).all():
        raise FloatingPointError(f"training loss is {float(loss.detach()):g} at epoch {epoch + 1}, step {step + 1}; "
                                 f"cases of the batch: {', '.join(map(str, batch.get('case_ids', [])))} "
                                 "(check their scans and labels, or lower the learning rate)")


# -- the trainer ----------------------------------------------------------------------
def train(
    data_dir: str | Path,
    out_dir: str | Path,
    cfg: RunConfig,
    granularity: Optional[str] = None,
    label_embeddings=None,
    knowledge_encoder: Optional[str | Path] = None,
    resume: bool = False,
    progress: bool = True,
    overwrite: bool = False,
    max_steps: Optional[int] = None,
    init_state: Optional[dict[str, torch.Tensor]] = None,
    train_indices: Optional[Sequence[int]] = None,
    device: Optional[str] = None,
    summary: bool = False,
) -> TrainResult:
    """Train a RadDiag model on a prepared dataset into run folder ``out_dir``.

    ``granularity`` overrides ``cfg.data.granularity``. For ``model.head=knowledge`` the label
    embeddings come from ``label_embeddings`` (tensor or safetensors file) or are computed once
    from ``knowledge_encoder`` and stored in the run folder. ``resume`` continues from
    ``checkpoints/last.pt``. ``max_steps`` stops after that many optimiser steps in total
    (the state is checkpointed, so ``resume`` carries on). ``init_state`` pre-loads matching
    weights (fine-tuning); ``train_indices`` restricts the training split to those cases.
    ``cfg.model.pretrained`` (a torchvision/timm ResNet file) initialises the per-slice ResNet of a
    fresh run (:mod:`raddiag.models.pretrained`); a resumed run does not read it again.
    A run folder that already holds weights or a checkpoint is refused unless ``resume`` (a
    checkpoint) or ``overwrite`` (a new run, trained in a hidden folder beside the old one and
    swapped in whole when this call completes: a failure or a kill leaves the old run as it was).
    Under ``torchrun`` this trains with DDP; only rank 0 writes. ``summary`` prints what the run
    is about to do before its first step (:func:`raddiag.training.summary.start_summary`).
    """
    from raddiag.data.dataset import CaseDataset, make_loader
    from raddiag.data.shards import open_training_data
    from raddiag.models import build_model, key_slice_attention_loss

    cfg = copy.deepcopy(cfg)
    if granularity is not None:
        cfg.data.granularity = granularity
    if cfg.data.granularity not in GRANULARITIES:
        raise ValueError(f"granularity must be one of {GRANULARITIES}, got {cfg.data.granularity!r}")
    tc = cfg.train
    if tc.amp not in ("none", "bf16"):
        raise ValueError(f"train.amp={tc.amp!r}; choose 'none' or 'bf16'")
    if tc.batch_size < 1 or tc.grad_accum < 1 or tc.epochs < 1:
        raise ValueError("train.batch_size, train.grad_accum and train.epochs must be >= 1")
    target = RunFolder(out_dir)
    replace = target.claim_for_training(resume, overwrite)
    created = not target.root.exists()

    widen_kernel_cache()
    d = dist_utils.init(device)
    was_deterministic = torch.are_deterministic_algorithms_enabled()
    run = target
    try:
        run = stage_run(target, d) if replace else target
        result = _train(d, open_training_data(data_dir), run, cfg, label_embeddings, knowledge_encoder, resume,
                        progress, max_steps, init_state, train_indices, CaseDataset, make_loader, build_model,
                        key_slice_attention_loss, summary)
        if run is not target and d.is_main:
            swap_in(run.root, target.root)
        result.run = target
        return result
    except BaseException:
        if d.is_main and run is not target:
            discard(run.root)
        elif created and d.is_main:
            remove_unfinished(run)
        raise
    finally:
        torch.use_deterministic_algorithms(was_deterministic)  # process-wide: leave it as found
        d.close()


def _check_stream_settings(data, cfg) -> None:
    """Shards stream their cases in their own order: repeat-factor sampling and case mixing need a
    prepared folder. Said before any work, with the two ways on (the ``cpu`` and ``gpu`` recipes
    sample by repeat factor, and a new user met this from shards after the text encoder loaded)."""
    if not isinstance(data, ShardData):
        return
    for name in ("repeat_factor", "case_mix"):
        if getattr(cfg.train, name):
            raise ValueError(f"{data.root}: train.{name}={getattr(cfg.train, name)} (preset {cfg.preset}) needs a "
                             f"prepared folder; shards stream in their own order. Train from the prepared folder "
                             f"the shards were written from, or add --set train.{name}=0")


def _initial_model(cfg, labels, emb, init_state, resume, d, build_model):
    """The seeded model (identical on every rank), from a pre-trained file or ``init_state``."""
    torch.manual_seed(cfg.train.seed)
    model = build_model(cfg, len(labels), emb)
    if not resume and (cfg.model.pretrained or not init_state):  # resume / init_state: weights come from there
        _init_pretrained(model, cfg, d.is_main)
    if init_state:
        own = model.state_dict()
        keep = {k: v for k, v in init_state.items() if k in own and own[k].shape == v.shape}
        model.load_state_dict(keep, strict=False)
    if cfg.train.linear_probe:
        model.freeze_pretrained()
    return model.to(d.device)


def _restore(run, model, optimizer, scheduler, state, labels, d) -> dict:
    """Load ``checkpoints/last.pt`` into the model, optimiser, scheduler and ``state``; returns it."""
    ckpt = load_checkpoint(run.checkpoints / LAST)
    if ckpt.get("world_size", 1) != d.world_size:
        log.warning("resuming a %d-process run with %d processes: the data order changes",
                    ckpt.get("world_size", 1), d.world_size)
    try:
        model.load_state_dict(ckpt["model"])
    except (RuntimeError, KeyError) as exc:
        first = str(exc).strip().splitlines()
        raise ValueError(f"{run.checkpoints / LAST}: does not fit this run's model and label space "
                         f"({len(labels)} classes): {first[-1].strip() if first else exc}") from None
    optimizer.load_state_dict(ckpt["optimizer"])
    scheduler.load_state_dict(ckpt["scheduler"])
    state.update({k: ckpt[k] for k in state if k in ckpt})
    if d.is_main:
        log.info("resuming %s at epoch %d, batch %d (step %d)", run.root, state["epoch"] + 1,
                 state["batches_done"], state["step"])
    return ckpt


def _counted_on(labels, data, cfg, train_indices, CaseDataset):
    """The label space with the training counts of the cases trained on (``train_indices`` of
    the train split, as ``finetune --fraction`` picks them), not of the whole split: its head /
    medium / tail groups are those of the run."""
    import dataclasses

    targets = CaseDataset(data, "train", labels, cfg.data, train=False).targets[np.asarray(train_indices, int)]
    return dataclasses.replace(labels, counts=[int(c) for c in np.count_nonzero(targets, axis=0)])


def _train_data(d, data, cfg, labels, train_indices, CaseDataset, make_loader):
    """``(train_ds, val_ds, sampler, loader, batches_per_epoch)`` from a prepared folder (a
    resumable sampler over a CaseDataset, or a ScanDataset for the pooling baselines) or shards."""
    from raddiag.data.dataset import ScanDataset
    from raddiag.data.scan_cache import ScanCache
    from raddiag.models import trains_on_scans
    from raddiag.task import check_dataset

    from .augment import build_scan_transform

    tc = cfg.train
    transform = build_scan_transform(tc, cfg.data)
    if isinstance(data, ShardData):
        train_ds, val_ds, sampler = _shard_datasets(data, cfg, labels, transform, train_indices, d)
        loader = make_loader(train_ds, tc.batch_size, num_workers=tc.num_workers, seed=tc.seed)
        return train_ds, val_ds, sampler, loader, train_ds.batches_per_epoch(tc.batch_size, loader.num_workers)
    # one cache for train and val (the same store), each loader process its share (raddiag.data.scan_cache)
    cache = ScanCache(int(tc.cache_mb * 2**20) // (1 + max(0, tc.num_workers))) if tc.cache_mb > 0 else None
    train_full = CaseDataset(data, "train", labels, cfg.data, train=True, scan_transform=transform, seed=tc.seed,
                             cache=cache)
    if trains_on_scans(cfg.model.fusion):  # the paper's pooling baselines: one scan per sample
        if tc.case_mix:
            raise ValueError(f"train.case_mix joins cases; model.fusion={cfg.model.fusion} trains on single scans")
        train_ds = ScanDataset(train_full, train_indices)
    else:
        train_ds = CaseSubset(train_full, train_indices) if train_indices is not None else train_full
    if len(train_ds) == 0:
        raise ValueError(f"{data.root}: no training cases selected")
    if tc.case_mix:
        from raddiag.data.case_mix import CaseMix

        train_ds = CaseMix(train_ds, tc.case_mix, tc.seed)
    val_ds = CaseDataset(data, "val", labels, cfg.data, train=False, cache=cache)
    for split, ds in (("train", train_full), ("val", val_ds)):
        check_dataset(ds, cfg.data.task, f"{data.root} split {split!r}")
    if tc.repeat_factor:
        sampler = RepeatFactorSampler(train_ds, repeat_factors(train_ds.targets, tc.repeat_factor),
                                      num_replicas=d.world_size, rank=d.rank, seed=tc.seed)
    else:
        sampler = ResumableSampler(train_ds, num_replicas=d.world_size, rank=d.rank, shuffle=True, seed=tc.seed)
    loader = make_loader(train_ds, tc.batch_size, sampler=sampler, num_workers=tc.num_workers, seed=tc.seed)
    return train_ds, val_ds, sampler, loader, math.ceil(sampler.num_samples / tc.batch_size)


def _train(d, data, run, cfg, label_embeddings, knowledge_encoder, resume, progress, max_steps, init_state,
           train_indices, CaseDataset, make_loader, build_model, key_slice_attention_loss, summary=False) -> TrainResult:
    from raddiag.data.intensity import adopt_data_windows

    tc = cfg.train
    seed_everything(tc.seed, tc.deterministic)
    adopt_data_windows(cfg.data, data.meta, data.root)
    labels = data.label_space(cfg.data.granularity)
    if train_indices is not None and not isinstance(data, ShardData):   # shards refuse subsets (_train_data)
        labels = _counted_on(labels, data, cfg, train_indices, CaseDataset)
    if resume:
        run.check_label_space(labels, data.root)
    if not data.count("val"):
        raise ValueError(f"{data.root}: no cases in the val split; validation needs some")
    if not resume and cfg.model.pretrained:   # a missing weights file stops the run here, before any work
        from raddiag.models.pretrained import pretrained_file

        pretrained_file(cfg.model.pretrained, cfg.model.resnet_depth)

    _check_stream_settings(data, cfg)        # before the text encoder loads: a setting shards cannot follow
    emb = run_label_embeddings(d, run, cfg, labels, label_embeddings, knowledge_encoder, resume, progress)
    model = _initial_model(cfg, labels, emb, init_state, resume, d, build_model)
    train_ds, val_ds, sampler, loader, batches_per_epoch = _train_data(d, data, cfg, labels, train_indices,
                                                                       CaseDataset, make_loader)
    if summary and d.is_main:
        from .summary import start_summary

        n_train = len(train_indices) if train_indices is not None else data.count("train")
        print(start_summary(data, run, cfg, labels, model, d, batches_per_epoch, n_train,
                            getattr(val_ds, "targets", None), workers=loader.num_workers,
                            train_indices=train_indices), flush=True)
    steps_per_epoch = math.ceil(batches_per_epoch / tc.grad_accum)
    total_steps = steps_per_epoch * tc.epochs
    warmup_steps = int(round(tc.warmup_epochs * steps_per_epoch))
    optimizer = make_optimizer(model, tc)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, warmup_steps, total_steps))

    state = {"epoch": 0, "batches_done": 0, "step": 0, "best_val_auc": float("-inf"), "best_epoch": -1,
             "bad_epochs": 0, "stopped_early": False, "have_best": False}
    ckpt = _restore(run, model, optimizer, scheduler, state, labels, d) if resume else None
    if d.is_main:
        write_run_folder(run, cfg, labels, emb, state["epoch"], data, resume, train_indices)
    d.barrier()

    from .loop import TrainLoop

    loop = TrainLoop(d, run, cfg, model, optimizer, scheduler, sampler, state, batches_per_epoch, max_steps,
                     key_slice_attention_loss)
    history: list[dict] = []
    stop = False
    epoch = state["epoch"]
    stream, ahead = isinstance(data, ShardData), None
    threads = loading_plan(d.device, loader.num_workers, tc.prefetch)[0]     # the step's, every epoch
    try:
        while epoch < tc.epochs and not stop and not state["stopped_early"]:
            t0 = time.time()
            if ahead is None:
                it, start_batch, resuming = loop.start_epoch(epoch, loader, train_ds, ckpt, stream)
            else:          # opened before the last epoch validated (TrainLoop.open_ahead)
                it, start_batch, resuming, ahead = ahead, 0, False, None
            loss0 = (float(ckpt["loss_sum"]), int(ckpt["loss_n"])) if resuming else (0.0, 0)
            loss_sum, loss_n, b, stop = loop.train_epoch(epoch, it, start_batch, *loss0, progress, threads)
            ckpt = None
            train_loss = loop.mean_loss(loss_sum, loss_n)
            if stop and b < batches_per_epoch:  # max_steps mid-epoch: save where we are and stop
                loop.stop_mid_epoch(epoch, b, loss_sum, loss_n)
                break
            if not stop and epoch + 1 < tc.epochs:
                ahead = loop.open_ahead(epoch + 1, loader, train_ds, stream)
            history.append(loop.end_epoch(epoch, val_ds, train_loss, t0))
            epoch += 1
            state["batches_done"] = 0
            loop.checkpoint(epoch, 0)
            d.barrier()
    finally:
        del ahead        # an epoch opened ahead that will not run (early stop, an error): its workers end
        loop.close()

    finished = epoch >= tc.epochs or state["stopped_early"]
    if finished and state["have_best"] and cfg.data.task != "multiclass":   # multiclass: argmax, no thresholds
        _finalise_thresholds(model, val_ds, cfg, d, run, labels)
    best = state["best_val_auc"] if np.isfinite(state["best_val_auc"]) else float("nan")
    return TrainResult(run, best, state["best_epoch"] + 1, epoch, state["step"], state["stopped_early"], history)


def _finalise_thresholds(model, val_ds, cfg, d, run: RunFolder, labels: LabelSpace) -> None:
    """Reload the best weights and store max-F1 validation thresholds in label_space.json, chosen on
    the scores ``evaluate`` and ``predict`` compute: the inference twin
    (:func:`raddiag.models.fastpath.prepare_for_inference`) in fp32. A max-F1 threshold is one
    validation positive's own score; chosen on the training path's scores (the plain model, under
    bf16 autocast with ``train.amp``), it lay a rounding above that case's score in ``evaluate``
    (1.2e-7 measured) and the case fell below its own threshold: on the validation split 8 of 16
    classes' F1 read 0, the macro F1 14.9 where it is 26.3."""
    from safetensors.torch import load_file

    from raddiag.models.fastpath import prepare_for_inference

    d.barrier()
    model.load_state_dict(load_file(str(run.weights), device=str(d.device)))
    scores, yval = validate(prepare_for_inference(_unwrap(model).eval()), val_ds, cfg, d, amp=False)
    if d.is_main:
        labels = copy.deepcopy(labels)
        labels.thresholds = f1_thresholds(scores, yval)
        run.save_labels(labels)
    d.barrier()


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False



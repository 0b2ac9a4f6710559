"""The trainer (paper Sections 11.1 and 4.4).

BCE over all classes (+ optionally the key-slice attention term), AdamW, cosine schedule
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
import csv
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
from raddiag.data.labels import LabelSpace
from raddiag.run import LAST_CHECKPOINT, RunFolder

from . import distributed as dist_utils
from .checkpoint import atomic_write, load_checkpoint, rng_state, save_checkpoint, set_rng_state
from .metrics import f1_thresholds, macro_auc
from .sampler import ResumableSampler
from raddiag.data.shards import ShardData

log = logging.getLogger(__name__)
LAST = LAST_CHECKPOINT
METRIC_FIELDS = ["epoch", "step", "train_loss", "val_loss", "val_auc", "lr", "best_val_auc", "seconds"]


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
def lr_factor(step: int, warmup_steps: int, total_steps: int) -> float:
    """Linear warm-up from ~0 to 1 over ``warmup_steps``, then cosine to 0 at ``total_steps``."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    span = max(1, total_steps - warmup_steps)
    t = min(1.0, (step - warmup_steps) / span)
    return 0.5 * (1.0 + math.cos(math.pi * t))


def _param_groups(model: torch.nn.Module, weight_decay: float, lr: float, encoder_lr_scale: float = 1.0) -> list[dict]:
    """AdamW groups: no weight decay on biases and norms; the head at ``lr``, everything else
    (the pre-trained encoder and fusion when fine-tuning) at ``lr * encoder_lr_scale``.
    Frozen parameters are left out; each group is named (``head`` / ``encoder``, ``_nd`` without
    decay). At scale 1 the head shares the groups (``all``, ``all_nd``: the layout of earlier
    checkpoints, which therefore still resume)."""
    if encoder_lr_scale < 0:
        raise ValueError(f"train.encoder_lr_scale={encoder_lr_scale}; must be >= 0")
    groups: dict[str, dict] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        part = "all" if encoder_lr_scale == 1 else "head" if name.startswith("head.") else "encoder"
        key = part if p.ndim > 1 else f"{part}_nd"
        g = groups.setdefault(key, {"params": [], "name": key, "weight_decay": weight_decay if p.ndim > 1 else 0.0,
                                    "lr": lr * (1.0 if part == "head" else encoder_lr_scale)})
        g["params"].append(p)
    return [groups[k] for k in ("all", "all_nd", "encoder", "encoder_nd", "head", "head_nd") if k in groups]


# -- set-up helpers -----------------------------------------------------------------------
def seed_everything(seed: int, deterministic: bool = False) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False


def resolve_label_embeddings(labels: LabelSpace, label_embeddings=None, knowledge_encoder=None) -> torch.Tensor:
    """Label embeddings ``[C, d]``: a given tensor, a safetensors file (key ``embeddings``), or
    computed once from a knowledge encoder folder (None: the default text encoder)."""
    if isinstance(label_embeddings, torch.Tensor):
        emb = label_embeddings
    elif label_embeddings is not None:
        path = Path(label_embeddings)
        if not path.exists():
            raise FileNotFoundError(f"{path}: label embeddings file does not exist")
        from raddiag.run import read_safetensors

        tensors = read_safetensors(path)
        if "embeddings" not in tensors:
            raise ValueError(f"{path}: no 'embeddings' tensor (found {sorted(tensors)})")
        emb = tensors["embeddings"]
    else:
        from raddiag.knowledge.embed import embed_labels
        from raddiag.knowledge.encoder import TextEncoder

        emb = embed_labels(TextEncoder.load(knowledge_encoder), labels)
    emb = emb.detach().float().cpu()
    if emb.ndim != 2 or emb.shape[0] != len(labels):
        raise ValueError(f"label embeddings have shape {tuple(emb.shape)}; expected [{len(labels)}, d]")
    return emb


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
        log.log(level, "model.pretrained is not set: the per-slice ResNet-%d starts from random weights "
                "(the paper starts from ImageNet weights: pass --pretrained PATH to a torchvision/timm "
                "ResNet-%d state dict, see README)", mc.resnet_depth, mc.resnet_depth)


def _autocast(cfg: RunConfig, device: torch.device):
    if cfg.train.amp not in ("none", "bf16"):
        raise ValueError(f"train.amp={cfg.train.amp!r}; choose 'none' or 'bf16'")
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=cfg.train.amp == "bf16")


def _unwrap(model):
    return model.module if hasattr(model, "module") else model


def _save_weights_atomic(model, run: RunFolder) -> None:
    """model.safetensors, written whole or not at all (same format as models.save_model)."""
    from safetensors.torch import save

    m = _unwrap(model)
    state = {k: v.detach().contiguous().cpu() for k, v in m.state_dict().items()}
    blob = save(state, metadata={"format": "pt", "preset": m.cfg.preset})
    atomic_write(run.weights, lambda f: f.write(blob))


def validate(model, dataset, cfg: RunConfig, d: Optional[dist_utils.Dist] = None,
             progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Validation ``(scores [N, C], labels [N, C])`` over all of ``dataset``, in dataset order.

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
        return _validate_shards(m, dataset, cfg, d, progress)
    idx = list(range(d.rank, len(dataset), d.world_size))
    part = CaseSubset(dataset, idx) if d.enabled else dataset
    if len(idx):
        with _autocast(cfg, d.device):
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


def _validate_shards(m, dataset, cfg: RunConfig, d, progress: bool) -> tuple[np.ndarray, np.ndarray]:
    """:func:`validate` over a shard split: each rank predicts its contiguous share (in split order,
    one reader), the shares are concatenated in rank order and the padding (the last
    ``world_size * ceil(n / world_size) - n``, repeats of the first cases) dropped."""
    from raddiag.inference import predict_dataset

    share = dataset.for_rank(d.rank, d.world_size)
    with _autocast(cfg, d.device):
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


def _val_loss(scores: np.ndarray, labels: np.ndarray) -> float:
    p = np.clip(scores.astype(np.float64), 1e-7, 1 - 1e-7)
    return float(-(labels * np.log(p) + (1 - labels) * np.log(1 - p)).mean())


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
    checkpoint) or ``overwrite`` (start afresh there; the old checkpoint is removed first).
    Under ``torchrun`` this trains with DDP; only rank 0 writes.
    """
    from raddiag.data.dataset import CaseDataset, make_loader
    from raddiag.data.shards import open_training_data
    from raddiag.models import build_model, key_slice_attention_loss

    cfg = copy.deepcopy(cfg)
    if granularity is not None:
        cfg.data.granularity = granularity
    if cfg.data.granularity not in ("disorder", "icd10"):
        raise ValueError(f"granularity must be 'disorder' or 'icd10', got {cfg.data.granularity!r}")
    tc = cfg.train
    if tc.amp not in ("none", "bf16"):
        raise ValueError(f"train.amp={tc.amp!r}; choose 'none' or 'bf16'")
    if tc.batch_size < 1 or tc.grad_accum < 1 or tc.epochs < 1:
        raise ValueError("train.batch_size, train.grad_accum and train.epochs must be >= 1")
    run = RunFolder(out_dir)
    run.claim_for_training(resume, overwrite)
    created = not run.root.exists()

    d = dist_utils.init(device)
    was_deterministic = torch.are_deterministic_algorithms_enabled()
    try:
        return _train(d, open_training_data(data_dir), run, cfg, label_embeddings, knowledge_encoder, resume,
                      progress, max_steps, init_state, train_indices, CaseDataset, make_loader, build_model,
                      key_slice_attention_loss)
    except BaseException:
        if created and d.is_main:
            _remove_unfinished(run)
        raise
    finally:
        torch.use_deterministic_algorithms(was_deterministic)  # process-wide: leave it as found
        d.close()


def _run_label_embeddings(d, run, cfg, labels, label_embeddings, knowledge_encoder, resume):
    """The knowledge head's label embeddings, computed once per run (rank 0, then broadcast) and
    kept in the run folder; None for other heads."""
    if cfg.model.head != "knowledge":
        return None
    if resume and run.label_embeddings.exists():
        return run.load_label_embeddings()
    emb = resolve_label_embeddings(labels, label_embeddings, knowledge_encoder) if d.is_main else None
    emb = dist_utils.broadcast_object(emb, d)
    if d.is_main and label_embeddings is None:
        run.create().record_text_encoder(knowledge_encoder)
    return emb


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


def _remove_unfinished(run) -> None:
    """A run folder this call created, whose training failed before its first checkpoint, holds
    nothing to resume or use (a config and label files that look like a run): remove it."""
    import shutil

    from raddiag.run import LAST_CHECKPOINT

    if run.root.is_dir() and not (run.checkpoints / LAST_CHECKPOINT).exists() and not run.weights.exists():
        shutil.rmtree(run.root, ignore_errors=True)


def _write_run_folder(run, cfg, labels, emb, epoch: int, data) -> None:
    """The run folder: everything inference needs (config, labels, label embeddings, the training
    data's intensity convention)."""
    from raddiag.data.intensity import write_run_intensity

    run.create()
    run.checkpoints.mkdir(exist_ok=True)
    cfg.save(run.config)
    write_run_intensity(run.root, data.meta, data.root)
    labels.save(run.labels)
    if emb is not None:
        run.save_label_embeddings(emb)
    _trim_metrics(run, epoch)


def _train(d, data, run, cfg, label_embeddings, knowledge_encoder, resume, progress, max_steps, init_state,
           train_indices, CaseDataset, make_loader, build_model, key_slice_attention_loss) -> TrainResult:
    from raddiag.data.dataset import ScanDataset
    from raddiag.models import trains_on_scans

    from .augment import build_scan_transform

    from raddiag.data.intensity import adopt_data_windows

    tc = cfg.train
    seed_everything(tc.seed, tc.deterministic)
    adopt_data_windows(cfg.data, data.meta, data.root)
    labels = data.label_space(cfg.data.granularity)
    if resume:
        run.check_label_space(labels, data.root)
    if not data.count("val"):
        raise ValueError(f"{data.root}: no cases in the val split; validation needs some")

    emb = _run_label_embeddings(d, run, cfg, labels, label_embeddings, knowledge_encoder, resume)

    model = _initial_model(cfg, labels, emb, init_state, resume, d, build_model)

    # data
    transform = build_scan_transform(tc, cfg.data)
    if isinstance(data, ShardData):
        train_ds, val_ds, sampler = _shard_datasets(data, cfg, labels, transform, train_indices, d)
        loader = make_loader(train_ds, tc.batch_size, num_workers=tc.num_workers)
        batches_per_epoch = train_ds.batches_per_epoch(tc.batch_size, loader.num_workers)
    else:
        train_full = CaseDataset(data, "train", labels, cfg.data, train=True, scan_transform=transform, seed=tc.seed)
        if trains_on_scans(cfg.model.fusion):  # the paper's pooling baselines: one scan per sample
            train_ds = ScanDataset(train_full, train_indices)
        else:
            train_ds = CaseSubset(train_full, train_indices) if train_indices is not None else train_full
        if len(train_ds) == 0:
            raise ValueError(f"{data.root}: no training cases selected")
        val_ds = CaseDataset(data, "val", labels, cfg.data, train=False)
        sampler = ResumableSampler(train_ds, num_replicas=d.world_size, rank=d.rank, shuffle=True, seed=tc.seed)
        loader = make_loader(train_ds, tc.batch_size, sampler=sampler, num_workers=tc.num_workers)
        batches_per_epoch = math.ceil(sampler.num_samples / tc.batch_size)
    steps_per_epoch = math.ceil(batches_per_epoch / tc.grad_accum)
    total_steps = steps_per_epoch * tc.epochs
    warmup_steps = int(round(tc.warmup_epochs * steps_per_epoch))

    optimizer = torch.optim.AdamW(_param_groups(model, tc.weight_decay, tc.lr, tc.encoder_lr_scale), lr=tc.lr)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, warmup_steps, total_steps))

    state = {"epoch": 0, "batches_done": 0, "step": 0, "best_val_auc": float("-inf"), "best_epoch": -1,
             "bad_epochs": 0, "stopped_early": False, "have_best": False}
    ckpt = _restore(run, model, optimizer, scheduler, state, labels, d) if resume else None

    if d.is_main:
        _write_run_folder(run, cfg, labels, emb, state["epoch"], data)
    d.barrier()

    train_model = model
    if d.enabled:
        from torch.nn.parallel import DistributedDataParallel as DDP

        train_model = DDP(model, device_ids=[d.local_rank] if d.device.type == "cuda" else None,
                          find_unused_parameters=cfg.model.encoder == "resnet")

    writer = None
    if d.is_main:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(str(run.tensorboard))
    bce = torch.nn.BCEWithLogitsLoss()
    need_details = tc.key_slice_loss > 0
    history: list[dict] = []

    def checkpoint(epoch: int, batches_done: int, loss_sum: float = 0.0, loss_n: int = 0) -> None:
        if not d.is_main:
            return
        st = dict(state, epoch=epoch, batches_done=batches_done, loss_sum=loss_sum, loss_n=loss_n)
        save_checkpoint(run.checkpoints / LAST, {
            **st, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(), "rng": rng_state(), "sampler": sampler.state_dict(),
            "world_size": d.world_size, "batch_size": tc.batch_size, "config": cfg.to_dict(),
        })

    stop = False
    epoch = state["epoch"]
    try:
        while epoch < tc.epochs and not stop and not state["stopped_early"]:
            t0 = time.time()
            sampler.set_epoch(epoch)
            train_ds.set_epoch(epoch)
            start_batch = state["batches_done"] if ckpt is not None and epoch == ckpt["epoch"] else 0
            sampler.set_start(start_batch * tc.batch_size)
            model.train()
            resuming = ckpt is not None and epoch == ckpt["epoch"]
            # Creating the loader's iterator draws a seed from torch's RNG: a checkpoint taken at
            # an epoch boundary was saved before that draw, one taken mid-epoch after it.
            if resuming and start_batch == 0:
                set_rng_state(ckpt["rng"])
            it = iter(loader)
            if isinstance(data, ShardData):   # a stream cannot seek: read past the batches already trained on
                for _ in range(start_batch):
                    next(it)
            if resuming and start_batch > 0:
                set_rng_state(ckpt["rng"])
            bar = None
            if progress and d.is_main:
                from tqdm import tqdm

                bar = tqdm(total=batches_per_epoch, initial=start_batch, desc=f"epoch {epoch + 1}/{tc.epochs}",
                           unit="batch", dynamic_ncols=True)
            loss_sum, loss_n = (float(ckpt["loss_sum"]), int(ckpt["loss_n"])) if resuming else (0.0, 0)
            b = start_batch
            optimizer.zero_grad(set_to_none=True)
            for batch in it:
                group_start = (b // tc.grad_accum) * tc.grad_accum
                group_len = min(tc.grad_accum, batches_per_epoch - group_start)
                last_in_group = b == group_start + group_len - 1
                inputs = {k: batch[k].to(d.device) for k in model.input_keys}
                target = batch["labels"].to(d.device)
                sync = (not d.enabled) or last_in_group
                ctx = train_model.no_sync() if not sync else _null()
                with ctx:
                    with _autocast(cfg, d.device):
                        out = train_model(**inputs, return_details=need_details)
                        logits = out.logits if need_details else out
                        loss = bce(logits.float(), target)
                        if need_details and out.slice_attention is not None:
                            loss = loss + tc.key_slice_loss * key_slice_attention_loss(
                                out.slice_attention.float(), batch["key_slice"].to(d.device),
                                batch["slice_mask"].to(d.device))
                    _check_finite_loss(loss, batch, epoch, state["step"])
                    (loss / group_len).backward()
                loss_sum += float(loss.detach())
                loss_n += 1
                b += 1
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{loss_sum / loss_n:.4f}", lr=f"{scheduler.get_last_lr()[0]:.2e}")
                if not last_in_group:
                    continue
                if tc.clip_norm and tc.clip_norm > 0:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), tc.clip_norm)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                state["step"] += 1
                if writer is not None:
                    writer.add_scalar("train/loss_step", float(loss.detach()), state["step"])
                    writer.add_scalar("train/lr", scheduler.get_last_lr()[0], state["step"])
                if max_steps is not None and state["step"] >= max_steps:
                    stop = True
                    break
                if tc.checkpoint_every and state["step"] % tc.checkpoint_every == 0 and b < batches_per_epoch:
                    checkpoint(epoch, b, loss_sum, loss_n)
            if bar is not None:
                bar.close()
            ckpt = None
            tl = torch.tensor([loss_sum, float(loss_n)], dtype=torch.float64)
            if d.enabled:
                torch.distributed.all_reduce(tl)
            train_loss = float(tl[0] / max(tl[1], 1))
            if stop and b < batches_per_epoch:  # max_steps mid-epoch: save where we are and stop
                checkpoint(epoch, b, loss_sum, loss_n)
                if d.is_main and not run.weights.exists():
                    _save_weights_atomic(model, run)
                d.barrier()
                break

            scores, yval = validate(model, val_ds, cfg, d)
            auc = macro_auc(scores, yval)
            vloss = _val_loss(scores, yval)
            improved = (np.isfinite(auc) and auc > state["best_val_auc"]) or not state["have_best"]
            if improved:
                if np.isfinite(auc):
                    state["best_val_auc"] = float(auc)
                state["best_epoch"] = epoch
                state["bad_epochs"] = 0
                state["have_best"] = True
                if d.is_main:
                    _save_weights_atomic(model, run)
            else:
                state["bad_epochs"] += 1
            if tc.early_stop and state["bad_epochs"] >= tc.early_stop:
                state["stopped_early"] = True
            row = {"epoch": epoch + 1, "step": state["step"], "train_loss": train_loss, "val_loss": vloss,
                   "val_auc": auc, "lr": scheduler.get_last_lr()[0],
                   "best_val_auc": state["best_val_auc"], "seconds": round(time.time() - t0, 3)}
            history.append(row)
            if d.is_main:
                _append_metrics(run, row)
                writer.add_scalar("train/loss", train_loss, epoch + 1)
                writer.add_scalar("val/loss", vloss, epoch + 1)
                writer.add_scalar("val/auc", auc, epoch + 1)
                writer.flush()
                log.info("epoch %d: train loss %.4f, val loss %.4f, val macro AUC %.4f", epoch + 1, train_loss,
                         vloss, auc)
            epoch += 1
            state["batches_done"] = 0
            checkpoint(epoch, 0)
            d.barrier()
            if stop:
                break
    finally:
        if writer is not None:
            writer.close()

    finished = epoch >= tc.epochs or state["stopped_early"]
    if finished and state["have_best"]:
        _finalise_thresholds(model, val_ds, cfg, d, run, labels)
    best = state["best_val_auc"] if np.isfinite(state["best_val_auc"]) else float("nan")
    return TrainResult(run, best, state["best_epoch"] + 1, epoch, state["step"], state["stopped_early"], history)


def _finalise_thresholds(model, val_ds, cfg, d, run: RunFolder, labels: LabelSpace) -> None:
    """Reload the best weights and store max-F1 validation thresholds in label_space.json."""
    from safetensors.torch import load_file

    d.barrier()
    model.load_state_dict(load_file(str(run.weights), device=str(d.device)))
    scores, yval = validate(model, val_ds, cfg, d)
    if d.is_main:
        labels = copy.deepcopy(labels)
        labels.thresholds = f1_thresholds(scores, yval)
        labels.save(run.labels)
    d.barrier()


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False


def _read_metrics(run: RunFolder) -> list[dict]:
    if not run.metrics_csv.exists():
        return []
    with run.metrics_csv.open() as f:
        return list(csv.DictReader(f))


def _trim_metrics(run: RunFolder, next_epoch: int) -> None:
    """Keep only rows of epochs a resumed run will not redo (or none for a fresh run)."""
    rows = [r for r in _read_metrics(run) if int(r["epoch"]) <= next_epoch]
    with run.metrics_csv.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=METRIC_FIELDS)
        w.writeheader()
        w.writerows(rows)


def _append_metrics(run: RunFolder, row: dict) -> None:
    with run.metrics_csv.open("a", newline="") as f:
        csv.DictWriter(f, fieldnames=METRIC_FIELDS).writerow(row)

"""Torch dataset and collate over a prepared dataset, producing the batch contract of
DESIGN.md: images ``[B, N, 1, D, H, W]``, ``scan_mask [B, N]``, ``slice_mask [B, N, D]``,
``modality [B, N]`` (0 = padding), ``key_slice [B, N]`` (-1 = none), ``is_3d [B, N]``,
``labels [B, C]`` multi-hot, ``case_ids``, ``anatomy``.

Scan selection per case (the released loader's policy): at most ``max_scans`` scans, at most
``modality_caps[m]`` (default ``default_modality_cap``) of each modality. At evaluation time
the choice is fixed (the first scans in case order); in training it is random per epoch.
"""
from __future__ import annotations

import logging
from collections import Counter, defaultdict
from typing import Callable, Optional

import numpy as np
import torch
from torch.utils.data import Dataset

from raddiag.config import DataConfig
from raddiag.data.batch_buffers import BufferPool
from raddiag.data.case import modality_id
from raddiag.data.labels import LabelSpace
from raddiag.data.preprocess import store_to_input
from raddiag.data.scan_cache import ScanCache
from raddiag.data.store import PreparedData

log = logging.getLogger(__name__)

# A scan handed to a ScanTransform: {"image": float32 tensor [1, d, H, W] (real slices only),
# "is_3d": bool, "key_slice": int (-1 none), "modality": str}. Returns the same kind of dict.
ScanTransform = Callable[[dict, np.random.Generator], dict]


def select_scans(scans: list[dict], cfg: DataConfig, rng: Optional[np.random.Generator]) -> list[int]:
    """Indices of the scans to feed: per-modality caps, then the overall cap.
    ``rng=None`` gives the fixed evaluation-time choice."""
    by_mod: dict[str, list[int]] = defaultdict(list)
    for i, s in enumerate(scans):
        by_mod[s["modality"]].append(i)
    chosen: list[int] = []
    for mod, idx in by_mod.items():
        cap = cfg.modality_caps.get(mod, cfg.default_modality_cap)
        if rng is not None and len(idx) > 1:      # a shuffle of one draws nothing: the same draws, faster
            idx = list(rng.permutation(idx))
        chosen += idx[:cap]
    if rng is not None and len(chosen) > 1:
        chosen = list(rng.permutation(chosen))
    else:
        chosen.sort()
    return [int(i) for i in chosen[: cfg.max_scans]]


def case_hint(names, label_space: LabelSpace) -> str:
    """"; these differ from a class only in letter case, spaces or accents: 'glioma' -> 'Glioma'"
    for the names that match a class but for their spelling
    (:func:`~raddiag.data.adapters.base.similar_names`; names are matched exactly), else ""."""
    from raddiag.data.adapters.base import similar_names

    near = []
    for k in names:        # the classes in letter case alone first, else in accents: every one of them
        cands, _ = similar_names(k, label_space.names)
        if cands:
            near.append(f"{k!r} -> {' or '.join(map(repr, cands))}")
    return f"; these differ from a class only in letter case, spaces or accents: {', '.join(near)}" if near else ""


class CaseDataset(Dataset):
    """Cases of one split of a prepared dataset, as model-ready tensors.

    The stored geometry may be larger than the configured one (prepare once at 256 x 32,
    train a small preset at 64 x 8): slices are then resized and depth resampled on load.
    """

    def __init__(
        self,
        data: str | PreparedData,
        split: Optional[str],
        label_space: LabelSpace,
        cfg: DataConfig,
        train: bool = False,
        scan_transform: Optional[ScanTransform] = None,
        seed: int = 0,
        cache: Optional[ScanCache] = None,
    ):
        self.data = data if isinstance(data, PreparedData) else PreparedData(data)
        self.cache = cache     # loaded scans kept between epochs (raddiag.data.scan_cache); None: none
        self.records = self.data.records_for(split)
        if not self.records:
            raise ValueError(f"{self.data.root}: no cases in split {split!r}")
        self.split = split
        self.labels = label_space
        self.cfg = cfg
        self.train = train
        self.scan_transform = scan_transform
        self.seed = seed
        self.epoch = 0
        # Labels outside the label space cannot be encoded: never drop them silently.
        self.dropped_labels: dict[str, list[str]] = {}   # case id -> its labels not in the label space
        self._targets = np.stack([self._encode(r) for r in self.records])
        if self.dropped_labels:
            counts = Counter(n for names in self.dropped_labels.values() for n in names)
            log.warning("%s split %r: %d case(s) carry %d label(s) outside the label space (%d classes), "
                        "dropped from their targets: %s", self.data.root, split, len(self.dropped_labels),
                        len(counts), len(label_space),
                        ", ".join(f"{k!r} x{v}" for k, v in counts.most_common()) + case_hint(counts, label_space))

    def _encode(self, rec: dict) -> np.ndarray:
        names = self.labels.case_labels(rec)
        missing = [n for n in names if n not in self.labels]
        if missing:
            self.dropped_labels[rec["id"]] = missing
        return self.labels.encode(names, strict=False)

    @property
    def targets(self) -> np.ndarray:
        """``[n_cases, C]`` multi-hot labels of this split (labels outside the space dropped)."""
        return self._targets

    def set_epoch(self, epoch: int) -> None:
        """Re-seed random scan choice and augmentation for a new epoch."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.records)

    def _loaded(self, s: dict, array: np.ndarray) -> tuple[torch.Tensor, int]:
        """Scan record ``s`` from its stored slices ``array``: ``([1, d, H, W] image, key slice)``
        (:func:`raddiag.data.preprocess.store_to_input`)."""
        return store_to_input(array, s["store"]["key"], self.cfg.size, self.cfg.depth)

    def scan_item(self, rec: dict, j: int, rng: Optional[np.random.Generator], k: int = 0,
                  array: Optional[np.ndarray] = None) -> dict:
        """Scan ``j`` of case ``rec``, loaded (and augmented when training, with ``rng``);
        ``k`` counts the earlier scans of its modality in the same entry (the modality id).
        ``array``: the scan's stored slices (default: read from the memory map)."""
        s = rec["scans"][j]
        if array is not None:
            image, key = self._loaded(s, array)
        elif self.cache is not None:    # the store and its offset name the scan; the geometry, its loading
            st, cfg = s["store"], self.cfg
            image, key = self.cache.get((self.data.root, st["start"], st["n"], cfg.size, cfg.depth),
                                        lambda: self._loaded(s, self.data.scan_array(s)))
        else:
            image, key = self._loaded(s, self.data.scan_array(s))
        item = {"image": image, "is_3d": bool(s["is_3d"]), "key_slice": key, "modality": s["modality"]}
        if self.scan_transform is not None and self.train:
            item = self.scan_transform(item, rng)
        item["modality_id"] = modality_id(s["modality"], k, self.cfg.modality_scheme)
        return item

    def sample(self, i: int, scans: list[dict]) -> dict:
        """The sample dict of case ``i`` holding ``scans``."""
        rec = self.records[i]
        return {"scans": scans, "labels": torch.from_numpy(self._targets[i]),
                "case_id": rec["id"], "anatomy": rec.get("anatomy")}

    def __getitem__(self, i: int) -> dict:
        return self.case_sample(i, self.records[i], self._targets[i])

    def case_sample(self, i: int, rec: dict, target: np.ndarray,
                    arrays: Optional[list[np.ndarray]] = None, rng: Optional[np.random.Generator] = None) -> dict:
        """The sample of case ``rec``, number ``i`` of its split (the seed of its random scan choice
        and augmentation, unless a training ``rng`` is given), with multi-hot ``target``; ``arrays``:
        its scans' stored slices (default: read from the memory map). Shared with the shard reader
        (raddiag.data.shards) and case mixing (raddiag.data.case_mix)."""
        if not self.train:
            rng = None
        elif rng is None:
            rng = np.random.default_rng([self.seed, self.epoch, i])
        per_mod_count: dict[tuple[int, str], int] = defaultdict(int)
        scans = []
        for j in select_scans(rec["scans"], self.cfg, rng):
            s = rec["scans"][j]
            key = (s.get("entry", 0), s["modality"])
            scans.append(self.scan_item(rec, j, rng, per_mod_count[key], None if arrays is None else arrays[j]))
            per_mod_count[key] += 1
        return {"scans": scans, "labels": torch.from_numpy(target),
                "case_id": rec["id"], "anatomy": rec.get("anatomy")}


class ScanDataset(Dataset):
    """One scan per sample, each carrying its case's labels: the training view of the
    paper's scan-level pooling baselines (``model.fusion=max|mean|random``, Supplementary B).

    Every scan of the chosen cases (``case_indices`` of ``cases``; default all) is one
    sample, in case order; augmentation is seeded by ``(seed, epoch, case, scan)``. Exposes
    what the trainer's loaders need (``cfg``, ``labels``, ``targets``, ``set_epoch``).
    """

    def __init__(self, cases: CaseDataset, case_indices: Optional[list[int]] = None):
        self.cases = cases
        self.cfg = cases.cfg
        self.labels = cases.labels
        chosen = range(len(cases)) if case_indices is None else case_indices
        self.index = [(int(i), j) for i in chosen for j in range(len(cases.records[int(i)]["scans"]))]
        if not self.index:
            raise ValueError(f"{cases.data.root} split {cases.split!r}: no scans in the chosen cases")

    @property
    def targets(self) -> np.ndarray:
        """``[n_scans, C]``: each scan's case labels."""
        return self.cases.targets[[i for i, _ in self.index]]

    def set_epoch(self, epoch: int) -> None:
        self.cases.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, n: int) -> dict:
        i, j = self.index[n]
        c = self.cases
        rng = np.random.default_rng([c.seed, c.epoch, i, j]) if c.train else None
        return c.sample(i, [c.scan_item(c.records[i], j, rng)])


def collate_cases(samples: list[dict], depth: Optional[int] = None) -> dict:
    """Pad scans per case and slices per scan into the batch contract. The batch is filled in numpy
    and handed to torch whole (a torch element or slice assignment costs ~3-10 us, a numpy one ~0.1-1:
    0.09 -> 0.06 ms a case of the demo recipe, the same tensors). The images go into reused memory
    (``raddiag.data.batch_buffers``; every element written, the padding zeroed: the demo recipe's
    loading between steps 0.41-0.42 -> 0.35-0.37 s over 4 epochs, about 1 ms a batch of 8 cases,
    issue 29)."""
    B = len(samples)
    N = max(len(s["scans"]) for s in samples)
    D = depth or max(sc["image"].shape[1] for s in samples for sc in s["scans"])
    H, W = samples[0]["scans"][0]["image"].shape[-2:]
    images = _IMAGES.take((B, N, 1, D, H, W))
    where, fields = [], []          # each scan's (case, slot) and (real slices, modality, key slice, 3D)
    for b, s in enumerate(samples):
        for n, sc in enumerate(s["scans"]):
            d = min(sc["image"].shape[1], D)
            images[b, n, :, :d] = sc["image"][:, :d].numpy()
            if d < D:
                images[b, n, :, d:] = 0.0
            where.append((b, n))
            fields.append((d, sc["modality_id"], sc["key_slice"] if sc["key_slice"] < d else -1, sc["is_3d"]))
        if len(s["scans"]) < N:
            images[b, len(s["scans"]):] = 0.0
    # the per-scan fields set at once (one numpy assignment each, not one per scan: issue 29)
    bs, ns = np.array(where, dtype=np.intp).T
    d, mod, key, flat = np.array(fields, dtype=np.int64).T
    scan_mask = np.zeros((B, N), dtype=bool)
    scan_mask[bs, ns] = True
    slice_mask = np.zeros((B, N, D), dtype=bool)
    slice_mask[bs, ns] = np.arange(D) < d[:, None]
    modality = np.zeros((B, N), dtype=np.int64)
    modality[bs, ns] = mod
    key_slice = np.full((B, N), -1, dtype=np.int64)
    key_slice[bs, ns] = key
    is_3d = np.zeros((B, N), dtype=bool)
    is_3d[bs, ns] = flat != 0
    return {
        "images": torch.from_numpy(images), "scan_mask": torch.from_numpy(scan_mask),
        "slice_mask": torch.from_numpy(slice_mask), "modality": torch.from_numpy(modality),
        "key_slice": torch.from_numpy(key_slice), "is_3d": torch.from_numpy(is_3d),
        "labels": torch.stack([s["labels"] for s in samples]),
        "case_ids": [s["case_id"] for s in samples], "anatomy": [s["anatomy"] for s in samples],
    }


_IMAGES = BufferPool()     # this process's reused batch images (collate_cases)


class EpochTagged(Dataset):
    """A map-style dataset read by persistent worker processes: each index arrives as
    ``(epoch, i)`` (from :class:`EpochTaggedSampler`) and the worker's copy of the dataset is moved
    to that epoch before item ``i`` is read. A persistent worker keeps the copy made when it
    started; without the tag it would replay the first epoch's scan choices and augmentation."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset, self.epoch = dataset, None

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]) -> dict:
        epoch, i = key
        if epoch != self.epoch:
            self.dataset.set_epoch(epoch)
            self.epoch = epoch
        return self.dataset[i]


class EpochTaggedSampler(torch.utils.data.Sampler):
    """``sampler``'s indices, each with the epoch it was drawn for (the sampler's ``epoch``)."""

    def __init__(self, sampler) -> None:
        self.sampler = sampler

    def __len__(self) -> int:
        return len(self.sampler)

    def __iter__(self):
        epoch = int(self.sampler.epoch)
        return ((epoch, i) for i in self.sampler)


def make_loader(dataset: CaseDataset, batch_size: int, shuffle: bool = False, num_workers: int = 0,
                sampler=None, drop_last: bool = False, seed: Optional[int] = None):
    """A DataLoader with the right collate (D fixed to the configured depth).

    With workers, a map-style dataset read through an epoch-aware sampler (``sampler.epoch`` and
    ``dataset.set_epoch``: the trainer's) keeps its worker processes from one epoch to the next,
    each index tagged with its epoch (:class:`EpochTagged`): starting a worker every epoch cost
    more than the worker saved on short epochs (issue 29, ``benchmarks/train_overhead.py``).
    Other datasets (the shard streams, which read their epoch when iterated) start their workers
    each epoch. A worker's batch crosses to this process with its small tensors by value
    (:class:`WorkerLoader`). ``seed`` gives the loader its own generator for the workers' base
    seed, so creating an iterator never draws from torch's global random state (training and
    resume stay the same with and without workers)."""
    from functools import partial

    from torch.utils.data import DataLoader

    from raddiag.data.workers import worker_processes_allowed

    if num_workers and not worker_processes_allowed("the data loader's worker processes (num_workers)"):
        num_workers = 0
    iterable = isinstance(dataset, torch.utils.data.IterableDataset)
    collate = partial(collate_cases, depth=dataset.cfg.depth)
    persistent = (num_workers > 0 and not iterable and hasattr(sampler, "epoch")
                  and hasattr(dataset, "set_epoch"))
    if persistent:
        dataset, sampler = EpochTagged(dataset), EpochTaggedSampler(sampler)
    generator = torch.Generator().manual_seed(seed) if seed is not None else None
    kind = DataLoader
    if num_workers > 0:
        kind, collate = WorkerLoader, partial(_small_by_value, collate)
    return kind(dataset, batch_size=batch_size, shuffle=shuffle and sampler is None and not iterable,
                sampler=sampler, num_workers=num_workers, drop_last=drop_last, generator=generator,
                collate_fn=collate, persistent_workers=persistent)


# Tensors a worker's batch keeps as tensors on its way to the training process; the rest go by value.
SHARED_BY_MEMORY = ("images",)


def _small_by_value(collate: Callable, samples: list[dict]) -> dict:
    """In a loader worker: the batch ``collate`` makes, its tensors other than the images as
    numpy arrays. A tensor leaves a worker through shared memory and a file descriptor passed
    over a socket; the batch's 7 tensors took 3.0 ms a batch that way, the images alone with the
    rest pickled by value about half (measured, issue 29): the step waits for this in the
    training process, so it is time taken from every step."""
    batch = collate(samples)
    return {k: v.numpy() if torch.is_tensor(v) and k not in SHARED_BY_MEMORY else v for k, v in batch.items()}


def as_tensors(batch):
    """A batch from :func:`_small_by_value` with its arrays as tensors again (no copy); anything
    but a dict (a collate function the caller set on the loader) passes as it came."""
    if not isinstance(batch, dict):
        return batch
    return {k: torch.from_numpy(v) if isinstance(v, np.ndarray) else v for k, v in batch.items()}


class WorkerLoader(torch.utils.data.DataLoader):
    """A DataLoader whose worker processes send a batch's small tensors by value
    (:func:`_small_by_value`); it yields the batch contract of :func:`collate_cases` as a loader
    without workers does."""

    def __iter__(self):
        return map(as_tensors, super().__iter__())

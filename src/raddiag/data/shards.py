"""A prepared dataset as WebDataset tar shards, for streaming from a network file system or an
object store (multi-node training), and the reader that splits them by node and worker.

```
DIR/
  shards.json          format version, geometry (size, depth), the prepared meta, both label spaces,
                       and per split its case count and shards: name, case count, bytes, sha256
  train-000000.tar ... one sample per case: KEY.json (the prepared case record), KEY.scanJ.npy
  val-000000.tar   ... (float16 [n, size, size], scan J of the record), KEY.disorder.npy and
  test-000000.tar  ... KEY.icd10.npy (uint8 multi-hot in the two label spaces); KEY = the case's
                       number in its split (7 digits)
```
WebDataset (a well-kept library; LitData and Mosaic Streaming need their own index formats and
servers) writes the tars, and its tar iterators read them back; shards are written into a
hidden staging folder inside DIR and moved in only when all are complete, ``shards.json`` last
(so a failed ``--overwrite`` leaves the old shards whole). Where an index and its shards live and
which shard names it may hold: :mod:`raddiag.data.shard_index`.

Reading (:class:`ShardDataset`): the shards of a split are ordered (seeded per epoch when
training), and this sequence of cases is cut into ``world_size`` equal contiguous shares, each
cut again into one share per DataLoader worker: every reader streams only the shards its share
overlaps. Shares are equal because the sequence is padded to a multiple of ``world_size`` by
repeating its first cases (as DistributedSampler pads), so every rank gets the same number of
cases and batches and DDP cannot hang on an uneven last shard. Training cases then pass a seeded
shuffle buffer (seed, epoch, rank, worker). A shard read from start to end is checked against its
sha256; a damaged one raises :class:`ShardError` naming it.
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import math
import os
import random
import tarfile
from pathlib import Path
from typing import Iterator, Optional

import numpy as np
from torch.utils.data import IterableDataset, get_worker_info

from raddiag.data.dataset import CaseDataset
from raddiag.data.errors import OutputExists
from raddiag.data.labels import GRANULARITIES, LabelSpace
from raddiag.staging import discard, make_stage, sweep_stale
from raddiag.data.shard_index import (INDEX, SHARD_FORMAT, SHARD_NAME, SPLIT_NAME, ShardError, open_source, as_source,
                                      is_shard_folder, is_url, read_index, shard_location)
from raddiag.data.store import PreparedData

__all__ = ["INDEX", "SHARD_FORMAT", "ShardError", "as_source", "is_shard_folder", "is_url", "read_index",
           "shard_location", "write_shards", "verify_shards", "iter_shard", "ShardDataset", "ShardData",
           "ShardProgress", "open_training_data", "split_dataset", "share_bounds"]

log = logging.getLogger(__name__)

STAGING = ".shards-new-"        # + pid: where data shard writes before swapping the shards in (a locked stage)
SPLIT_ORDER = ("train", "val", "test")


class _Hashing(io.RawIOBase):
    """A file wrapper that feeds every byte written or read through sha256."""

    def __init__(self, f):
        self.f, self.sha, self.n = f, hashlib.sha256(), 0

    def writable(self):
        return True

    def write(self, b):
        self.sha.update(b)
        self.n += len(b)
        return self.f.write(b)

    def read(self, n=-1):
        b = self.f.read(n)
        self.sha.update(b)
        self.n += len(b)
        return b


def _npy(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(arr), allow_pickle=False)
    return buf.getvalue()


def _case_members(data: PreparedData, rec: dict, i: int, spaces: dict) -> dict:
    sample = {"__key__": f"{i:07d}", "json": json.dumps(rec).encode()}
    for j, sc in enumerate(rec["scans"]):
        sample[f"scan{j}.npy"] = _npy(np.asarray(data.scan_array(sc), dtype=np.float16))
    for gran, ls in spaces.items():
        sample[f"{gran}.npy"] = _npy(ls.encode(ls.case_labels(rec), strict=False).astype(np.uint8))
    return sample


def _tar_bytes(sample: dict) -> int:
    """The bytes a sample's members take in a tar: a 512-byte header each, data padded to 512."""
    return sum(tarfile.BLOCKSIZE + -(-len(v) // tarfile.BLOCKSIZE) * tarfile.BLOCKSIZE
               for k, v in sample.items() if k != "__key__")


def _tar_file_bytes(members: int) -> int:
    """A tar file's size holding ``members`` bytes of members: two end blocks, padded to a record."""
    return -(-(members + 2 * tarfile.BLOCKSIZE) // tarfile.RECORDSIZE) * tarfile.RECORDSIZE


def _write_split(data: PreparedData, split: str, out: Path, shard_size: int, spaces: dict) -> list[dict]:
    """The shards of one split, each written to a temporary name and renamed when complete."""
    import webdataset as wds

    shards: list[dict] = []
    state: dict = {}
    # an integer time (a float one costs each member a PAX header): the prepared data's, so that
    # sharding the same prepared data again gives the same bytes
    mtime = int((data.root / "meta.json").stat().st_mtime)

    def close():
        if state:
            state["writer"].close()
            state["file"].close()
            os.replace(state["tmp"], out / state["name"])
            assert state["h"].n == _tar_file_bytes(state["members"]), "tar size estimate is off"
            shards.append({"name": state["name"], "n_cases": state["n"], "bytes": state["h"].n,
                           "sha256": state["h"].sha.hexdigest()})
            state.clear()

    try:
        for i, rec in enumerate(data.records_for(split)):
            sample = _case_members(data, rec, i, spaces)
            size = _tar_bytes(sample)
            if state and _tar_file_bytes(state["members"] + size) > shard_size:
                close()
            if not state:
                name = f"{split}-{len(shards):06d}.tar"
                tmp = out / f".{name}.tmp"
                f = tmp.open("wb")
                h = _Hashing(f)
                state.update(name=name, tmp=tmp, file=f, h=h, n=0, members=0, writer=wds.TarWriter(h, encoder=False, mtime=mtime))
            state["writer"].write(sample)
            state["n"] += 1
            state["members"] += size
        close()
    finally:
        if state:       # a failure: the tar writer is closed first (else its end blocks go to a closed file)
            with contextlib.suppress(Exception):
                state["writer"].close()
            state["file"].close()
            state["tmp"].unlink(missing_ok=True)
    return shards


def write_shards(prepared: str | Path, out: str | Path, shard_size: int = 2**30, overwrite: bool = False) -> dict:
    """Write the prepared dataset ``prepared`` as tar shards of at most ``shard_size`` bytes (a
    case larger than that gets a shard of its own) into ``out``, and return the index written to
    ``out/shards.json``. An existing shard folder is replaced only with ``overwrite``: the new
    shards are written into a hidden folder inside ``out`` and moved in only when all are complete
    (a failure leaves the old shards whole); then the old shards the new index does not list are
    removed, and only names ``data shard`` writes (``SPLIT-NNNNNN.tar``) directly inside ``out``."""
    if shard_size < 1:
        raise ValueError(f"shard size must be positive, got {shard_size}")
    data = PreparedData(prepared)
    out = Path(out)
    if (out / INDEX).exists() and not overwrite:
        raise OutputExists(f"{out}: holds shards already; pass --overwrite (overwrite=True) to replace them")
    out.mkdir(parents=True, exist_ok=True)
    sweep_stale(out, STAGING)                 # the unfinished shards of a killed run (raddiag.staging)
    spaces = {g: data.label_space(g) for g in GRANULARITIES}
    present = {r["split"] for r in data.records}
    bad = sorted(s for s in present if not SPLIT_NAME.fullmatch(str(s)))
    if bad:
        raise ValueError(f"{data.root}: split name(s) {bad} cannot name a shard (letters, digits, '_')")
    staging = make_stage(out, STAGING)
    try:
        splits = {}
        for split in [s for s in SPLIT_ORDER if s in present] + sorted(present - set(SPLIT_ORDER)):
            shards = _write_split(data, split, staging, shard_size, spaces)
            splits[split] = {"n_cases": sum(s["n_cases"] for s in shards), "shards": shards}
        index = {"format_version": SHARD_FORMAT, "source": str(Path(prepared).resolve()),
                 "size": data.size, "depth": data.depth, "meta": data.meta, "shard_size": shard_size,
                 "label_spaces": {g: ls.to_dict() for g, ls in spaces.items()}, "splits": splits}
        _swap_in(staging, out, index)
    finally:
        discard(staging)
    return index


def _swap_in(staging: Path, out: Path, index: dict) -> None:
    """Move the complete shards of ``index`` from ``staging`` into ``out`` and write the index
    last; the old index goes first, so that no index ever lists a mix of old and new shards."""
    old = _old_shard_names(out / INDEX)
    (out / INDEX).unlink(missing_ok=True)
    new = {sh["name"] for sp in index["splits"].values() for sh in sp["shards"]}
    for name in new:
        os.replace(staging / name, out / name)
    tmp = staging / INDEX
    tmp.write_text(json.dumps(index, indent=1))
    os.replace(tmp, out / INDEX)
    for name in old - new:
        if (out / name).is_file():
            (out / name).unlink()


def _old_shard_names(index_path: Path) -> set[str]:
    """The shard names an old index lists that ``data shard`` writes (``SPLIT-NNNNNN.tar``: no
    folder, no ``..``): the only files ``--overwrite`` may remove. Other names are left, and said."""
    try:
        idx = json.loads(index_path.read_text())
        names = {s["name"] for sp in idx["splits"].values() for s in sp["shards"]}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return set()
    odd = sorted(str(n) for n in names if not (isinstance(n, str) and SHARD_NAME.fullmatch(n)))
    if odd:
        log.warning("%s: lists %d name(s) that are not shard names, left in place: %s", index_path, len(odd),
                    ", ".join(repr(n) for n in odd[:5]))
    return {n for n in names if isinstance(n, str) and SHARD_NAME.fullmatch(n)}


def verify_shards(root: str | Path) -> int:
    """Check every shard's size and sha256 against ``shards.json``; the number checked.
    Raises :class:`ShardError` naming the first shard that differs."""
    root = as_source(root)
    index = read_index(root)
    n = 0
    for sp in index["splits"].values():
        for sh in sp["shards"]:
            path = shard_location(root, sh["name"])
            if isinstance(path, Path) and not path.is_file():
                raise ShardError(f"{path}: missing (listed in {shard_location(root, INDEX)})")
            h = hashlib.sha256()
            try:
                with open_source(path) as f:
                    for block in iter(lambda: f.read(1 << 22), b""):
                        h.update(block)
            except OSError as exc:
                raise ShardError(f"{path}: cannot be read ({type(exc).__name__}: {exc})") from None
            if h.hexdigest() != sh["sha256"]:
                raise ShardError(f"{path}: sha256 {h.hexdigest()[:12]}... differs from {sh['sha256'][:12]}... in "
                                 f"{INDEX}: the shard is damaged; shard the dataset again")
            n += 1
    return n


def _decode(path: Path, sample: dict) -> tuple[int, dict, list[np.ndarray], dict]:
    """(number in split, record, scan arrays, {granularity: stored multi-hot}) of one tar sample."""
    try:
        rec = json.loads(sample["json"])
        arrays = [np.load(io.BytesIO(sample[f"scan{j}.npy"]), allow_pickle=False) for j in range(len(rec["scans"]))]
        stored = {g: np.load(io.BytesIO(sample[f"{g}.npy"]), allow_pickle=False) for g in GRANULARITIES}
        return int(sample["__key__"].rsplit("/", 1)[-1]), rec, arrays, stored
    except (KeyError, ValueError, OSError, TypeError, RecursionError) as exc:
        raise ShardError(f"{path}: sample {sample.get('__key__')!r} cannot be decoded ({type(exc).__name__}: "
                         f"{exc}); the shard is damaged, shard the dataset again") from None


def iter_shard(path: Path | str, entry: dict, start: int = 0, stop: Optional[int] = None) -> Iterator[tuple]:
    """Decoded samples ``start`` to ``stop`` of one shard (its index entry ``entry``; ``path`` a
    local file or a URL). Read from start to end, the shard's bytes are checked against its sha256
    (and its case count)."""
    from webdataset.tariterators import group_by_keys, tar_file_expander

    stop = entry["n_cases"] if stop is None else stop
    whole = start == 0 and stop == entry["n_cases"]
    if isinstance(path, Path) and not path.is_file():
        raise ShardError(f"{path}: missing (listed in {path.parent / INDEX})")
    n = 0
    try:
        f = open_source(path)
    except OSError as exc:
        raise ShardError(f"{path}: cannot be opened ({type(exc).__name__}: {exc})") from None
    h = _Hashing(f)
    try:
        with f:   # closing a pipe: the command's exit status is checked
            for sample in group_by_keys(tar_file_expander([{"url": str(path), "stream": h}])):
                if start <= n < stop:
                    yield _decode(path, sample)
                n += 1
                if n >= stop and not whole:
                    break
            while whole and h.read(1 << 22):   # the tar's end blocks, for the checksum
                pass
    except (tarfile.TarError, EOFError, OSError, ValueError) as exc:
        if isinstance(exc, ShardError):
            raise
        raise ShardError(f"{path}: cannot be read as a tar shard ({type(exc).__name__}: {exc.args[0] if exc.args else exc}); the shard is "
                         "damaged or truncated, shard the dataset again") from None
    if whole and (n != entry["n_cases"] or h.sha.hexdigest() != entry["sha256"]):
        raise ShardError(f"{path}: holds {n} cases with sha256 {h.sha.hexdigest()[:12]}..., {INDEX} declares "
                         f"{entry['n_cases']} with {entry['sha256'][:12]}...: the shard is damaged; shard the "
                         "dataset again")


def share_bounds(n: int, world_size: int, rank: int, n_workers: int = 1, worker: int = 0) -> tuple[int, int]:
    """``[a, b)``: positions of one reader's share in an epoch's sequence of ``n`` cases padded to
    ``world_size * ceil(n / world_size)`` (positions ``>= n`` repeat the sequence's start)."""
    per_rank = math.ceil(n / world_size)
    lo = rank * per_rank
    return lo + per_rank * worker // n_workers, lo + per_rank * (worker + 1) // n_workers


class _SampleMaker(CaseDataset):
    """The sample-making half of :class:`CaseDataset` (scan choice, loading, augmentation), without
    a memory map: the shard reader hands it each case's record and arrays."""

    def __init__(self, label_space, cfg, train, scan_transform, seed):
        self.data, self.labels, self.cfg, self.train = None, label_space, cfg, train
        self.scan_transform, self.seed, self.epoch = scan_transform, seed, 0


class ShardDataset(IterableDataset):
    """The cases of one split of a shard folder, as the samples :class:`CaseDataset` yields for the
    same cases (same scan choice and augmentation: seeded by the case's number in its split), for
    the same collate. Split by rank (``rank`` / ``world_size``, default: torch.distributed's) and
    by DataLoader worker; training order is shard order shuffled by ``(seed, epoch)`` then a
    ``shuffle_buffer`` of cases. Every rank gets ``ceil(n / world_size)`` cases (padding repeats
    the epoch's first cases)."""

    def __init__(self, root: str | Path, split: str, label_space: LabelSpace, cfg, train: bool = False,
                 scan_transform=None, seed: int = 0, rank: Optional[int] = None,
                 world_size: Optional[int] = None, shuffle_buffer: int = 256):
        self.root = as_source(root)
        self.index = read_index(self.root)
        if split not in self.index["splits"] or not self.index["splits"][split]["n_cases"]:
            raise ValueError(f"{self.root}: no cases in split {split!r}")
        self.split, self.shards = split, self.index["splits"][split]["shards"]
        self.n_cases = self.index["splits"][split]["n_cases"]
        self.labels, self.cfg, self.train, self.seed, self.epoch = label_space, cfg, train, seed, 0
        self.shuffle_buffer = shuffle_buffer
        self.rank, self.world_size = _dist(rank, world_size)
        self.maker = _SampleMaker(label_space, cfg, train, scan_transform, seed)
        # the shard's multi-hot is used when the label space is the shard's; else labels are encoded
        stored = self.index["label_spaces"].get(label_space.granularity)
        self._use_stored = stored is not None and LabelSpace.from_dict(stored).names == list(label_space.names)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self.maker.set_epoch(epoch)

    def for_rank(self, rank: int, world_size: int) -> "ShardDataset":
        """The same dataset read as rank ``rank`` of ``world_size``."""
        import copy

        out = copy.copy(self)
        out.rank, out.world_size = _dist(rank, world_size)
        return out

    def __len__(self) -> int:
        """Cases this rank reads per epoch (the same on every rank)."""
        return math.ceil(self.n_cases / self.world_size)

    def batches_per_epoch(self, batch_size: int, num_workers: int = 0) -> int:
        """Batches a DataLoader over this dataset yields per epoch on this rank (each worker
        batches its own share), the same on every rank."""
        w = max(1, num_workers)
        shares = [share_bounds(self.n_cases, self.world_size, 0, w, k) for k in range(w)]
        return sum(math.ceil((b - a) / batch_size) for a, b in shares)

    def shard_order(self) -> list[int]:
        """This epoch's order of the split's shards: seeded by ``(seed, epoch)`` when training."""
        order = list(range(len(self.shards)))
        if self.train:
            random.Random(f"{self.seed}-{self.epoch}").shuffle(order)
        return order

    def _positions(self, a: int, b: int) -> Iterator[tuple]:
        """Samples at positions ``[a, b)`` of the epoch's (padded) sequence, shard by shard."""
        spans = [(a, min(b, self.n_cases))] + ([(0, b - self.n_cases)] if b > self.n_cases else [])
        for lo, hi in spans:
            pos = 0
            for s in self.shard_order():
                entry = self.shards[s]
                start, stop = max(lo - pos, 0), min(hi - pos, entry["n_cases"])
                if start < stop:
                    yield from iter_shard(shard_location(self.root, entry["name"]), entry, start, stop)
                pos += entry["n_cases"]

    def __iter__(self) -> Iterator[dict]:
        info = get_worker_info()
        w, nw = (info.id, info.num_workers) if info is not None else (0, 1)
        a, b = share_bounds(self.n_cases, self.world_size, self.rank, nw, w)
        stream = self._positions(a, b)
        if self.train and self.shuffle_buffer > 1:
            from webdataset.filters import _shuffle

            rng = random.Random(f"{self.seed}-{self.epoch}-{self.rank}-{w}")
            stream = _shuffle(stream, bufsize=self.shuffle_buffer, initial=self.shuffle_buffer, rng=rng)
        for i, rec, arrays, stored in stream:
            if self._use_stored:
                target = stored[self.labels.granularity].astype(np.float32)
            else:
                target = self.labels.encode(self.labels.case_labels(rec), strict=False)
            yield self.maker.case_sample(i, rec, target, arrays)


class ShardData:
    """A shard folder, read side: what the trainer asks of a prepared dataset (``root``, ``meta``,
    ``label_space``, ``count``)."""

    def __init__(self, root: str | Path):
        self.root = as_source(root)
        self.index = read_index(self.root)
        self.meta = self.index.get("meta") or {}

    def count(self, split: str) -> int:
        return int(self.index["splits"].get(split, {}).get("n_cases", 0))

    def modalities(self) -> list[str]:
        """The modalities of the dataset's scans (the prepared meta's intensity profile)."""
        return sorted(self.meta.get("intensity") or {})

    def label_space(self, granularity: str = "disorder") -> LabelSpace:
        if granularity not in self.index["label_spaces"]:
            raise ShardError(f"{self.root / INDEX}: no {granularity!r} label space")
        return LabelSpace.from_dict(self.index["label_spaces"][granularity])


def open_training_data(path: str | Path):
    """A shard source (:func:`is_shard_folder`) as :class:`ShardData`, anything else as PreparedData."""
    return ShardData(path) if is_shard_folder(path) else PreparedData(path)


def split_dataset(data, split: str, label_space: LabelSpace, cfg):
    """The cases of ``split`` of ``data`` (from :func:`open_training_data`) in split order, as
    evaluation reads them: a :class:`ShardDataset` read whole or a :class:`CaseDataset`."""
    if isinstance(data, ShardData):
        return ShardDataset(data.root, split, label_space, cfg, train=False, rank=0, world_size=1)
    return CaseDataset(data, split, label_space, cfg, train=False)


class ShardProgress:
    """The trainer's sampler interface (epoch, resume point, state) for a :class:`ShardDataset`, whose
    order is a function of ``(seed, epoch)``: resuming mid-epoch reads past the batches done."""

    def __init__(self, dataset: ShardDataset, seed: int):
        self.dataset, self.seed, self.epoch, self.start = dataset, seed, 0, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch, self.start = epoch, 0
        self.dataset.set_epoch(epoch)

    def set_start(self, k: int) -> None:
        self.start = int(k)

    def state_dict(self) -> dict:
        return {"seed": int(self.seed), "epoch": int(self.epoch), "start": int(self.start)}


def _dist(rank: Optional[int], world_size: Optional[int]) -> tuple[int, int]:
    """(rank, world size): as given, else torch.distributed's when initialised, else (0, 1)."""
    if rank is None or world_size is None:
        import torch.distributed as dist

        on = dist.is_available() and dist.is_initialized()
        rank = rank if rank is not None else (dist.get_rank() if on else 0)
        world_size = world_size if world_size is not None else (dist.get_world_size() if on else 1)
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} outside world size {world_size}")
    return rank, world_size

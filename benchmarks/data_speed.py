"""Data-layer speed: `prepare` scans/s, CaseDataset + DataLoader batches/s, and whole epochs read
from the memory map beside WebDataset shards (`data shard`) with 1 and 2 DataLoader workers.

    python benchmarks/data_speed.py                 # generate NPY + NIfTI volumes in a temp folder
    python benchmarks/data_speed.py --folder DIR    # or time your own volumes (*.npy, *.nii, *.nii.gz, images)

Prints scans/s for preparing at --size x --depth (paper: 256 x 32), then batches/s for loading
the prepared data at batch 4 in the paper geometry (256 x 32) and a tiny one (64 x 8), so that
later work can see whether loading keeps up with training. Timings on a shared machine are noisy.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path


def make_volumes(folder: Path, n: int, hw: int, d: int) -> list[Path]:
    import nibabel as nib
    import numpy as np

    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(n):
        vol = (rng.normal(0, 300, (hw, hw, d)) + 40).astype(np.float32)
        if i % 2:
            p = folder / f"vol{i:03d}.nii"   # uncompressed: gzip of random floats dominates otherwise
            nib.save(nib.Nifti1Image(vol, np.eye(4)), p)
        else:
            p = folder / f"vol{i:03d}.npy"
            np.save(p, vol)
        out.append(p)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--folder", help="volumes to prepare (default: generated)")
    ap.add_argument("--n", type=int, default=16, help="generated volumes (default 16)")
    ap.add_argument("--hw", type=int, default=384, help="generated slice size (default 384)")
    ap.add_argument("--slices", type=int, default=64, help="generated slices per volume (default 64)")
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--depth", type=int, default=32)
    ap.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1), help="prepare workers")
    ap.add_argument("--loader-workers", type=int, default=0, help="DataLoader workers (default 0)")
    ap.add_argument("--batches", type=int, default=8, help="batches timed per geometry")
    ap.add_argument("--epochs", type=int, default=3, help="epochs timed per reader in the shard comparison")
    args = ap.parse_args(argv)

    import torch

    from raddiag.config import DataConfig
    from raddiag.data.case import Case, Scan
    from raddiag.data.dataset import CaseDataset, make_loader
    from raddiag.data.labels import LabelSpace
    from raddiag.data.store import PreparedData, prepare_cases

    torch.set_num_threads(max(1, min(4, os.cpu_count() or 1)))
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if args.folder:
            files = sorted(p for p in Path(args.folder).rglob("*") if p.is_file())
            if not files:
                print(f"{args.folder}: no files", file=sys.stderr)
                return 2
        else:
            t = time.perf_counter()
            files = make_volumes(tmp / "vols", args.n, args.hw, args.slices)
            print(f"generated {len(files)} volumes {args.hw}x{args.hw}x{args.slices} (NPY + NIfTI) "
                  f"in {time.perf_counter() - t:.1f} s")
        # cases of 2 scans each, labels cycling over 3 classes
        cases = [Case(id=f"c{i}", scans=[Scan(str(f), "CT") for f in files[i:i + 2]],
                      labels=[["Pneumonia"], ["Glioma"], []][i % 3], split="train")
                 for i in range(0, len(files), 2)]
        out = tmp / "prepared"
        t = time.perf_counter()
        report = prepare_cases(cases, out, size=args.size, depth=args.depth, workers=args.workers)
        dt = time.perf_counter() - t
        print(f"prepare: {report.scans_out} scans at {args.size}x{args.size}x{args.depth} in {dt:.2f} s "
              f"= {report.scans_out / dt:.1f} scans/s (workers {args.workers})")
        if report.skipped_scans:
            print(f"  ({len(report.skipped_scans)} scans skipped; see {out / 'report.txt'})")
        data = PreparedData(out)
        labels = data.label_space("disorder")
        for name, size, depth in (("paper", args.size, args.depth), ("tiny", 64, 8)):
            ds = CaseDataset(data, "train", labels, DataConfig(size=size, depth=depth), train=True)
            loader = make_loader(ds, batch_size=4, shuffle=True, num_workers=args.loader_workers)
            n, t = 0, time.perf_counter()
            while n < args.batches:
                for batch in loader:
                    n += 1
                    if n >= args.batches:
                        break
            dt = time.perf_counter() - t
            shape = tuple(batch["images"].shape)
            print(f"load ({name} {size}x{size}x{depth}, batch 4, {args.loader_workers} workers): "
                  f"{n / dt:.1f} batches/s = {4 * n / dt:.1f} cases/s; batch images {shape}")
        shard_speed(data, tmp / "shards", args.epochs)
    return 0


def _epochs_rate(ds, workers: int, epochs: int) -> float:
    """Cases/s over ``epochs`` whole epochs of ``ds`` at batch 4 (workers started within the timing)."""
    from raddiag.data.dataset import make_loader

    loader = make_loader(ds, batch_size=4, shuffle=True, num_workers=workers)
    n, t = 0, time.perf_counter()
    for epoch in range(epochs):
        ds.set_epoch(epoch)
        n += sum(len(b["case_ids"]) for b in loader)
    return n / (time.perf_counter() - t)


def shard_speed(data, out: Path, epochs: int) -> None:
    """Whole training epochs read from the memory map and from shards, 1 and 2 DataLoader workers."""
    from raddiag.config import DataConfig
    from raddiag.data.dataset import CaseDataset
    from raddiag.data.shards import ShardDataset, write_shards

    t = time.perf_counter()
    index = write_shards(data.root, out, shard_size=2**25)
    sp = index["splits"]["train"]
    print(f"shard: {sp['n_cases']} cases into {len(sp['shards'])} shards of <= 32 MiB in "
          f"{time.perf_counter() - t:.2f} s")
    labels = data.label_space("disorder")
    cfg = DataConfig(size=data.size, depth=data.depth)
    for workers in (1, 2):
        mm = _epochs_rate(CaseDataset(data, "train", labels, cfg, train=True), workers, epochs)
        sh = _epochs_rate(ShardDataset(out, "train", labels, cfg, train=True), workers, epochs)
        print(f"epoch read ({data.size}x{data.size}x{data.depth}, batch 4, {workers} worker(s), {epochs} epochs): "
              f"memory map {mm:.1f} cases/s, shards {sh:.1f} cases/s (shards / memory map {sh / mm:.2f})")


if __name__ == "__main__":
    raise SystemExit(main())

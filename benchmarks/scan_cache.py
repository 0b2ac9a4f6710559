"""Loading a training batch with and without the loaded-scan cache (``train.cache_mb``,
``raddiag.data.scan_cache``), side by side in one process.

    .venv/bin/python benchmarks/scan_cache.py [--store 64x8 256x32] [--epochs 8] [--threads 2]

For each store geometry (the synthetic set prepared at that size x depth, trained at the demo
recipe's 64 px x 8 slices), the demo recipe's training dataset (its augmentation, key-slice swap and
scan caps) is read in batches of 8 cases, with the cache and without it, alternating batch by
batch (this machine's speed drifts by 20 % within a minute), each batch after a 2-thread matrix
product, as a training step leaves the caches. The first epoch (which fills the cache) is not
timed. Prints the median time to load and collate a batch, each way, and their ratio.
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch


def datasets(data: Path, cfg):
    from raddiag.data.dataset import CaseDataset
    from raddiag.data.scan_cache import ScanCache
    from raddiag.data.store import PreparedData
    from raddiag.training.augment import build_scan_transform

    store = PreparedData(data)
    labels, transform = store.label_space(cfg.data.granularity), build_scan_transform(cfg.train, cfg.data)
    return {name: CaseDataset(store, "train", labels, cfg.data, train=True, scan_transform=transform, cache=cache)
            for name, cache in (("cache", ScanCache(cfg.train.cache_mb << 20)), ("no cache", None))}


def measure(data: Path, cfg, epochs: int) -> dict[str, float]:
    """Median seconds to load and collate a batch of 8, each way."""
    from raddiag.data.dataset import collate_cases

    sets, times = datasets(data, cfg), {"cache": [], "no cache": []}
    step = torch.randn(1024, 1024)
    n = len(sets["cache"])
    for epoch in range(epochs):
        for ds in sets.values():
            ds.set_epoch(epoch)
        for b in range(0, n - 7, 8):
            order = ("cache", "no cache") if (b // 8) % 2 else ("no cache", "cache")
            for name in order:
                step @ step                      # a parallel operation, as a training step before the batch
                t = time.perf_counter()
                collate_cases([sets[name][i] for i in range(b, b + 8)], cfg.data.depth)
                if epoch:
                    times[name].append(time.perf_counter() - t)
    return {k: statistics.median(v) for k, v in times.items()}


def main() -> int:
    from raddiag.config import preset
    from raddiag.data.synth import synthesize
    from raddiag.demo import DEMO_PRESET

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--store", nargs="+", default=["64x8", "256x32"], help="store geometries, SIZExDEPTH")
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--cases", type=int, default=160)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    cfg = preset(DEMO_PRESET)
    print(f"scan cache: demo recipe at {cfg.data.size} px x {cfg.data.depth}, batches of 8, {args.threads} thread(s); "
          f"median of {args.epochs - 1} epochs after the first")
    with tempfile.TemporaryDirectory() as tmp:
        for geometry in args.store:
            size, depth = (int(x) for x in geometry.lower().split("x"))
            data = Path(tmp) / geometry
            synthesize(data, n_cases=args.cases, seed=0, size=size, depth=depth)
            t = measure(data, cfg, args.epochs)
            print(f"store {size} px x {depth}: loading a batch {t['no cache'] * 1e3:.2f} ms without the cache, "
                  f"{t['cache'] * 1e3:.2f} ms with it ({t['cache'] / t['no cache']:.2f}x)", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""What reorientation costs: ``load_scan`` of one volume written four ways, side by side in one run.

    python benchmarks/orientation_cost.py [--hw 384 --slices 120 --size 256 --depth 32]

The same array as NIfTI.gz with the placeholder identity affine (read as stored, as before
reorientation existed), with an LPS affine (each slice flipped and transposed), with the slices
stored top-down (RAI: read forward, yielded reversed) and with the slice axis stored first
(gathered across the stored slices in one forward pass). Prints seconds and peak traced heap
(tracemalloc) of each, and the ratio to the as-stored read.
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from scan_memory import _measure


def make_files(folder: Path, hw: int, d: int) -> dict:
    import nibabel as nib
    import numpy as np

    vol = (np.random.default_rng(0).normal(0, 300, (hw, hw, d)) + 40).astype(np.float32)
    spacing = np.diag([0.8, 0.8, 2.5, 1.0])
    ways = {
        "as stored (identity)": (vol, np.eye(4)),
        "LPS (flips)": (vol, spacing @ np.diag([-1, -1, 1, 1.0])),
        "RAI (reversed slices)": (vol, spacing @ np.diag([1, 1, -1, 1.0])),
        "slice axis first": (vol.transpose(2, 0, 1), spacing[:, [2, 0, 1, 3]]),
    }
    files = {}
    for n, (name, (arr, aff)) in enumerate(ways.items()):
        files[name] = folder / f"v{n}.nii.gz"
        nib.save(nib.Nifti1Image(np.ascontiguousarray(arr), aff), files[name])
    return files


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hw", type=int, default=384)
    ap.add_argument("--slices", type=int, default=120)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--depth", type=int, default=32)
    args = ap.parse_args()

    from raddiag.data.case import Scan
    from raddiag.data.preprocess import load_scan

    with tempfile.TemporaryDirectory() as tmp:
        files = make_files(Path(tmp), args.hw, args.slices)
        print(f"NIfTI.gz {args.hw} x {args.hw} x {args.slices} float32 -> {args.size} px, depth {args.depth}")
        base = None
        for name, path in files.items():
            peak, dt = _measure(lambda: load_scan(Scan(str(path), "CT"), args.size, args.depth))
            base = base or dt
            print(f"  {name:<24} {dt:6.2f} s  ({dt / base:4.2f} x as stored)  peak heap {peak:7.1f} MB")


if __name__ == "__main__":
    main()

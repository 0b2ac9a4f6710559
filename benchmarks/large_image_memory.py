"""Peak memory of preparing one 8192 x 8192 16-bit greyscale PNG for the model (256 x 256):
the path ``raddiag predict`` and ``data prepare`` use (``load_scan``), against the former path
(the whole frame as float32, then ``resize_slices``), side by side in one run.

    python benchmarks/large_image_memory.py [--hw 8192 --size 256]

Each path runs in a fresh subprocess, which prints its peak resident set size
(``resource.getrusage(RUSAGE_SELF).ru_maxrss``) and its resident size after the imports (torch,
numpy, PIL), so the difference is what reading and preprocessing cost. The two outputs are
compared for equality.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path


def _rss_mib(resource) -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024   # KiB on Linux


def _child(path: str, size: int, which: str, out: str) -> None:
    """One path on one file; prints {"base": MiB after imports, "peak": MiB at the end}."""
    import resource

    import numpy as np
    import torch
    from PIL import Image

    from raddiag.data.case import Scan
    from raddiag.data.preprocess import load_scan, resize_slices

    torch.set_num_threads(1)
    base = _rss_mib(resource)
    if which == "new":   # what predict / data prepare call
        arr = load_scan(Scan(path, "CT"), size, 1)[0]
    else:                # the former path, reproduced: the whole frame as float32, then resized
        with Image.open(path) as im:
            frame = np.asarray(im, dtype=np.float32)
        assert np.isfinite(frame).all()
        lo, hi = float(frame.min()), float(frame.max())
        small = resize_slices(np.stack([frame]), size).double()
        arr = ((small - lo) / (hi - lo)).clamp_(0.0, 1.0).float().numpy()
    np.save(out, arr)
    print(json.dumps({"base": base, "peak": _rss_mib(resource)}))


def _write_png(path: Path, hw: int) -> None:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    ramp = np.linspace(0, 60000, hw, dtype=np.float32)
    img = (ramp[:, None] * 0.5 + ramp[None, :] * 0.5).astype(np.uint16)
    img += rng.integers(0, 4096, (hw, 1), dtype=np.uint16)   # row noise: not a plain ramp
    Image.fromarray(img).save(path, compress_level=1)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hw", type=int, default=8192)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--child", nargs=3, metavar=("PNG", "WHICH", "OUT"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        _child(args.child[0], args.size, args.child[1], args.child[2])
        return 0

    import numpy as np

    with tempfile.TemporaryDirectory() as tmp:
        png = Path(tmp) / "big.png"
        _write_png(png, args.hw)
        print(f"{args.hw} x {args.hw} uint16 PNG ({png.stat().st_size / 2 ** 20:.0f} MiB on disk) "
              f"-> {args.size} x {args.size}; peak RSS of a fresh process (MiB)")
        print(f"{'path':<44}{'peak':>8}{'after imports':>15}{'difference':>12}")
        res = {}
        for which, label in (("old", "old: full float32 frame + resize_slices"),
                             ("new", "new: load_scan (predict / data prepare)")):
            out = str(Path(tmp) / f"{which}.npy")
            line = subprocess.run([sys.executable, __file__, "--size", str(args.size), "--child", str(png), which, out],
                                  check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1]
            res[which] = m = json.loads(line)
            print(f"{label:<44}{m['peak']:>8.0f}{m['base']:>15.0f}{m['peak'] - m['base']:>12.0f}")
        old, new = (res[w]["peak"] - res[w]["base"] for w in ("old", "new"))
        same = np.array_equal(np.load(Path(tmp) / "old.npy"), np.load(Path(tmp) / "new.npy"))
        print(f"ratio old / new: {res['old']['peak'] / res['new']['peak']:.2f}x peak, {old / new:.2f}x difference; "
              f"outputs identical: {same}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

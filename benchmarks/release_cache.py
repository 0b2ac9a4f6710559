"""First and later use of the authors' released checkpoint as a run (issue 17, part 5).

    .venv/bin/python benchmarks/release_cache.py [--classes 5569] [--out DIR]

Writes a checkpoint of the release's size and key layout (random weights: ResNet-50 at full
width, 2048-wide transformers, the MLP head over --classes classes; tests/test_import_official
.released_state) as ``pytorch_model.bin`` with a ``disorder_label_dict.json`` beside it, into a
fresh $RADDIAG_CACHE, then times, side by side in one run:
- hash: the SHA-256 of the weights file alone (read in 1 MiB chunks), with its MB/s;
- first use: ``resolve_run(CKPT)`` with an empty cache (hash + import + atomic rename);
- later use: ``resolve_run(CKPT)`` again (hash + cache hit);
- load, later use: ``raddiag.load(CKPT)`` (the whole model ready to predict), against
  ``raddiag.load(RUN)`` of the cached run folder named directly.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--classes", type=int, default=5569)
    ap.add_argument("--out", default=None, help="work folder (default: a temporary one, removed)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.out or tmp)
        os.environ["RADDIAG_CACHE"] = str(work / "cache")
        import raddiag
        from raddiag.models.release import file_sha256
        from raddiag.run import resolve_run
        from test_import_official import released_state

        ck = work / "RadDiag" / "RP3D_E"
        ck.mkdir(parents=True, exist_ok=True)
        sd = released_state(early=True, inplanes=[64, 128, 256, 512], classes=args.classes)
        torch.save(sd, ck / "pytorch_model.bin")
        del sd
        names = {("Normal" if i == 0 else f"disorder {i}"): i for i in range(args.classes)}
        (ck.parent / "disorder_label_dict.json").write_text(json.dumps(names))
        mb = (ck / "pytorch_model.bin").stat().st_size / 1e6

        _, t_hash = timed(lambda: file_sha256(ck / "pytorch_model.bin"))
        run, t_first = timed(lambda: resolve_run(ck))
        _, t_again = timed(lambda: resolve_run(ck))
        _, t_load_ck = timed(lambda: raddiag.load(ck, backend="off"))
        _, t_load_run = timed(lambda: raddiag.load(run.root, backend="off"))
        print(f"checkpoint: {mb:.0f} MB ({args.classes} classes), torch {torch.__version__}, "
              f"{torch.get_num_threads()} threads")
        print(f"hash (sha256, 1 MiB chunks)    {t_hash:7.2f} s  ({mb / t_hash:.0f} MB/s)")
        print(f"first use  resolve_run(CKPT)   {t_first:7.2f} s  (hash + import + rename)")
        print(f"later use  resolve_run(CKPT)   {t_again:7.2f} s  ({t_first / t_again:.0f}x faster than the first)")
        print(f"later use  raddiag.load(CKPT)  {t_load_ck:7.2f} s")
        print(f"           raddiag.load(RUN)   {t_load_run:7.2f} s  (the cached run named directly; "
              f"CKPT costs {t_load_ck - t_load_run:+.2f} s)")


if __name__ == "__main__":
    main()

"""Inference speed of the paper architecture against the authors' forward, side by side (issue 14).

    .venv/bin/python benchmarks/model_speed.py [--cases ct3 xray small] [--reps 3] [--threads 2]
                                               [--compile] [--bf16] [--train]

Cases (one case each, batch of 1):
- ct3: the released early-fusion layout (ResNet-50 with the grey slice repeated to 3 channels,
  1-layer slice transformer, 2-layer fusion, MLP head, 5,569 classes), 3 CT scans x 32 x 256 px;
- xray: the same model, 2 X-ray images (one slice each) at 256 px: the common 2D call;
- small: the `small` preset (ResNet-18, 128 px), 2 CT scans x 16 slices + 1 X-ray.
Weights: random, in the release's key layout (tests/test_import_official.released_state),
imported with raddiag.models.official (official_config): no download.

Forwards compared, interleaved (A B C ... A B C ...), median (and min) of --reps:
- reference: the authors' forward rebuilt from docs/official-checkpoint.md alone
  (tests/test_import_official.ref_forward: every slice slot of every scan slot through the
  ResNet-50 in one batch, NCHW, separate BatchNorm, the grey slice repeated to 3 channels);
- plain NCHW: `Predictor(backend="off").forward` with the backbone in NCHW (before issue 14);
- plain: the same with the backbone channels-last (the model's default in eval mode);
- torch: `Predictor(backend="torch")`: raddiag.models.fastpath's twin (BatchNorm folded,
  stem folded to 1 channel, channels-last);
- onnxruntime: `Predictor(backend="onnxruntime")` (the default when onnxruntime is installed);
- compile (--compile): `backend="compile"` (inductor, freezing; compile time printed apart);
- bf16 (--bf16): the torch twin under bf16 autocast (reduced precision: its difference is printed).
Each line: time, ratio to the reference (release cases) or to plain NCHW (small), and the largest
probability difference to the reference (to plain NCHW for small). The twin's one-time build
(export for onnxruntime; for compile also the first call, which compiles) is excluded from
the times and printed apart.

--train: one `paper`-preset optimiser step (AdamW, BCE, grad_checkpoint over 8-slice chunks) with
the backbone channels-last vs NCHW (the default in training), interleaved, at --train-scans x --train-slices x 256 px
(default 2 x 8: a full 4 x 32 step takes minutes per run here; its time and peak memory come from
benchmarks/train_memory.py).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

RELEASE_INPLANES, RELEASE_CLASSES = [64, 128, 256, 512], 5569


def release_model():
    from test_import_official import released_state

    from raddiag.models import build_model
    from raddiag.models.official import load_official_state, map_official_keys, official_config

    sd = released_state(early=True, seed=0, inplanes=RELEASE_INPLANES, classes=RELEASE_CLASSES)
    state = map_official_keys(sd)
    model = build_model(official_config(state), RELEASE_CLASSES)
    load_official_state(model, state)
    return model.eval(), sd


def small_model():
    from raddiag.config import preset
    from raddiag.models import build_model

    torch.manual_seed(0)
    model = build_model(preset("small"), 500).eval()
    g = torch.Generator().manual_seed(1)
    for m in model.modules():   # non-trivial BatchNorm statistics (fresh ones are the identity)
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(0.2 * torch.randn(m.num_features, generator=g))
            m.running_var.copy_(0.5 + torch.rand(m.num_features, generator=g))
    return model, None


def case(kind: str, depth: int, size: int) -> dict:
    """One case as collate_cases lays it out: [1, N, 1, D, H, W], masks, modality ids."""
    depths, mods = {"ct3": ([32, 32, 32], [1, 2, 3]), "xray": ([1, 1], [7, 8]),
                    "small": ([16, 16, 1], [1, 2, 7])}[kind]
    g = torch.Generator().manual_seed(2)
    N = len(depths)
    slice_mask = torch.zeros(1, N, depth, dtype=torch.bool)
    for n, d in enumerate(depths):
        slice_mask[0, n, :d] = True
    images = torch.rand(1, N, 1, depth, size, size, generator=g) * slice_mask[:, :, None, :, None, None]
    return {"images": images, "scan_mask": torch.ones(1, N, dtype=torch.bool), "slice_mask": slice_mask,
            "modality": torch.tensor([mods])}


def variants(model, sd, batch, args) -> tuple[dict, dict]:
    """name -> zero-argument forward returning logits; and name -> one-time build seconds."""
    from raddiag.data.labels import LabelSpace
    from raddiag.serving.predict import Predictor

    labels = LabelSpace([f"c{i}" for i in range(model.num_classes)])
    out, build = {}, {}
    if sd is not None:
        from test_import_official import ref_forward

        their = dict(image=batch["images"].permute(0, 1, 2, 4, 5, 3), mods=batch["modality"],
                     marks=batch["slice_mask"].float())
        out["reference"] = lambda: ref_forward(sd, **their)

    def plain(cl):
        p = Predictor(model, model.cfg, labels, backend="off")

        def run():
            model.encoder.channels_last = cl
            return p.forward(batch)
        return run

    out["plain NCHW"], out["plain"] = plain(False), plain(True)
    backends = ["torch", "onnxruntime"] + (["compile"] if args.compile else [])
    for b in backends:
        p = Predictor(model, model.cfg, labels, backend=b)
        t = time.perf_counter()
        p.inference_model()      # builds the twin (exports for onnxruntime)
        if b == "compile":
            p.forward(batch)     # compiles for this case's slice count
        build[b] = time.perf_counter() - t
        out[b] = lambda p=p: p.forward(batch)
        if b == "torch" and args.bf16:
            def bf16(p=p):
                with torch.autocast("cpu", dtype=torch.bfloat16):
                    return p.forward(batch)
            out["bf16"] = bf16
    return out, build


def run_case(kind: str, args) -> None:
    model, sd = release_model() if kind != "small" else small_model()
    dc = model.cfg.data
    batch = case(kind, dc.depth, dc.size)
    real = int(batch["slice_mask"].sum())
    fns, build = variants(model, sd, batch, args)
    base = "reference" if "reference" in fns else "plain NCHW"
    times = {k: [] for k in fns}
    probs = {}
    with torch.inference_mode():
        for k, f in fns.items():           # warm-up (and the outputs compared)
            probs[k] = torch.sigmoid(f().float())
        for _ in range(args.reps):
            for k, f in fns.items():
                t = time.perf_counter()
                f()
                times[k].append(time.perf_counter() - t)
    N = batch["images"].shape[1]
    slots = f"; the reference runs all {N} x {dc.depth} = {N * dc.depth} slice slots" if sd is not None else ""
    print(f"\n[{kind}] {model.cfg.preset if sd is None else 'released early-fusion layout'}, "
          f"{model.num_classes} classes; 1 case: {N} scans, {real} real slices of {dc.size} px{slots}")
    med0, min0 = statistics.median(times[base]), min(times[base])
    for k in fns:
        med, mn = statistics.median(times[k]), min(times[k])
        diff = float((probs[k] - probs[base]).abs().max())
        extra = f"   (built in {build[k]:.1f} s)" if k in build else ""
        print(f"  {k:<12} {med:8.3f} s  (min {mn:7.3f})  x{med / med0:5.2f} of {base} (min x{mn / min0:4.2f})"
              f"  max |dprob| {diff:.1e}{extra}")


def train_ratio(args) -> None:
    from raddiag.config import preset
    from raddiag.models import build_model, stand_in_label_embeddings

    D, N = args.train_slices, args.train_scans
    cfg = preset("paper", [f"data.depth={D}", "model.grad_checkpoint=true", "model.slice_chunk=8"])
    torch.manual_seed(0)
    model = build_model(cfg, RELEASE_CLASSES, stand_in_label_embeddings(cfg, RELEASE_CLASSES)).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5)
    batch = {"images": torch.rand(1, N, 1, D, 256, 256), "scan_mask": torch.ones(1, N, dtype=torch.bool),
             "slice_mask": torch.ones(1, N, D, dtype=torch.bool), "modality": torch.ones(1, N, dtype=torch.long)}
    y = torch.zeros(1, RELEASE_CLASSES)
    times = {False: [], True: []}
    for r in range(args.reps + 1):
        for cl in (False, True):
            model.encoder.channels_last_training = cl
            t = time.perf_counter()
            torch.nn.functional.binary_cross_entropy_with_logits(model(**batch), y).backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            if r:    # the first round warms up (optimiser state)
                times[cl].append(time.perf_counter() - t)
    a, b = statistics.median(times[False]), statistics.median(times[True])
    print(f"\n[train] paper preset step, 1 case of {N} scans x {D} slices x 256 px, {RELEASE_CLASSES} classes, "
          f"grad_checkpoint: NCHW {a:.1f} s, channels-last {b:.1f} s: x{b / a:.2f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", nargs="*", default=["ct3", "xray", "small"], choices=["ct3", "xray", "small"])
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--compile", action="store_true", help="also time backend='compile' (slow to build)")
    ap.add_argument("--bf16", action="store_true", help="also time the torch twin under bf16 autocast")
    ap.add_argument("--train", action="store_true", help="also time a training step, channels-last vs NCHW")
    ap.add_argument("--train-scans", type=int, default=2)
    ap.add_argument("--train-slices", type=int, default=8)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"model speed, {args.threads} thread(s), torch {torch.__version__}; median of {args.reps} "
          f"interleaved runs")
    for kind in args.cases:
        run_case(kind, args)
    if args.train:
        train_ratio(args)


if __name__ == "__main__":
    main()

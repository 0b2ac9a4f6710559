"""One training step of the release's early-fusion model: raddiag against the authors' code (issue 29).

    PYTHONPATH=src /work/sidevenv/bin/python benchmarks/train_speed.py AUTHORS_RP3D_DEMO_DIR
        [--geometry all | no-padding | short-scans | ct-xray | release-loader ...] [--bn-eval]
        [--scans 2] [--slices 16] [--model-depth 16] [--xrays 0] [--slots N] [--size 128]
        [--reps 5] [--threads 2] [--device cuda --amp bf16]

AUTHORS_RP3D_DEMO_DIR is the ``RP3D_Demo`` folder of the authors' repository (github.com/qiaoyu-zheng/
RP3D-Diag, checked out outside this repository; its root works too). Their ``Model/modelRadNet.py``
(which imports ``resAttention.py``, ``vitFuse.py``, ``resnet2D.py``, ``transformer_encoder/`` and
``Loss/AllLosses.py``) is imported from there at run time; nothing of it is copied here.

Their code needs torchvision, whose compiled ops cannot load beside the project's CPU torch 2.13.0,
so this benchmark runs in a side virtual environment outside the repository, with raddiag from
this checkout's ``src`` on PYTHONPATH (both sides then run on the same torch)::

    python3 -m venv /work/sidevenv
    /work/sidevenv/bin/pip install torch==2.14.1 torchvision==0.29.1 monai einops safetensors \\
        pyyaml matplotlib tqdm scipy

Of their imports the model needs torch, torchvision, einops, monai (their augmentation objects are
built at import), safetensors and matplotlib (``Utils/utils.py``); ``transformers`` serves only
their knowledge-enhanced head (``ke=True``, off in the release) and is replaced by a stub. Their
``RadNet.__init__`` downloads torchvision's ImageNet ResNet-50; that call is made without weights,
since both models then get the same weights anyway.

What is compared, in one process, interleaved (theirs, ours, theirs, ours, ...), the median of
``--reps`` steps after one warm-up step each:
- theirs: ``RadNet(fuse="early", augment=False)`` as their ``train.sh`` builds it (ResNet-50, 1-layer
  slice transformer, 2-layer 4-head fusion, MLP head, 5,569 classes); the step their Hugging Face
  Trainer takes (``optim="adamw_torch"``, lr 1e-5, weight decay 0, ``max_grad_norm`` 1.0): the loss
  their forward returns (BCE + 0.001 x the key-slice attention KL), backward, clipping, AdamW, zero grad;
- ours: raddiag's ``official`` preset holding the same weights (their state dict through
  ``raddiag.models.official``, the importer), the trainer's loss (BCE + ``train.key_slice_loss`` x
  :func:`raddiag.models.key_slice_attention_loss`), clipping and the trainer's optimiser
  (:func:`raddiag.training.optim.make_optimizer`).
Same case (``--scans`` CT scans of ``--slices`` real slices with a key slice each, ``--xrays``
X-rays of one slice, ``--size`` px, a few positive classes), augmentation off, each side's batch as
its own loader builds it: ours holds the real slices (and the run's ``data.depth`` slice positions),
theirs zero-pads every scan to the model's depth (``--model-depth``; the release's 32: an X-ray is
one real slice of 32) and the case to ``--slots`` scan slots (their early-fusion training fills
n_image 4 x n_aug 2 = 8, empty ones with modality id 0), and their ResNet runs on every slice of
every slot. ``--geometry`` runs named cases in turn and ends with a table of them:

- ``no-padding``: 2 CT x 16 slices in a model of depth 16, 2 slots (no padding on either side);
- ``short-scans``: the same scans in the release's depth 32 (their ResNet runs 64 slices, ours 32);
- ``ct-xray``: 1 CT x 16 slices + 1 X-ray, depth 32 (theirs 64 slices, ours 17);
- ``release-loader``: 2 CT x 16 slices + 1 X-ray in their training loader's 8 slots (theirs 256, ours 33).

The losses of the first steps are printed side by side. In training mode their BatchNorm
statistics include the zero-padded slices (and ours are taken over ``model.slice_chunk`` chunks),
so the losses agree only where both batch the same slices; ``--bn-eval`` puts BatchNorm on its
running statistics on both sides, and then the losses agree on every geometry. Every run also
checks this before its steps: one forward of each side from the same weights with BatchNorm on
its running statistics (no update, no gradient), its ``|diff|`` printed beside the first step's
(the table's ``|loss diff|``: training mode / this check). ``--set`` passes overrides to our
config (e.g. ``model.grad_checkpoint=false``, ``model.checkpoint_keep_mb=0``).

Also printed: the machine's fp32 matmul rate (a 2048^3 matmul, measured between the steps) and the
fraction of it each step reaches, counting the useful forward and backward FLOPs once (the real
slices' work: ``torch.utils.flop_counter`` on our model without recomputation; their padding and our
recomputation are not useful work, and the FLOPs each side executes are printed beside); the load average
(the machine may be shared: the ratio of interleaved medians is the figure to read). Peak memory is
measured in a child process per side (so the peaks do not mix): the CPU's peak RSS (VmHWM), or
``torch.cuda.max_memory_allocated`` on a GPU.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import types
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from bench_machine import machine_line   # this folder's helpers (issue 29)
from step_measure import (autocast, batchnorm_eval, conv_calls, conv_seconds, counted_flops, matmul_rate,
                          peak_bytes, rss_bytes, sync)

WIDTH, CLASSES = 2048, 5569


def fail(where, reason: str) -> None:
    print(f"raddiag: error: {where}: {reason}", file=sys.stderr)
    raise SystemExit(2)


# -- the authors' model ---------------------------------------------------------------------------
def demo_folder(root: Path) -> Path:
    for cand in (root, root / "RP3D_Demo"):
        if (cand / "Model" / "modelRadNet.py").is_file() and (cand / "Model" / "resAttention.py").is_file():
            return cand
    fail(root, "not the authors' RP3D_Demo folder (no Model/modelRadNet.py and Model/resAttention.py)")


def authors_radnet(root: Path, depth: int, size: int, classes: int):
    """Their ``RadNet`` with the release's early-fusion settings (random weights, seeded)."""
    demo = demo_folder(root)
    sys.path[:0] = [str(demo), str(demo / "Model")]
    # only their knowledge-enhanced head (ke=True) uses transformers: a stub keeps it out
    sys.modules.setdefault("transformers", types.SimpleNamespace(AutoModel=None, BertConfig=None,
                                                                 AutoTokenizer=None))
    try:
        import modelRadNet
    except ModuleNotFoundError as exc:
        fail(demo, f"their code needs the module {exc.name!r}, missing in {sys.executable}; run this benchmark "
                   "in the side venv its --help describes")

    tv_resnet50 = modelRadNet.resnet50_2D
    # their __init__ asks torchvision for ImageNet weights (a download): both sides get the same weights later
    modelRadNet.resnet50_2D = lambda weights=None, **kw: tv_resnet50(weights=None, **kw)
    torch.manual_seed(0)
    return modelRadNet.RadNet(num_cls=classes, backbone="resnet", size=size, depth=depth, hid_dim=WIDTH,
                              ltype="MultiLabel", augment=False, fuse="early", ke="False", adapter="False")


def raddiag_twin(state: dict, size: int, classes: int, overrides: list[str]):
    """raddiag's ``official`` preset with the release-layout ``state`` (the importer's path)."""
    from raddiag.models import build_model
    from raddiag.models.official import load_official_state, map_official_keys, official_config

    mapped = map_official_keys(state)
    cfg = official_config(mapped)
    cfg.data.size = size
    cfg.override(overrides)
    model = build_model(cfg, classes)
    load_official_state(model, mapped)
    return model


# -- the batch and one step of each ------------------------------------------------------------
GEOMETRIES = {   # name: (scans, slices, model depth, X-rays, their scan slots or None: no empty slot)
    "no-padding": (2, 16, 16, 0, None),
    "short-scans": (2, 16, 32, 0, None),
    "ct-xray": (1, 16, 32, 1, None),
    "release-loader": (2, 16, 32, 1, 8),
}


@dataclass(frozen=True)
class Geometry:
    """The case: ``scans`` CT scans of ``slices`` real slices and ``xrays`` X-rays, ``size`` px, in a
    model of ``depth`` slice positions (the release: 32); their loader fills ``slots`` scan slots."""
    scans: int
    slices: int
    size: int
    depth: int
    xrays: int
    slots: int

    @classmethod
    def of(cls, args) -> "Geometry":
        depth = args.model_depth or args.slices
        slots = args.slots or args.scans + args.xrays
        if args.slices > depth or slots < args.scans + args.xrays:
            fail("--slices/--slots", f"{args.slices} slices in a model of depth {depth}, {args.scans + args.xrays} "
                                     f"scans in {slots} slots: the case must fit")
        return cls(args.scans, args.slices, args.size, depth, args.xrays, slots)

    def __str__(self) -> str:
        xr = f" + {self.xrays} X-ray(s) (1 slice)" if self.xrays else ""
        return (f"1 case of {self.scans} CT scans x {self.slices} slices{xr} x {self.size} px; model depth "
                f"{self.depth}, their loader's {self.slots} scan slots: ours runs {self.real_slices} slices through "
                f"the ResNet, theirs {self.slots * self.depth}")

    @property
    def real_slices(self) -> int:
        return self.scans * self.slices + self.xrays


def same_weights_losses(their, ours, tb, ob, amp: str) -> tuple[float, float]:
    """Both losses from the same weights, BatchNorm on its running statistics (forward only, no
    update): the check that both compute the same function, which training-mode BatchNorm hides
    where the sides batch different slices (theirs with their padding, ours in chunks)."""
    norms = batchnorm_eval(their, ours)
    try:
        with torch.no_grad():
            return float(their_loss(their, tb, amp)), float(our_loss(ours, ob, amp))
    finally:
        for m, mode in norms:
            m.train(mode)


def make_batch(g: "Geometry", classes: int, device) -> tuple[dict, tuple]:
    """One case of ``g.scans`` CT scans (``g.slices`` real slices each) and ``g.xrays`` X-rays (one
    real slice each): ours in raddiag's batch layout (the case's scans, ``g.depth`` slice positions),
    theirs as their early-fusion loader gives it (``g.slots`` scan slots of ``g.depth`` slices,
    zero-padded, ``marks`` on the real slices, modality id 0 on the empty slots)."""
    gen = torch.Generator().manual_seed(1)
    n = g.scans + g.xrays
    real = [g.slices] * g.scans + [1] * g.xrays
    images = torch.zeros(1, n, 1, g.depth, g.size, g.size)
    slice_mask = torch.zeros(1, n, g.depth, dtype=torch.bool)
    keys = torch.zeros(1, n, dtype=torch.long)             # an X-ray's key slice is its only slice
    for i, d in enumerate(real):
        images[0, i, 0, :d] = torch.rand(d, g.size, g.size, generator=gen)
        slice_mask[0, i, :d] = True
        if d > 1:
            keys[0, i] = int(torch.randint(0, d, (1,), generator=gen))
    labels = torch.zeros(1, classes)
    labels[0, torch.randperm(classes, generator=gen)[:3]] = 1
    # the release's modality table: CT 1, 2, 3; X-ray 7, 8 (docs/official-checkpoint.md)
    mods = torch.tensor([[*range(1, g.scans + 1), *range(7, 7 + g.xrays)]])
    ours = {"images": images, "scan_mask": torch.ones(1, n, dtype=torch.bool), "slice_mask": slice_mask,
            "modality": mods, "key_slice": keys, "labels": labels}
    pad = g.slots - n
    t_images = F.pad(images, (0, 0, 0, 0, 0, 0, 0, 0, 0, pad)).permute(0, 1, 2, 4, 5, 3).contiguous()
    theirs = (t_images, F.pad(mods, (0, pad)), F.pad(slice_mask.float(), (0, 0, 0, pad)),
              F.pad(keys, (0, pad), value=-1), labels)
    return {k: v.to(device) for k, v in ours.items()}, tuple(t.to(device) for t in theirs)


def their_loss(model, batch, amp: str) -> torch.Tensor:
    """The loss their forward returns (BCE + 0.001 x the key-slice attention KL)."""
    with autocast(batch[0].device, amp):
        return model(*batch)["loss"]


def their_step(model, opt, batch, amp: str) -> float:
    """Their Trainer's step: the loss from their forward, backward, clip at 1.0, AdamW, zero grad."""
    loss = their_loss(model, batch, amp)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    opt.zero_grad(set_to_none=True)
    return float(loss.detach())


def our_loss(model, batch, amp: str) -> torch.Tensor:
    """The trainer's loss: BCE + ``train.key_slice_loss`` x the key-slice attention KL."""
    from raddiag.models import key_slice_attention_loss

    with autocast(batch["images"].device, amp):
        out = model(**{k: batch[k] for k in model.input_keys}, return_details=True)
        loss = F.binary_cross_entropy_with_logits(out.logits.float(), batch["labels"])
        return loss + model.cfg.train.key_slice_loss * key_slice_attention_loss(
            out.slice_attention.float(), batch["key_slice"], batch["slice_mask"])


def our_step(model, opt, batch, amp: str) -> float:
    """The trainer's step: our loss, backward, clip, AdamW, zero grad."""
    loss = our_loss(model, batch, amp)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), model.cfg.train.clip_norm)
    opt.step()
    opt.zero_grad(set_to_none=True)
    return float(loss.detach())


def their_optimizer(model):
    return torch.optim.AdamW(model.parameters(), lr=1e-5, weight_decay=0.0)   # HF "adamw_torch", train.sh


def our_optimizer(model):
    from raddiag.training.optim import make_optimizer

    return make_optimizer(model, model.cfg.train)


# -- measuring ----------------------------------------------------------------------------------
def step_flops(their, ours, tb, ob) -> dict:
    """Forward + backward FLOPs: ``useful`` (the real slices' work, counted once: ours without
    activation checkpointing), and what each side executes (their padding, our recomputation)."""
    def theirs():
        their(*tb)["loss"].backward()

    def ours_run():
        out = ours(**{k: ob[k] for k in ours.input_keys})
        F.binary_cross_entropy_with_logits(out, ob["labels"]).backward()

    flops = {"theirs": counted_flops(theirs), "ours": counted_flops(ours_run)}
    kept = ours.encoder.grad_checkpoint
    ours.encoder.grad_checkpoint = False
    flops["useful"] = counted_flops(ours_run)
    ours.encoder.grad_checkpoint = kept
    their.zero_grad(set_to_none=True)
    ours.zero_grad(set_to_none=True)
    return flops


# -- peak memory, one child process per side ---------------------------------------------------
def child(args) -> dict:
    """Build one side from the saved weights, take two steps (the second with AdamW's state), report."""
    device = torch.device(args.device)
    state = torch.load(args.state, map_location="cpu", weights_only=True)
    g = Geometry.of(args)
    if args.child == "theirs":
        model = authors_radnet(Path(args.authors), g.depth, g.size, args.classes)
        model.load_state_dict(state)
    else:
        model = raddiag_twin(state, g.size, args.classes, args.set)
    del state
    model.to(device).train()
    if args.bn_eval:
        batchnorm_eval(model)
    opt = (their_optimizer if args.child == "theirs" else our_optimizer)(model)
    ours, theirs = make_batch(g, args.classes, device)
    step, batch = (their_step, theirs) if args.child == "theirs" else (our_step, ours)
    before = rss_bytes() if device.type == "cpu" else torch.cuda.memory_allocated(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    losses = [step(model, opt, batch, args.amp) for _ in range(2)]
    return {"peak": peak_bytes(device), "before": before, "losses": losses}


def measure_memory(args, state: dict) -> dict:
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "weights.pt"
        torch.save(state, path)
        for side in ("theirs", "ours"):
            cmd = [sys.executable, __file__, args.authors, "--child", side, "--state", str(path),
                   *[f"--{k.replace('_', '-')}={getattr(args, k)}" for k in (
                       "scans", "slices", "size", "model_depth", "xrays", "slots", "classes", "threads", "device",
                       "amp") if getattr(args, k) is not None],
                   *(["--bn-eval"] if args.bn_eval else []), *[f"--set={s}" for s in args.set]]
            res = subprocess.run(cmd, capture_output=True, text=True)
            if res.returncode:
                sys.exit(f"the {side} memory run failed:\n{res.stderr[-3000:]}")
            out[side] = json.loads(res.stdout.strip().splitlines()[-1])
    return out


# -- the comparison ----------------------------------------------------------------------------
def interleaved(args, their, ours, tb, ob, device):
    t_opt, o_opt = their_optimizer(their), our_optimizer(ours)
    calls = conv_calls(ours, ob)
    times = {"theirs": [], "ours": [], "convs": []}
    losses = {"theirs": [], "ours": []}
    rates = []
    for r in range(args.reps + 1):            # round 0 warms up (and allocates AdamW's state)
        for side, model, opt, batch, step in (("theirs", their, t_opt, tb, their_step),
                                              ("ours", ours, o_opt, ob, our_step)):
            sync(device)
            t = time.perf_counter()
            losses[side].append(step(model, opt, batch, args.amp))
            sync(device)
            if r:
                times[side].append(time.perf_counter() - t)
        if r:
            times["convs"].append(conv_seconds(calls, device, args.amp))
        rates.append(matmul_rate(device, args.amp))
        print(f"  round {r}{' (warm-up)' if not r else ''}: theirs {losses['theirs'][-1]:.6f} "
              f"ours {losses['ours'][-1]:.6f}; load {os.getloadavg()[0]:.1f}", flush=True)
    return times, losses, rates


def report(args, times, losses, rates, flops, mem, device) -> None:
    gib = 2 ** 30
    rate = statistics.median(rates)
    t_med, o_med = statistics.median(times["theirs"]), statistics.median(times["ours"])
    d0 = abs(losses["theirs"][0] - losses["ours"][0])
    norm = ("BatchNorm on running statistics" if args.bn_eval else
            "training-mode BatchNorm: each side's statistics over the slices it batches")
    print(f"\nloss of the first step from the same weights: theirs {losses['theirs'][0]:.6f}, ours "
          f"{losses['ours'][0]:.6f} (|diff| {d0:.1e}: {'agree to 1e-4' if d0 <= 1e-4 else 'differ'}; {norm})")
    (tc, oc), dc = losses["check"], abs(losses["check"][0] - losses["check"][1])
    print(f"the same weights, BatchNorm on running statistics, forward only: theirs {tc:.6f}, ours {oc:.6f} "
          f"(|diff| {dc:.1e}: {'agree to 1e-4' if dc <= 1e-4 else 'DIFFER: not the same function'})")
    useful = flops["useful"]
    print(f"matmul rate {rate / 1e9:.0f} GFLOP/s ({'bf16' if args.amp == 'bf16' else 'fp32'} 2048^3, median of "
          f"the rounds); the step's useful work "
          f"{useful / 1e9:.0f} GFLOP (forward + backward of the real slices, counted once)")
    for side, med in (("theirs", t_med), ("ours", o_med)):
        ts = times[side]
        print(f"  {side:<6} step {med:7.2f} s (min {min(ts):.2f}, max {max(ts):.2f})  useful {useful / med / 1e9:5.0f} "
              f"GFLOP/s = {useful / med / rate:4.0%} of the matmul rate; executes {flops[side] / 1e9:.0f} GFLOP "
              f"({flops[side] / med / rate:4.0%})")
    print(f"step time: ours / theirs = {o_med / t_med:.2f}x")
    c_med = statistics.median(times["convs"])
    print(f"the convolutions alone (our step's, each forward and backward on its own, median of the rounds): "
          f"{c_med:.2f} s = {c_med / t_med:.2f}x their step, the floor of a step of these convolutions here; "
          f"a step of 0.5x theirs would leave {0.5 * t_med - c_med:.2f} s for all the rest (BatchNorm, ReLU, "
          "attention, the head, the loss, clipping, AdamW)")
    if mem:
        for side in ("theirs", "ours"):
            m = mem[side]
            print(f"  {side:<6} peak {m['peak'] / gib:5.2f} GiB ({'peak RSS' if device.type == 'cpu' else 'cuda'}"
                  f"; {m['before'] / gib:.2f} GiB with the model and batch, before the steps)")
        print(f"peak memory: ours / theirs = {mem['ours']['peak'] / mem['theirs']['peak']:.2f}x")
    print(machine_line())


def summary(rows: list[dict]) -> None:
    """The table of the geometries run, ratios ours / theirs."""
    print(f"\n{'geometry':<16} {'ResNet slices':>14} {'step':>7} {'peak':>7} {'|loss diff|':>19}  "
          f"{'goal: step <= 0.5x, peak <= 0.75x':<36} {'convs alone':>11}  useful work / matmul rate (theirs, ours)")
    for r in rows:
        measured = r["memory"] == r["memory"]                      # nan: --no-memory
        memory = "    -  " if not measured else f"{r['memory']:>6.3f}x"
        # three decimals and a plain verdict: a ratio of 0.504 printed as "0.50x" reads as the goal met
        goal = ("met" if r["time"] <= 0.5 and r["memory"] <= 0.75 else "NOT met") if measured else \
            ("time met" if r["time"] <= 0.5 else "time NOT met") + ", memory not measured"
        loss = f"{r['loss']:.1e} / {r['check']:.1e}"
        print(f"{r['name']:<16} {r['slices']:>14} {r['time']:>6.3f}x {memory} {loss:>19}  "
              f"{goal:<36} {r['convs']:>10.3f}x  {r['theirs_rate']:.0%}, {r['ours_rate']:.0%}")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("authors", nargs="?", default=os.environ.get("RADDIAG_AUTHORS_DIR"),
                   help="the authors' RP3D_Demo folder (or their repository's root; default $RADDIAG_AUTHORS_DIR)")
    p.add_argument("--geometry", action="append", choices=[*GEOMETRIES, "all"],
                   help="named cases to run in turn (see above; sets --scans --slices --model-depth --xrays "
                        "--slots); default: the flags'")
    p.add_argument("--scans", type=int, default=2)
    p.add_argument("--slices", type=int, default=16, help="real slices of each CT scan")
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--model-depth", type=int, help="the model's slice positions (the release: 32; default "
                                                     "--slices: no padding)")
    p.add_argument("--xrays", type=int, default=0, help="X-rays in the case (one slice each)")
    p.add_argument("--slots", type=int, help="their loader's scan slots (the release's early-fusion training: "
                                               "n_image 4 x n_aug 2 = 8; default: the case's scans, no empty slot)")
    p.add_argument("--bn-eval", action="store_true", help="BatchNorm on running statistics on both sides (then "
                                                          "padding cannot change a loss)")
    p.add_argument("--classes", type=int, default=CLASSES)
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--amp", choices=["none", "bf16"], default="none", help="bf16 autocast for both sides")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override of our config")
    p.add_argument("--no-memory", dest="memory", action="store_false", help="skip the peak-memory runs")
    p.add_argument("--child", choices=["theirs", "ours"], help=argparse.SUPPRESS)
    p.add_argument("--state", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def compare(args, name: str) -> dict:
    """Both sides on one geometry: the interleaved steps, the FLOPs, the memory runs, the report."""
    device = torch.device(args.device)
    g = Geometry.of(args)
    their = authors_radnet(Path(args.authors), g.depth, g.size, args.classes)
    state = {k: v.detach().clone() for k, v in their.state_dict().items()}
    ours = raddiag_twin(state, g.size, args.classes, args.set)
    for model in (their, ours):
        model.to(device).train()
        if args.bn_eval:
            batchnorm_eval(model)
    ob, tb = make_batch(g, args.classes, device)
    print(f"\n== {name}: train step, release early-fusion model, {g}; {args.classes} classes; {args.device}, amp "
          f"{args.amp}, {args.threads} thread(s), torch {torch.__version__}; our overrides: {args.set or 'none'}",
          flush=True)
    check = same_weights_losses(their, ours, tb, ob, args.amp)      # before any step changes the weights
    times, losses, rates = interleaved(args, their, ours, tb, ob, device)
    losses["check"] = check
    flops = step_flops(their, ours, tb, ob)
    del their, ours
    mem = measure_memory(args, state) if args.memory else None
    report(args, times, losses, rates, flops, mem, device)
    rate, t_med, o_med = (statistics.median(v) for v in (rates, times["theirs"], times["ours"]))
    return {"name": name, "convs": statistics.median(times["convs"]) / t_med, "slices": f"{g.slots * g.depth} / {g.real_slices}", "time": o_med / t_med,
            "memory": mem["ours"]["peak"] / mem["theirs"]["peak"] if mem else float("nan"),
            "loss": abs(losses["theirs"][0] - losses["ours"][0]), "check": abs(check[0] - check[1]),
            "theirs_rate": flops["useful"] / t_med / rate, "ours_rate": flops["useful"] / o_med / rate}


def main() -> int:
    args = parse_args()
    torch.set_num_threads(args.threads)
    if args.child:
        print(json.dumps(child(args)))
        return 0
    if not args.authors:   # `make bench` runs every benchmark without arguments
        print("train_speed: skipped: give the authors' RP3D_Demo folder (or set RADDIAG_AUTHORS_DIR); see --help")
        return 0
    demo_folder(Path(args.authors))
    names = list(GEOMETRIES) if "all" in (args.geometry or []) else args.geometry
    if not names:
        compare(args, "the flags' case")
        return 0
    rows = []
    for name in names:
        args.scans, args.slices, args.model_depth, args.xrays, args.slots = GEOMETRIES[name]
        rows.append(compare(args, name))
    summary(rows)
    print("ratios ours / theirs; ResNet slices theirs / ours; |loss diff| of the first step (training mode) / "
          "of the same weights with BatchNorm on running statistics (forward only); convs alone: our step's "
          f"convolutions, each forward and backward on its own, over their step\n{machine_line()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

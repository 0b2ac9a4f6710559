"""What ``raddiag train`` costs on top of the model's own forward, backward and step (issue 29).

    .venv/bin/python benchmarks/train_overhead.py [--recipes tiny demo official] [--rounds 3] [--cases 160]
                                                  [--epochs 4] [--warmup-rounds 1] [--threads 2]
                                                  [--device cuda --amp bf16]

For each recipe (``tiny``; the demo's recipe, the ``cpu`` preset (``raddiag.demo.DEMO_PRESET``); ``official``
at 64 px x 8 slices), on a synthetic prepared dataset made once in a temporary folder:
- raddiag: :func:`raddiag.training.train` for ``--epochs`` epochs (official: at most
  ``--official-steps`` optimiser steps, one epoch); the time of each epoch loop
  (``TrainLoop.train_epoch``: data loading, augmentation, the sampler, the step, logging) is taken,
  validation and checkpointing are not. The epochs after the first are the figure (the steady
  state of a run: the first also starts the loader's worker processes, once a run, as a run
  builds its model once); the first epoch's rate is printed beside it;
- bare: a fresh model of the same config and seed stepping through the very batches raddiag
  loaded, held in memory (BCE, + the key-slice term when the recipe has one, backward, clipping and
  the trainer's AdamW), nothing else, on as many intra-op threads as raddiag's step ran on, each
  batch right after raddiag's optimiser step on it, off raddiag's clock (:class:`Recorder`):
  raddiag's step 1 (loading included), the bare model's step on batch 1, raddiag's step 2, ... in
  one process, so that both figures of a batch are taken within the same tenth of a second (this
  machine's speed drifts by 20 % within a minute; interleaving whole runs gave rounds from 0.68x to
  1.05x, whole epochs 0.71x to 0.92x).
  On a CPU, raddiag's step leaves a core to each loader process (``train.num_workers``;
  ``raddiag.training.prefetch.loading_plan``): with 1 worker on 2 cores it runs on 1 thread, and
  the bare model on both of the process's threads is printed beside, for scale.
Cases per second, the median of ``--rounds``, and their ratio, after ``--warmup-rounds`` untimed
rounds. Every round trains on the
same batches (the same seed), and on a CPU each batch shape met for the first time compiles its
convolution kernels (``raddiag.training.kernel_cache``; 2,591 in tiny's first 4 epochs): without
the warm-up the bare model, stepping through batches raddiag has just compiled for, would be spared
a cost raddiag paid. After it neither compiles (counted with ``strace``). The ratio
raddiag / bare >= 0.9 means the framework costs at most 10 %.
The machine may be shared: the load average is printed beside the figures, and the median of the
rounds' own ratios beside the ratio of the medians.
Compare ``--set train.num_workers=0`` (loading in the step's process: ahead in a thread where the
step leaves a core free, ``train.prefetch``, else between steps) to see what the worker hides.
"""
from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from bench_machine import machine_line   # this folder's helpers (issue 29)
from step_measure import sync

RECIPES = {"tiny": ("tiny", []), "demo": (None, []), "official": ("official", ["data.size=64", "data.depth=8"])}


def recipe_config(name: str, amp: str, extra: list[str], epochs: int = 2):
    from raddiag.config import preset
    from raddiag.demo import DEMO_PRESET

    base, over = RECIPES[name]
    return preset(base or DEMO_PRESET, [*over, f"train.epochs={epochs}", f"train.amp={amp}", *extra])


class Recorder:
    """Times each ``TrainLoop.train_epoch`` and keeps the batches ``train_step`` was given in it:
    ``epochs`` is a list of ``[raddiag seconds, batches, bare seconds]``. With ``bare_step`` (a
    function of one batch), the bare model steps through each optimiser step's batches right after
    raddiag's ``optimizer_step``, its time taken off raddiag's clock and counted as the bare
    model's: raddiag's step i (its loading, forward, backward, optimiser step), the bare model's
    step on the same batch, raddiag's step i + 1, ... so both figures of a batch come from the same
    tenth of a second on a machine whose speed drifts (20 % within a minute here, 2 shared cores;
    interleaving whole epochs gave rounds from 0.71x to 0.92x for the same code, 2026-12-06)."""

    def __init__(self, bare_step=None, device: str = "cpu"):
        from raddiag.training import loop

        self.loop, self.epochs, self.threads, self.bare_step = loop, [], None, bare_step
        self.device, self.group, self.mark = device, [], 0.0
        self.epoch, self.step, self.opt = loop.TrainLoop.train_epoch, loop.TrainLoop.train_step, loop.TrainLoop.optimizer_step

    def __enter__(self):
        rec = self

        def train_epoch(loop_self, *a, **k):
            rec.epochs.append([0.0, [], 0.0])
            rec.mark = time.perf_counter()
            out = rec.epoch(loop_self, *a, **k)
            rec.epochs[-1][0] += time.perf_counter() - rec.mark
            return out

        def train_step(loop_self, batch, *a, **k):
            rec.epochs[-1][1].append(batch)
            rec.group.append(batch)
            rec.threads = torch.get_num_threads()     # the step's threads (training.prefetch.loading_plan)
            return rec.step(loop_self, batch, *a, **k)

        def optimizer_step(loop_self, *a, **k):
            out = rec.opt(loop_self, *a, **k)
            if rec.bare_step is not None:
                rec.bare_group()
            rec.group = []
            return out

        self.loop.TrainLoop.train_epoch, self.loop.TrainLoop.train_step = train_epoch, train_step
        self.loop.TrainLoop.optimizer_step = optimizer_step
        return self

    def bare_group(self) -> None:
        """The bare model's steps on the batches of the optimiser step raddiag has just taken, off
        raddiag's clock (on as many threads: this runs inside raddiag's ``step_threads``)."""
        sync(self.device)
        self.epochs[-1][0] += time.perf_counter() - self.mark
        batches = on_device(self.group, self.device)
        sync(self.device)
        t = time.perf_counter()
        for b in batches:
            self.bare_step(b)
        sync(self.device)
        self.mark = time.perf_counter()
        self.epochs[-1][2] += self.mark - t

    def __exit__(self, *exc):
        self.loop.TrainLoop.train_epoch, self.loop.TrainLoop.train_step = self.epoch, self.step
        self.loop.TrainLoop.optimizer_step = self.opt


def raddiag_epochs(data: Path, tmp: Path, cfg, emb, steps: int, device: str, bare_step=None) -> tuple[list, int]:
    """``([[seconds of the epoch loop, the batches it trained on, the bare model's seconds on them],
    ...], the step's threads)``, one entry per epoch (:class:`Recorder`)."""
    from raddiag.training import train

    out = Path(tempfile.mkdtemp(dir=tmp))
    with Recorder(bare_step, device) as rec:
        train(data, out / "run", cfg, label_embeddings=emb, progress=False, max_steps=steps, device=device)
    return rec.epochs, rec.threads


class Bare:
    """The model alone: a fresh model of the recipe's config and seed with the trainer's AdamW, stepping
    (forward, BCE + the key-slice term when the recipe has one, backward, clipping, AdamW) through
    batches held in memory, nothing else."""

    def __init__(self, cfg, n_classes: int, emb, device: torch.device):
        from raddiag.models import build_model, key_slice_attention_loss
        from raddiag.training.optim import make_optimizer

        self.cfg, self.device = cfg, device
        self.details = cfg.train.key_slice_loss > 0          # the key-slice term needs the model's details
        self.key_slice_loss = key_slice_attention_loss
        torch.manual_seed(cfg.train.seed)
        self.model = build_model(cfg, n_classes, emb).to(device).train()
        self.opt = make_optimizer(self.model, cfg.train)

    def epoch(self, batches: list, threads: int) -> float:
        """Seconds for one step a batch over ``batches``, on ``threads`` intra-op threads."""
        from raddiag.training.prefetch import step_threads

        batches = on_device(batches, self.device)
        with step_threads(threads):
            sync(self.device)
            t = time.perf_counter()
            for b in batches:
                self.step(b)
            sync(self.device)
            return time.perf_counter() - t

    def step(self, b: dict) -> None:
        tc, model, details = self.cfg.train, self.model, self.details
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=tc.amp == "bf16"):
            out = model(**{k: b[k] for k in model.input_keys}, return_details=details)
            loss = F.binary_cross_entropy_with_logits((out.logits if details else out).float(), b["labels"])
            if details and out.slice_attention is not None:
                loss = loss + tc.key_slice_loss * self.key_slice_loss(out.slice_attention.float(),
                                                                      b["key_slice"], b["slice_mask"])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), tc.clip_norm)
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)


def on_device(batches: list, device) -> list:
    """The batches' tensors on ``device`` (the bare model's batches, held in memory)."""
    return [{k: v.to(device) for k, v in b.items() if torch.is_tensor(v)} for b in batches]


def measure(name: str, data: Path, tmp: Path, args) -> None:
    from raddiag.data.store import PreparedData
    from raddiag.models import stand_in_label_embeddings

    cfg = recipe_config(name, args.amp, args.set, args.epochs)
    n_classes = len(PreparedData(data).label_space(cfg.data.granularity))
    emb = stand_in_label_embeddings(cfg, n_classes)
    steps = args.steps[name] if name in args.steps else None
    ours, bare, whole, first = [], [], [], []
    dev, everyone = torch.device(args.device), torch.get_num_threads()
    for r in range(-args.warmup_rounds, args.rounds):
        if r < 0:   # a round untimed: its runs compile the kernels of every batch shape (kernel_cache)
            epochs, threads = raddiag_epochs(data, tmp, cfg, emb, steps, args.device)
            warm, batches = Bare(cfg, n_classes, emb, dev), [b for _, bs, _ in epochs for b in bs]
            for n in {threads, everyone}:     # the thread counts the timed rounds use
                warm.epoch(batches, n)
            continue
        model = Bare(cfg, n_classes, emb, dev)       # each batch right after raddiag's step on it
        epochs, threads = raddiag_epochs(data, tmp, cfg, emb, steps, args.device, model.step)
        # the steady state: the epochs after the first (the first also starts the loader's worker
        # processes, once a run); a run of one epoch (official's few steps) is timed whole
        timed = epochs[1:] or epochs
        batches = [b for _, bs, _ in timed for b in bs]
        cases = sum(len(b["labels"]) for b in batches)
        ours.append(cases / sum(secs for secs, _, _ in timed))
        bare.append(cases / sum(secs for _, _, secs in timed))
        # the bare model on every thread of the process, for scale (raddiag's step gives loader
        # processes a core each: training.prefetch.loading_plan)
        whole.append(cases / Bare(cfg, n_classes, emb, dev).epoch(batches, everyone)
                     if threads != everyone else bare[-1])
        c0 = sum(len(b["labels"]) for b in epochs[0][1])
        first.append((c0 / epochs[0][0]) / (c0 / epochs[0][2]))
        print(f"  {name} round {r + 1}: {cases} cases in {len(timed)} epoch(s) after the first, raddiag "
              f"{ours[-1]:.2f} cases/s (step on {threads} thread(s)), bare {bare[-1]:.2f} cases/s on as many "
              f"({ours[-1] / bare[-1]:.3f}x), on {everyone} {whole[-1]:.2f} cases/s; first epoch "
              f"{first[-1]:.2f}x; load {os.getloadavg()[0]:.1f}", flush=True)
    o, b, w = statistics.median(ours), statistics.median(bare), statistics.median(whole)
    per_round = statistics.median(x / y for x, y in zip(ours, bare))
    print(f"{name:<9} raddiag train {o:7.2f} cases/s   bare model {b:7.2f} cases/s   raddiag / bare = {o / b:.3f}x "
          f"(median of the rounds' ratios {per_round:.3f}x; step on {threads} thread(s); {cfg.preset}, "
          f"{cfg.model.encoder}, {cfg.data.size} px x {cfg.data.depth}, batch {cfg.train.batch_size}, "
          f"{cfg.train.num_workers} loader workers, prefetch {getattr(cfg.train, 'prefetch', 0)}); bare model on "
          f"{everyone} thread(s) {w:.2f} cases/s (raddiag / that = {o / w:.3f}x); first epoch "
          f"{statistics.median(first):.2f}x", flush=True)
    # three decimals and a plain verdict: 0.897 printed as "0.90x" read as the goal met
    print(f"{name:<9} goal raddiag / bare >= 0.9 (the framework costs <= 10 %): "
          f"{'met' if per_round >= 0.9 else 'NOT met'} ({per_round:.3f}x)", flush=True)


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--recipes", nargs="+", default=list(RECIPES), choices=list(RECIPES))
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--cases", type=int, default=160, help="synthetic cases (70 %% train)")
    p.add_argument("--official-steps", type=int, default=6, help="optimiser steps of the official epoch")
    p.add_argument("--warmup-rounds", type=int, default=1,
                   help="untimed rounds first: every round trains on the same batches, and on a CPU each new "
                        "batch shape compiles its convolution kernels once (raddiag.training.kernel_cache)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--epochs", type=int, default=4,
                   help="epochs a raddiag run trains; those after the first are timed (the steady state)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--amp", choices=["none", "bf16"], default="none")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override of every recipe")
    args = p.parse_args()
    args.steps = {"official": args.official_steps}
    return args


def main() -> int:
    from raddiag.data.synth import synthesize
    from raddiag.training.kernel_cache import widen_kernel_cache

    args = parse_args()
    widen_kernel_cache()    # as raddiag's CLI and train() do, before the first convolution
    torch.set_num_threads(args.threads)
    print(f"train overhead: {args.threads} thread(s), {args.device}, amp {args.amp}, torch {torch.__version__}; "
          f"median of {args.rounds} interleaved rounds", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        synthesize(data, n_cases=args.cases, seed=0, size=64, depth=8)
        for name in args.recipes:
            measure(name, data, Path(tmp), args)
    print(machine_line())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

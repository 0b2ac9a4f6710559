"""Does bounding OpenMP's spin-wait slow the training step? (issue 29)

    .venv/bin/python benchmarks/omp_spin.py [--recipe demo] [--spins default 10000] [--rounds 4] [--busy 1]

torch's CPU build runs its intra-op threads as a GNU OpenMP team. A thread that finishes its part of
an operator spins, waiting for the next one, for ``GOMP_SPINCOUNT`` iterations (300,000 by default,
read once when libgomp loads) before it sleeps: a core stays busy for a while after a step ends,
which matters to anything that wants that core between steps (a loader process). This script
measures what bounding the spin costs the step itself: the bare model of a recipe (forward, BCE,
backward, clipping, AdamW; ``train_overhead.Bare``) over the same prepared batches, in one child
process per setting (the variable must be set before torch loads), the settings alternated round
by round so that the machine's drift (20 % within a minute on 2 shared cores) hits them alike.
Prints each child's cases per second, the median per setting and its ratio to the first setting.
``--busy N`` keeps N other processes spinning on the CPU meanwhile, as on a shared machine.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from bench_machine import machine_line   # this folder's helper (imports torch only when called)

HERE = Path(__file__).resolve().parent


def child(args) -> None:
    import torch

    sys.path.insert(0, str(HERE))
    from train_overhead import Bare, recipe_config

    from raddiag.data.dataset import CaseDataset, make_loader
    from raddiag.data.store import PreparedData
    from raddiag.models import stand_in_label_embeddings
    from raddiag.training.kernel_cache import widen_kernel_cache

    widen_kernel_cache()
    torch.set_num_threads(args.threads)
    cfg = recipe_config(args.recipe, "none", [])
    labels = PreparedData(args.data).label_space(cfg.data.granularity)
    ds = CaseDataset(args.data, "train", labels, cfg.data, train=False)
    batches = list(make_loader(ds, cfg.train.batch_size))
    bare = Bare(cfg, len(labels), stand_in_label_embeddings(cfg, len(labels)), torch.device("cpu"))
    bare.epoch(batches, args.threads)                      # compiles each batch shape's kernels once
    seconds = statistics.median(bare.epoch(batches, args.threads) for _ in range(args.reps))
    print(json.dumps({"cases_per_s": sum(len(b["labels"]) for b in batches) / seconds}))


def run_child(args, data: Path, spin: str) -> float:
    env = dict(os.environ)
    env.pop("GOMP_SPINCOUNT", None)
    if spin != "default":
        env["GOMP_SPINCOUNT"] = spin
    cmd = [sys.executable, __file__, "--child", "--data", str(data), "--recipe", args.recipe,
           "--threads", str(args.threads), "--reps", str(args.reps)]
    res = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if res.returncode:
        sys.exit(f"the child with GOMP_SPINCOUNT={spin} failed:\n{res.stderr[-3000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])["cases_per_s"]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--recipe", default="demo", choices=["tiny", "demo", "official"])
    p.add_argument("--spins", nargs="+", default=["default", "10000"],
                   help="GOMP_SPINCOUNT values ('default': the variable unset)")
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--reps", type=int, default=4, help="timed epochs a child, the median taken")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--cases", type=int, default=160)
    p.add_argument("--busy", type=int, default=0, help="other processes kept busy meanwhile (a shared machine)")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        child(args)
        return 0
    rates: dict[str, list[float]] = {s: [] for s in args.spins}
    measure(args, rates)
    first = statistics.median(rates[args.spins[0]])
    for s in args.spins:
        m = statistics.median(rates[s])
        print(f"GOMP_SPINCOUNT={s:<8} bare {args.recipe} model {m:7.1f} cases/s (median of {args.rounds}), "
              f"{m / first:.3f}x of GOMP_SPINCOUNT={args.spins[0]}; {args.busy} other busy process(es)")
    print(machine_line())
    return 0


def measure(args, rates: dict[str, list[float]]) -> None:
    from raddiag.data.synth import synthesize

    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        synthesize(data, n_cases=args.cases, seed=0, size=64, depth=8)
        busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(args.busy)]
        try:
            for r in range(args.rounds):
                order = args.spins if r % 2 == 0 else args.spins[::-1]
                for spin in order:
                    rates[spin].append(run_child(args, data, spin))
                print(f"round {r + 1}: " + ", ".join(f"GOMP_SPINCOUNT={s} {rates[s][-1]:.1f} cases/s"
                                                     for s in args.spins), flush=True)
        finally:
            for b in busy:
                b.kill()


if __name__ == "__main__":
    raise SystemExit(main())

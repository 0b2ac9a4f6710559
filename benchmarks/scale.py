"""The paper's scale rehearsed at a reduced geometry (issue 15, part 3).

    python benchmarks/scale.py [--cases 40936] [--small 1000] [--calib-size 64 --calib-depth 8]
                               [--out DIR] [--workers 2] [--n-boot 1000] [--keep]

runs the whole pipeline through the CLI, each stage as its own process tree:

1. synth     ``raddiag data synth --label-space paper --raw-only`` (5,568 disorders + normal,
             930 ICD-10-CM categories + normal, 1-8 scans per case, raw scans near 32 x 32 x 4)
2. prepare   ``raddiag data prepare DIR/raw/manifest.jsonl --format manifest --size 32 --depth 4``
3. shard     ``raddiag data shard DIR --out DIR/shards``
4. train     one epoch of the ``tiny`` preset (patch size 8 for the small slices) under 2-process DDP
             (``torchrun --nproc_per_node 2``, gloo), reading the shards, with its validation
5. evaluate  ``raddiag evaluate RUN --data DIR/shards`` (test split, thresholds from val, bootstrap
             intervals at the full class count)

and prints per stage the wall time, the CPU time of the stage's processes (children included), the
peak resident memory of the stage's process tree (the sum over its processes, sampled every 0.1 s;
all, and anonymous: without file pages such as those of a memory map read through) and the size
of its output. The pipeline runs three times: ``--small`` cases and ``--cases`` cases at
32 x 32 x 4 (does a stage's memory grow with the case count?) and ``--small`` cases at the
calibration geometry (how does each stage's cost grow with the voxels per scan?). From these it
projects the CPU time to the paper's geometry (256 x 256 x 32) and counts (40,936 cases, 195,010
scans) and the wall time on N processes, with the assumptions printed beside it.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
PAPER = {"cases": 40_936, "scans": 195_010, "size": 256, "depth": 32}
STAGES = ("synth", "prepare", "shard", "train", "evaluate")
UNIT = {"synth": "scans", "prepare": "scans", "shard": "cases", "train": "train_cases", "evaluate": "eval_cases"}


TICK = os.sysconf("SC_CLK_TCK")


def _proc_table() -> dict[int, tuple[int, float]]:
    """pid -> (parent pid, own CPU seconds so far), from /proc."""
    out = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                out[int(d)] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / TICK)
            except (OSError, IndexError, ValueError):
                pass
    return out


def _tree(root: int, table: dict) -> set[int]:
    """``root`` and every descendant."""
    out, grew = {root}, True
    while grew:
        new = {p for p, (pp, _) in table.items() if pp in out and p not in out}
        out |= new
        grew = bool(new)
    return out


def _rss(pid: int) -> tuple[int, int]:
    """(resident bytes, of which anonymous): the rest is file pages, such as a memory map's."""
    out = {"VmRSS:": 0, "RssAnon:": 0}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.split(maxsplit=1)[0] in out:
                    out[line.split()[0]] = int(line.split()[1]) * 1024
    except (OSError, IndexError):
        pass
    return out["VmRSS:"], out["RssAnon:"]


def run_stage(cmd: list[str], env: dict, log: Path) -> dict:
    """Run ``cmd``: its wall time, CPU time and the peak RSS of its process tree. The tree is
    sampled every 0.1 s; CPU is the larger of the sampled sum over every process seen (what a
    process spends after its last sample is missed) and getrusage's children (which misses
    descendants nobody waits for, such as a forkserver's workers): a lower bound either way."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    with log.open("w") as f:
        proc = subprocess.Popen(cmd, env=env, stdout=f, stderr=subprocess.STDOUT, cwd=ROOT)
    peak, cpu_seen = {"tree": 0, "anon": 0}, {}
    done = threading.Event()

    def sample():
        while not done.is_set():
            table = _proc_table()
            pids = _tree(proc.pid, table)
            for p in pids:
                cpu_seen[p] = table[p][1] if p in table else cpu_seen.get(p, 0.0)
            rss = [_rss(p) for p in pids]
            peak["tree"] = max(peak["tree"], sum(r for r, _ in rss))
            peak["anon"] = max(peak["anon"], sum(a for _, a in rss))
            done.wait(0.1)

    th = threading.Thread(target=sample, daemon=True)
    th.start()
    rc = proc.wait()
    done.set()
    th.join()
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if rc != 0:
        raise SystemExit(f"stage failed (exit {rc}): {' '.join(cmd)}\n--- {log} ---\n{log.read_text()[-3000:]}")
    waited = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"wall": wall, "cpu": max(waited, sum(cpu_seen.values())), "rss": peak["tree"], "anon": peak["anon"]}


def du(*paths: Path) -> int:
    n = 0
    for p in paths:
        if p.is_file():
            n += p.stat().st_size
        elif p.is_dir():
            n += sum(f.stat().st_size for f in p.rglob("*") if f.is_file())
    return n


def pipeline(root: Path, n_cases: int, size: int, depth: int, args) -> dict:
    """The five stages on ``n_cases`` at ``size`` x ``size`` x ``depth``; per stage its figures."""
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"), OMP_NUM_THREADS="1", TQDM_DISABLE="1")
    rd = [PY, "-m", "raddiag"]
    shards, run = root / "shards", root / "run"
    model = ["--set", f"data.size={size}", "--set", f"data.depth={depth}", "--set", "model.patch_size=8",
             "--set", "train.epochs=1", "--set", "train.warmup_epochs=0"]
    cmds = {
        "synth": rd + ["data", "synth", "--label-space", "paper", "--raw-only", "--out", str(root), "--cases",
                       str(n_cases), "--size", str(size), "--depth", str(depth), "--workers", str(args.workers)],
        "prepare": rd + ["data", "prepare", str(root / "raw" / "manifest.jsonl"), "--format", "manifest", "--out",
                         str(root), "--size", str(size), "--depth", str(depth), "--workers", str(args.workers)],
        "shard": rd + ["data", "shard", str(root), "--out", str(shards), "--shard-size", args.shard_size],
        "train": [PY, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(args.ranks), "-m",
                  "raddiag", "train", "--data", str(shards), "--preset", "tiny", "--out", str(run), "--no-progress",
                  *model],
        "evaluate": rd + ["evaluate", str(run), "--data", str(shards), "--n-boot", str(args.n_boot)],
    }
    outputs = {"synth": [root / "raw"],
               "prepare": [root / f for f in ("slices.f16", "cases.jsonl", "meta.json", "labels_disorder.json",
                                              "labels_icd10.json", "report.json", "report.txt")],
               "shard": [shards], "train": [run], "evaluate": [run / "eval-test"]}
    res = {}
    for st in STAGES:
        r = run_stage(cmds[st], env, root / f"{st}.log")
        r["bytes"] = du(*outputs[st]) - (du(run / "eval-test") if st == "train" else 0)
        res[st] = r
        print(f"  {n_cases} cases {size}x{size}x{depth}: {st} {r['wall']:.0f} s", file=sys.stderr, flush=True)
    index = json.loads((shards / "shards.json").read_text())
    meta = json.loads((root / "meta.json").read_text())
    recs = [json.loads(line) for line in (root / "cases.jsonl").open()]
    scans = [s for r in recs for s in r["scans"]]
    n = {sp: v["n_cases"] for sp, v in index["splits"].items()}
    counts = {"cases": len(recs), "scans": len(scans), "scans_3d": sum(bool(s["is_3d"]) for s in scans),
              "slices": meta["n_slices"], "train_cases": n.get("train", 0),
              "eval_cases": n.get("test", 0) + n.get("val", 0),
              "classes": {g: len(v["classes"]) for g, v in index["label_spaces"].items()},
              "size": size, "depth": depth}
    return {"stages": res, "counts": counts}


def mib(b: float) -> str:
    return f"{b / 2**20:,.0f}"


def print_stage_table(r: dict) -> None:
    c = r["counts"]
    print(f"\n{c['cases']:,} cases, {c['scans']:,} scans ({c['scans_3d']:,} 3D), {c['slices']:,} slices at "
          f"{c['size']} x {c['size']} x {c['depth']}; classes: {c['classes']['disorder']:,} disorder, "
          f"{c['classes']['icd10']:,} ICD-10-CM; train {c['train_cases']:,}, val + test {c['eval_cases']:,}")
    print(f"{'stage':10} {'wall s':>8} {'CPU s':>8} {'peak RSS MiB':>13} {'anon MiB':>9} {'output MiB':>11}  CPU ms per unit")
    for st in STAGES:
        s = r["stages"][st]
        per = s["cpu"] / max(1, c[UNIT[st]]) * 1000
        print(f"{st:10} {s['wall']:8.0f} {s['cpu']:8.0f} {mib(s['rss']):>13} {mib(s['anon']):>9} {mib(s['bytes']):>11}  "
              f"{per:8.2f} per {UNIT[st].replace('_', ' ')[:-1]}")
    tot = {k: sum(r['stages'][st][k] for st in STAGES) for k in ("wall", "cpu")}
    print(f"{'total':10} {tot['wall']:8.0f} {tot['cpu']:8.0f}")


def print_growth(small: dict, full: dict) -> None:
    a, b = small["counts"]["cases"], full["counts"]["cases"]
    print(f"\nmemory growth, {a:,} -> {b:,} cases (x{b / a:.1f}); peak RSS of each stage's process tree "
          "(all / anonymous, i.e. without file pages such as the memory map's):")
    print(f"{'stage':10} {'small MiB':>14} {'full MiB':>14} {'anon ratio':>11} {'output ratio':>13}")
    for st in STAGES:
        x, y = small["stages"][st], full["stages"][st]
        print(f"{st:10} {mib(x['rss']) + ' / ' + mib(x['anon']):>14} {mib(y['rss']) + ' / ' + mib(y['anon']):>14} "
              f"{y['anon'] / max(1, x['anon']):11.2f} {y['bytes'] / max(1, x['bytes']):13.1f}")


def project(full: dict, small: dict, calib: dict, ranks: list[int]) -> None:
    """CPU per unit = a + b * voxels per scan, b from the two geometries (same cases), the level
    from the full run; then x the paper's units."""
    v = lambda r: r["counts"]["size"] ** 2 * r["counts"]["depth"]
    fc, v_paper = full["counts"], PAPER["size"] ** 2 * PAPER["depth"]
    units = {"scans": PAPER["scans"], "cases": PAPER["cases"],
             "train_cases": PAPER["cases"] * fc["train_cases"] / fc["cases"],
             "eval_cases": PAPER["cases"] * fc["eval_cases"] / fc["cases"]}
    f3d = fc["scans_3d"] / fc["scans"]
    paper_bytes = PAPER["scans"] * (f3d * PAPER["depth"] + (1 - f3d)) * PAPER["size"] ** 2 * 2
    print(f"\nprojection to the paper: {PAPER['cases']:,} cases, {PAPER['scans']:,} scans at "
          f"{PAPER['size']} x {PAPER['size']} x {PAPER['depth']} (prepared / shards: {paper_bytes / 1e9:,.0f} GB)")
    hdr = " ".join(f"{'N=' + str(n):>9}" for n in ranks)
    print(f"{'stage':10} {'ms/unit':>9} {'ms/unit':>9} {'slope':>6} {'ms/unit':>10} {'CPU h':>8}  wall h on N processes")
    print(f"{'':10} {'@' + str(small['counts']['size']):>9} {'@' + str(calib['counts']['size']):>9} "
          f"{'x':>6} {'@' + str(PAPER['size']):>10} {'':>8}  {hdr}")
    for st in STAGES:
        u = UNIT[st]
        c1 = small["stages"][st]["cpu"] / max(1, small["counts"][u])
        c2 = calib["stages"][st]["cpu"] / max(1, calib["counts"][u])
        slope = max(0.0, (c2 - c1) / (v(calib) - v(small)))
        cf = full["stages"][st]["cpu"] / max(1, fc[u])
        cp = cf + slope * (v_paper - v(full))
        cpu_h = cp * units[u] / 3600
        print(f"{st:10} {c1 * 1e3:9.2f} {c2 * 1e3:9.2f} {c2 / max(c1, 1e-12):6.2f} {cp * 1e3:10.1f} {cpu_h:8.1f}  "
              + " ".join(f"{cpu_h / n:9.2f}" for n in ranks))
    print("assumptions: each stage's CPU per unit (scan, case, training case, val + test case) is a + b x voxels per\n"
          f"scan, b fitted between {small['counts']['size']}x{small['counts']['depth']} and "
          f"{calib['counts']['size']}x{calib['counts']['depth']} on the same {small['counts']['cases']:,} cases (b < 0 "
          "from noise counts as 0), a from the full run; 'train' is one epoch of the tiny preset\n"
          "with its validation (the paper model costs far more per case), 'evaluate' includes the bootstrap\n"
          "(independent of the geometry); wall on N processes = CPU / N: perfect scaling, N CPU processes like these\n"
          "(shard writes one split per process here: N > 3 needs splitting the work by shard); a GPU rank replaces\n"
          f"the per-rank training cost by the GPU's (not measured here); 3D scans keep {PAPER['depth']} slices "
          f"at the paper's geometry ({f3d:.0%} of scans are 3D).")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", type=int, default=PAPER["cases"])
    ap.add_argument("--small", type=int, default=1000, help="cases of the small and calibration runs (0: skip both)")
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--depth", type=int, default=4)
    ap.add_argument("--calib-size", type=int, default=64)
    ap.add_argument("--calib-depth", type=int, default=8)
    ap.add_argument("--workers", type=int, default=2, help="synth / prepare processes")
    ap.add_argument("--ranks", type=int, default=2, help="DDP processes")
    ap.add_argument("--n-boot", type=int, default=1000)
    ap.add_argument("--shard-size", default="256MB")
    ap.add_argument("--out", default=None, help="work folder (default: a temporary one, removed unless --keep)")
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args(argv)
    work = Path(args.out or tempfile.mkdtemp(prefix="raddiag-scale-"))
    t0 = time.perf_counter()
    try:
        runs = {}
        if args.small:
            runs["small"] = pipeline(work / "small", args.small, args.size, args.depth, args)
            runs["calib"] = pipeline(work / "calib", args.small, args.calib_size, args.calib_depth, args)
            shutil.rmtree(work / "small", ignore_errors=True)
            shutil.rmtree(work / "calib", ignore_errors=True)
        runs["full"] = pipeline(work / "full", args.cases, args.size, args.depth, args)
        for name, r in runs.items():
            print(f"\n== {name} run ==", end="")
            print_stage_table(r)
        if args.small:
            print_growth(runs["small"], runs["full"])
            project(runs["full"], runs["small"], runs["calib"], [1, 8, 64])
        print(f"\nbenchmark wall time {time.perf_counter() - t0:.0f} s on {os.cpu_count()} CPUs "
              f"(load average at the end {os.getloadavg()[0]:.1f})")
        (work / "scale.json").write_text(json.dumps(runs, indent=1))
    finally:
        if not args.keep and args.out is None:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Load on `raddiag serve`: N upload+predict requests, C at a time, through a real server on
loopback. Prints throughput, latency percentiles and the server's RSS before / after.

    .venv/bin/python benchmarks/serve_load.py [--run RUN] [--requests 200] [--concurrency 8]
                                              [--size 64] [--saliency]

Without --run a tiny random-weight run folder (32 px, depth 4) is made in a temporary folder.
"""
from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np

from raddiag.serving.sample import make_tiny_run, sample_png, wait_until_healthy


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", default=None)
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--size", type=int, default=64, help="side of the uploaded PNG")
    ap.add_argument("--saliency", action="store_true", help="ask for Score-CAM overlays too")
    args = ap.parse_args()
    tmp = tempfile.TemporaryDirectory()
    run = args.run or str(make_tiny_run(Path(tmp.name) / "run").root)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "raddiag", "serve", run, "--port", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        t0 = time.time()
        if not wait_until_healthy(url, proc, timeout=180):
            print("server did not start", file=sys.stderr)
            return 1
        print(f"server ready in {time.time() - t0:.1f} s (run {run})")
        png = sample_png(args.size, seed=1)
        data = {"modality": "X-ray", "top": "5", "saliency": "true" if args.saliency else "false"}

        def one(i):
            t = time.time()
            r = httpx.post(url + "/predict", files=[("files", (f"c{i}.png", png))], data=data, timeout=300)
            return r.status_code, time.time() - t

        for i in range(args.concurrency):
            one(i)
        before = rss_mb(proc.pid)
        t = time.time()
        with ThreadPoolExecutor(args.concurrency) as pool:
            res = list(pool.map(one, range(args.requests)))
        wall = time.time() - t
        time.sleep(1.0)
        after = rss_mb(proc.pid)
        codes = [c for c, _ in res]
        lat = np.array([d for _, d in res]) * 1000
        errors = sum(c != 200 for c in codes)
        print(f"requests {args.requests}, concurrency {args.concurrency}, errors {errors}, "
              f"cpus {os.cpu_count()}")
        print(f"throughput {args.requests / wall:.1f} req/s; latency ms p50 {np.percentile(lat, 50):.0f} "
              f"p95 {np.percentile(lat, 95):.0f} max {lat.max():.0f}")
        print(f"server RSS MB: before {before:.0f}, after {after:.0f} ({after - before:+.0f})")
        return 1 if errors else 0
    finally:
        proc.terminate()
        proc.wait(10)
        tmp.cleanup()


if __name__ == "__main__":
    raise SystemExit(main())

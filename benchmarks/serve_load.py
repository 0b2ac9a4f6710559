"""Load on `raddiag serve`: N upload+predict requests, C at a time, through a real server on
loopback. Prints throughput, latency percentiles and the server's RSS before / after.

    .venv/bin/python benchmarks/serve_load.py [--run RUN] [--requests 200] [--concurrency 8]
                                              [--size 64] [--saliency] [--hostile] [--max-mb 16]

Without --run a tiny random-weight run folder (32 px, depth 4) is made in a temporary folder.

``--hostile`` interleaves a hostile request after every good one, cycling through oversized
declared sizes (a 4 KB NIfTI declaring 4000 x 4000 x 40 float32, a 164 KB PNG of 13000 x 13000 px,
an NPY header declaring 20000 x 20000), a zip bomb, damaged zips (bad CRC, corrupt deflate,
encrypted, unknown method, truncated), a zip of 100,000 entries (its central directory), a complete
.nii.gz of 1024 x 1024 x 1000 float64 zeros (8 GB decoded from 8 MB), zips whose entries clash
(``a.png`` and ``a.png/b.png``) or hold a folder name of 300 characters, an upload that stalls
after its first bytes (the server's ``--read-timeout`` is ``--read-timeout`` here, default 2 s),
an oversized body and wrong types; it prints what the server answered to each kind and passes (exit 0) when the good requests have 0 errors, no answer
is a 500, and the server's RSS at the end is within 1.5x of its idle figure (after warm-up). The
server's data segment is capped at ``--server-mem-gb`` (default 4) so that a hostile request
cannot take the machine down while a scan's size is not yet bounded from its header.
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


def hostile_requests(max_mb: float) -> list[tuple[str, list, dict, set]]:
    """(kind, files, form, statuses that count as handled) of each hostile request."""
    from raddiag.serving.sample import (animated_png, clashing_zip, damaged_zip, many_entries_zip, oversize_nifti,
                                        oversize_png, volume_bomb, zip_bomb)

    npy_head = b"{'descr': '<f4', 'fortran_order': False, 'shape': (20000, 20000), }"
    npy = b"\x93NUMPY\x01\x00" + len(npy_head + b"\n").to_bytes(2, "little") + npy_head + b"\n" + bytes(4096)
    ct, xr = {"modality": "CT"}, {"modality": "X-ray"}
    out = [("oversize NIfTI header 4000x4000x40", [("files", ("big.nii", oversize_nifti()))], ct, {413, 422}),
           ("oversize PNG 13000x13000", [("files", ("big.png", oversize_png()))], xr, {413}),
           ("oversize NPY header 20000x20000", [("files", ("big.npy", npy))], ct, {413, 422}),
           ("zip bomb 300 MB", [("files", ("bomb.zip", zip_bomb(300 << 20)))], ct, {413}),
           ("oversized body", [("files", ("huge.npy", b"\x93NUMPY" + bytes(int((max_mb + 1) * (1 << 20)))))],
            ct, {413}),
           ("text as a file", [("files", ("a.png", b"not an image at all " * 30))], xr, {415}),
           ("empty file", [("files", ("a.png", b""))], xr, {400}),
           ("no file, a text field", [], {"files": "abc", **xr}, {422}),
           ("wrong form type top=ten", [("files", ("a.png", sample_png(32)))], {"top": "ten", **xr}, {422})]
    out += [(f"zip: {how}", [("files", ("c.zip", damaged_zip(how)))], xr, {400})
            for how in ("crc", "deflate", "encrypted", "method", "truncated")]
    out += [("zip central directory 100k entries", [("files", ("d.zip", many_entries_zip(100_000)))], xr, {413}),
            ("nii.gz 1024x1024x1000 float64 zeros", [("files", ("v.nii.gz", volume_bomb()))], ct, {413}),
            ("zip entries clash a.png, a.png/b.png", [("files", ("c.zip", clashing_zip(True)))], xr, {400}),
            ("zip entries clash a.png/b.png, a.png", [("files", ("c.zip", clashing_zip(False)))], xr, {400}),
            ("zip folder name of 300 chars", [("files", ("c.zip", clashing_zip(long_folder=300)))], xr, {400}),
            ("stalled upload", STALL, xr, {408})]
    apng = animated_png()                                  # 839 MB decoded each, 3 in a request: over 2 GB
    out += [("3 animated PNGs of 800 frames 1024x1024", [("files", (f"a{i}.png", apng)) for i in range(3)], xr, {413})]
    return out


STALL = "stall"      # the files of a hostile kind sent by hand: headers, a few body bytes, then nothing


def stalled_upload(url: str) -> tuple[int, str]:
    """(status, first line) of the answer to an upload that stops sending after its first bytes."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=120) as s:
        s.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=x\r\n"
                  b"Content-Length: 100000\r\n\r\n--x\r\n")
        answer = s.recv(4096).decode("latin-1")
    line = answer.split("\r\n", 1)[0]
    return (int(line.split()[1]) if line.startswith("HTTP/") else 0), answer[-160:]


def _cap_memory(gb: float):
    def apply():
        import resource

        if gb > 0:
            limit = int(gb * (1 << 30))
            resource.setrlimit(resource.RLIMIT_DATA, (limit, limit))
    return apply


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", default=None)
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--size", type=int, default=64, help="side of the uploaded PNG")
    ap.add_argument("--saliency", action="store_true", help="ask for Score-CAM overlays too")
    ap.add_argument("--hostile", action="store_true", help="interleave hostile requests (see the module doc)")
    ap.add_argument("--max-mb", type=float, default=16.0, help="the server's upload limit (default 16)")
    ap.add_argument("--read-timeout", type=float, default=2.0,
                    help="the server's --read-timeout in seconds (the stalled upload waits this long; default 2)")
    ap.add_argument("--server-mem-gb", type=float, default=4.0,
                    help="cap of the server's data segment in GiB (0: none; default 4)")
    args = ap.parse_args()
    tmp = tempfile.TemporaryDirectory()
    run = args.run or str(make_tiny_run(Path(tmp.name) / "run").root)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "raddiag", "serve", run, "--port", str(port),
                             "--max-mb", str(args.max_mb), "--read-timeout", str(args.read_timeout)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            preexec_fn=_cap_memory(args.server_mem_gb))
    url = f"http://127.0.0.1:{port}"
    try:
        t0 = time.time()
        if not wait_until_healthy(url, proc, timeout=180):
            print("server did not start", file=sys.stderr)
            return 1
        print(f"server ready in {time.time() - t0:.1f} s (run {run})")
        png = sample_png(args.size, seed=1)
        data = {"modality": "X-ray", "top": "5", "saliency": "true" if args.saliency else "false"}

        hostile = hostile_requests(args.max_mb) if args.hostile else []

        def one(i):
            t = time.time()
            r = httpx.post(url + "/predict", files=[("files", (f"c{i}.png", png))], data=data, timeout=300)
            return r.status_code, time.time() - t

        def bad(k):
            kind, files, form, _ = hostile[k % len(hostile)]
            try:
                if files == STALL:
                    return (kind, *stalled_upload(url))
                r = httpx.post(url + "/predict", files=files or None, data=form, timeout=300)
                return kind, r.status_code, r.text[:160]
            except (httpx.HTTPError, OSError) as exc:   # a server cut off mid-request counts as a failure
                return kind, 0, f"{type(exc).__name__}: {exc}"

        for i in range(args.concurrency):
            one(i)
        before = rss_mb(proc.pid)
        t = time.time()
        with ThreadPoolExecutor(args.concurrency) as pool:
            good = [pool.submit(one, i) for i in range(args.requests)]
            evil = [pool.submit(bad, k) for k in range(args.requests if hostile else 0)]
            res = [f.result() for f in good]
            answers = [f.result() for f in evil]
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
        if not hostile:
            return 1 if errors else 0
        return _hostile_report(hostile, answers, errors, before, after)
    finally:
        proc.terminate()
        proc.wait(10)
        tmp.cleanup()


def _hostile_report(hostile, answers, errors: int, before: float, after: float) -> int:
    """Print what the server answered to each hostile kind; 0 when all holds (see the module doc)."""
    expected = {kind: ok for kind, _, _, ok in hostile}
    seen: dict[str, dict[int, int]] = {}
    example: dict[str, str] = {}
    for kind, code, text in answers:
        seen.setdefault(kind, {}).setdefault(code, 0)
        seen[kind][code] += 1
        if code not in expected[kind]:
            example.setdefault(kind, text)
    print(f"hostile requests {len(answers)} (interleaved with the good ones):")
    for kind, codes in seen.items():
        got = ", ".join(f"{c} x{n}" for c, n in sorted(codes.items()))
        flag = "ok" if set(codes) <= expected[kind] else f"NOT AS EXPECTED {sorted(expected[kind])}: {example[kind]!r}"
        print(f"  {kind:<36} {got:<16} {flag}")
    fivexx = sum(n for codes in seen.values() for c, n in codes.items() if c >= 500 or c == 0)
    ratio = after / before
    print(f"good requests errors {errors}; hostile 5xx / dropped {fivexx}; "
          f"server RSS end / idle {ratio:.2f} (limit 1.50)")
    ok = errors == 0 and fivexx == 0 and ratio <= 1.5
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())

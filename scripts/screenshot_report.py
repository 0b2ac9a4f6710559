"""Render an evaluation report in headless Chromium and save a screenshot.

Usage: ``.venv/bin/python scripts/screenshot_report.py [REPORT.html] --out shot.png``
Without REPORT a synthetic evaluation (600 cases, 40 classes, 3 anatomies) is written first.
Installs Debian's ``chromium`` with apt-get when it is missing (root only); exits with a clear
message when it cannot.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np


def find_or_install_chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        sys.exit("chromium is not installed and cannot be installed here (need root and apt-get)")
    subprocess.run(["apt-get", "update"], check=True)
    subprocess.run(["apt-get", "install", "-y", "chromium"], check=True)
    exe = shutil.which("chromium")
    if not exe:
        sys.exit("apt-get install chromium did not provide a chromium executable")
    return exe


def synthetic_report(out_dir: Path) -> Path:
    from raddiag.data.labels import LabelSpace
    from raddiag.evaluation import evaluate_predictions

    rng = np.random.default_rng(0)
    c = 40
    names = ["Normal"] + [f"disorder {i}" for i in range(1, c)]
    space = LabelSpace(names=names, counts=[2000] + sorted(rng.integers(1, 400, c - 1).tolist(), reverse=True))

    def make(n):
        y = rng.random((n, c)) < np.linspace(0.3, 0.01, c)
        s = 1 / (1 + np.exp(-(rng.normal(size=(n, c)) + 2.2 * y - 2.0)))
        return s, y, rng.choice(["Chest", "Head and Neck", "Spine"], n)

    s, y, anat = make(600)
    sv, yv, _ = make(300)
    evaluate_predictions(s, y, space, sv, yv, anatomy=anat, out_dir=out_dir, n_boot=200,
                         title="raddiag evaluation (synthetic predictions)")
    return out_dir / "report.html"


def screenshot(report: Path, out: Path, size: str = "1280,2400") -> Path:
    exe = find_or_install_chromium()
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run([exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                        "--disable-background-networking", "--disable-component-update", "--disable-sync",
                        f"--user-data-dir={profile}", f"--screenshot={out.resolve()}", f"--window-size={size}",
                        report.resolve().as_uri()], check=True, capture_output=True, timeout=120)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("report", nargs="?", help="report.html (default: a synthetic one)")
    ap.add_argument("--out", default="report-screenshot.png")
    ap.add_argument("--work", default=None, help="folder for the synthetic evaluation")
    a = ap.parse_args()
    report = Path(a.report) if a.report else synthetic_report(Path(a.work or tempfile.mkdtemp()))
    if not report.exists():
        sys.exit(f"{report}: report does not exist")
    print(f"report: {report}")
    print(f"screenshot: {screenshot(report, Path(a.out))}")


if __name__ == "__main__":
    main()

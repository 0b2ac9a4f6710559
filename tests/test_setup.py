"""The repository's own set-up: `make test` installs the browser first, and README links resolve."""
from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
needs_make = pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")


@needs_make
def test_make_test_installs_the_browser_before_the_tests():
    out = subprocess.run(["make", "-n", "test"], cwd=ROOT, capture_output=True, text=True, timeout=60).stdout
    install = out.find("apt-get install -y -qq chromium")
    assert install >= 0, out
    assert install < out.find("-m pytest"), "the browser must be set up before pytest runs"


@needs_make
def test_make_browser_says_why_it_cannot_install(tmp_path):
    # a user who is not root: `id -u` answers 1000 and no browser is found
    (tmp_path / "id").write_text("#!/bin/sh\necho 1000\n")
    (tmp_path / "id").chmod(0o755)
    env = {"PATH": f"{tmp_path}:/usr/bin:/bin"}
    out = subprocess.run(["make", "-s", "browser", "BROWSERS=no-such-browser"], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "cannot be installed here (needs root and apt-get)" in out.stdout
    assert "apt-get" not in out.stderr


def _relative_links(markdown: str) -> list[str]:
    """Markdown and HTML links that are not URLs or anchors, and code spans naming a file in
    one of the repository's own folders (`docs/x.md`, `benchmarks/y.py`)."""
    links = re.findall(r"\[[^\]]*\]\(([^)\s]+)\)", markdown)
    links += re.findall(r"""(?:href|src)=["']([^"']+)["']""", markdown)
    links += re.findall(r"`((?:docs|benchmarks|scripts|tests|src)/[^`\s]+\.[a-z]+)`", markdown)
    return [u for u in links if not re.match(r"^([a-z][a-z0-9+.-]*:|#|//)", u, re.I)]


def test_every_relative_link_in_the_readme_points_to_a_file():
    readme = ROOT / "README.md"
    links = _relative_links(readme.read_text())
    missing = [u for u in links if not (ROOT / u.split("#")[0]).exists()]
    assert not missing, f"README.md links to files that are not in the repository: {missing}"


def test_relative_link_finder_on_a_hand_written_case():
    md = ("[a](docs/x.md) [b](https://e.org/y) [c](#sec) <img src=\"img/p.png\"> [d](docs/z.md#part) "
          "see `docs/y.md`, `benchmarks/b.py`, `demo-out/report.html` and `/docs`")
    assert _relative_links(md) == ["docs/x.md", "docs/z.md#part", "img/p.png", "docs/y.md", "benchmarks/b.py"]

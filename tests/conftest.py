"""Shared test fixtures.

``shared_data`` points at ``../shared/data`` (real public datasets); tests that use it
skip with a clear message when it is absent, as on a user's fresh machine.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("RADDIAG_SHARED_DATA", ROOT.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data folder {SHARED_DATA} is absent (set RADDIAG_SHARED_DATA to use another)")
    return SHARED_DATA


BROWSERS = ("chromium", "chromium-browser", "google-chrome")


@pytest.fixture(scope="session")
def chromium() -> str:
    """The headless browser for the report and web-page tests. ``make test`` installs it first
    (``make browser``: apt-get as root); the tests skip only where that could not be done."""
    for name in BROWSERS:
        path = shutil.which(name)
        if path:
            return path
    pytest.skip("Chromium is not installed: `make browser` (part of `make test`) installs it with apt-get "
                "as root and printed why it could not here; or install `chromium` yourself")


@pytest.fixture(autouse=True, scope="session")
def _quiet_threads():
    """Keep the suite friendly to a 2-core machine."""
    try:
        import torch

        # under pytest-xdist (`make test` runs one worker per core) each worker gets its share
        workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
        torch.set_num_threads(max(1, min(2, (os.cpu_count() or 1) // workers)))
    except ImportError:  # pragma: no cover
        pass
    yield

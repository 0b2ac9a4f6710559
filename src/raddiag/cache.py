"""The user's cache folder: ``$RADDIAG_CACHE`` or ``~/.cache/raddiag`` (the fine-tuned text
encoders, the code index, the imported released checkpoints)."""
from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """``$RADDIAG_CACHE`` or ``~/.cache/raddiag``."""
    return Path(os.environ.get("RADDIAG_CACHE") or Path.home() / ".cache" / "raddiag")

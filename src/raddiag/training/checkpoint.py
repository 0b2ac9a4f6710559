"""Training checkpoints: atomic writes, ``weights_only`` loads, RNG state as plain data.

A checkpoint is ``torch.save`` of a dict of tensors and plain Python values (model,
optimiser and scheduler state, Python / NumPy / torch RNG states, epoch, position in the
epoch, sampler seed, best metric). It is written to a temporary file in the same folder,
flushed and fsync'd, then moved into place with :func:`os.replace`, so a reader (or a run
killed with SIGKILL half-way through a write) never sees a partial file. Loading uses
``torch.load(weights_only=True)``: nothing is unpickled beyond tensors and plain types.
"""
from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from raddiag.staging import atomic_write  # noqa: F401 - also imported from here


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> None:
    atomic_write(path, lambda f: torch.save(state, f))


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no checkpoint to resume from")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 - torch's text would advise weights_only=False, which runs the file's code
        from raddiag.models.official import unreadable_reason

        raise ValueError(f"{path}: unreadable checkpoint: {unreadable_reason(path)}") from None


# -- RNG state as weights_only-loadable data -----------------------------------------
def rng_state() -> dict[str, Any]:
    """Python, NumPy (legacy global) and torch RNG states as tensors / lists / ints."""
    py_version, py_internal, py_gauss = random.getstate()
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    state = {
        "python": {"version": int(py_version), "internal": torch.tensor(py_internal, dtype=torch.int64),
                   "gauss": py_gauss},
        "numpy": {"name": str(np_name), "keys": torch.from_numpy(np.asarray(np_keys, dtype=np.int64)),
                  "pos": int(np_pos), "has_gauss": int(np_has_gauss), "gauss": float(np_gauss)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    py = state["python"]
    random.setstate((py["version"], tuple(int(x) for x in py["internal"].tolist()), py["gauss"]))
    npst = state["numpy"]
    np.random.set_state((npst["name"], npst["keys"].numpy().astype(np.uint32), npst["pos"],
                         npst["has_gauss"], npst["gauss"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])

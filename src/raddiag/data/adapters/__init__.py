"""Source adapters: each turns one published layout into cases.

``load_<name>(source, **opts) -> AdapterResult(cases, skipped, notes)``; ``ADAPTERS`` maps the
``--format`` names of ``raddiag data prepare`` to them, and :func:`load_source` calls one with
only the options it accepts.
"""
from __future__ import annotations

import inspect
from pathlib import Path
from typing import Callable

from raddiag.data.adapters.base import AdapterResult, carve_val, map_label, parse_list, settle_labels
from raddiag.data.adapters.brain_tumor_mri import load_brain_tumor_mri
from raddiag.data.adapters.chest_xray_pneumonia import load_chest_xray_pneumonia
from raddiag.data.adapters.covid_chestxray import load_covid_chestxray
from raddiag.data.adapters.folders import load_folders
from raddiag.data.adapters.manifest import load_manifest
from raddiag.data.adapters.medmnist3d import load_medmnist3d
from raddiag.data.adapters.rp3d import load_rp3d

ADAPTERS: dict[str, Callable[..., AdapterResult]] = {
    "rp3d": load_rp3d,
    "manifest": load_manifest,
    "covid-chestxray": load_covid_chestxray,
    "chest-xray-pneumonia": load_chest_xray_pneumonia,
    "brain-tumor-mri": load_brain_tumor_mri,
    "medmnist3d": load_medmnist3d,
    "folders": load_folders,
}


def load_source(fmt: str, source: str | Path, **opts) -> AdapterResult:
    """Run adapter ``fmt`` on ``source``, passing the options it declares (None values dropped)."""
    if fmt not in ADAPTERS:
        raise ValueError(f"unknown source format {fmt!r}; known: {', '.join(ADAPTERS)}")
    source = Path(source)
    if not source.exists():
        raise FileNotFoundError(f"{source}: source does not exist")
    fn = ADAPTERS[fmt]
    params = inspect.signature(fn).parameters
    result = fn(source, **{k: v for k, v in opts.items() if k in params and v is not None})
    if not result.cases:
        raise ValueError(f"{source}: holds no cases for --format {fmt} (an empty file, or a header and no rows)")
    settle_labels(result.cases, source)
    return result


__all__ = ["ADAPTERS", "AdapterResult", "load_source", "carve_val", "map_label", "parse_list"] + [
    f.__name__ for f in ADAPTERS.values()]

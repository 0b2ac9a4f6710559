"""CT intensity: named and numeric windows, and the intensity convention a run was trained on.

Preprocessing (:func:`raddiag.data.preprocess.preprocess_slices`) clips each scan to its window
``[lo, hi]`` (none by default: the raw values) and then min-max scales it to [0, 1]. A window
is given as

- a name from :data:`WINDOWS` (``lung``, ``mediastinum``, ``soft_tissue``, ``bone``, ``brain``,
  ``abdomen``, ``liver``),
- ``"L,W"``: level (centre) and width in Hounsfield units -> ``[L - W/2, L + W/2]``,
- ``[lo, hi]``: the bounds themselves (``data.window``, the historical form).

``data.window`` applies to every scan; ``data.windows`` maps a modality (``CT``) or a modality
and anatomy (``CT/Chest``) to a window and wins over it (``CT/Chest`` over ``CT``), so that one
dataset of chest CTs and radiographs windows only the CTs.

The convention of the training data is recorded too: :func:`intensity_kind` sorts a scan's raw
value range into raw CT numbers (``hu``: values below -200, air is -1000), display values
(``8-bit``: 0..255, which includes 0..1) or ``other``; ``data prepare`` counts the kinds per
modality into ``meta.json`` and training copies them into the run folder
(``intensity.json``). At prediction, a scan whose kind the run never saw for its modality
raises an :class:`IntensityWarning` (in the spirit of torchxrayvision's "the input image looks
like it's not normalised" warning): a 0..255 PNG given to a model trained on raw HU volumes is
scaled differently from everything it learnt from.
"""
from __future__ import annotations

import functools
import json
import math
from pathlib import Path
from typing import Optional, Sequence

from raddiag.data.errors import InputWarning, warn_input

# Typical CT windows as (level, width) in HU, from Radiopaedia, "Windowing (CT)"
# (https://radiopaedia.org/articles/windowing-ct, "typical window width and level values"):
# brain W:80 L:40; lungs W:1500 L:-600; mediastinum W:350 L:50; abdomen soft tissues W:400 L:50;
# liver W:150 L:30; bone W:1800 L:400. "soft_tissue" is the mediastinal / soft-tissue window.
WINDOWS: dict[str, tuple[float, float]] = {
    "lung": (-600.0, 1500.0),
    "mediastinum": (50.0, 350.0),
    "soft_tissue": (50.0, 350.0),
    "abdomen": (50.0, 400.0),
    "liver": (30.0, 150.0),
    "bone": (400.0, 1800.0),
    "brain": (40.0, 80.0),
}
KINDS = {"hu": "raw CT numbers in HU",
         "8-bit": "display values within 0..255 (already windowed or scaled: PNG, JPEG)",
         "other": "neither raw HU nor 0..255 display values (e.g. 12-bit 0..4095, z-scores)"}
HU_BELOW = -200.0
RUN_FILE = "intensity.json"


class IntensityWarning(InputWarning):
    """An input scan's values look unlike those of the run's training scans of its modality."""


def level_width(level: float, width: float) -> tuple[float, float]:
    """Level / width -> ``(lo, hi) = (L - W/2, L + W/2)``."""
    if not (math.isfinite(level) and math.isfinite(width)) or width <= 0:
        raise ValueError(f"window level {level:g}, width {width:g}: the width must be a positive number")
    return level - width / 2, level + width / 2


def parse_window(spec) -> tuple[float, float]:
    """A window name, ``"L,W"`` text or a ``[lo, hi]`` pair -> ``(lo, hi)``."""
    if isinstance(spec, (list, tuple)):
        if len(spec) != 2:
            raise ValueError(f"a window [lo, hi] needs two numbers, got {list(spec)}")
        lo, hi = (float(v) for v in spec)
        if not (math.isfinite(lo) and math.isfinite(hi) and hi > lo):
            raise ValueError(f"intensity window [{lo:g}, {hi:g}] is empty")
        return lo, hi
    text = str(spec).strip()
    if text.lower() in WINDOWS:
        return level_width(*WINDOWS[text.lower()])
    parts = text.split(",")
    try:
        if len(parts) == 2:
            return level_width(float(parts[0]), float(parts[1]))
    except ValueError:
        pass
    raise ValueError(f"unknown window {text!r}: give a name ({', '.join(WINDOWS)}) or LEVEL,WIDTH in HU "
                     "(e.g. -600,1500)")


def _selector(key: str) -> tuple[str, Optional[str]]:
    """``"CT"`` / ``"ct/chest"`` -> (canonical modality, lower-case anatomy or None)."""
    from raddiag.data.case import canonical_modality

    mod, _, anatomy = str(key).partition("/")
    try:
        return canonical_modality(mod), (anatomy.strip().lower() or None)
    except ValueError as exc:
        raise ValueError(f"window for {key!r}: {exc}; keys are MODALITY or MODALITY/ANATOMY") from None


def check_windows(windows: Optional[dict]) -> dict[str, str]:
    """Every key and window of a ``data.windows`` mapping checked (ValueError naming the key)."""
    for key, spec in (windows or {}).items():
        _selector(key)
        try:
            parse_window(spec)
        except ValueError as exc:
            raise ValueError(f"window for {key!r}: {exc}") from None
    return dict(windows or {})


def window_for(modality: str, anatomy: Optional[str] = None, window=None,
               windows: Optional[dict] = None) -> Optional[tuple[float, float]]:
    """The window of one scan: ``windows[MODALITY/ANATOMY]``, else ``windows[MODALITY]``, else
    ``window``, else None (raw values)."""
    from raddiag.data.case import canonical_modality

    mod = canonical_modality(modality)
    found = {}
    for key, spec in (windows or {}).items():
        m, a = _selector(key)
        if m == mod and (a is None or (anatomy is not None and a == anatomy.strip().lower())):
            found[a is not None] = spec
    spec = found.get(True, found.get(False, window))
    return parse_window(spec) if spec is not None else None


def window_options(values: Optional[Sequence[Sequence[str]]]) -> tuple[Optional[list[float]], dict[str, str]]:
    """The CLI's repeatable ``--window`` -> (``data.window``, ``data.windows``). Each use is
    ``LO HI``, ``NAME``, ``L,W`` (all scans) or ``MODALITY[/ANATOMY]=NAME|L,W``."""
    window, windows = None, {}
    for tokens in values or []:
        try:
            if tokens and all("=" in t for t in tokens):     # --window CT=abdomen "CT/Head=brain"
                for t in tokens:
                    key, _, spec = t.partition("=")
                    windows.update(check_windows({key.strip(): spec.strip()}))
            elif len(tokens) == 2:
                window = list(parse_window([float(t) for t in tokens]))
            elif len(tokens) == 1:
                window = list(parse_window(tokens[0]))
            else:
                raise ValueError(f"expected LO HI, a NAME, L,W or MODALITY=WINDOW, got {' '.join(tokens)!r}")
        except ValueError as exc:
            raise ValueError(f"--window: {exc}") from None
    return window, windows


# -- the intensity convention --------------------------------------------------------------
def intensity_kind(lo: float, hi: float) -> str:
    """``hu`` (raw CT numbers), ``8-bit`` (0..255, 0..1 included) or ``other`` from a raw range."""
    if lo < HU_BELOW:
        return "hu"
    if lo >= 0 and hi <= 255:
        return "8-bit"
    return "other"


def add_profile(summary: dict, modality: str, profile: dict) -> None:
    """Count one scan's kind into a per-modality summary ``{mod: {"kinds": {kind: n}, "min", "max"}}``."""
    lo, hi = float(profile["min"]), float(profile["max"])
    s = summary.setdefault(modality, {"kinds": {}, "min": lo, "max": hi})
    kind = intensity_kind(lo, hi)
    s["kinds"][kind] = s["kinds"].get(kind, 0) + 1
    s["min"], s["max"] = min(s["min"], lo), max(s["max"], hi)


def adopt_data_windows(dc, meta: dict, data_dir) -> None:
    """Set ``dc.window`` / ``dc.windows`` / ``dc.window_scaling`` and ``dc.stored_geometry`` (a
    :class:`~raddiag.config.DataConfig`) to those the prepared dataset was made with: the model learns
    from the data as prepared, so prediction must window and resize alike. Different window settings
    in the config are replaced, with a warning."""
    import logging

    window = list(meta["window"]) if meta.get("window") is not None else None
    windows = dict(meta.get("windows") or {})
    mine = (list(dc.window) if dc.window is not None else None, dict(dc.windows or {}))
    if (dc.window is not None or dc.windows) and mine != (window, windows):
        logging.getLogger(__name__).warning(
            "%s was prepared with window %s, windows %s; the run records those (its config said %s, %s)",
            data_dir, window, windows, *mine)
    dc.window, dc.windows = window, windows
    dc.window_scaling = meta.get("window_scaling", "minmax")    # a store from before it: scaled as then
    geometry = [meta.get("size"), meta.get("depth")]
    # prediction reads scans as training read this store (DataConfig.stored_geometry)
    dc.stored_geometry = geometry if all(isinstance(v, int) and not isinstance(v, bool) for v in geometry) else None


def write_run_intensity(run_dir, meta: dict, data_dir) -> None:
    """``RUN/intensity.json``: the training data's per-modality kinds and its windows."""
    record = {"data": str(data_dir), "window": meta.get("window"), "windows": meta.get("windows") or {},
              "modalities": meta.get("intensity") or {}, "kinds": KINDS}
    (Path(run_dir) / RUN_FILE).write_text(json.dumps(record, indent=1) + "\n")


def read_run_intensity(run_dir) -> Optional[dict]:
    """The run's ``intensity.json`` (None when the run has none: trained before it was recorded,
    or imported); an unreadable one raises an error naming it."""
    if run_dir is None or not (Path(run_dir) / RUN_FILE).is_file():
        return None
    path = Path(run_dir) / RUN_FILE
    try:
        record = json.loads(path.read_text())
        if not isinstance(record.get("modalities"), dict):
            raise ValueError("no 'modalities' mapping")
        return record
    except (ValueError, AttributeError) as exc:
        raise ValueError(f"{path}: not a readable intensity record ({exc})") from None


def run_modality(run_dir) -> Optional[str]:
    """The one modality a run was trained on (its ``intensity.json``), or None when it saw several
    or does not record them: what a non-DICOM file is taken to be when no modality is given."""
    record = read_run_intensity(run_dir)
    modalities = list((record or {}).get("modalities") or {})
    return modalities[0] if len(modalities) == 1 else None


def warn_unlike_training(run_dir, scan, profile: dict, windows: Optional[dict] = None) -> list[str]:
    """Issue an :class:`IntensityWarning` (:func:`~raddiag.data.errors.warn_input`) when a scan (a
    :class:`~raddiag.data.case.Scan` just read into ``profile``) looks unlike the run's training
    scans of its modality (:func:`intensity_mismatch`), or has no anatomy while ``windows`` window
    that modality per anatomy (it got the modality's window, which its training counterparts may
    not have had). Returns the messages."""
    record = None
    if run_dir is not None:
        path = Path(run_dir) / RUN_FILE
        record = _cached_run_intensity(str(run_dir), path.stat().st_mtime_ns if path.is_file() else None)
    source = scan.paths[0] if scan.paths else "<scan>"
    msgs = [intensity_mismatch(record, scan.modality, profile, source)]
    per_anatomy = sorted(k for k in windows or {} if "/" in k and _selector(k)[0] == scan.modality)
    if per_anatomy and not scan.anatomy:
        msgs.append(f"{source} ({scan.modality}): has no anatomy, so it is not windowed as the run's "
                    f"{', '.join(per_anatomy)} scans were; give its anatomy (or --window) to match")
    msgs = [m for m in msgs if m]
    for m in msgs:
        warn_input(m, IntensityWarning, stacklevel=3)
    return msgs


@functools.lru_cache(maxsize=8)
def _cached_run_intensity(run_dir: str, stamp) -> Optional[dict]:
    """The run's record, read once per version of the file (``stamp``: its mtime)."""
    return read_run_intensity(run_dir)


def intensity_mismatch(record: Optional[dict], modality: str, profile: dict, source: str) -> Optional[str]:
    """Why ``profile`` (a scan's raw min / max) looks unlike the run's training scans of
    ``modality``; None when it looks alike or the run recorded nothing for that modality."""
    seen = ((record or {}).get("modalities") or {}).get(modality)
    if not seen or not seen.get("kinds"):
        return None
    kind = intensity_kind(float(profile["min"]), float(profile["max"]))
    if kind in seen["kinds"]:
        return None
    trained = max(seen["kinds"], key=seen["kinds"].get)
    return (f"{source} ({modality}): its values span {profile['min']:g}..{profile['max']:g}: {KINDS[kind]}; "
            f"this run's {modality} training scans held {KINDS[trained]} ({seen['min']:g}..{seen['max']:g}), so "
            "the model sees this scan unlike anything it learnt from; give it in the training data's convention "
            "(README, 'Orientation and intensity')")

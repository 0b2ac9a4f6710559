"""The manifest schema, checked before anything is read: every problem of every line is reported
at once as ``PATH:LINE: field: what is wrong`` (:class:`ManifestError`).

A case record (README, "Your own data"; a ``.csv`` / ``.tsv`` manifest is turned into the same
records first, :mod:`raddiag.data.manifest_csv`)::

    {"id": "c1", "scans": [{"path": "ct.nii.gz", "modality": "CT"}], "labels": ["Pneumonia"],
     "icd10": ["J18"], "split": "train", "patient": "p1", "anatomy": "Chest", "meta": {}}

``labels`` and ``icd10`` may be one string (one label / one code) or a list of strings.
Whether a modality name is known is not checked here: a scan with an unknown one is skipped
and reported by the manifest adapter (``--strict``: an error), the rest of its case kept.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Optional

from raddiag.data.case import SPLITS
from raddiag.data.manifest_csv import is_csv, scan_csv
from raddiag.jsonl import scan_jsonl

_OPT_STR = ("a string or null", lambda v: v is None or isinstance(v, str))
_INDEX = ("an integer >= 0 or null", lambda v: v is None or (isinstance(v, int) and not isinstance(v, bool) and v >= 0))
SCAN_FIELDS: dict[str, tuple[str, Callable[[Any], bool]]] = {
    "path": ("a non-empty string", lambda v: isinstance(v, str) and bool(v.strip())),
    "paths": ("a non-empty string or a non-empty list of non-empty strings",
              lambda v: (isinstance(v, str) and bool(v.strip())) or (
                  isinstance(v, list) and bool(v) and all(isinstance(p, str) and p.strip() for p in v))),
    "modality": ("a non-empty string", lambda v: isinstance(v, str) and bool(v.strip())),
    "anatomy": _OPT_STR, "plane": _OPT_STR, "id": _OPT_STR,
    "is_3d": ("true, false or null", lambda v: v is None or isinstance(v, bool)),
    "key_slice": _INDEX,
    "entry": ("an integer >= 0", lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0),
}
_NAMES = ("a string or a list of non-empty strings", lambda v: v is None or isinstance(v, str) or (
    isinstance(v, list) and all(isinstance(x, str) and x.strip() for x in v)))
CASE_FIELDS: dict[str, tuple[str, Callable[[Any], bool]]] = {
    "id": ("a non-empty string", lambda v: isinstance(v, str) and bool(v.strip())),
    "scans": ("a non-empty list of scan objects", lambda v: isinstance(v, list) and bool(v)),
    "labels": _NAMES, "icd10": _NAMES,
    "split": (f"one of {', '.join(SPLITS)} or null", lambda v: v is None or v in SPLITS),
    "anatomy": _OPT_STR, "patient": _OPT_STR,
    "meta": ("an object or null", lambda v: v is None or isinstance(v, dict)),
}


SHOWN_PROBLEMS = 20   # in the message; ``ManifestError.problems`` keeps them all


class ManifestError(ValueError):
    """Every schema problem of a manifest (``.problems``), one ``PATH:LINE: field: what is wrong``
    each; the message shows the first :data:`SHOWN_PROBLEMS` (a CSV given as JSON Lines made a
    one-line error of 321 problems, 17 KB)."""

    def __init__(self, path, problems: list[str]):
        self.path, self.problems = str(path), problems
        more = len(problems) - SHOWN_PROBLEMS
        super().__init__(f"{path}: {len(problems)} problem(s) in the manifest, nothing was read:\n"
                         + "\n".join(problems[:SHOWN_PROBLEMS])
                         + (f"\n... and {more} more problem(s)" if more > 0 else ""))


def _show(v: Any) -> str:
    text = json.dumps(v)
    return f"{'null' if v is None else type(v).__name__} {text if len(text) <= 40 else text[:37] + '...'}"


def _check(rec: dict, fields: dict, prefix: str = "") -> list[str]:
    out = [f"{prefix}{k}: unknown field (known: {', '.join(fields)})" for k in rec if k not in fields]
    for k, (what, ok) in fields.items():
        if k in rec and not ok(rec[k]):
            out.append(f"{prefix}{k}: expected {what}, got {_show(rec[k])}")
    return out


def scan_problems(scan: Any, j: int) -> list[str]:
    where = f"scans[{j}]"
    if not isinstance(scan, dict):
        return [f"{where}: expected an object with 'path' and 'modality', got {_show(scan)}"]
    out = _check(scan, SCAN_FIELDS, f"{where}.")
    if "path" in scan and "paths" in scan:
        out.append(f"{where}: give 'path' or 'paths', not both")
    if "path" not in scan and "paths" not in scan:
        out.append(f"{where}.path: required")
    if "modality" not in scan:
        out.append(f"{where}.modality: required")
    return out


def case_problems(rec: dict) -> list[str]:
    """``field: what is wrong`` for each schema problem of one case record."""
    out = _check(rec, CASE_FIELDS)
    out += [f"{k}: required" for k in ("id", "scans") if k not in rec]
    if isinstance(rec.get("scans"), list):
        for j, s in enumerate(rec["scans"]):
            out += scan_problems(s, j)
    return out


def _looks_like_csv(path: Path) -> bool:
    """Whether a file given as JSON Lines begins like a CSV / TSV header instead."""
    with path.open("rb") as f:
        first = f.readline(4096).decode("utf-8", "replace").strip()
    return not first.startswith(("{", "[")) and ("," in first or "\t" in first)


def validate_manifest(path: str | Path) -> list[tuple[str, dict]]:
    """``(PATH:LINE, record)`` of every case of a manifest whose every line follows the schema;
    otherwise :class:`ManifestError` listing all problems (bad UTF-8 / JSON, types, missing
    fields, duplicate ids, unknown splits, no case at all)."""
    path = Path(path)
    problems, records = [], []
    first: dict[str, str] = {}
    for where, rec, problem in (scan_csv(path) if is_csv(path) else scan_jsonl(path, "manifest")):
        if problem:
            problems.append(f"{where}: {problem}")
            continue
        problems += [f"{where}: {p}" for p in case_problems(rec)]
        cid: Optional[str] = rec.get("id") if isinstance(rec.get("id"), str) else None
        if cid is not None and cid in first:
            problems.append(f"{where}: id: duplicate case id {cid!r} (first at line {first[cid].rsplit(':', 1)[1]})")
        elif cid is not None:
            first[cid] = where
        records.append((where, rec))
    if not records and not problems:
        problems.append(f"{path}: holds no cases ("
                        + ("no row under the header)" if is_csv(path) else "every line is blank or a comment)"))
    if not records and problems and not is_csv(path) and _looks_like_csv(path):
        problems.insert(0, f"{path}: not JSON Lines: its first line looks like a CSV header; a CSV manifest "
                           "is read as such when its name ends in .csv (README 'A CSV manifest')")
    if problems:
        raise ManifestError(path, problems)
    return records

"""A case manifest as a CSV file (a spreadsheet's export; ``.tsv`` for tab-separated): one row a
scan, the rows of one case sharing its ``id``. The columns are the JSON Lines manifest's fields
(README "Your own data: the case manifest"); each case becomes the same record a JSON line
would be, so :func:`raddiag.data.schema.validate_manifest` checks both alike.

Case columns: ``id`` (required), ``labels`` and ``icd10`` (several separated by ``;``; empty: a
normal case), ``split``, ``patient``, ``anatomy``. Scan columns: ``path`` and ``modality``
(required), ``plane``, ``key_slice``, ``is_3d``. Column names are read without regard to letter
case or surrounding spaces; an unknown column is an error (a misspelt ``lables`` column would
otherwise make every case normal), and so is a case column that differs between the rows of one
case.
"""
from __future__ import annotations

import csv
import io
import re
from pathlib import Path
from typing import Iterator, Optional

from raddiag.csvfile import read_cell

CASE_COLUMNS = ("id", "labels", "icd10", "split", "patient", "anatomy")
SCAN_COLUMNS = ("path", "modality", "plane", "key_slice", "is_3d")
REQUIRED = ("id", "path", "modality")
LIST_SEP = ";"
_TRUE, _FALSE = {"true", "yes", "1"}, {"false", "no", "0"}


def is_csv(path: str | Path) -> bool:
    """Whether a manifest path is read as CSV (by its suffix: ``.csv``, ``.tsv``)."""
    return Path(path).suffix.lower() in (".csv", ".tsv")


def _text(path: Path) -> tuple[Optional[str], str, Optional[str]]:
    """``(text, where, problem)``: the file's text (a BOM dropped), or where and why its bytes
    are not UTF-8."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: manifest does not exist")
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8-sig"), str(path), None
    except UnicodeDecodeError as exc:
        line = raw[:exc.start].count(b"\n") + 1
        return None, f"{path}:{line}", f"not valid UTF-8 (byte {raw[exc.start]:#04x})"


def _scan(cells: dict) -> dict:
    """A row's scan object; texts the schema would refuse are passed on as they are, so that its
    message names them."""
    scan = {k: cells[k] for k in ("path", "modality", "plane") if cells.get(k)}
    if cells.get("key_slice"):
        v = cells["key_slice"]
        scan["key_slice"] = int(v) if re.fullmatch(r"\d+", v) else v
    if cells.get("is_3d"):
        v = cells["is_3d"].lower()
        scan["is_3d"] = True if v in _TRUE else False if v in _FALSE else cells["is_3d"]
    return scan


def _case_fields(cells: dict) -> dict:
    out = {}
    for k in CASE_COLUMNS:
        if cells.get(k):
            v = cells[k]
            out[k] = [x.strip() for x in v.split(LIST_SEP) if x.strip()] if k in ("labels", "icd10") else v
    return out


def scan_csv(path: str | Path) -> Iterator[tuple[str, Optional[dict], Optional[str]]]:
    """Yield ``(where, record, problem)`` as :func:`raddiag.jsonl.scan_jsonl` does: a case record
    per ``id`` (``where``: its first row, ``PATH:LINE``), or a problem (record None) for the
    header and for a row that contradicts its case's earlier rows."""
    path = Path(path)
    text, where, problem = _text(path)
    if problem:
        yield where, None, problem
        return
    reader = csv.reader(io.StringIO(text, newline=""), delimiter="\t" if path.suffix.lower() == ".tsv" else ",")
    header = [h.strip().lower() for h in next(reader, [])]
    known = CASE_COLUMNS + SCAN_COLUMNS
    unknown = [h for h in header if h not in known]
    missing = [h for h in REQUIRED if h not in header]
    if unknown or missing:
        what = ([f"unknown column(s) {', '.join(repr(h) for h in unknown)}"] if unknown else []) + (
            [f"missing column(s) {', '.join(missing)}"] if missing else [])
        sep = next((c for c in ";|\t," if len(header) == 1 and c in header[0]), None)
        hint = (f"; the header reads as one column holding {sep!r}: save the file with commas between its columns "
                "(or tab-separated, named .tsv)") if sep else ""
        yield f"{path}:1", None, f"{'; '.join(what)} (the columns: {', '.join(known)}; README 'A CSV manifest'){hint}"
        return
    cases: dict[str, tuple[str, dict]] = {}
    for row in reader:
        where = f"{path}:{reader.line_num}"
        cells = {h: read_cell(c.strip()) for h, c in zip(header, row)}
        if not any(cells.values()):
            continue
        fields, scan = _case_fields(cells), _scan(cells)
        cid = fields.get("id")
        if cid is None:
            yield where, {**fields, "scans": [scan]}, None     # the schema says "id: required"
            continue
        if cid not in cases:
            cases[cid] = (where, {**fields, "scans": [scan]})
            continue
        first, rec = cases[cid]
        for k, v in fields.items():
            if k in rec and rec[k] != v:
                yield where, None, (f"{k}: {v!r} differs from {rec[k]!r} on line {first.rsplit(':', 1)[1]} "
                                    f"(rows with the same id are one case; its {k} is given once or alike)")
            rec.setdefault(k, v)
        rec["scans"].append(scan)
    for where, rec in cases.values():
        yield where, rec, None

"""A manifest of cases, JSON Lines or CSV (see README, "Your own data"): the format users write by hand.

The whole file is checked against the schema first (:mod:`raddiag.data.schema`); records are
read with :meth:`Case.from_dict`; a scan with an unknown modality is not fatal
here: it is reported as skipped (``prepare --strict`` makes it an error), the rest of its
case is kept.
"""
from __future__ import annotations

from pathlib import Path

from raddiag.data.adapters.base import AdapterResult
from raddiag.data.case import Case, canonical_modality
from raddiag.data.schema import validate_manifest


def load_manifest(source: Path, **_) -> AdapterResult:
    source = Path(source)
    if source.is_dir():
        found = sorted(p for p in source.iterdir() if p.suffix.lower() in (".jsonl", ".csv", ".tsv"))
        if len(found) != 1:
            raise ValueError(f"{source}: expected one manifest (.jsonl, .csv) in the folder, found {len(found)}; "
                             "give the file itself")
        source = found[0]
    result = AdapterResult(cases=[])
    for where, rec in validate_manifest(source):   # every schema problem at once, before any read
        good = []
        for j, s in enumerate(rec.get("scans") or []):
            try:
                canonical_modality(s.get("modality", ""), source=where)
                good.append(s)
            except ValueError as exc:
                p = s.get("paths", s.get("path", "?"))
                p = p[0] if isinstance(p, list) and p else p
                file = str(p) if Path(str(p)).is_absolute() else str(source.parent / str(p))
                result.skipped.append({"case": rec.get("id", where), "file": file,
                                       "reason": f"scan {j}: {exc}"})
        if rec.get("scans") and not good:
            # every scan unusable: keep the case without scans so prepare reports it as skipped
            case = Case.from_dict({**rec, "scans": [{"path": "-", "modality": "CT"}]}, base=source.parent,
                                  source=where)
            case.scans = []
        else:
            case = Case.from_dict({**rec, "scans": good}, base=source.parent, source=where)
        result.cases.append(case)
    result.notes.append(f"manifest: {len(result.cases)} cases from {source}")
    return result

"""A JSON Lines manifest of cases (see README, "Your own data"): the format users write by hand."""
from __future__ import annotations

from pathlib import Path

from raddiag.data.adapters.base import AdapterResult
from raddiag.data.case import read_manifest


def load_manifest(source: Path, **_) -> AdapterResult:
    source = Path(source)
    if source.is_dir():
        found = sorted(source.glob("*.jsonl"))
        if len(found) != 1:
            raise ValueError(f"{source}: expected one .jsonl manifest in the folder, found {len(found)}; "
                             "give the file itself")
        source = found[0]
    cases = list(read_manifest(source))
    missing = [(c.id, p) for c in cases for s in c.scans for p in s.paths if not Path(p.split("#")[0]).exists()]
    notes = [f"manifest: {len(cases)} cases from {source}"]
    if missing:
        notes.append(f"manifest: {len(missing)} scan file(s) do not exist (reported as skipped by prepare)")
    return AdapterResult(cases=cases, notes=notes)

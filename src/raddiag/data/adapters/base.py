"""What every source adapter returns, and small helpers they share."""
from __future__ import annotations

import ast
import random
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Sequence

from raddiag.data.case import Case


@dataclass
class AdapterResult:
    cases: list[Case]
    skipped: list[dict] = field(default_factory=list)   # {case, file, reason}: passed to prepare_cases
    notes: list[str] = field(default_factory=list)      # facts the user should read (printed in the summary)

    def counts(self) -> dict:
        """Case / scan / label counts (what the tests and the summary check)."""
        splits = Counter(c.split or "unassigned" for c in self.cases)
        labels = Counter(l for c in self.cases for l in (c.labels or ["Normal"]))
        icd = Counter(l for c in self.cases for l in (c.icd10 or ["Normal"]))
        return {"cases": len(self.cases), "scans": sum(len(c.scans) for c in self.cases),
                "splits": dict(splits), "labels": dict(labels), "icd10": dict(icd)}


def parse_list(value: Any, what: str = "field") -> list:
    """A list field that may be a real list, a Python list literal in a string ("['CT']"),
    a plain string (one item) or None. Parsed with ``ast.literal_eval`` only, never ``eval``."""
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        return list(value)
    if isinstance(value, str):
        s = value.strip()
        if s.startswith(("[", "(")):
            try:
                out = ast.literal_eval(s)
            except (ValueError, SyntaxError) as exc:
                raise ValueError(f"{what}: {value!r} is not a list literal ({exc})") from None
            if not isinstance(out, (list, tuple)):
                raise ValueError(f"{what}: {value!r} is not a list")
            return list(out)
        return [s] if s else []
    return [value]


def carve_val(cases: Sequence[Case], fraction: float = 0.125, seed: int = 0, from_split: str = "train") -> int:
    """Move a seeded ``fraction`` of the patients of ``from_split`` to ``val`` (whole patients,
    so no patient is in two splits). The default 1/8 keeps train:val = 7:1 as in the paper.
    Returns the number of patients moved."""
    patients = sorted({c.patient or c.id for c in cases if c.split == from_split})
    random.Random(seed).shuffle(patients)
    chosen = set(patients[: round(fraction * len(patients))])
    for c in cases:
        if c.split == from_split and (c.patient or c.id) in chosen:
            c.split = "val"
    return len(chosen)


def map_label(value: str, table: dict[str, tuple[str, str | None]], source: str) -> tuple[str, str | None]:
    """(disorder name, ICD-10-CM code) of a source label; an unmapped value raises ValueError
    naming the value and the file: labels are never dropped silently."""
    key = value.strip()
    for k in (key, key.lower()):
        if k in table:
            return table[k]
    raise ValueError(f"{source}: label {value!r} has no mapping to a disorder name and ICD-10-CM code "
                     f"(known: {', '.join(sorted(table))})")

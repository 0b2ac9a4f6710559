"""Cases and scans: the data model every source adapter produces.

A *case* is one patient's set of scans with its diagnoses; a *scan* is one 2D
image or 3D volume of one modality. A manifest is a JSON Lines file of cases,
one per line, that users can write by hand (see README, "Your own data").
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Optional

NORMAL = "Normal"
SPLITS = ("train", "val", "test")


def check_split(name: str, what: str = "split") -> str:
    """``name`` when it is one of :data:`SPLITS`, else ValueError naming ``what`` and the valid ones."""
    if name not in SPLITS:
        raise ValueError(f"{what} {name!r}: no such split; use one of {', '.join(SPLITS)}")
    return name


# Canonical modality names, in the order of the paper's Figure 2a, and the aliases
# (DICOM Modality codes included) that map onto them. Matching is case-insensitive.
MODALITIES = [
    "CT", "MRI", "X-ray", "Ultrasound", "Annotated image", "Fluoroscopy",
    "Mammography", "DSA (angiography)", "Nuclear medicine", "Barium",
]
_ALIASES = {
    "ct": "CT", "computed tomography": "CT",
    "mri": "MRI", "mr": "MRI", "magnetic resonance": "MRI",
    "x-ray": "X-ray", "xray": "X-ray", "xr": "X-ray", "cr": "X-ray", "dx": "X-ray",
    "radiograph": "X-ray", "radiography": "X-ray", "cxr": "X-ray",
    "ultrasound": "Ultrasound", "us": "Ultrasound",
    "annotated image": "Annotated image",
    "fluoroscopy": "Fluoroscopy", "rf": "Fluoroscopy",
    "mammography": "Mammography", "mg": "Mammography",
    "dsa (angiography)": "DSA (angiography)", "dsa": "DSA (angiography)",
    "angiography": "DSA (angiography)", "xa": "DSA (angiography)",
    "nuclear medicine": "Nuclear medicine", "nm": "Nuclear medicine", "pt": "Nuclear medicine",
    "pet": "Nuclear medicine",
    "barium": "Barium", "barium enema": "Barium",
}
# The released checkpoint's modality ids: the k-th image of one sample entry of a
# modality gets the k-th id of its list (docs/official-checkpoint.md).
OFFICIAL_MODALITY_IDS = {
    "CT": [1, 2, 3], "MRI": [4, 5, 6], "X-ray": [7, 8], "Ultrasound": [9],
    "Annotated image": [10], "Fluoroscopy": [11], "Mammography": [12],
    "DSA (angiography)": [13], "Nuclear medicine": [14], "Barium": [15],
}


def canonical_modality(name: str, source: str | None = None) -> str:
    """Map a modality spelling (or DICOM code) to its canonical name; raise ValueError if unknown."""
    key = str(name).strip().lower()
    if key in _ALIASES:
        return _ALIASES[key]
    where = f"{source}: " if source else ""
    shown = repr(name) if len(str(name)) <= 80 else f"{str(name)[:60]!r}... ({len(str(name))} characters)"
    raise ValueError(
        f"{where}unknown modality {shown}; known: {', '.join(MODALITIES)} "
        "(or DICOM codes CT, MR, CR, DX, US, MG, RF, XA, NM, PT)"
    )


def modality_id(modality: str, k: int = 0, scheme: str = "raddiag") -> int:
    """Integer id fed to the model's modality embedding (0 is padding).

    ``scheme="raddiag"``: one id per modality (index in MODALITIES + 1).
    ``scheme="official"``: the release's table, where ``k`` is the scan's position
    among the scans of that modality in its sample entry (clamped to the list).
    """
    m = canonical_modality(modality)
    if scheme == "raddiag":
        return MODALITIES.index(m) + 1
    if scheme == "official":
        ids = OFFICIAL_MODALITY_IDS[m]
        return ids[min(k, len(ids) - 1)]
    raise ValueError(f"unknown modality scheme {scheme!r} (raddiag | official)")


@dataclass
class Scan:
    """One 2D image or 3D volume. ``paths`` is one file, or the files / folder of a DICOM series."""

    paths: list[str]
    modality: str
    anatomy: Optional[str] = None
    plane: Optional[str] = None
    is_3d: Optional[bool] = None       # None: decided from the data (depth > 1)
    key_slice: Optional[int] = None    # index into the original slices
    id: Optional[str] = None
    entry: int = 0                     # sample-entry index within the case (release format)

    def __post_init__(self) -> None:
        if isinstance(self.paths, (str, Path)):
            self.paths = [str(self.paths)]
        self.paths = [str(p) for p in self.paths]
        self.modality = canonical_modality(self.modality, source=self.paths[0] if self.paths else None)


@dataclass
class Case:
    id: str
    scans: list[Scan]
    labels: list[str] = field(default_factory=list)   # disorder names; [] or ["Normal"] for normal
    icd10: list[str] = field(default_factory=list)    # ICD-10-CM 3-character categories
    split: Optional[str] = None                       # train | val | test (None: to be assigned)
    anatomy: Optional[str] = None
    patient: Optional[str] = None                     # groups cases for leak-free splits
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def is_normal(self) -> bool:
        return not self.labels or self.labels == [NORMAL]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any], base: Path | None = None, source: str = "") -> "Case":
        """Build from a manifest record; relative scan paths resolve against ``base``."""
        where = source or "case record"
        if "id" not in d:
            raise ValueError(f"{where}: a case needs an 'id'")
        if not d.get("scans"):
            raise ValueError(f"{where}: case {d['id']!r} has no 'scans'")
        if d.get("split") not in (None, *SPLITS):
            raise ValueError(f"{where}: case {d['id']!r} has split {d['split']!r}; use one of {SPLITS}")
        scans = []
        for j, s in enumerate(d["scans"]):
            s = dict(s)
            if "path" in s and "paths" not in s:
                s["paths"] = s.pop("path")
            if "paths" not in s or "modality" not in s:
                raise ValueError(f"{where}: case {d['id']!r} scan {j} needs 'path(s)' and 'modality'")
            paths = s["paths"] if isinstance(s["paths"], list) else [s["paths"]]
            if base is not None:
                paths = [str(p) if Path(p).is_absolute() else str(base / p) for p in paths]
            s["paths"] = paths
            allowed = {f for f in Scan.__dataclass_fields__}
            extra = set(s) - allowed
            if extra:
                raise ValueError(f"{where}: case {d['id']!r} scan {j} has unknown fields {sorted(extra)}")
            try:
                scans.append(Scan(**s))
            except ValueError as exc:
                raise ValueError(f"{where}: case {d['id']!r} scan {j}: {exc}") from None
        rest = {k: v for k, v in d.items() if k != "scans"}
        allowed = set(cls.__dataclass_fields__) - {"scans"}
        extra = set(rest) - allowed
        if extra:
            raise ValueError(f"{where}: case {d['id']!r} has unknown fields {sorted(extra)}")
        names = {k: _name_list(rest.pop(k, None)) for k in ("labels", "icd10")}   # a string is one name
        rest["meta"] = rest.get("meta") or {}
        return cls(scans=scans, **names, **rest)


def _name_list(value) -> list[str]:
    """Labels / ICD codes: None or "" -> [], one string -> [it] (never its characters), a list as is."""
    if value is None:
        return []
    if isinstance(value, str):
        return [value] if value.strip() else []
    return list(value)


def read_manifest(path: str | Path) -> Iterator[Case]:
    """Cases from a JSON Lines manifest (blank lines and ``#`` comments allowed), checked
    against the schema first (:func:`raddiag.data.schema.validate_manifest`); labels settled as
    ``data prepare`` settles them (:func:`raddiag.data.adapters.base.settle_labels`)."""
    from raddiag.data.adapters.base import settle_labels
    from raddiag.data.schema import validate_manifest

    path = Path(path)
    cases = [Case.from_dict(record, base=path.parent, source=where) for where, record in validate_manifest(path)]
    settle_labels(cases, path)
    yield from cases


def write_manifest(cases: Iterable[Case], path: str | Path) -> int:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    with path.open("w") as f:
        for c in cases:
            f.write(json.dumps(c.to_dict()) + "\n")
            n += 1
    return n

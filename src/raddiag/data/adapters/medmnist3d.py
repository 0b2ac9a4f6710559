"""MedMNIST 3D sets (e.g. AdrenalMNIST3D): an ``.npz`` with ``{train,val,test}_{images,labels}``.

Each volume is one 3D CT-derived case with the official split. The default label map is
AdrenalMNIST3D's (1 = Adrenal mass, E27; 0 = Normal); other sets pass ``label_map``
``{index: (disorder name, ICD-10-CM code or None)}`` plus ``anatomy``.
Scans are addressed as ``FILE.npz#train_images/INDEX`` (read by ``raddiag.data.readers``).
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np

from raddiag.data.adapters.base import AdapterResult
from raddiag.data.case import NORMAL, SPLITS, Case, Scan
from raddiag.data.readers import NPZ_SEP

ADRENAL = {0: (NORMAL, None), 1: ("Adrenal mass", "E27")}


def _find_npz(source: Path, npz: Optional[str | Path]) -> Path:
    if npz:
        p = Path(npz)
        if not p.is_absolute() and source.is_dir() and (source / p).exists():
            p = source / p
    elif source.is_file():
        p = source
    elif source.is_dir():
        found = sorted(source.rglob("*.npz"))
        if len(found) != 1:
            raise ValueError(f"{source}: expected exactly one .npz file, found {len(found)} "
                             f"({', '.join(f.name for f in found[:5])}); pass --npz FILE")
        p = found[0]
    else:
        raise FileNotFoundError(f"{source}: MedMNIST .npz (or its folder) does not exist")
    if not p.exists():
        raise FileNotFoundError(f"{p}: MedMNIST .npz does not exist")
    return p


def load_medmnist3d(source: Path, npz: Optional[str | Path] = None, label_map: Optional[dict] = None,
                    anatomy: str = "Abdomen and Pelvis", modality: str = "CT", **_) -> AdapterResult:
    path = _find_npz(Path(source), npz)
    label_map = label_map or ADRENAL
    result = AdapterResult(cases=[])
    try:
        z = np.load(path, allow_pickle=False)
    except Exception as exc:
        raise ValueError(f"{path}: cannot be read as .npz ({type(exc).__name__}: {exc})") from None
    with z:
        missing = [f"{s}_{k}" for s in SPLITS for k in ("images", "labels") if f"{s}_{k}" not in z.files]
        if missing:
            raise ValueError(f"{path}: not a MedMNIST file, missing arrays {missing}")
        stem = path.stem
        for split in SPLITS:
            labels = np.asarray(z[f"{split}_labels"]).reshape(len(z[f"{split}_labels"]), -1)
            for i, row in enumerate(labels):
                names, codes = [], []
                for j in (np.flatnonzero(row) if row.size > 1 else [int(row[0])]):
                    j = int(j)
                    if j not in label_map:
                        raise ValueError(f"{path}: {split}_labels[{i}] = {j} has no mapping "
                                         f"(known: {sorted(label_map)})")
                    n, c = label_map[j]
                    names.append(n)
                    if c:
                        codes.append(c)
                names = [n for n in names if n != NORMAL] or [NORMAL]
                cid = f"{stem}-{split}-{i:05d}"
                result.cases.append(Case(
                    id=cid, scans=[Scan(paths=[f"{path}{NPZ_SEP}{split}_images/{i}"], modality=modality,
                                        anatomy=anatomy, is_3d=True, id=f"{split}_images/{i}")],
                    labels=names, icd10=codes, split=split, anatomy=anatomy, patient=cid,
                    meta={"source": "medmnist3d"}))
    result.notes.append(f"medmnist3d: {len(result.cases)} volumes from {path.name}, official train/val/test split")
    return result

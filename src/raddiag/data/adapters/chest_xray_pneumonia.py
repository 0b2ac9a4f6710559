"""chest-xray-pneumonia (Kermany et al., 2018): ``{train,test}/{NORMAL,PNEUMONIA}/*.jpeg``.

A case is a patient: ``personN`` in ``personN_bacteria_M`` / ``personN_virus_M``;
normal files are named ``IM-XXXX-YYYY[-ZZZZ]`` or ``NORMALk-IM-XXXX-YYYY[-ZZZZ]``, the
patient being everything before the image number (``IM-XXXX`` / ``NORMALk-IM-XXXX``).
Labels: ``NORMAL`` -> Normal; bacteria -> Bacterial pneumonia (J15); virus -> Viral
pneumonia (J12); a patient with both gets both. The official train/test split is kept;
val is carved from train by patient (seeded). A patient found in both official splits
keeps all its images in one case, in *test* (reported in the notes).
"""
from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path

from raddiag.data.adapters.base import AdapterResult, carve_val
from raddiag.data.case import NORMAL, Case, Scan
from raddiag.data.readers import IMAGE_SUFFIXES

ANATOMY = "Chest"
PNEUMONIA_RE = re.compile(r"^(person\d+)_(bacteria|virus)_\d+(?:_\d+)*$", re.I)
NORMAL_RE = re.compile(r"^((?:NORMAL\d+-)?IM-\d+)-\d+(?:-\d+)*$", re.I)
KINDS = {"bacteria": ("Bacterial pneumonia", "J15"), "virus": ("Viral pneumonia", "J12")}
SPLIT_DIRS = {"train": "train", "test": "test", "val": "val"}


def load_chest_xray_pneumonia(source: Path, seed: int = 0, val_fraction: float = 0.125, **_) -> AdapterResult:
    source = Path(source)
    if not source.is_dir():
        raise FileNotFoundError(f"{source}: chest-xray-pneumonia folder does not exist")
    present = [d for d in ("train", "val", "test") if (source / d).is_dir()]
    if not present:
        raise ValueError(f"{source}: expected train/ and test/ sub-folders (with NORMAL/ and PNEUMONIA/)")
    # patient -> split -> [(path, label)]
    images: dict[str, dict[str, list[tuple[Path, str | None]]]] = defaultdict(lambda: defaultdict(list))
    result = AdapterResult(cases=[])
    n_images = 0
    for split in present:
        for cls_dir in sorted((source / split).iterdir()):
            if not cls_dir.is_dir():
                continue
            cls = cls_dir.name.upper()
            if cls not in ("NORMAL", "PNEUMONIA"):
                raise ValueError(f"{cls_dir}: unknown class folder {cls_dir.name!r} (expected NORMAL or PNEUMONIA)")
            for p in sorted(cls_dir.iterdir()):
                if p.name.startswith(".") or p.suffix.lower() not in IMAGE_SUFFIXES:
                    continue
                stem = p.stem
                m = (NORMAL_RE if cls == "NORMAL" else PNEUMONIA_RE).match(stem)
                if not m:
                    raise ValueError(f"{p}: file name does not follow the set's pattern "
                                     f"({'IM-XXXX-YYYY' if cls == 'NORMAL' else 'personN_bacteria|virus_M'}); "
                                     "cannot tell the patient")
                kind = None if cls == "NORMAL" else m.group(2).lower()
                images[m.group(1)][split].append((p, kind))
                n_images += 1
    both = sorted(pid for pid, by_split in images.items() if len(by_split) > 1)
    for pid in sorted(images):
        by_split = images[pid]
        split = "test" if "test" in by_split else ("val" if "val" in by_split else "train")
        files = [f for s in sorted(by_split) for f in by_split[s]]
        kinds = sorted({k for _, k in files if k})
        labels = [KINDS[k][0] for k in kinds] or [NORMAL]
        codes = [KINDS[k][1] for k in kinds]
        scans = [Scan(paths=[str(p)], modality="X-ray", anatomy=ANATOMY, plane="Frontal", is_3d=False, id=p.name)
                 for p, _ in files]
        result.cases.append(Case(id=pid, scans=scans, labels=labels, icd10=codes, split=split, anatomy=ANATOMY,
                                 patient=pid, meta={"source": "chest-xray-pneumonia",
                                                    "official_splits": sorted(by_split)}))
    moved = 0
    if "val" not in present:
        moved = carve_val(result.cases, val_fraction, seed)
    result.notes.append(f"chest-xray-pneumonia: {n_images} images of {len(result.cases)} patients; official "
                        f"{'/'.join(present)} split kept" + (f", val = {moved} train patients (seeded)" if moved else ""))
    if both:
        n_moved = sum(len(images[p]["train"]) for p in both)
        result.notes.append(
            f"chest-xray-pneumonia: {len(both)} patients have images in both official train and test; "
            f"they are kept in test only (their {n_moved} train images join their test case), "
            f"e.g. {', '.join(both[:8])}")
    return result

"""brain-tumor-mri (figshare + SARTAJ + Br35H): ``{Training,Testing}/{glioma,meningioma,pituitary,notumor}/*.jpg``.

No patient ids: a case per image. Official Training / Testing kept (as train / test);
val is carved from Training (seeded).
"""
from __future__ import annotations

from pathlib import Path

from raddiag.data.adapters.base import AdapterResult, carve_val, map_label
from raddiag.data.case import NORMAL, Case, Scan
from raddiag.data.readers import IMAGE_SUFFIXES

ANATOMY = "Head and Neck"
CLASSES: dict[str, tuple[str, str | None]] = {
    "notumor": (NORMAL, None), "no_tumor": (NORMAL, None), "normal": (NORMAL, None),
    "glioma": ("Glioma", "C71"), "glioma_tumor": ("Glioma", "C71"),
    "meningioma": ("Meningioma", "D32"), "meningioma_tumor": ("Meningioma", "D32"),
    "pituitary": ("Pituitary adenoma", "D35"), "pituitary_tumor": ("Pituitary adenoma", "D35"),
}
SPLITS = {"training": "train", "train": "train", "testing": "test", "test": "test", "validation": "val", "val": "val"}


def load_brain_tumor_mri(source: Path, seed: int = 0, val_fraction: float = 0.125, **_) -> AdapterResult:
    source = Path(source)
    if not source.is_dir():
        raise FileNotFoundError(f"{source}: brain-tumor-mri folder does not exist")
    split_dirs = [(d, SPLITS[d.name.lower()]) for d in sorted(source.iterdir())
                  if d.is_dir() and d.name.lower() in SPLITS]
    if not split_dirs:
        raise ValueError(f"{source}: expected Training/ and Testing/ sub-folders")
    result = AdapterResult(cases=[])
    ignored: list[str] = []
    for d, split in split_dirs:
        for cls_dir in sorted(p for p in d.iterdir() if p.is_dir()):
            ignored += [str(f) for h in cls_dir.glob(".*") if h.is_dir() for f in h.rglob("*") if f.is_file()]
            name, code = map_label(cls_dir.name, CLASSES, f"{cls_dir} (class folder)")
            for p in sorted(cls_dir.iterdir()):
                if p.name.startswith(".") or p.suffix.lower() not in IMAGE_SUFFIXES:
                    continue
                cid = f"{d.name}/{cls_dir.name}/{p.stem}"
                result.cases.append(Case(
                    id=cid, scans=[Scan(paths=[str(p)], modality="MRI", anatomy=ANATOMY, is_3d=False, id=p.name)],
                    labels=[name], icd10=[code] if code else [], split=split, anatomy=ANATOMY, patient=cid,
                    meta={"source": "brain-tumor-mri"}))
    moved = carve_val(result.cases, val_fraction, seed) if not any(s == "val" for _, s in split_dirs) else 0
    result.notes.append(f"brain-tumor-mri: {len(result.cases)} images, a case per image (the set has no patient ids, "
                        f"so images of one patient may sit in different splits); official "
                        f"{'/'.join(d.name for d, _ in split_dirs)} kept" + (f", val = {moved} Training images (seeded)" if moved else ""))
    if ignored:
        result.notes.append(f"brain-tumor-mri: ignored {len(ignored)} file(s) in hidden folders (not part of the set): "
                            f"{', '.join(sorted(ignored))}")
    return result

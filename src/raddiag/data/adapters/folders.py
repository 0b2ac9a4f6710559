"""A folder per class, the layout most small image sets come in (``--format folders``)::

    SOURCE/benign/img001.png          a file in a class folder: a case of one scan
    SOURCE/malignant/patient7/*.png   a folder in a class folder: one case of all its scans
    SOURCE/normal/...                 "normal" (any letter case) is the Normal class

or the same under ``SOURCE/train/``, ``SOURCE/val/``, ``SOURCE/test/`` to fix the splits (else a
seeded 7:1:2 split by case; without a ``val/`` folder a seeded ``--val-fraction`` of ``train/``
becomes val). Split folders beside other folders are refused: the split folders were taken for
classes (``Training`` and ``Testing`` as two classes, each class folder inside one case). The class is the folder's name; every scan has the ``--modality``
given (DICOM: its own tag, with a warning where it differs) and, optionally, ``--anatomy``; a case
folder's scans are those ``predict`` reads from it (:func:`raddiag.data.discover.declared_scans`). No ICD-10-CM codes are known
(``raddiag knowledge map NAME`` suggests them; a manifest can carry them).
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

from raddiag.data.adapters.base import AdapterResult, carve_val
from raddiag.data.case import Case, Scan, canonical_modality
from raddiag.data.discover import _is_volume_or_image, declared_scans
from raddiag.data.errors import collect_input_warnings
from raddiag.data.readers import is_dicom

SPLITS = {"train": "train", "training": "train", "val": "val", "validation": "val", "test": "test",
          "testing": "test"}


def _class_dirs(source: Path) -> list[tuple[Path, Optional[str]]]:
    subs = sorted(p for p in source.iterdir() if p.is_dir() and not p.name.startswith("."))
    splits = [p.name for p in subs if p.name.lower() in SPLITS]
    if splits and len(splits) < len(subs):
        others = [p.name for p in subs if p.name.lower() not in SPLITS]
        raise ValueError(f"{source}: holds split folders ({', '.join(splits)}) beside other folders "
                         f"({', '.join(others[:5])}{' ...' if len(others) > 5 else ''}); put every class folder "
                         "under the split folders, or remove the split folders for a seeded split")
    if subs and len(splits) == len(subs):
        return [(c, SPLITS[s.name.lower()]) for s in subs
                for c in sorted(p for p in s.iterdir() if p.is_dir() and not p.name.startswith("."))]
    return [(c, None) for c in subs]


def load_folders(source: Path, modality: Optional[str] = None, anatomy: Optional[str] = None,
                 val_fraction: float = 0.125, seed: int = 0, **_) -> AdapterResult:
    source = Path(source)
    if not source.is_dir():
        raise NotADirectoryError(f"{source}: --format folders reads a folder of class folders")
    if not modality:
        raise ValueError(f"{source}: --format folders needs --modality (the images' modality, e.g. Ultrasound)")
    modality = canonical_modality(modality, source="--modality")
    classes = _class_dirs(source)
    if not classes:
        raise ValueError(f"{source}: no class folders (expected SOURCE/CLASS/images, or SOURCE/train/CLASS/...)")
    result = AdapterResult(cases=[])
    # files beside the class (or split) folders hold no class: said, not dropped unsaid
    roots = {source} | {folder.parent for folder, _ in classes}
    ignored = [str(p) for root in sorted(roots) for p in sorted(root.iterdir())
               if p.is_file() and not p.name.startswith(".")]
    for folder, split in classes:
        label = folder.name        # "normal", "No_finding": read as Normal by settle_labels
        for item in sorted(folder.iterdir()):
            if item.name.startswith(".") or not (item.is_dir() or _is_volume_or_image(item) or is_dicom(item)):
                ignored.append(str(item))
                continue
            cid = f"{split + '/' if split else ''}{folder.name}/{item.name}"
            with collect_input_warnings() as said:      # shown, and kept for the prepared dataset's report
                scans = declared_scans(Scan(paths=[str(item)], modality=modality, anatomy=anatomy))
            result.warnings += [{"case": cid, "file": str(item), "warning": str(w)} for w in said]
            for s in scans:
                if s.id is None or item.is_file():
                    s.id = item.name
            result.cases.append(Case(id=cid, scans=scans, labels=[label], split=split, anatomy=anatomy,
                                     patient=cid, meta={"source": "folders"}))
    moved = 0
    if classes[0][1] and not any(split == "val" for _, split in classes):
        moved = carve_val(result.cases, val_fraction, seed)     # train cannot validate without it
    counts = {}
    for c in result.cases:
        counts[c.labels[0]] = counts.get(c.labels[0], 0) + 1
    result.notes.append(f"folders: {len(result.cases)} cases in {len(counts)} class folders ("
                        + ", ".join(f"{k} {v}" for k, v in counts.items()) + f"), {modality}"
                        + (", splits from the train / val / test folders" if classes[0][1] else
                           ", no train / val / test folders: split by prepare (--split-by)")
                        + (f", val = {moved} train case(s) (seeded, --val-fraction)" if moved else ""))
    if ignored:
        result.notes.append(f"folders: ignored {len(ignored)} file(s) that are not scans: {', '.join(ignored[:5])}"
                            + (" ..." if len(ignored) > 5 else ""))
    return result

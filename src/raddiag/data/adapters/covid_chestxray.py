"""covid-chestxray (Cohen et al., COVID-19 image data collection): ``metadata.csv`` + images.

A case is a patient (``patientid``); its scans are that patient's images (X-ray and CT);
its labels the union of the ``finding`` values of its rows (comma-separated when several;
the collection's hierarchical form ``Pneumonia/Viral/COVID-19`` is read as its last part).
No official split: a seeded patient-level 7:1:2 split is made by ``prepare``.
"""
from __future__ import annotations

import csv
from collections import Counter, defaultdict
from pathlib import Path

from raddiag.data.adapters.base import AdapterResult, map_label
from raddiag.data.case import NORMAL, Case, Scan

ANATOMY = "Chest"
# finding -> (disorder name, ICD-10-CM 3-character category)
FINDINGS: dict[str, tuple[str, str | None]] = {
    "No Finding": (NORMAL, None),
    "COVID-19": ("COVID-19", "U07"),
    "SARS": ("SARS", "J12"),
    "MERS-CoV": ("MERS", "J12"),
    "Viral": ("Viral pneumonia", "J12"),
    "Influenza": ("Influenza pneumonia", "J11"),
    "Varicella": ("Varicella pneumonia", "B01"),
    "Herpes": ("Herpes simplex pneumonia", "B00"),
    "Bacterial": ("Bacterial pneumonia", "J15"),
    "Streptococcus": ("Streptococcal pneumonia", "J13"),
    "Klebsiella": ("Klebsiella pneumonia", "J15"),
    "Legionella": ("Legionnaires' disease", "A48"),
    "Mycoplasma Bacterial Pneumonia": ("Mycoplasma pneumonia", "J15"),
    "Mycoplasma": ("Mycoplasma pneumonia", "J15"),
    "E.Coli": ("Escherichia coli pneumonia", "J15"),
    "Chlamydophila": ("Chlamydial pneumonia", "J16"),
    "Staphylococcus": ("Staphylococcal pneumonia", "J15"),
    "Pneumocystis": ("Pneumocystis pneumonia", "B59"),
    "Aspergillosis": ("Aspergillosis", "B44"),
    "Fungal": ("Fungal pneumonia", "B49"),
    "Tuberculosis": ("Tuberculosis", "A15"),
    "Nocardia": ("Nocardiosis", "A43"),
    "Lipoid": ("Lipoid pneumonia", "J69"),
    "ARDS": ("Acute respiratory distress syndrome", "J80"),
    "Pneumonia": ("Pneumonia", "J18"),
}
FINDINGS.update({k.lower(): v for k, v in list(FINDINGS.items())})
MODALITY = {"X-ray": "X-ray", "CT": "CT"}


def load_covid_chestxray(source: Path, **_) -> AdapterResult:
    source = Path(source)
    csv_path = source / "metadata.csv" if source.is_dir() else source
    if not csv_path.exists():
        raise FileNotFoundError(f"{csv_path}: metadata.csv of the covid-chestxray set does not exist")
    root = csv_path.parent
    with csv_path.open(newline="", encoding="utf-8-sig") as f:     # -sig: a BOM is not part of 'patientid'
        rows = list(csv.DictReader(f))
    need = {"patientid", "finding", "modality", "folder", "filename"}
    if rows and not need <= set(rows[0]):
        raise ValueError(f"{csv_path}: missing columns {sorted(need - set(rows[0]))}")
    by_patient: dict[str, list[tuple[int, dict]]] = defaultdict(list)
    for lineno, row in enumerate(rows, 2):
        by_patient[row["patientid"].strip()].append((lineno, row))

    result = AdapterResult(cases=[])
    for pid in sorted(by_patient, key=lambda p: (len(p), p)):
        labels: dict[str, None] = {}
        codes: dict[str, None] = {}
        scans: list[Scan] = []
        for lineno, row in by_patient[pid]:
            where = f"{csv_path}:{lineno}"
            for part in row["finding"].split(","):
                part = part.strip()
                if not part:
                    continue
                name, code = map_label(part.split("/")[-1].strip(), FINDINGS, f"{where} (finding)")
                labels[name] = None
                if code:
                    codes[code] = None
            if not row["finding"].strip():
                raise ValueError(f"{where}: empty finding")
            mod = row["modality"].strip()
            if mod not in MODALITY:
                result.skipped.append({"case": f"patient-{pid}", "file": str(root / row["folder"] / row["filename"]),
                                       "reason": f"unknown modality {mod!r} in {where}"})
                continue
            plane = row.get("view", "").strip() or None
            scans.append(Scan(paths=[str(root / row["folder"] / row["filename"])], modality=MODALITY[mod],
                              anatomy=ANATOMY, plane=plane, is_3d=False, id=row["filename"]))
        names = [n for n in labels if n != NORMAL]
        result.cases.append(Case(
            id=f"patient-{pid}", scans=scans, labels=names or [NORMAL], icd10=list(codes),
            anatomy=ANATOMY, patient=pid, split=None,
            meta={"source": "covid-chestxray", "rows": [ln for ln, _ in by_patient[pid]]},
        ))
    n_both = sum(1 for c in result.cases if {s.modality for s in c.scans} == {"X-ray", "CT"})
    dup = Counter(str(s.paths[0]) for c in result.cases for s in c.scans)
    result.notes.append(f"covid-chestxray: {len(rows)} images of {len(result.cases)} patients "
                        f"({n_both} with both X-ray and CT); no official split: seeded patient-level 7:1:2")
    shared = [p for p, k in dup.items() if k > 1]
    if shared:
        result.notes.append(f"covid-chestxray: {len(shared)} image files are listed for more than one patient "
                            f"(kept under each, as the metadata says): {', '.join(Path(p).name for p in shared)}")
    return result

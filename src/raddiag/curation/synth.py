"""A generated folder of case records (the curation input schema) with small images that
carry a learnable signal: each disorder draws a bright square at its own position.
Used by the tests and to try the pipeline without data."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

# (article title, is it a disorder by a person's judgement)
DISORDERS = ["Pneumothorax", "Hip dislocation", "Segond fracture", "Meningioma", "Appendicitis",
             "Renal cell carcinoma"]
NON_DISORDERS = ["Chest radiograph", "Hounsfield unit", "Air crescent sign", "Salter-Harris classification"]
CELLS = {  # disorder -> (anatomy, modality, depth)
    "Pneumothorax": ("Chest", "X-ray", 1), "Hip dislocation": ("Lower Limb", "X-ray", 1),
    "Segond fracture": ("Lower Limb", "MRI", 4), "Meningioma": ("Head and Neck", "MRI", 4),
    "Appendicitis": ("Abdomen and Pelvis", "CT", 4), "Renal cell carcinoma": ("Abdomen and Pelvis", "CT", 4),
}


def _image(rng: np.random.Generator, size: int, depth: int, cls: int | None) -> np.ndarray:
    img = rng.normal(0.0, 0.1, (size, size, depth)).astype(np.float32)
    if cls is not None:
        r, c = divmod(cls, 3)
        y, x = 4 + r * (size // 2), 2 + c * (size // 3)
        img[y:y + size // 4, x:x + size // 4, :] += 1.0
    return img


def make_records(folder: str | Path, n_cases: int = 24, size: int = 32, seed: int = 0,
                 n_normal: int = 2, splits: bool = False) -> Path:
    """Write ``n_cases`` records (``n_normal`` of them normal) with images under ``folder/images``."""
    rng = np.random.default_rng(seed)
    folder = Path(folder)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    for i in range(n_cases):
        normal = i < n_normal
        d = DISORDERS[i % len(DISORDERS)]
        anatomy, modality, depth = CELLS[d]
        cls = None if normal else DISORDERS.index(d)
        articles = [] if normal else [d] + ([NON_DISORDERS[i % len(NON_DISORDERS)]] if i % 2 else [])
        studies = []
        for j in range(1 + (i % 3 == 0)):
            img_path = folder / "images" / f"case{i:03d}_{j}.npy"
            np.save(img_path, _image(rng, size, depth, cls))
            studies.append({"modality": modality, "anatomy": anatomy, "finding": f"finding {i}.{j}",
                            "impression": f"impression {i}.{j}",
                            "images": [{"path": f"images/{img_path.name}", "plane": "Axial" if depth > 1 else "Frontal",
                                        "key_slice": int(depth // 2)}]})
        rec = {"id": f"case-{i:03d}", "url": f"https://example.org/cases/case-{i:03d}",
               "title": "Normal" if normal else d, "patient": {"age": f"{20 + i} years", "gender": "Female"},
               "presentation": "generated", "anatomy": anatomy, "articles": articles, "normal": normal,
               "studies": studies}
        if splits:
            rec["split"] = "test" if i % 5 == 4 else ("val" if i % 5 == 3 else "train")
        (folder / f"case-{i:03d}.json").write_text(json.dumps(rec, indent=1))
    return folder

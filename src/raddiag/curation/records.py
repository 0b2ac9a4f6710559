"""Case records: the input of curation, one JSON file per case (see docs/curation.md).

```json
{"id": "hip-dislocation-inferior-1",
 "url": "https://radiopaedia.org/cases/hip-dislocation-inferior-1",
 "title": "Hip dislocation - inferior",
 "patient": {"age": "25 years", "gender": "Female"},
 "presentation": "Road traffic accident.",
 "discussion": "The patient underwent closed reduction.",
 "anatomy": "Lower Limb",
 "articles": ["Hip dislocation"],
 "normal": false,
 "split": "train",
 "studies": [
   {"modality": "X-ray", "anatomy": "Lower Limb",
    "finding": "Inferior dislocation of the left femoral head.", "impression": "...",
    "images": [{"path": "images/hip-1.npy", "plane": "Frontal", "key_slice": 0}]}]}
```
Required: ``id`` and at least one study with at least one image (``path``). Image
paths are relative to the record file (or absolute). A study is one *sample entry*
of the release format; each image of a study is one scan.
"""
from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any, Iterable

from raddiag.data.case import SPLITS, canonical_modality
from raddiag.jsonl import parse_json, read_json

RECORD_KEYS = {"id", "url", "title", "patient", "presentation", "discussion", "anatomy",
               "articles", "normal", "split", "studies", "icd10"}
STUDY_KEYS = {"modality", "anatomy", "finding", "impression", "caption", "images"}
IMAGE_KEYS = {"path", "plane", "key_slice", "aux_modality", "modality"}


def validate_record(rec: Any, source: str, base: Path | None = None) -> dict:
    """Check one record and return it normalised (absolute image paths, canonical modalities)."""
    if not isinstance(rec, dict):
        raise ValueError(f"{source}: expected a JSON object, got {type(rec).__name__}")
    extra = set(rec) - RECORD_KEYS
    if extra:
        raise ValueError(f"{source}: unknown field(s) {sorted(extra)}; allowed: {sorted(RECORD_KEYS)}")
    if not isinstance(rec.get("id"), str) or not rec["id"].strip():
        raise ValueError(f"{source}: 'id' must be a non-empty string")
    out = dict(rec)
    out.setdefault("url", rec["id"])
    articles = rec.get("articles", [])
    if isinstance(articles, str):
        articles = [articles]
    if not isinstance(articles, list) or not all(isinstance(a, str) for a in articles):
        raise ValueError(f"{source}: 'articles' must be a list of article titles")
    out["articles"] = [" ".join(a.split()) for a in articles if a.strip()]
    if rec.get("split") not in (None, *SPLITS):
        raise ValueError(f"{source}: split {rec['split']!r} is not one of {SPLITS}")
    out["normal"] = bool(rec.get("normal", False))
    studies = rec.get("studies")
    if not isinstance(studies, list) or not studies:
        raise ValueError(f"{source}: case {rec['id']!r} needs a non-empty 'studies' list")
    new_studies = []
    for j, st in enumerate(studies):
        where = f"{source}: study {j}"
        if not isinstance(st, dict):
            raise ValueError(f"{where}: expected an object")
        extra = set(st) - STUDY_KEYS
        if extra:
            raise ValueError(f"{where}: unknown field(s) {sorted(extra)}; allowed: {sorted(STUDY_KEYS)}")
        images = st.get("images")
        if not isinstance(images, list) or not images:
            raise ValueError(f"{where}: needs a non-empty 'images' list")
        st = dict(st)
        if "modality" not in st and not all(isinstance(im, dict) and "modality" in im for im in images):
            raise ValueError(f"{where}: needs a 'modality' (or one per image)")
        if "modality" in st:
            st["modality"] = canonical_modality(st["modality"], source=where)
        new_images = []
        for k, im in enumerate(images):
            w = f"{where} image {k}"
            if isinstance(im, str):
                im = {"path": im}
            if not isinstance(im, dict) or not isinstance(im.get("path"), str):
                raise ValueError(f"{w}: needs a 'path'")
            extra = set(im) - IMAGE_KEYS
            if extra:
                raise ValueError(f"{w}: unknown field(s) {sorted(extra)}; allowed: {sorted(IMAGE_KEYS)}")
            im = dict(im)
            p = Path(im["path"])
            if base is not None and not p.is_absolute():
                p = base / p
            im["path"] = str(p)
            im["modality"] = canonical_modality(im.get("modality", st.get("modality")), source=w)
            ks = im.get("key_slice")
            if ks is not None and (not isinstance(ks, int) or ks < 0):
                raise ValueError(f"{w}: key_slice must be a non-negative integer, got {ks!r}")
            new_images.append(im)
        st["images"] = new_images
        st.setdefault("modality", new_images[0]["modality"])
        st.setdefault("anatomy", rec.get("anatomy"))
        new_studies.append(st)
    out["studies"] = new_studies
    return out


def load_records(folder: str | Path) -> list[dict]:
    """All records in ``folder`` (``*.json`` files, recursively, sorted; ``*.jsonl`` files hold
    one record per line). Ids must be unique; every problem names the file."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: records folder does not exist")
    records: list[dict] = []
    for path in sorted(folder.rglob("*.json*")):
        if path.suffix == ".json":
            rec = read_json(path)
            records.append(validate_record(rec, str(path), base=path.parent))
        elif path.suffix == ".jsonl":
            for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
                if not line.strip() or line.lstrip().startswith("#"):
                    continue
                rec = parse_json(line, f"{path}:{i}")
                records.append(validate_record(rec, f"{path}:{i}", base=path.parent))
    if not records:
        raise ValueError(f"{folder}: no case records (*.json / *.jsonl) found")
    dup = [k for k, v in Counter(r["id"] for r in records).items() if v > 1]
    if dup:
        raise ValueError(f"{folder}: duplicate case ids {dup[:5]}")
    return records


def title_counts(records: Iterable[dict]) -> dict[str, int]:
    """Article title -> number of (non-normal) cases linking it, most linked first."""
    c: Counter[str] = Counter()
    for r in records:
        if not r.get("normal"):
            c.update(set(r["articles"]))
    return dict(sorted(c.items(), key=lambda kv: (-kv[1], kv[0])))


def modality_anatomy(rec: dict) -> list[tuple[str, str]]:
    """(anatomy, modality) cells of a record, one per study."""
    return [(st.get("anatomy") or rec.get("anatomy") or "Unknown", st["modality"]) for st in rec["studies"]]

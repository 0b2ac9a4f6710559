"""RP3D-DiagDS release JSON: ``{case_url: {"Samples": [...], "Anatomy": ..., "key_slice": [...]}}``.

Each sample entry has ``image_data_path`` (scan files, the authors' absolute cluster paths),
``image_key_path`` (key-slice index ``.npy``), ``image_modality``, ``plane_projection``,
``articles`` (disorder names) and ``icd10s`` (ICD-10-CM categories). List fields may be Python
list literals in strings ("['CT']"): parsed with ``ast.literal_eval`` only.

Absolute paths are remapped to a local image root (``images``; default: the JSON's folder) by
the *longest matching path suffix* among the files under it: ``.../DemoData/data/127781.npy``
maps to ``DemoData/data/127781.npy``, never to ``DemoData/key/127781.npy``. A file found nowhere
is reported as missing (case, file name, released path); a tie between candidates is an error
for that scan. A case whose scans are all missing is kept without scans, so that ``prepare``
reports it as skipped.

Splits: ``split_files={"train": a.json, "test": b.json}``, else inferred from a file name that
contains train / val / test, else a seeded patient-level 7:1:2 split (a case URL is a patient).
The release ships ``train.json`` and ``test.json`` only: when the files give a train split and no
val, a seeded ``val_fraction`` of the training patients (default 1/8: the paper's 7:1) becomes val.
"""
from __future__ import annotations

import os
import re
from collections import defaultdict
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Optional

import numpy as np

from raddiag.data.adapters.base import AdapterResult, carve_val, parse_list
from raddiag.data.case import NORMAL, SPLITS, Case, Scan, canonical_modality

IMAGE_FIELDS = ("image_data_path", "image_path", "image")
SPLIT_WORDS = {"train": "train", "training": "train", "val": "val", "valid": "val", "validation": "val",
               "test": "test", "testing": "test"}


class PathRemapper:
    """Find released (foreign absolute) paths under a local root by the longest common suffix."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.by_name: dict[str, list[tuple[str, ...]]] = defaultdict(list)
        for dirpath, dirnames, filenames in os.walk(self.root):
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
            rel = Path(dirpath).relative_to(self.root).parts
            for f in filenames:
                self.by_name[f].append((*rel, f))

    @staticmethod
    def _parts(path: str) -> tuple[str, ...]:
        p = PureWindowsPath(path) if "\\" in path and "/" not in path else PurePosixPath(path)
        return tuple(x for x in p.parts if x not in ("/", "\\") and not x.endswith((":", ":\\")))

    def find(self, released: str) -> tuple[Optional[Path], str]:
        """(local path or None, reason). An existing path is used as is."""
        if os.path.isabs(released) and Path(released).exists():
            return Path(released), ""
        if not os.path.isabs(released) and (self.root / released).exists():
            return self.root / released, ""
        parts = self._parts(released)
        if not parts:
            return None, "empty image path"
        cands = self.by_name.get(parts[-1], [])
        if not cands:
            return None, f"scan file {parts[-1]} not found under {self.root} (released path {released})"

        def common(c: tuple[str, ...]) -> int:
            n = 0
            while n < min(len(c), len(parts)) and c[-1 - n] == parts[-1 - n]:
                n += 1
            return n

        # A candidate must agree beyond the bare name (its parent folder too), unless the whole
        # candidate path is matched (a file directly under the root): data/X.npy never maps to key/X.npy.
        scored = sorted(((common(c), c) for c in cands if common(c) >= 2 or common(c) == len(c)), reverse=True)
        if not scored:
            return None, (f"scan file {parts[-1]} not found under {self.root} (released path {released}; "
                          f"files of that name in other folders: {', '.join('/'.join(c) for c in cands[:3])})")
        best = [c for s, c in scored if s == scored[0][0]]
        if len(best) > 1:
            return None, (f"scan file {parts[-1]} is ambiguous under {self.root}: "
                          f"{', '.join('/'.join(c) for c in best)} match {released} equally well")
        return self.root.joinpath(*best[0]), ""


def _split_from_name(path: Path) -> Optional[str]:
    for tok in re.split(r"[^a-z]+", path.stem.lower()):
        if tok in SPLIT_WORDS:
            return SPLIT_WORDS[tok]
    return None


def _json_files(source: Path) -> list[Path]:
    if source.is_file():
        return [source]
    if not source.is_dir():
        raise FileNotFoundError(f"{source}: RP3D release JSON (or its folder) does not exist")
    out = []
    for p in sorted(source.glob("*.json")):
        if "label" in p.stem.lower() and "dict" in p.stem.lower():
            continue   # disorder_label_dict.json and friends: the label space, not cases
        out.append(p)
    if not out:
        raise ValueError(f"{source}: no release JSON (*.json with cases) in the folder")
    return out


def _key_from_npy(path: Path) -> Optional[int]:
    try:
        arr = np.load(path, allow_pickle=False)
    except Exception:
        return None
    arr = np.asarray(arr).ravel()
    return int(arr[0]) if arr.size else None


def _case_id(url: str, taken: set[str]) -> str:
    m = re.search(r"/cases/([^/?#]+)", url)
    cid = m.group(1) if m else url
    return cid if cid not in taken else url


def read_release_json(path: Path) -> dict:
    """``{case URL: case}`` of a release JSON; a ValueError naming the file (and the case) when
    it is not JSON, not an object, or a case has no ``Samples``."""
    from raddiag.jsonl import read_json

    data = read_json(path)
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object of case URL -> case")
    for url, rec in data.items():
        if not isinstance(rec, dict) or "Samples" not in rec:
            raise ValueError(f"{path}: case {url}: no 'Samples'")
    return data


def case_articles(samples: list, where: str) -> list[str]:
    """A release case's disorder names: the union of its sample entries' ``articles`` in order
    of first appearance, ``[Normal]`` when there are none."""
    labels: dict[str, None] = {}
    for e, s in enumerate(samples):
        for a in parse_list(s.get("articles"), f"{where} sample {e} articles"):
            labels[str(a).strip()] = None
    return [n for n in labels if n and n != NORMAL] or [NORMAL]


def release_label_counts(path: str | Path) -> dict[str, int]:
    """Cases per disorder name in a release-format JSON (its training file, say): the training
    counts that give an imported checkpoint's label space its head / medium / tail groups."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: release JSON does not exist")
    counts: dict[str, int] = defaultdict(int)
    for url, rec in read_release_json(path).items():
        for name in case_articles(parse_list(rec["Samples"], f"{path}: case {url} Samples"), f"{path}: case {url}"):
            counts[name] += 1
    return dict(counts)


def load_rp3d(source: Path, images: Optional[str | Path] = None, split_files: Optional[dict] = None,
              seed: int = 0, val_fraction: float = 0.125, **_) -> AdapterResult:
    source = Path(source)
    if split_files:
        files = [(Path(f), s) for s, f in split_files.items()]
        for f, s in files:
            if s not in SPLITS:
                raise ValueError(f"--split-files: unknown split {s!r} (use {', '.join(SPLITS)})")
        files = [((source / f) if not f.exists() and source.is_dir() else f, s) for f, s in files]
    else:
        files = [(f, _split_from_name(f)) for f in _json_files(source)]
    for f, _s in files:
        if not f.exists():
            raise FileNotFoundError(f"{f}: release JSON does not exist")
    root = Path(images) if images else (source if source.is_dir() else source.parent)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: image folder does not exist")
    remap = PathRemapper(root)
    result = AdapterResult(cases=[])
    taken: set[str] = set()
    n_missing = 0
    for jf, split in files:
        for url, rec in read_release_json(jf).items():
            where = f"{jf}: case {url}"
            cid = _case_id(url, taken)
            taken.add(cid)
            samples = parse_list(rec["Samples"], f"{where} Samples")
            case_keys = parse_list(rec.get("key_slice"), f"{where} key_slice")
            codes: dict[str, None] = {}
            scans: list[Scan] = []
            for e, s in enumerate(samples):
                for c in parse_list(s.get("icd10s"), f"{where} sample {e} icd10s"):
                    codes[str(c).strip()[:3].upper()] = None
                field = next((f for f in IMAGE_FIELDS if s.get(f)), None)
                paths = parse_list(s.get(field), f"{where} sample {e} {field}") if field else []
                mods = parse_list(s.get("image_modality") or s.get("image_modalitys"), f"{where} sample {e} image_modality")
                planes = parse_list(s.get("plane_projection"), f"{where} sample {e} plane_projection")
                keys = parse_list(s.get("image_key_path"), f"{where} sample {e} image_key_path")
                ck = case_keys[e] if e < len(case_keys) and isinstance(case_keys[e], dict) else {}
                if len(mods) != len(paths):
                    raise ValueError(f"{where} sample {e}: {len(paths)} images but {len(mods)} modalities")
                for k, released in enumerate(paths):
                    local, why = remap.find(str(released))
                    if local is None:
                        n_missing += 1
                        result.skipped.append({"case": cid, "file": PurePosixPath(str(released)).name,
                                               "reason": why})
                        continue
                    try:
                        modality = canonical_modality(mods[k], source=str(local))
                    except ValueError as exc:
                        result.skipped.append({"case": cid, "file": str(local), "reason": str(exc)})
                        continue
                    key = None
                    if k < len(keys) and keys[k]:
                        kp, _ = remap.find(str(keys[k]))
                        key = _key_from_npy(kp) if kp is not None else None
                    if key is None and f"image_{k}" in ck:
                        key = int(ck[f"image_{k}"])
                    scans.append(Scan(paths=[str(local)], modality=modality, anatomy=s.get("anatomy") or rec.get("Anatomy"),
                                      plane=planes[k] if k < len(planes) else None, key_slice=key,
                                      id=Path(local).name, entry=e))
            result.cases.append(Case(
                id=cid, scans=scans, labels=case_articles(samples, where), icd10=list(codes), split=split,
                anatomy=rec.get("Anatomy"), patient=url,
                meta={"source": "rp3d", "url": url, "json": jf.name,
                      "modalities": parse_list(rec.get("Modalities"), f"{where} Modalities")}))
    inferred = {s for _, s in files}
    result.notes.append(
        f"rp3d: {len(result.cases)} cases from {', '.join(f.name for f, _ in files)}; images under {root}; "
        + ("split from the file names / --split-files" if None not in inferred else "no split given: seeded patient-level 7:1:2"))
    if "train" in inferred and "val" not in inferred:
        n_train = len({c.patient for c in result.cases if c.split == "train" and c.scans})
        moved = carve_val(result.cases, val_fraction, seed)
        result.notes.append(f"rp3d: no val split in the files: val = {moved} of the {n_train} train patients with "
                            f"scans (seeded by patient, --val-fraction {val_fraction:g}, --seed {seed})")
    if n_missing:
        empty = [c.id for c in result.cases if not c.scans]
        result.notes.append(f"rp3d: {n_missing} scan file(s) missing under {root}"
                            + (f"; {len(empty)} case(s) have no scan left: {', '.join(empty)}" if empty else ""))
    return result

"""Step 5: write the curated dataset in the RP3D-DiagDS release format.

```
DATASET/
  dataset.json | train.json, val.json, test.json   release JSON: case URL -> case (the rp3d adapter's input)
  disorder_label_dict.json      disorder name -> class index (Normal = 0, then by descending case count)
  icd10_label_dict.json         ICD-10-CM 3-character category -> class index (Normal = 0, same order rule)
  data/NNNNNN.npy               scans, float32 [H, W, D] (2D: D = 1)
  key/NNNNNN.npy                key-slice index, int64 [1] (only where the record gives one)
  meta/disorder_icd10.json      disorder -> {code, description}; meta/icd10_descriptions.json
  meta/export_report.json|txt   what was kept, what was left out and why; meta/balance.txt
```
Image paths in the JSON are dataset-relative (``data/000001.npy``); the rp3d adapter
resolves them against the JSON's folder. A kept case is one with at least one accepted
disorder (its other, non-disorder article titles are dropped) or a normal case.
"""
from __future__ import annotations

import itertools
import os
import shutil
from collections import Counter
from pathlib import Path
from typing import Optional

import numpy as np

from raddiag.curation.filter import accepted_disorders
from raddiag.curation.mapping import ambiguous_unconfirmed, description, read_mapping
from raddiag.curation.normals import normal_records
from raddiag.curation.records import load_records
from raddiag.curation.work import Work, write_json
from raddiag.staging import discard, stage_beside, swap_in

NORMAL = "Normal"


def _pat(p) -> str:
    if isinstance(p, dict):
        return "Patient Data  " + "  ".join(f"{k.capitalize()}: {v}" for k, v in p.items() if v not in (None, ""))
    return str(p or "")


def _write_image(src: str, dst: Path, link: bool) -> tuple[int, ...]:
    """Copy / hard-link ``src`` into the release layout ``[H, W, D]`` float32; return its shape."""
    from raddiag.data.errors import ScanError
    from raddiag.data.readers import read_failure, read_file

    s = Path(src)
    if not s.exists():
        raise ScanError(s, "file does not exist")
    if s.suffix.lower() == ".npy":
        try:                 # a truncated, pickled or unreadable file: skipped and listed, like a missing one
            arr = np.load(s, mmap_mode="r", allow_pickle=False)
        except (ValueError, OSError, EOFError) as exc:
            raise ScanError(s, read_failure(exc)) from None
        return _write_npy(s, arr, dst, link)
    out = read_file(s).transpose(1, 2, 0)        # [S, H, W] -> [H, W, S]
    np.save(dst, np.ascontiguousarray(out, dtype=np.float32))
    return tuple(out.shape)


def _write_npy(s: Path, arr: np.ndarray, dst: Path, link: bool) -> tuple[int, ...]:
    """The ``.npy`` scan ``s`` (read as ``arr``) into the release layout: linked or copied as it
    is when it is float32 ``[H, W, D]``, else converted."""
    from raddiag.data.errors import ScanError

    if arr.dtype == np.float32 and arr.ndim == 3:
        if link:
            try:
                os.link(s, dst)
                return tuple(arr.shape)
            except OSError:
                pass
        shutil.copyfile(s, dst)
        return tuple(arr.shape)
    if arr.ndim not in (2, 3):
        raise ScanError(s, f"expected a 2D or 3D array [H, W(, D)], got shape {arr.shape}")
    try:
        out = np.asarray(arr, dtype=np.float32)
    except (ValueError, TypeError, OSError) as exc:        # a structured dtype, a read error of the mapping
        raise ScanError(s, f"cannot be read as numbers ({type(exc).__name__}: {exc})") from None
    out = out[..., None] if out.ndim == 2 else out
    np.save(dst, np.ascontiguousarray(out, dtype=np.float32))
    return tuple(out.shape)


def _order(counter: Counter) -> dict[str, int]:
    names = sorted((n for n in counter if n != NORMAL), key=lambda n: (-counter[n], n))
    return {NORMAL: 0, **{n: i + 1 for i, n in enumerate(names)}}


def export_dataset(
    work: str | Path,
    out: str | Path,
    splits: Optional[str] = None,
    link: bool = True,
    skip_pending: bool = False,
    progress: bool = False,
) -> dict:
    """Write DATASET (see module doc). ``splits``: "records" (one JSON per split, from the
    records' ``split``; a record without one goes to train) or "none" (one ``dataset.json``;
    the adapter then draws a seeded 7:1:2 split). Default: "records" if any curated record
    (not counting added normal cases) has a split.

    The export is built in a hidden folder beside ``out`` and swapped in only when complete
    (:mod:`raddiag.staging`): a failure or a kill leaves a previous export as it was. A scan
    that cannot be read (missing, truncated, not numbers) drops its case, listed in the report.
    Disorders whose mapping is marked ambiguous and not confirmed are exported with a warning
    naming them (``unreviewed_ambiguous`` in the report)."""
    w = Work(work, create=False)
    disorders = accepted_disorders(w.root, skip_pending=skip_pending)
    codes = read_mapping(w.root)
    missing = sorted(set(disorders) - set(codes))
    if missing:
        raise ValueError(f"{len(missing)} accepted disorders are not in {w.root / 'map' / 'mapping.csv'} "
                         f"(e.g. {missing[:3]}); run `raddiag curate map {w.root}` again")
    curated = load_records(w.records_dir())
    records = curated + normal_records(w.root)
    if splits is None:   # decided by the curated records; added normal cases follow them
        splits = "records" if any(r.get("split") for r in curated) else "none"
    if splits not in ("records", "none"):
        raise ValueError(f"--splits must be 'records' or 'none', got {splits!r}")
    out = Path(out)
    _check_out(out)
    stage = stage_beside(out, "export")
    try:
        with w.step_log("export") as log:
            report = _export_into(stage, records, disorders, codes, splits, link, progress, log)
            report["unreviewed_ambiguous"] = _unreviewed(w.root, report.pop("classes"), log)
            bal = w.root / "normals" / "report.txt"
            if bal.exists():
                shutil.copyfile(bal, stage / "meta" / "balance.txt")
            write_json(stage / "meta" / "export_report.json", report)
            (stage / "meta" / "export_report.txt").write_text(report_text(report, out) + "\n")
            swap_in(stage, out)
            log.info("%s", report_text(report, out))
    except BaseException:
        discard(stage)
        raise
    return report


def _check_out(out: Path) -> None:
    """``out`` may be new, empty, or a previous export (replaced whole); anything else is refused."""
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"{out}: the export folder is a file")
    if out.is_dir() and any(out.iterdir()) and not (out / "meta" / "export_report.json").exists():
        raise ValueError(f"{out}: folder exists and is not a previous export; choose an empty folder")


def _unreviewed(work: Path, classes: list[str], log) -> list[str]:
    """The exported disorders whose mapping is ambiguous and not confirmed, said in a warning."""
    names = [d for d in ambiguous_unconfirmed(work) if d in set(classes)]
    if names:
        log.warning("%d exported disorders have an ambiguous ICD-10-CM mapping nobody confirmed (%s%s); "
                    "review them in %s (code, confirmed=yes) and export again", len(names), ", ".join(names[:10]),
                    ", ..." if len(names) > 10 else "", work / "map" / "mapping.csv")
    return names


def _export_into(out: Path, records: list[dict], disorders, codes, splits: str, link: bool, progress: bool,
                 log) -> dict:
    """Write the cases, scans and label dictionaries into the (empty) folder ``out``; the report."""
    for sub in ("data", "key", "meta"):
        (out / sub).mkdir()
    files: dict[str, dict] = {}
    dropped: list[dict] = []
    dis_count: Counter = Counter()
    icd_count: Counter = Counter()
    names = itertools.count(1)
    it = records
    if progress:
        from tqdm import tqdm

        it = tqdm(records, desc="export", unit="case")
    for rec in it:
        got = _export_record(rec, out, disorders, codes, names, link, log)
        if isinstance(got, str):
            dropped.append({"case": rec["id"], "reason": got})
            continue
        case, labels, icds = got
        fname = f"{(rec.get('split') or 'train')}.json" if splits == "records" else "dataset.json"
        if rec["url"] in files.setdefault(fname, {}):
            raise ValueError(f"two records share the url {rec['url']!r} (case {rec['id']}); urls key the release JSON")
        files[fname][rec["url"]] = case
        dis_count.update(labels)
        icd_count.update(icds or ([NORMAL] if rec["normal"] else []))
    for fname, cases in files.items():
        write_json(out / fname, cases, indent=None)
    dis_dict, icd_dict = _order(dis_count), _order(icd_count)
    write_json(out / "disorder_label_dict.json", dis_dict)
    write_json(out / "icd10_label_dict.json", icd_dict)
    write_json(out / "meta" / "disorder_icd10.json",
               {d: {"code": codes.get(d), "description": description(codes[d]) if codes.get(d) else None}
                for d in dis_dict if d != NORMAL})
    write_json(out / "meta" / "icd10_descriptions.json", {c: description(c) for c in icd_dict if c != NORMAL})
    return {"cases": sum(len(v) for v in files.values()), "files": {k: len(v) for k, v in files.items()},
            "normal_cases": dis_count[NORMAL], "disorder_classes": len(dis_dict),
            "icd10_classes": len(icd_dict), "images": sum(1 for _ in (out / "data").iterdir()),
            "unmapped_disorders": sorted(d for d in dis_dict if d != NORMAL and not codes.get(d)),
            "dropped": dropped, "records": len(records), "classes": [d for d in dis_dict if d != NORMAL]}


def _export_record(rec: dict, out: Path, disorders, codes, names, link: bool, log):
    """``(case, disorder labels, ICD codes)`` of one record, its scans written under ``out``; or
    the reason it is left out (then none of its files stay)."""
    from raddiag.data.errors import ScanError

    if rec["normal"]:
        labels, icds = [NORMAL], []
    else:
        labels = list(dict.fromkeys(t for t in rec["articles"] if t in disorders))
        if not labels:
            return "no linked article is an accepted disorder" if rec["articles"] else "no linked articles"
        icds = list(dict.fromkeys(codes[t] for t in labels if codes[t]))
    samples, key_slice, written = [], [], []
    try:
        for st in rec["studies"]:
            sample, ks = _export_study(st, rec, out, names, link, written, log)
            samples.append({**sample, "articles": labels, "icd10s": icds, "title": rec.get("title") or rec["id"],
                            "link": rec["url"], "pat": _pat(rec.get("patient")), "pre": rec.get("presentation", ""),
                            "case_discussion": rec.get("discussion", "")})
            key_slice.append(ks)
    except ScanError as exc:
        for f in written:          # leave no orphan files of a dropped case
            f.unlink(missing_ok=True)
        return f"{exc.path}: {exc.reason}"
    case = {"Modalities": [s["image_modality"][0] for s in samples],
            "Anatomy": rec.get("anatomy") or samples[0]["anatomy"],
            "Anatomies": [s["anatomy"] for s in samples],
            "key_slice": key_slice, "Samples": samples}
    return case, labels, icds


def _export_study(st: dict, rec: dict, out: Path, names, link: bool, written: list, log) -> tuple[dict, dict]:
    """One study's images written under ``out`` (appended to ``written``): its sample fields and key slices."""
    paths, keypaths, mods, planes, aux, ks = [], [], [], [], [], {}
    for k, im in enumerate(st["images"]):
        name = f"{next(names):06d}.npy"
        shape = _write_image(im["path"], out / "data" / name, link)
        written.append(out / "data" / name)
        keypaths.append("")
        if im.get("key_slice") is not None:
            if im["key_slice"] >= shape[2]:
                log.warning("case %s: key slice %d is outside %s (depth %d); dropped",
                            rec["id"], im["key_slice"], im["path"], shape[2])
            else:
                np.save(out / "key" / name, np.array([im["key_slice"]], dtype=np.int64))
                written.append(out / "key" / name)
                keypaths[-1] = f"key/{name}"
                ks[f"image_{k}"] = int(im["key_slice"])
        paths.append(f"data/{name}")
        mods.append(im["modality"])
        planes.append(im.get("plane"))
        aux.append(im.get("aux_modality"))
    sample = {"image_data_path": paths, "image_key_path": keypaths, "image_modality": mods,
              "image_modalitys": mods, "plane_projection": planes, "aux_modality": aux,
              "finding": st.get("finding", ""), "impression": st.get("impression", ""),
              "image_caption": st.get("caption", ""), "anatomy": st.get("anatomy") or rec.get("anatomy")}
    return sample, ks


def report_text(rep: dict, out: Path) -> str:
    lines = [f"exported {rep['cases']} of {rep['records']} cases ({rep['normal_cases']} normal), "
             f"{rep['images']} images -> {out}",
             "  files: " + ", ".join(f"{k} ({v} cases)" for k, v in rep["files"].items()),
             f"  classes: {rep['disorder_classes']} disorders, {rep['icd10_classes']} ICD-10-CM categories "
             "(Normal included)"]
    if rep["unmapped_disorders"]:
        lines.append(f"  {len(rep['unmapped_disorders'])} disorders without an ICD-10-CM code: "
                     + ", ".join(rep["unmapped_disorders"][:10]))
    if rep.get("unreviewed_ambiguous"):
        lines.append(f"  warning: {len(rep['unreviewed_ambiguous'])} disorders exported with an ambiguous ICD-10-CM "
                     "mapping nobody confirmed (map/mapping.csv): " + ", ".join(rep["unreviewed_ambiguous"][:10]))
    if rep["dropped"]:
        lines.append(f"  left out {len(rep['dropped'])} cases:")
        lines += [f"    {d['case']}: {d['reason']}" for d in rep["dropped"][:50]]
    return "\n".join(lines)


def prepare_with_stats(dataset: str | Path, prepared: str | Path, size: int = 256, depth: int = 32,
                       plots: bool = True) -> dict:
    """Prepare the exported dataset with the rp3d adapter and write ``raddiag data stats``
    (the paper's Figure 2 numbers and plots) into ``PREPARED/stats``."""
    from raddiag.data.adapters import load_source
    from raddiag.data.stats import write_stats
    from raddiag.data.store import prepare_cases

    res = load_source("rp3d", dataset)
    report = prepare_cases(res.cases, prepared, size=size, depth=depth, pre_skipped=res.skipped)
    st, _ = write_stats(prepared, plots=plots)
    st["prepare"] = {"cases_out": report.cases_out, "skipped_scans": len(report.skipped_scans)}
    return st

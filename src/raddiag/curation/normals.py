"""Step 4: add normal cases from other datasets to balance anatomy x modality.

Sources: a prepared dataset folder (``raddiag data prepare`` output; its normal cases are
read from the memory map) or ``FORMAT:PATH`` for any source adapter (e.g.
``chest-xray-pneumonia:/data/chest_xray``; its normal cases are read from the raw files).

Balance rule, per (anatomy, modality) cell of the curated cases: the target number of
normal cases is ``max(min_per_cell, round(ratio * abnormal cases in the cell))``; the cell
is filled up to its target from the pool cases of that cell (seeded draw), counting the
normal cases the records already have. Cells only the pool has get ``min_per_cell``.
Chosen cases become records (``normals/records.jsonl``, images ``normals/images/*.npy``
as ``[H, W, D]`` float32) that export treats like any other record. A rerun replaces
the previous selection. ``normals/report.txt`` holds the before / after table.
"""
from __future__ import annotations

import random
from collections import Counter, defaultdict
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from raddiag.curation.records import load_records, modality_anatomy
from raddiag.curation.work import Work, append_jsonl, write_json
from raddiag.staging import discard, stage_beside, swap_in


def _pool_from(source: str, anatomy: Optional[str]) -> tuple[list[dict], str]:
    """Normal cases of one source as light dicts {id, cells, split, anatomy, scans:[(reader, meta)]}."""
    from raddiag.data.case import NORMAL

    path = Path(source)
    fmt = None
    if not path.exists() and ":" in source:
        fmt, _, p = source.partition(":")
        path = Path(p)
    if not path.exists():
        raise FileNotFoundError(f"{path}: normal-case source does not exist "
                                "(give a prepared dataset folder or FORMAT:PATH of a source adapter)")
    pool = []
    if fmt is None:
        from raddiag.data.store import PreparedData

        data = PreparedData(path)     # raises a clear error when it is not a prepared dataset
        for rec in data.records:
            if [x for x in rec.get("labels") or [] if x != NORMAL]:
                continue
            scans = [(lambda s=s: np.asarray(data.scan_array(s), dtype=np.float32),
                      {"modality": s["modality"], "plane": s.get("plane"),
                       "key": s["store"].get("key") if s["store"].get("key", -1) >= 0 else None,
                       "anatomy": s.get("anatomy")}) for s in rec["scans"]]
            pool.append({"id": rec["id"], "split": rec.get("split"), "anatomy": rec.get("anatomy"), "scans": scans})
        name = str(path)
    else:
        from raddiag.data.adapters import load_source
        from raddiag.data.discover import declared_scans
        from raddiag.data.readers import read_scan

        res = load_source(fmt, path)
        for c in res.cases:
            if not c.is_normal or not c.scans:
                continue
            # a folder of several DICOM series is a scan a series, as prepare and predict read it
            scans = [(lambda s=s: read_scan(s),
                      {"modality": s.modality, "plane": s.plane, "key": s.key_slice, "anatomy": s.anatomy})
                     for given in c.scans for s in declared_scans(given)]
            pool.append({"id": c.id, "split": c.split, "anatomy": c.anatomy, "scans": scans})
        name = f"{fmt}:{path}"
    for p in pool:
        a = anatomy or p["anatomy"] or next((m["anatomy"] for _, m in p["scans"] if m["anatomy"]), None) or "Unknown"
        p["anatomy"] = a
        p["cell"] = (a, p["scans"][0][1]["modality"])
        p["source"] = name
    return pool, name


def balance_table(before: dict, after: dict, abnormal: dict, pool: dict) -> str:
    cells = sorted(set(abnormal) | set(before) | set(after) | set(pool))
    rows = [("anatomy", "modality", "abnormal", "normal before", "normal after", "pool")]
    rows += [(a, m, str(abnormal.get((a, m), 0)), str(before.get((a, m), 0)), str(after.get((a, m), 0)),
              str(pool.get((a, m), 0))) for a, m in cells]
    rows.append(("total", "", str(sum(abnormal.values())), str(sum(before.values())), str(sum(after.values())),
                 str(sum(pool.values()))))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
                     for r in rows)


def add_normals(
    work: str | Path,
    sources: Sequence[str],
    ratio: float = 0.25,
    min_per_cell: int = 0,
    anatomy: Optional[str] = None,
    seed: int = 0,
    skip_pending: bool = False,
    progress: bool = False,
) -> dict:
    """Select normal cases from ``sources`` by the balance rule and write them as records."""
    from raddiag.curation.filter import accepted_disorders

    if ratio < 0 or min_per_cell < 0:
        raise ValueError("--ratio and --min-per-cell must not be negative")
    if not sources:
        raise ValueError("give at least one --from source of normal cases")
    w = Work(work, create=False)
    disorders = accepted_disorders(w.root, skip_pending=skip_pending)
    records = load_records(w.records_dir())
    with w.step_log("normals") as log:
        abnormal: Counter = Counter()
        before: Counter = Counter()
        canon: dict[str, str] = {}
        for r in records:
            cells = set(modality_anatomy(r))
            for a, _ in cells:
                canon.setdefault(a.lower(), a)
            if r["normal"]:
                before.update(cells)
            elif any(t in disorders for t in r["articles"]):
                abnormal.update(cells)
        pool: list[dict] = []
        for src in sources:
            got, name = _pool_from(src, anatomy)
            log.info("%s: %d normal cases in the pool", name, len(got))
            pool += got
        by_cell: dict[tuple, list[dict]] = defaultdict(list)
        for p in pool:
            a = canon.get(p["cell"][0].lower(), p["cell"][0])   # same anatomy, any spelling case
            p["cell"] = (a, p["cell"][1])
            by_cell[p["cell"]].append(p)
        rng = random.Random(seed)
        chosen: list[dict] = []
        after = Counter(before)
        for cell in sorted(set(abnormal) | set(by_cell)):
            target = max(min_per_cell, round(ratio * abnormal.get(cell, 0)))
            need = max(0, target - before.get(cell, 0))
            cands = sorted(by_cell.get(cell, []), key=lambda p: (p["source"], p["id"]))
            rng.shuffle(cands)
            take = cands[:need]
            if need > len(take):
                log.info("cell %s: %d normal cases wanted, the pool has %d", cell, need, len(take))
            chosen += take
            after[cell] += len(take)
        out_dir = w.root / "normals"
        table = balance_table(dict(before), dict(after), dict(abnormal), {c: len(v) for c, v in by_cell.items()})
        summary = {"added": len(chosen), "pool": len(pool), "table": table,
                   "cells": [{"anatomy": a, "modality": m, "abnormal": abnormal.get((a, m), 0),
                              "normal_before": before.get((a, m), 0), "normal_after": after.get((a, m), 0)}
                             for a, m in sorted(set(abnormal) | set(after))]}
        stage = stage_beside(out_dir, "normals")    # the old normals stay whole until the new are
        try:
            _write_normals(stage, out_dir.resolve(), chosen, progress)
            (stage / "report.txt").write_text(
                f"normal cases added: {len(chosen)} (ratio {ratio}, min per cell {min_per_cell}, seed {seed})\n"
                f"sources: {', '.join(sources)}\n\n{table}\n")
            write_json(stage / "report.json", {k: v for k, v in summary.items() if k != "table"})
            swap_in(stage, out_dir)
        except BaseException:
            discard(stage)
            raise
        log.info("added %d normal cases from a pool of %d\n%s", len(chosen), len(pool), table)
        w.update_state(normals_sources=list(sources))
    return summary


def _write_normals(stage: Path, final: Path, chosen: list[dict], progress: bool) -> None:
    """The chosen cases' scans (``images/``, the release layout) and ``records.jsonl`` into ``stage``;
    the records name each image where it will lie once ``stage`` becomes ``final``. A failure (an
    unreadable scan, a kill) used to come after the previous normals were deleted: export then went
    on without any."""
    (stage / "images").mkdir()
    it = chosen
    if progress:
        from tqdm import tqdm

        it = tqdm(chosen, desc="normals", unit="case")
    recs = []
    for i, p in enumerate(it):
        rid = f"normal-{i:05d}-{Path(p['source']).name}-{p['id']}".replace("/", "_")
        studies = []
        for k, (read, meta) in enumerate(p["scans"]):
            arr = np.asarray(read(), dtype=np.float32)           # [S, H, W]
            name = f"{i:05d}_{k}.npy"
            np.save(stage / "images" / name, np.ascontiguousarray(arr.transpose(1, 2, 0)))   # release layout [H, W, D]
            im = {"path": str(final / "images" / name), "plane": meta["plane"]}
            if meta["key"] is not None:
                im["key_slice"] = int(meta["key"])
            studies.append({"modality": meta["modality"], "anatomy": p["anatomy"], "images": [im]})
        rec = {"id": rid, "url": rid, "title": "Normal", "anatomy": p["anatomy"], "articles": [],
               "normal": True, "studies": studies}
        if p.get("split"):
            rec["split"] = p["split"]
        recs.append(rec)
    append_jsonl(stage / "records.jsonl", recs)


def normal_records(work: str | Path) -> list[dict]:
    """The records chosen by :func:`add_normals` (empty when the step was not run)."""
    from raddiag.curation.records import validate_record
    from raddiag.curation.work import read_jsonl

    path = Path(work) / "normals" / "records.jsonl"
    return [validate_record(r, f"{path}:{i}") for i, r in enumerate(read_jsonl(path), 1)]

"""A prepared dataset: preprocessed slices in one memory-mapped file plus JSON metadata.

```
DIR/
  meta.json            format version, size, depth, window, slice count, dtype
  slices.f16           float16 [n_slices, size, size], raw (np.memmap)
  cases.jsonl          one case per line: Case fields + per scan "store": {start, n, orig_depth, key}
  labels_disorder.json LabelSpace at disorder granularity (counts from the train split)
  labels_icd10.json    LabelSpace at ICD-10-CM 3-character granularity
  report.json / report.txt   every scan and case skipped, with the file and the reason
```
A 2D scan takes one slice; a 3D scan at most ``depth``. Training reads slices straight
from the memory map, so loading costs a copy, not a decode.
"""
from __future__ import annotations

import json
import logging
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Optional, Sequence

import numpy as np

from raddiag.data.case import Case, Scan
from raddiag.data.errors import ScanError
from raddiag.data.labels import LabelSpace
from raddiag.data.preprocess import preprocess_volume
from raddiag.data.readers import read_scan
from raddiag.data.splits import assign_splits
from raddiag.data.workers import worker_processes_allowed

log = logging.getLogger(__name__)
FORMAT_VERSION = 1
DTYPE = np.float16


@dataclass
class PrepareReport:
    cases_in: int = 0
    cases_out: int = 0
    scans_in: int = 0
    scans_out: int = 0
    skipped_scans: list[dict] = field(default_factory=list)   # {case, file, reason}
    skipped_cases: list[dict] = field(default_factory=list)   # {case, reason}
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return self.__dict__.copy()

    def text(self) -> str:
        lines = [
            f"cases: {self.cases_out} prepared of {self.cases_in}",
            f"scans: {self.scans_out} prepared of {self.scans_in}",
        ]
        if self.skipped_scans:
            lines.append(f"skipped scans ({len(self.skipped_scans)}):")
            lines += [f"  case {s['case']}: {s['file']}: {s['reason']}" for s in self.skipped_scans]
        if self.skipped_cases:
            lines.append(f"skipped cases ({len(self.skipped_cases)}):")
            lines += [f"  case {s['case']}: {s['reason']}" for s in self.skipped_cases]
        lines += self.notes
        return "\n".join(lines)


def _process_scan(args) -> tuple[Optional[np.ndarray], int, int, Optional[str], str]:
    """Worker: read + preprocess one scan. Returns (slices, key, orig_depth, error, file)."""
    scan, size, depth, window = args
    src = scan.paths[0] if scan.paths else "<scan>"
    try:
        vol = read_scan(scan)
        out, key = preprocess_volume(vol, size, depth, window, scan.key_slice, source=src)
        return out.astype(DTYPE), key, vol.shape[0], None, src
    except ScanError as exc:
        return None, -1, 0, exc.reason, exc.path
    except Exception as exc:  # never lose the file name, whatever broke
        return None, -1, 0, f"{type(exc).__name__}: {exc}", src


def prepare_cases(
    cases: Iterable[Case],
    out_dir: str | Path,
    size: int = 256,
    depth: int = 32,
    window: Optional[Sequence[float]] = None,
    strict: bool = False,
    seed: int = 0,
    workers: Optional[int] = None,
    progress: bool = False,
    pre_skipped: Sequence[dict] = (),
    head_min: int = 100,
    medium_min: int = 30,
) -> PrepareReport:
    """Read, preprocess and cache ``cases`` into ``out_dir``.

    Cases without a split get a seeded patient-level 7:1:2 split. A scan that cannot be used
    is skipped and reported (``strict`` raises at the first); a case left without scans is
    skipped too. ``pre_skipped`` carries problems an adapter found before reading
    (e.g. missing files), so that one report lists everything. ``head_min`` / ``medium_min``
    are the head / medium cut-offs (training cases) written into the label spaces.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cases = list(cases)
    report = PrepareReport(cases_in=len(cases), scans_in=sum(len(c.scans) for c in cases))
    for s in pre_skipped:
        if strict:
            raise ScanError(s.get("file", "?"), s["reason"])
        report.skipped_scans.append(dict(s))
    report.scans_in += len(pre_skipped)
    assign_splits(cases, seed=seed)

    jobs = [(scan, size, depth, window) for c in cases for scan in c.scans]
    workers = workers if workers is not None else min(4, os.cpu_count() or 1)
    if workers > 1 and len(jobs) > 8 and worker_processes_allowed("prepare_cases", "forkserver"):
        # forkserver, not fork: forking a process whose torch/OpenMP threads are running can
        # deadlock the children (seen when prepare ran after model code in the same process).
        pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("forkserver"))
        results = pool.map(_process_scan, jobs, chunksize=4)
    else:
        pool, results = None, map(_process_scan, jobs)
    if progress:
        from tqdm import tqdm

        results = tqdm(results, total=len(jobs), desc="prepare", unit="scan")

    kept: list[Case] = []
    n_slices = 0
    tmp_bin = out / "slices.f16.tmp"
    try:
        with tmp_bin.open("wb") as fbin:
            results = iter(results)
            for case in cases:
                scans_ok = []
                for scan in case.scans:
                    arr, key, orig, err, src = next(results)
                    if err is not None:
                        if strict:
                            raise ScanError(src, err)
                        report.skipped_scans.append({"case": case.id, "file": src, "reason": err})
                        continue
                    fbin.write(np.ascontiguousarray(arr).tobytes())
                    d = scan.__dict__.copy()
                    d["is_3d"] = bool(scan.is_3d) if scan.is_3d is not None else orig > 1
                    d["store"] = {"start": n_slices, "n": int(arr.shape[0]), "orig_depth": int(orig), "key": key}
                    n_slices += arr.shape[0]
                    scans_ok.append(d)
                if not scans_ok:
                    report.skipped_cases.append({"case": case.id, "reason": "no usable scan left"})
                    continue
                rec = case.to_dict()
                rec["scans"] = scans_ok
                kept.append(rec)
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    os.replace(tmp_bin, out / "slices.f16")

    with (out / "cases.jsonl").open("w") as f:
        for rec in kept:
            f.write(json.dumps(rec) + "\n")
    report.cases_out = len(kept)
    report.scans_out = sum(len(r["scans"]) for r in kept)
    kept_cases = [_case_from_record(r) for r in kept]
    for gran in ("disorder", "icd10"):
        LabelSpace.from_cases(kept_cases, granularity=gran, head_min=head_min, medium_min=medium_min).save(out / f"labels_{gran}.json")
    meta = {"format_version": FORMAT_VERSION, "size": size, "depth": depth,
            "window": list(window) if window is not None else None,
            "n_slices": n_slices, "dtype": "float16"}
    (out / "meta.json").write_text(json.dumps(meta, indent=1))
    (out / "report.json").write_text(json.dumps(report.to_dict(), indent=1))
    (out / "report.txt").write_text(report.text() + "\n")
    return report


def _case_from_record(rec: dict) -> Case:
    scans = [Scan(**{k: v for k, v in s.items() if k != "store"}) for s in rec["scans"]]
    return Case(scans=scans, **{k: v for k, v in rec.items() if k != "scans"})


class PreparedData:
    """Read side of a prepared dataset: case records and memory-mapped slices."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        meta_path = self.root / "meta.json"
        if not meta_path.exists():
            raise FileNotFoundError(
                f"{self.root}: not a prepared dataset (meta.json is missing; run `raddiag data prepare`)")
        self.meta = json.loads(meta_path.read_text())
        if self.meta.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"{self.root}: prepared with format {self.meta.get('format_version')}, "
                             f"this raddiag reads {FORMAT_VERSION}; prepare it again")
        self.size = int(self.meta["size"])
        self.depth = int(self.meta["depth"])
        self.records = [json.loads(l) for l in (self.root / "cases.jsonl").read_text().splitlines() if l.strip()]
        n = int(self.meta["n_slices"])
        self.slices = (np.memmap(self.root / "slices.f16", dtype=DTYPE, mode="r", shape=(n, self.size, self.size))
                       if n else np.zeros((0, self.size, self.size), DTYPE))

    def __len__(self) -> int:
        return len(self.records)

    def cases(self, split: Optional[str] = None) -> list[Case]:
        return [_case_from_record(r) for r in self.records if split is None or r["split"] == split]

    def records_for(self, split: Optional[str] = None) -> list[dict]:
        return [r for r in self.records if split is None or r["split"] == split]

    def scan_array(self, scan_record: dict) -> np.ndarray:
        """``[n, size, size]`` float16 view of one stored scan."""
        st = scan_record["store"]
        return self.slices[st["start"]: st["start"] + st["n"]]

    def label_space(self, granularity: str = "disorder") -> LabelSpace:
        return LabelSpace.load(self.root / f"labels_{granularity}.json")

"""Many cases at once: where the cases come from (a manifest, a prepared dataset; case folders
and files through :meth:`Predictor.pending`), predictions written as JSON Lines (resumable),
embeddings written to one ``.npz``.

``raddiag predict RUN --manifest cases.jsonl --out preds.jsonl`` writes one row per case, in
input order, a batch at a time (flushed after each batch): the :meth:`CaseResult.to_dict` of
the case (``positive``: every class at or above its threshold; ``ranked``: the top classes with
their probabilities, thresholds and ``above_threshold``), or ``{"case_id", "error"}`` for a case
that cannot be read, each with ``made_by`` (:func:`made_by`: a fingerprint of the run, the input
settings, ``--top``, ``--classes``). Run again on the same ``--out``, it skips the cases written
already; a last line cut off by an interruption is dropped and its case predicted again; a case
written twice keeps one row; rows another run or other options made are refused, never mixed. Batches are cut at the
same places on every run (case ``k * batch_size`` onwards), and a batch that was written in part
is predicted whole again, so a resumed run writes the same bytes as an uninterrupted one (the
same ``--batch-size``): results in float32 depend on which cases share a batch, in the 7th digit.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np

from raddiag.serving.case_inputs import scan_id
from raddiag.serving.predict import Predictor, in_batches
from raddiag.serving.results import CaseEmbedding, CaseError, PendingCase, ScanInfo


# -- where the cases come from -------------------------------------------------------------------
def manifest_cases(pred: Predictor, path: Union[str, Path]) -> list[PendingCase]:
    """The cases of a manifest (README, "Your own data"; ``labels`` and ``split`` are ignored).
    The whole file is checked against the schema first (:func:`raddiag.data.schema.validate_manifest`);
    a case whose scans cannot be used (an unknown modality, a missing file) becomes an error row.
    Each scan stands for the scans ``data prepare`` makes of it (:func:`raddiag.data.discover.declared_scans`:
    a folder of several DICOM series is a scan a series, each of its tag's modality)."""
    from raddiag.data.case import Case
    from raddiag.data.dicom import headers_kept
    from raddiag.data.errors import collect_input_warnings
    from raddiag.data.schema import validate_manifest

    path = Path(path)

    def reader(where: str, rec: dict):
        def read():
            case = Case.from_dict(rec, base=path.parent, source=where)
            # finding the scans warns too (skipped files, a tag against the manifest): with the result
            with headers_kept(), collect_input_warnings():
                return pred.prepare([s for scan in case.scans for s in _declared(scan)], case.id)
        return read

    return [PendingCase(rec["id"], reader(where, rec)) for where, rec in validate_manifest(path)]


def _declared(scan):
    """:func:`~raddiag.data.discover.declared_scans`, or the scan as given where its files cannot be
    grouped: reading it then fails with the reason, and the case is predicted from its other
    scans, as ``data prepare`` skips that scan and keeps the case."""
    from raddiag.data.discover import declared_scans
    from raddiag.data.errors import ScanError

    try:
        return declared_scans(scan)
    except ScanError:
        return [scan]


def prepared_cases(pred: Predictor, data_dir: Union[str, Path], split: Optional[str] = None) -> list[PendingCase]:
    """The cases of a prepared dataset (``raddiag data prepare``; ``split`` None: all of them),
    read as evaluation reads them (:class:`raddiag.data.dataset.CaseDataset`, resized to the run's
    geometry)."""
    from raddiag.data.dataset import CaseDataset, select_scans
    from raddiag.data.store import PreparedData

    data = PreparedData(data_dir)
    # the dataset's own label space: targets are not used, and the run's would warn about every other label
    ds = CaseDataset(data, split, data.label_space(), pred.cfg.data, train=False)

    def reader(i: int):
        def read():
            rec, sample = ds.records[i], ds[i]
            picked = select_scans(rec["scans"], ds.cfg, None)
            items = dict(zip(picked, sample["scans"]))
            infos = []
            for j, s in enumerate(rec["scans"]):
                it = items.get(j)
                infos.append(ScanInfo(id=scan_id(s.get("id"), s.get("paths") or [], f"scan{j}"), paths=list(s["paths"]), modality=s["modality"],
                                      is_3d=bool(s["is_3d"]),
                                      slices=int(it["image"].shape[1]) if it else min(s["store"]["n"], ds.cfg.depth),
                                      key_slice=int(it["key_slice"]) if it else -1, used=it is not None))
            return sample, infos, picked
        return read

    return [PendingCase(rec["id"], reader(i)) for i, rec in enumerate(ds.records)]


# -- predictions to JSON Lines, resumable --------------------------------------------------------
@dataclass
class BatchSummary:
    out: Path
    written: int            # rows written by this call
    skipped: int            # cases found in --out already
    errors: int             # error rows in the file (this call's and earlier ones)
    dropped_partial: bool   # a cut-off last line was removed
    duplicates: int = 0     # repeated rows of a case removed (the first kept; a prediction before an error)
    other_cases: int = 0    # rows in the file of cases not among these (another split or manifest)


def made_by(pred: Predictor, top: int, classes=None, encoder=None, modality=None) -> dict:
    """What a row depends on, recorded in each row (``made_by``) so that a resumed file is never a
    mix: the run (:meth:`raddiag.run.RunFolder.fingerprint`: its weights, config, label space,
    label embeddings), the input settings in effect (``--window`` changes them), ``--top``, the
    scored names (``--classes`` with the text encoder and prompt mode) and, when given, the
    ``--modality`` of CASE files (rows of CT files read as MRI were resumed as done)."""
    import dataclasses
    import hashlib

    from raddiag.run import RunFolder

    def digest(obj) -> str:
        return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]

    names = [list(classes), str(encoder), bool(pred.prompt_sets)] if classes else None
    made = {"run": RunFolder(pred.run_dir).fingerprint()[:16] if pred.run_dir else None,
            "input": digest(dataclasses.asdict(pred.cfg.data)), "top": int(top),
            "classes": digest(names) if names else None}
    return {**made, "modality": digest(modality)} if modality else made


def _read_rows(out: Path) -> tuple[list[dict], int, bool]:
    """(complete rows of ``out``, byte length of those rows, whether a cut-off last line follows)."""
    data = out.read_bytes() if out.exists() else b""
    end = len(data) if data.endswith(b"\n") or not data else data.rfind(b"\n") + 1
    rows = []
    for n, line in enumerate(data[:end].split(b"\n")[:-1] if end else [], 1):
        try:
            row = json.loads(line)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            row, why = None, f"not valid JSON ({exc})"
        else:
            why = None if isinstance(row, dict) and isinstance(row.get("case_id"), str) else "no case_id"
        if why:
            raise ValueError(f"{out}:{n}: not a prediction row ({why}); only a cut-off last line can be "
                             "repaired: choose another --out, or remove the line")
        rows.append(row)
    return rows, end, end < len(data)


def _resume(out: Path, retry_errors: bool, made: dict, ids: set) -> tuple[dict[str, bool], BatchSummary]:
    """Case ids in ``out`` already (-> whether the row is an error) and what was repaired: a
    cut-off last line dropped, repeated rows of a case removed and, with ``retry_errors``, the
    error rows (so that those cases run again). Rows made by another run or with other options
    are refused (:func:`made_by`)."""
    if out.exists() and not out.is_file():
        raise ValueError(f"{out}: --out must be a file; it is a folder")
    rows, end, partial = _read_rows(out)
    _check_made_by(out, rows, made)
    kept = _first_rows(rows)
    duplicates = len(rows) - len(kept)
    if retry_errors:
        kept = [r for r in kept if "error" not in r]
    if len(kept) < len(rows):
        from raddiag.staging import atomic_write

        atomic_write(out, lambda f: f.write("".join(json.dumps(r) + "\n" for r in kept).encode()))
    elif partial:
        with out.open("r+b") as f:
            f.truncate(end)
    done = {r["case_id"]: "error" in r for r in kept}
    return done, BatchSummary(out, 0, 0, 0, partial, duplicates, sum(c not in ids for c in done))


def _first_rows(rows: list[dict]) -> list[dict]:
    """One row per case, in file order: its first prediction, else its first error row."""
    best: dict[str, int] = {}
    for i, r in enumerate(rows):
        j = best.get(r["case_id"])
        if j is None or ("error" in rows[j] and "error" not in r):
            best[r["case_id"]] = i
    return [rows[i] for i in sorted(best.values())]


def _check_made_by(out: Path, rows: list[dict], made: dict) -> None:
    """Refuse rows that another run, or other options, made (naming what differs)."""
    other = [r for r in rows if r.get("made_by") != made]
    if not other:
        return
    theirs = other[0].get("made_by")
    if not isinstance(theirs, dict):
        why = "they do not record what made them (written by an older raddiag)"
    else:
        why = ", ".join(f"{k} {theirs.get(k)} (now {made.get(k)})" for k in {**made, **theirs}
                        if theirs.get(k) != made.get(k))
        why = f"made with {why}" if why else f"made by {theirs}"
    raise ValueError(f"{out}: {len(other)} of its {len(rows)} rows come from another run or other options "
                     f"({why}); resuming would mix them: choose another --out, or delete the file to start afresh")


def predict_to_jsonl(pred: Predictor, pending: Sequence[PendingCase], out: Union[str, Path], batch_size: int = 8,
                     top: int = 10, classes=None, encoder=None, progress: bool = False,
                     retry_errors: bool = False, modality=None) -> BatchSummary:
    """Predict ``pending`` into the JSON Lines file ``out`` (see the module docstring), skipping
    the cases written there already (``retry_errors``: except the error rows). ``modality``: the
    modality the pending cases' files were given (recorded in :func:`made_by`)."""
    if top < 1:
        raise ValueError(f"top must be >= 1, got {top}")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    made = made_by(pred, top, classes, encoder, modality)
    ids = {p.case_id for p in pending}
    done, summary = _resume(out, retry_errors, made, ids)
    todo_total = sum(p.case_id not in done for p in pending)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(pending), initial=len(pending) - todo_total, desc="predict", unit="case")
    written = new_errors = 0
    try:
        with out.open("a") as f:
            for chunk in in_batches(pending, batch_size, False, "predict"):
                todo = [p.case_id not in done for p in chunk]
                if not any(todo):
                    continue
                results = pred.predict_batch(chunk, top, classes, encoder)   # the whole batch: same numbers
                f.write("".join(json.dumps({**r.to_dict(), "made_by": made}) + "\n"
                                for r, t in zip(results, todo) if t))
                f.flush()
                written += sum(todo)
                new_errors += sum(isinstance(r, CaseError) for r, t in zip(results, todo) if t)
                if bar is not None:
                    bar.update(sum(todo))
    finally:
        if bar is not None:
            bar.close()
    if retry_errors and written:
        _put_in_input_order(out, [p.case_id for p in pending])
    old_errors = sum(err for cid, err in done.items() if cid in ids)
    summary.written, summary.skipped, summary.errors = written, len(pending) - todo_total, old_errors + new_errors
    return summary


def _put_in_input_order(out: Path, order: list[str]) -> None:
    """Rewrite ``out`` (atomically) with its rows in input order, other cases' rows after them: a
    retried case's new row was appended at the end (a red team: the file then differed from an
    uninterrupted run's, which the module promises byte for byte)."""
    from raddiag.staging import atomic_write

    rows = _read_rows(out)[0]
    rank = {cid: i for i, cid in enumerate(order)}
    ordered = sorted(rows, key=lambda r: rank.get(r["case_id"], len(order)))     # stable: others keep theirs
    if ordered != rows:
        atomic_write(out, lambda f: f.write("".join(json.dumps(r) + "\n" for r in ordered).encode()))


# -- embeddings to .npz --------------------------------------------------------------------------
def check_embeddings_out(path: Union[str, Path], overwrite: bool = False) -> Path:
    """``path`` if embeddings may be written there (an ``.npz``; an existing one only with ``overwrite``)."""
    from raddiag.data.errors import OutputExists

    path = Path(path)
    if path.suffix != ".npz":
        raise ValueError(f"{path}: the embeddings file must end in .npz")
    if path.exists() and not overwrite:
        raise OutputExists(f"{path}: exists already; pass --overwrite (overwrite=True) to replace it")
    return path


def _skipped_arrays(ok: Sequence[CaseEmbedding]) -> dict:
    """The ``skipped_*`` arrays of :func:`save_embeddings`."""
    bad = [(i, info) for i, r in enumerate(ok) for info in r.scan_infos if info.error is not None]
    return {"skipped_scans": np.array([info.id for _, info in bad], dtype=str),
            "skipped_case": np.array([i for i, _ in bad], dtype=np.int64),
            "skipped_errors": np.array([info.error for _, info in bad], dtype=str)}


def save_embeddings(results: Sequence[Union[CaseEmbedding, CaseError]], path: Union[str, Path], width: int,
                    overwrite: bool = False) -> Path:
    """Write embeddings to ``path`` (``.npz``, loads without pickle):

    - ``case_ids [n]``, ``case_embeddings [n, width]`` (float32): one row per case that was read;
    - ``scan_embeddings [S, width]``, ``scan_ids [S]``, ``scan_modality [S]``, ``scan_case [S]``
      (the row of the scan's case): one row per used scan, the scans of a case together in order;
    - ``failed_ids [F]``, ``failed_errors [F]``: the cases that could not be read, and why;
    - ``skipped_scans [K]``, ``skipped_case [K]`` (the row of its case), ``skipped_errors [K]``: the
      unreadable scans of cases read from their other scans, and why.
    """
    path = check_embeddings_out(path, overwrite)
    ok = [r for r in results if isinstance(r, CaseEmbedding)]
    failed = [r for r in results if isinstance(r, CaseError)]
    scans = [(i, info.id, info.modality, row) for i, r in enumerate(ok)
             for info, row in zip([s for s in r.scan_infos if s.used], r.scans)]
    arrays = {
        "case_ids": np.array([r.case_id for r in ok], dtype=str),
        "case_embeddings": np.stack([r.case for r in ok]).astype(np.float32) if ok else np.zeros((0, width), np.float32),
        "scan_embeddings": (np.stack([s[3] for s in scans]).astype(np.float32) if scans
                            else np.zeros((0, width), np.float32)),
        "scan_ids": np.array([s[1] for s in scans], dtype=str),
        "scan_modality": np.array([s[2] for s in scans], dtype=str),
        "scan_case": np.array([s[0] for s in scans], dtype=np.int64),
        "failed_ids": np.array([r.case_id for r in failed], dtype=str),
        "failed_errors": np.array([r.error for r in failed], dtype=str),
        **_skipped_arrays(ok),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("wb") as f:
        np.savez(f, **arrays)
    os.replace(tmp, path)
    return path

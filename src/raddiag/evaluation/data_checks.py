"""What ``evaluate`` checks of the evaluated data against the run before its figures are shown.

- Cases the run trained on among the evaluated ones: those sharing a scan file with a training
  case (ids repeat across data sets: ``case001`` of another set is another case), by case id only
  where the files are not known. The training cases are those the run records
  (``RUN/train_cases.json``), else the train split of the training data its ``intensity.json``
  names, taken only while that split's class counts equal the run's training counts
  (``label_space.json``): a folder prepared again since, with other splits, is not the one
  trained on. A run whose training cases cannot be found is said to be unchecked, not passed.
- A store coarser than the run's input (``data.size`` / ``data.depth`` of its config): slices are
  upsampled and 3D scans hold fewer slices than the model took. A larger store is resized down
  on load, as in training: noted in the meta, no warning.

Each finding is a :class:`DataCheckWarning` and a field of ``metrics.json``'s meta
(``trained_on_cases``, ``geometry``, ``warnings``).
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Optional

from raddiag.data.errors import InputWarning, examples, one_line


class DataCheckWarning(InputWarning):
    """Evaluated data unlike what the run's figures need: cases it trained on, a coarser store."""


def check_data(run, cfg, data, data_dir, split: str, case_ids) -> dict:
    """The meta fields of :func:`trained_on_cases` and :func:`geometry` of ``data`` (the opened
    evaluated dataset) and ``warnings``, their messages, each also issued as a DataCheckWarning."""
    files = _files(data, split)
    cases = {str(i): files.get(str(i)) for i in case_ids}
    found = {"trained_on_cases": trained_on_cases(run, cfg, data_dir, split, cases),
             "geometry": geometry(run, cfg, data.meta, data_dir)}
    found["warnings"] = [f.pop("warning") for f in found.values() if "warning" in f]
    for msg in found["warnings"]:
        warnings.warn(msg, DataCheckWarning, stacklevel=3)
    return found


def _files(data, split: str) -> dict:
    """case id -> the set of its scans' files, for the cases of ``split`` (empty when the data keep
    no case records: shards)."""
    from raddiag.data.store import scan_file

    if not hasattr(data, "records_for"):
        return {}
    return {str(r["id"]): {f for f in map(scan_file, r["scans"]) if f} or None for r in data.records_for(split)}


def trained_on_cases(run, cfg, data_dir, split: str, cases: dict) -> dict:
    """``{n, of, split, case_ids (the first 10), source, by}`` of the evaluated cases (``cases``: id ->
    its scan files, or None when unknown) the run trained on, and a ``warning`` when there are any;
    ``n`` None, ``not_checked`` and a ``warning`` saying why when they cannot be known."""
    trained, source = training_cases(run, cfg.data.granularity)
    where = f"{data_dir} split {split!r}"
    if trained is None:
        return {"n": None, "of": len(cases), "split": split, "not_checked": source,
                "warning": f"{where}: not checked for cases {run.root} trained on: {source}"}
    by_file = trained["scans"] is not None and all(f is not None for f in cases.values())
    if by_file:
        hits = [i for i, files in cases.items() if files & trained["scans"]]
    else:
        hits = [i for i in cases if i in trained["ids"]]
    by = "scan file" if by_file else "case id"
    out = {"n": len(hits), "of": len(cases), "split": split, "case_ids": hits[:10], "source": source, "by": by}
    if hits:
        out["warning"] = (f"{where}: {len(hits)} of its {len(cases)} cases are cases {run.root} trained on "
                          f"({examples([repr(one_line(i, 40)) for i in hits])}; by {by}, from {source}"
                          + ("" if by_file else "; another data set's cases may share these ids") +
                          "): these figures are optimistic; evaluate on cases the run never saw")
    return out


def training_cases(run, granularity: str) -> tuple[Optional[dict], str]:
    """``({"ids", "scans"}, where they came from)`` of the cases ``run`` trained on (``scans``: their
    scan files, None when not recorded), or ``(None, why unknown)``."""
    from raddiag.data.intensity import RUN_FILE, read_run_intensity

    try:
        recorded = run.trained_cases()
        if recorded is not None:
            return recorded, str(run.train_cases)
        given = (read_run_intensity(run.root) or {}).get("data")
    except ValueError as exc:
        return None, str(exc)
    if not given:
        return None, (f"the run records neither its training cases ({run.train_cases.name}) nor its training "
                      f"data ({RUN_FILE})")
    return _train_split(run, str(given), granularity)


def _train_split(run, given: str, granularity: str) -> tuple[Optional[dict], str]:
    """The train split's cases of the prepared folder ``given`` (as ``intensity.json`` records it)."""
    from raddiag.data.intensity import RUN_FILE
    from raddiag.data.store import PreparedData

    named = f"its training data {given} (named in {run.root / RUN_FILE})"
    space = run.load_labels()
    counts = dict(zip(space.names, space.counts))
    seen = []
    for folder in _prepared_candidates(given, run.root):
        try:
            data = PreparedData(folder)
            if not any(counts.values()) or _train_counts(data, granularity, counts) == counts:
                files = _files(data, "train")
                scans = None if any(f is None for f in files.values()) else set().union(*files.values())
                return {"ids": set(files), "scans": scans}, f"the train split of {folder}"
        except (OSError, ValueError, KeyError) as exc:
            return None, f"{named} cannot be read ({type(exc).__name__}: {one_line(exc)})"
        seen.append(str(folder))
    if seen:
        return None, (f"{named}: the train split of {', '.join(seen)} no longer has the run's training counts "
                      "(label_space.json): prepared again since, or the run trained on a part of it")
    return None, f"{named} is not found" + ("" if Path(given).is_absolute() else
                                            " (a relative path: looked in the current folder and above the run)")


def _train_counts(data, granularity: str, counts: dict) -> dict:
    space = data.label_space(granularity)
    mine = dict(zip(space.names, space.counts))
    return {name: mine.get(name, 0) for name in counts}


def _prepared_candidates(given: str, run_root: Path):
    """Prepared folders ``given`` may name: as given (a relative one also under the run folder's
    parents: the trainer recorded it as typed), a shard folder's source."""
    from raddiag.data.shard_index import is_url

    if is_url(given):
        return
    p = Path(given)
    roots = [Path.cwd()] + ([] if p.is_absolute() else list(Path(run_root).resolve().parents))
    for folder in dict.fromkeys((r / p).resolve() for r in roots):
        if (folder / "shards.json").is_file():
            folder = _shard_source(folder)
        if folder is not None and (folder / "meta.json").is_file():
            yield folder


def _shard_source(folder: Path) -> Optional[Path]:
    """The prepared folder a shard folder was written from, where it still is."""
    from raddiag.data.shard_index import read_index

    try:
        source = read_index(folder).get("source")
    except (OSError, ValueError):
        return None
    return Path(source) if source else None


def geometry(run, cfg, meta: dict, data_dir) -> dict:
    """``{data: [size, depth], run: [size, depth], note}`` of the evaluated store against the run's
    input, and a ``warning`` when it is coarser (slices upsampled, fewer slices than the model took)."""
    have, want = [meta.get("size"), meta.get("depth")], [cfg.data.size, cfg.data.depth]
    out = {"data": have, "run": want}
    if not all(isinstance(v, int) for v in have):
        return {**out, "note": "the evaluated data record no geometry"}
    coarser = []
    if have[0] < want[0]:
        coarser.append(f"its slices are upsampled from {have[0]} to {want[0]} px")
    if have[1] < want[1]:
        coarser.append(f"its 3D scans hold at most {have[1]} of the {want[1]} slices the model takes")
    if not coarser:
        larger = have != want
        return {**out, "note": "stored larger than the run's input: resized down on load, as in training"
                if larger else "the run's input geometry"}
    return {**out, "note": "coarser than the run's input",
            "warning": f"{data_dir}: prepared at {have[0]} px x {have[1]} slices, coarser than the input of "
                       f"{run.root} ({want[0]} px x {want[1]} slices: data.size / data.depth in "
                       f"{run.config}): {' and '.join(coarser)}, so these figures may not reflect the model; "
                       f"prepare the data again with --size {want[0]} --depth {want[1]} (or more)"}

"""Find the scans of one case folder (used by ``raddiag predict CASE_FOLDER``), and the scans a
scan given by a source stands for (:func:`declared_scans`: ``data prepare``, ``predict --manifest``),
by the same rule.

DICOM files are grouped into series by ``SeriesInstanceUID`` (modality from the
``Modality`` tag; a multi-frame file is a scan of its own); NIfTI, NPY and PNG / JPEG files are one scan each and need the
modality from the caller. Sub-folders are searched too (linked ones as well, each real folder
once). Every other file is skipped and said so: one :class:`SkippedFilesWarning` per folder.
"""
from __future__ import annotations

import os
from collections import Counter, defaultdict
from dataclasses import replace
from pathlib import Path
from typing import Optional

from raddiag.data.case import Scan, canonical_modality
from raddiag.data.errors import (InputWarning, ModalityWarning, ScanError, SkippedFilesWarning, skipped_text,
                                 warn_input)
from raddiag.data.readers import IMAGE_SUFFIXES, dicom_modality, is_dicom, read_dicom_header

VOLUME_SUFFIXES = (".nii", ".nii.gz", ".npy")


def _is_volume_or_image(p: Path) -> bool:
    name = p.name.lower()
    return name.endswith(VOLUME_SUFFIXES) or p.suffix.lower() in IMAGE_SUFFIXES


def _walk(folder: Path, recursive: bool, skipped: dict[str, list[str]]) -> list[Path]:
    """The files under ``folder`` (sorted), without recursion (any depth) and following linked
    folders once each (a link loop ends), but not a link to a folder that holds ``folder`` (``loop
    -> ..`` took every other case's scans into the case); those, broken links and hidden entries go
    to ``skipped``, which the caller says. (A link to another case's folder is followed: ``data
    prepare`` names a file two cases share, by its real path: :func:`raddiag.data.splits.shared_files_note`.)"""
    root = os.path.realpath(folder)
    files, todo, seen = [], [folder], {root}
    while todo:
        here = todo.pop()
        try:
            entries = list(os.scandir(here))
        except OSError as exc:
            skipped.setdefault("unreadable folder", []).append(f"{here} ({exc.strerror})")
            continue
        for e in entries:
            p = Path(e.path)
            if e.name.startswith("."):
                skipped.setdefault("hidden", []).append(str(p.relative_to(folder)))
            elif e.is_dir():
                real = os.path.realpath(p)
                if recursive and os.path.commonpath([root, real]) == real:
                    skipped.setdefault("link to a folder holding this one (not followed)", []).append(
                        str(p.relative_to(folder)))
                elif not recursive or real in seen:
                    why = "link to a folder searched already" if recursive else "sub-folder (not searched)"
                    skipped.setdefault(why, []).append(str(p.relative_to(folder)))
                else:
                    seen.add(real)
                    todo.append(p)
            elif e.is_file():
                files.append(p)
            else:
                skipped.setdefault("broken link or not a file", []).append(str(p.relative_to(folder)))
    return sorted(files)


def _frames(ds) -> int:
    try:
        return int(getattr(ds, "NumberOfFrames", 1) or 1)
    except (TypeError, ValueError):
        return 1   # the reader names the file and the reason


NO_IMAGE = {"SR", "PR", "KO", "DOC", "RTSTRUCT", "RTPLAN", "RTRECORD", "REG", "SEG"}   # DICOM that holds no image


def series_key(path: Path, ds) -> str:
    """Which series a DICOM file belongs to: its SeriesInstanceUID; a multi-frame file (an
    ultrasound clip) is a scan of its own; files without a UID, those of one folder with the same
    Modality and image size (one folder's CT and MR without UIDs were one "CT" scan; each file
    was a scan of its own before)."""
    if _frames(ds) > 1:
        return f"file:{path}"
    uid = str(getattr(ds, "SeriesInstanceUID", "") or "")
    if uid:
        return uid
    return (f"dir:{path.parent}|{str(getattr(ds, 'Modality', '') or '?').upper()} "
            f"{getattr(ds, 'Rows', '?')}x{getattr(ds, 'Columns', '?')}")


def scans_in_folder(folder: str | Path, modality: Optional[str] = None, recursive: bool = True) -> list[Scan]:
    """The scans in ``folder``: one per DICOM series, one per other image/volume file, except
    an image or volume lying in a folder of DICOM files (a thumbnail, an export, a converted
    copy of the series), which is skipped and said: every route reads a folder so (``predict``,
    ``data prepare`` of a manifest's folder or of ``--format folders``).

    ``modality`` is required when the folder holds non-DICOM files (raises ValueError naming
    the first such file otherwise); for DICOM it overrides nothing: the tag decides, and
    ``modality`` is only the fallback for files without a ``Modality`` tag (or with one naming no
    known modality: :func:`~raddiag.data.dicom.dicom_modality`).
    Hidden files, DICOMDIR, broken links and files of no scan type (JSON, text, ``.DS_Store``)
    are skipped with a :class:`SkippedFilesWarning` naming them. Raises FileNotFoundError if the
    folder does not exist and ScanError (a ValueError) if it holds no scan (naming what was skipped).
    """
    folder = Path(folder)
    if not folder.exists():
        raise FileNotFoundError(f"{folder}: case folder does not exist")
    skipped: dict[str, list[str]] = {}
    if folder.is_file():
        files = [folder]
        folder = folder.parent
    else:
        files = _walk(folder, recursive, skipped)
    fallback = canonical_modality(modality, source=str(folder)) if modality else None
    series: dict[str, list[Path]] = defaultdict(list)
    series_mod: dict[str, str] = {}
    scans: list[Scan] = []
    others: list[Path] = []       # images and volumes: scans unless they lie beside a DICOM series
    for p in files:
        if p.name.upper() == "DICOMDIR":
            skipped.setdefault("DICOMDIR (an index, not a scan)", []).append(str(p.relative_to(folder)))
        elif is_dicom(p):
            ds = read_dicom_header(p)
            if str(getattr(ds, "Modality", "")).upper() in NO_IMAGE:
                skipped.setdefault("DICOM without an image (a report, a presentation state)", []).append(
                    str(p.relative_to(folder)))
                continue
            uid = series_key(p, ds)
            series[uid].append(p)
            if uid not in series_mod:
                series_mod[uid] = dicom_modality(p, ds, fallback)
        elif _is_volume_or_image(p):
            others.append(p)
        else:
            skipped.setdefault("not a scan type", []).append(str(p.relative_to(folder)))
    beside = {p.parent for paths in series.values() for p in paths}
    for p in others:
        if p.parent in beside:       # a thumbnail, an export or a converted copy of the series
            skipped.setdefault("beside a DICOM series, not read as a scan (give it a folder of its own)",
                               []).append(str(p.relative_to(folder)))
        else:
            if fallback is None:
                raise ScanError(p, "the modality of a non-DICOM file cannot be read from it; pass it "
                                   "explicitly: --modality CT for every file here, or, for files of different "
                                   "modalities, the files joined by commas with one modality each "
                                   "(a.nii.gz,b.png --modality CT,X-ray), or a --manifest")
            scans.append(Scan(paths=[str(p)], modality=fallback, id=str(p.relative_to(folder))))
    names = {uid: _series_name(folder, uid, paths) for uid, paths in series.items()}
    taken = Counter(names.values())
    for uid, paths in series.items():
        name = names[uid] if taken[names[uid]] == 1 else _series_name(folder, uid, paths, whole_uid=True)
        scans.append(Scan(paths=[str(p) for p in paths], modality=series_mod[uid], id=name))
    if not scans:
        raise ScanError(folder, "no scans found (DICOM, NIfTI, NPY, PNG or JPEG files)"
                                + (f"; skipped {skipped_text(skipped)}" if skipped else ""))
    if skipped:
        warn_input(f"{folder}: skipped {skipped_text(skipped)}", SkippedFilesWarning, stacklevel=2)
    scans.sort(key=lambda s: s.paths[0])
    return scans


def _series_name(folder: Path, uid: str, paths: list[Path], whole_uid: bool = False) -> str:
    """A series' scan name: ``WHERE:<last 12 characters of its UID>`` (the whole UID where two
    series' UIDs end alike), the file for a multi-frame file, the folder for files without a UID
    (with their modality and size where the folder holds several such groups).
    A series lying in the case folder itself is named by that folder (it was ".:UID", which the
    predict table and the saliency caption showed a user)."""
    where = paths[0].parent.relative_to(folder) if paths[0].parent != folder else (folder.resolve().name or ".")
    if uid.startswith("file:"):
        return str(paths[0].relative_to(folder))
    if uid.startswith("dir:"):
        return f"{where}:{uid.split('|', 1)[1]}" if whole_uid else str(where)
    return f"{where}:{uid if whole_uid else uid[-12:]}"


def declared_scans(scan: Scan) -> list[Scan]:
    """The scans that a scan given by a source (a manifest's ``path`` / ``paths``, a release
    file, ``--format folders``) stands for, read by the rule ``predict`` reads a case with, so
    that a case is the same scans whichever route reads it (``data prepare``, ``predict
    --manifest``, ``predict CASE``):

    - a folder: :func:`scans_in_folder` with ``scan.modality``: one scan per DICOM series (searched
      recursively, named ``FOLDER:<end of SeriesInstanceUID>`` as ``predict`` names them), one per
      other image / volume file, except one lying beside a series (a thumbnail, a converted copy:
      skipped and said); each keeps the scan's plane, anatomy, is_3d and entry, its key
      slice only when the folder holds one scan (else dropped with a warning); a scan ``id``
      given names one scan, or prefixes the names of several;
    - a DICOM file, or ``paths`` of DICOM files (one series: files of several are not split but
      refused when read, saying what to write instead): the scan as given;
    - anything else (NIfTI, NPY, images, a path that does not exist): the scan as given.

    For DICOM the ``Modality`` tag of the series is the truth: a ``scan.modality`` that disagrees
    gives way to it, with a :class:`ModalityWarning` naming the file, both modalities and the
    one used; ``scan.modality`` is kept only for files without a tag, or with a tag naming no
    known modality (:func:`~raddiag.data.dicom.dicom_modality`). Raises ScanError naming the file
    when a folder holds no scan or a DICOM header cannot be read."""
    first = Path(scan.paths[0]) if scan.paths else None
    if first is None or not first.exists():
        return [scan]
    if first.is_dir() and len(scan.paths) == 1:
        return _folder_scans(scan, first)
    if first.is_file() and is_dicom(first):
        tag = dicom_modality(first, fallback=scan.modality)
        _check_modality(scan, first, tag)
        return [replace(scan, modality=tag)]
    return [scan]


def _folder_scans(scan: Scan, folder: Path) -> list[Scan]:
    found = scans_in_folder(folder, modality=scan.modality)
    key = scan.key_slice
    if key is not None and len(found) > 1:
        warn_input(f"{folder}: key_slice {key} dropped: the folder holds {len(found)} scans "
                   f"({', '.join(s.id for s in found)}); give the one it belongs to as a scan of its own to keep "
                   "its key slice", InputWarning, stacklevel=3)
        key = None
    out = []
    for s in found:
        if _is_series(s):
            _check_modality(scan, Path(s.paths[0]), s.modality)
        name = (scan.id or s.id) if len(found) == 1 else (f"{scan.id}/{s.id}" if scan.id else s.id)
        out.append(replace(scan, paths=s.paths, modality=s.modality, id=name, key_slice=key))
    return out


def _is_series(s: Scan) -> bool:
    return len(s.paths) > 1 or is_dicom(s.paths[0])


def _check_modality(scan: Scan, file: Path, tag: str) -> None:
    if tag != scan.modality:
        warn_input(f"{file}: its DICOM Modality tag says {tag}, but {scan.modality} was given for "
                   f"{scan.paths[0]} (manifest or --modality): read as {tag}, as predict reads it (for DICOM the "
                   "tag of the series wins; if the tag is wrong, correct the files' tag)", ModalityWarning, stacklevel=4)

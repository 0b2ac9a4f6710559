"""Which inputs make a case, and its scans: what ``Predictor.predict`` / ``embed`` take (a folder,
a file, a list with a file in it: one case; folders alone or lists: several cases), the scans of
each case (DICOM series grouped, one modality per item) and each case's id."""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence, Union

from raddiag.data.case import Scan, canonical_modality

PathLike = Union[str, Path]


def _modality_for(modality, i: int, n: int, where: str) -> Optional[str]:
    if modality is None or isinstance(modality, str):
        return modality
    modality = list(modality)
    if len(modality) != n:
        hint = (" (a folder is one input: for its files of different modalities, list the files joined by "
                "commas, a.nii.gz,b.png --modality CT,X-ray, or give a --manifest)") if n == 1 else ""
        raise ValueError(f"{where}: {len(modality)} modalities given for {n} inputs; give one, or one per input{hint}")
    return modality[i]


def case_scans(case: PathLike | Sequence[PathLike], modality=None) -> list[Scan]:
    """The scans of one case: a folder (searched recursively), one file, or a list of files /
    folders. ``modality``: one name for all, or one per item of the list (DICOM: read from tags)."""
    from raddiag.data.discover import scans_in_folder, series_key
    from raddiag.data.readers import is_dicom, read_dicom_header

    items = [case] if isinstance(case, (str, Path)) else list(case)
    if not items:
        raise ValueError("a case needs at least one file or folder")
    scans: list[Scan] = []
    series: dict[str, int] = {}          # DICOM files given one by one -> one scan per series
    for i, item in enumerate(items):
        if not isinstance(item, (str, Path)):
            raise ValueError(f"case file or folder {i + 1} of {len(items)} is a {type(item).__name__}, not a path "
                             "(a case is a path or a list of paths; several cases: a list of them)")
        if not str(item).strip():     # Path("") is ".": every scan under the current folder became the case
            raise ValueError(f"case file or folder {i + 1} of {len(items)} is an empty name")
        p = Path(item)
        if not p.exists():
            raise FileNotFoundError(f"{p}: no such file or folder")
        mod = _modality_for(modality, i, len(items), str(p))
        if p.is_file() and is_dicom(p):
            uid = series_key(p, read_dicom_header(p))      # the folder rule's, files given one by one
            if uid in series:
                scans[series[uid]].paths.append(str(p))
                continue
            series[uid] = len(scans)
        for s in scans_in_folder(p, modality=mod):
            if s.id is None or p.is_file():
                s.id = p.name
            elif len(items) > 1:
                s.id = f"{p.name}/{s.id}"
            scans.append(s)
    return scans


SCAN_SUFFIXES = (".nii.gz", ".nii", ".npy", ".png", ".jpg", ".jpeg", ".dcm")    # a case id drops them


def _case_id(case) -> str:
    if isinstance(case, (str, Path)):
        name = Path(case).name
        for suf in SCAN_SUFFIXES:
            if name.lower().endswith(suf):
                return name[: -len(suf)]
        return name
    items = list(case)
    return _case_id(items[0]) + (f"+{len(items) - 1}" if len(items) > 1 else "")


def _case_ids(cases) -> list[str]:
    """One id per case, from its file or folder name; a repeated name gets ``#2``, ``#3``, ...
    in input order, so results and saliency files never share an id (``a/x.npy``, ``b/x.npy``)."""
    ids, seen = [], {}
    for case in cases:
        base = _case_id(case)
        seen[base] = seen.get(base, 0) + 1
        ids.append(base if seen[base] == 1 else f"{base}#{seen[base]}")
    return ids


def _split_cases(inputs) -> tuple[list, bool]:
    """(list of cases, whether the caller gave several). A list is several cases when it holds
    lists (each a case; a path beside them is a case of its own) or when no item is a file (each
    folder a case: ``["case1/", "case2/"]``). A list with a file in it (or a missing path named as a
    scan file, ``x.png``) is ONE case, its folders scans of that case (``["ct_series/", "cxr.png"]``):
    a missing item is then that case's error, never a case of its own (a typo in one file name, or
    the wrong working folder, would otherwise split the case)."""
    if isinstance(inputs, (str, Path)):
        return [inputs], False
    if inputs is None:
        raise ValueError("nothing to predict: no inputs given (None)")
    items = list(inputs)
    if not items:
        raise ValueError("nothing to predict: no inputs given")
    paths = all(isinstance(x, (str, Path)) for x in items)
    if paths and any(_names_a_file(x) for x in items):
        return [items], False
    return items, True


def _names_a_file(item) -> bool:
    """An existing file, or a missing path named as a scan file (``scan.png``: a typo of a file of
    the case, not a case folder)."""
    p = Path(item)
    if not str(item).strip():
        return False
    return p.is_file() or (not p.exists() and p.name.lower().endswith(SCAN_SUFFIXES))


def scan_id(given: Optional[str], paths: Sequence[str], fallback: str = "scan") -> str:
    """A scan's id in results: its own, else its (first) file's name (``fallback`` without files).
    One rule for scans read from files and scans of a prepared dataset (a new user's `embed --data`
    named every such scan 'scan0', `--manifest` the same ones by file)."""
    return given or (Path(paths[0]).name if paths else fallback)


def canonical_modalities(modality) -> Optional[Union[str, list]]:
    """Validate user-given modality names early (clear error for a typo)."""
    if modality is None:
        return None
    if isinstance(modality, str):
        return canonical_modality(modality)
    return [canonical_modalities(m) for m in modality]

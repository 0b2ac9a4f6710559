"""Errors of the data layer: each names the file and the reason."""
from __future__ import annotations


class ScanError(ValueError):
    """A scan that cannot be used: unreadable, corrupt, empty, constant, NaN, unknown modality..."""

    def __init__(self, path, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


class InputTooLarge(ScanError):
    """A scan whose declared size (read from its header, before any pixel is decoded) is over the
    configured bound: a 2D pixel count or a 3D voxel count. The service answers it with HTTP 413."""


class OutputExists(FileExistsError, ValueError):
    """An output that exists already and is replaced only when asked (``--overwrite``).
    A ValueError too, so that every command reports it as bad input, in one line."""


def check_out_folder(path) -> None:
    """Refuse, before any work, an output folder that is a file or lies below one (OutputExists
    naming that file): found only when writing, it cost a whole run's computing."""
    from pathlib import Path

    for p in (Path(path), *Path(path).parents):
        if p.exists():
            if not p.is_dir():
                raise OutputExists(f"{p}: is a file, not a folder")
            return


class InputWarning(UserWarning):
    """A note about an input that the user must see (the CLI shows each as one line): a scan's
    values unlike the training scans', files of a case folder that were skipped."""


class SkippedFilesWarning(InputWarning):
    """Files of a case folder that are not scans (text, hidden files, DICOMDIR, broken links):
    skipped, and said so (:func:`raddiag.data.discover.scans_in_folder`)."""


class ModalityWarning(InputWarning):
    """A modality given for a DICOM file (a manifest's, ``--modality``) that its ``Modality`` tag
    contradicts: the tag is used (:func:`raddiag.data.discover.declared_scans`)."""


def examples(items, total: int | None = None, shown: int = 5) -> str:
    """The first ``shown`` of ``items`` joined by commas, then "and N more" of ``total`` (default:
    all of them): what a message names of a long list."""
    total = len(items) if total is None else total
    return ", ".join(items[:shown]) + (f" and {total - shown} more" if total > shown else "")


def skipped_text(skipped: dict[str, list[str]]) -> str:
    """``{reason: [names]}`` -> "3 file(s): not a scan type: a.txt, b; hidden: .DS_Store" (5 names a reason)."""
    return f"{sum(map(len, skipped.values()))} file(s): " + "; ".join(f"{k}: {examples(v)}" for k, v in skipped.items())


def one_line(text, limit: int | None = None) -> str:
    """``text`` with its control characters escaped ("\\n", "\\t"): a file or folder name holding
    a newline must not break a one-line message or a row of a printed table. With ``limit``, at
    most that many characters ("..." ends a shortened one)."""
    out = "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in str(text))
    return out if limit is None or len(out) <= limit else out[: limit - 3] + "..."
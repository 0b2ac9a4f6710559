"""Errors of the data layer: each names the file and the reason."""
from __future__ import annotations

import warnings
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Iterator, Optional


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
    values unlike the training scans', files of a case folder that were skipped. One raised
    while a scan is read goes through :func:`warn_input`, so that the read's
    :func:`collect_input_warnings` keeps it with the result."""


class SkippedFilesWarning(InputWarning):
    """Files of a case folder that are not scans (text, hidden files, DICOMDIR, broken links):
    skipped, and said so (:func:`raddiag.data.discover.scans_in_folder`)."""


_COLLECTED: ContextVar[Optional[list]] = ContextVar("raddiag_input_warnings", default=None)


def warn_input(message: str, category: type = InputWarning, stacklevel: int = 1) -> None:
    """Issue an :class:`InputWarning` (``category``) as ``warnings.warn`` does, or, inside
    :func:`collect_input_warnings` (this thread or task), record it there, once per message."""
    said = _COLLECTED.get()
    if said is None:
        warnings.warn(message, category, stacklevel=stacklevel + 1)
    elif all(str(w) != message for w in said):
        said.append(category(message))


@contextmanager
def collect_input_warnings(show: bool = True) -> Iterator[list]:
    """The input warnings of a read (:func:`warn_input`), kept to go with its result (a prepared
    dataset's report, a prediction's ``warnings``; picklable, so a worker process sends them back):
    yields the list they are recorded into (warning instances; ``str(w)`` the message), each message
    once however often the file is read. Nested in another, it shares that one's list. On leaving
    the outermost, with ``show``, each is issued once (:func:`show_input_warnings`)."""
    outer = _COLLECTED.get()
    if outer is not None:
        yield outer
        return
    said: list = []
    token = _COLLECTED.set(said)
    try:
        yield said
    finally:
        _COLLECTED.reset(token)
        if show:
            show_input_warnings(said, stacklevel=3)     # at the ``with`` (past this and contextlib)


def show_input_warnings(said, stacklevel: int = 1) -> None:
    """Issue the collected warnings ``said`` (``warnings.warn``: the CLI prints each as one
    ``raddiag: warning:`` line) in this process: those a worker process sent back too.
    ``stacklevel`` as ``warnings.warn`` takes it, counted from the caller."""
    for w in said:
        warnings.warn(w, stacklevel=stacklevel + 1)


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
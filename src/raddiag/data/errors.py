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

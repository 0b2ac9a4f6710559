"""Errors of the data layer: each names the file and the reason."""
from __future__ import annotations


class ScanError(ValueError):
    """A scan that cannot be used: unreadable, corrupt, empty, constant, NaN, unknown modality..."""

    def __init__(self, path, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")

"""A scan opened from its header: its shape is known, its slices are decoded one at a time.

:class:`Limits` is the one size bound of every input (CLI, Python API, service): the pixel
count of one slice (a 2D image) and the voxel count of a whole scan, both checked from the
header by :meth:`Limits.check` before any pixel is decoded. :class:`Volume` reads only the
slices asked for, so preprocessing a scan costs about its prepared size, not its declared size.
Shared by the readers: :func:`reoriented_volume` (a volume in its plane's canonical orientation)
and :class:`ClampedFile` (a file whose header lengths cannot make a parser over-allocate).
"""
from __future__ import annotations

import io
import os
import re
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator, Optional, Sequence

import numpy as np

from raddiag.data.errors import InputTooLarge, ScanError
from raddiag.data.orientation import Reoriented

MAX_PIXELS = 64 * 1024 ** 2     # 67 M pixels per slice: above any mammogram (about 4k x 5k)
MAX_VOXELS = 1024 ** 3          # 1 G voxels per scan: e.g. 1024 x 1024 x 1024
LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)   # RGB -> grey, ITU-R BT.601, as PIL's "L"
_SUFFIX = {"": 1, "k": 1024, "m": 1024 ** 2, "g": 1024 ** 3}


def parse_count(text: str | int) -> int:
    """``"64M"`` -> 67108864 (K, M, G are powers of 1024); plain integers too. For the CLI options."""
    m = re.fullmatch(r"\s*(\d+)\s*([kKmMgG]?)\s*", str(text))
    if not m or int(m.group(1)) < 1:
        raise ValueError(f"expected a positive count such as 64M or 1000000, got {text!r}")
    return int(m.group(1)) * _SUFFIX[m.group(2).lower()]


@dataclass(frozen=True)
class Limits:
    """Size bound of one scan, read from its header: ``max_pixels`` per slice (a 2D image is one
    slice), ``max_voxels`` per scan (all slices of all its files)."""

    max_pixels: int = MAX_PIXELS
    max_voxels: int = MAX_VOXELS

    @classmethod
    def of(cls, max_pixels: Optional[int | str] = None, max_voxels: Optional[int | str] = None) -> "Limits":
        """Defaults where None; counts may be given as text (``"64M"``)."""
        return cls(parse_count(max_pixels) if max_pixels is not None else MAX_PIXELS,
                   parse_count(max_voxels) if max_voxels is not None else MAX_VOXELS)

    def check(self, path, shape: Sequence[int]) -> None:
        """Raise :class:`InputTooLarge` naming ``path`` if ``shape`` (``[S, H, W]`` or ``[H, W]``,
        as declared by the header) is over the bound."""
        shape = [int(s) for s in shape]
        if any(s < 0 for s in shape):
            raise ScanError(path, f"the header declares a negative size {tuple(shape)}")
        pixels = shape[-1] * shape[-2] if len(shape) >= 2 else (shape[0] if shape else 1)
        voxels = int(np.prod(shape, dtype=object))
        if pixels > self.max_pixels:
            raise InputTooLarge(path, f"the header declares {pixels:,} pixels per slice {tuple(shape)}, over the "
                                      f"limit of {self.max_pixels:,} (--max-pixels)")
        if voxels > self.max_voxels:
            raise InputTooLarge(path, f"the header declares {voxels:,} voxels {tuple(shape)}, over the "
                                      f"limit of {self.max_voxels:,} (--max-voxels)")


DEFAULT_LIMITS = Limits()


class Volume:
    """``[S, H, W]`` slices of one scan, decoded on demand by ``get(k) -> [H, W]`` (float32, or
    the integers the file stores: :meth:`slices` converts them unless asked for ``native``).

    ``invert``: MONOCHROME1 DICOM (high values dark); :meth:`array` and preprocessing apply
    it. ``many(indices)``, when given, yields several slices in one pass (a reoriented volume
    gathers them across its stored slices). ``orientation``: how the slices were oriented
    (:mod:`raddiag.data.orientation`), None when they are as stored. Use as a context manager
    (or call :meth:`close`) to release open files.
    """

    def __init__(self, path, shape: Sequence[int], get: Callable[[int], np.ndarray], invert: bool = False,
                 stack: Optional[ExitStack] = None,
                 many: Optional[Callable[[Sequence[int]], Iterator[np.ndarray]]] = None,
                 orientation: Optional[str] = None):
        self.path = str(path)
        self.shape = tuple(int(s) for s in shape)
        self._get = get
        self._many = many
        self.invert = invert
        self.orientation = orientation
        self._stack = stack or ExitStack()

    def __len__(self) -> int:
        return self.shape[0]

    def __enter__(self) -> "Volume":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._stack.close()

    def slices(self, indices: Iterable[int], native: bool = False) -> Iterator[np.ndarray]:
        """The slices ``indices`` (in that order) as float32 ``[H, W]``; with ``native``, integer
        slices keep the file's dtype (a 16-bit image stays 2 bytes a pixel until preprocessing has
        picked the pixels it reads). A slice that cannot be decoded (truncated file) raises
        :class:`ScanError` naming the file and the slice."""
        indices = [int(k) for k in indices]
        source = self._many(indices) if self._many is not None else (self._get(k) for k in indices)
        for k in indices:
            try:
                sl = next(source)
            except ScanError:
                raise
            except Exception as exc:
                raise ScanError(self.path, f"slice {k} cannot be read ({type(exc).__name__}: {exc})") from None
            sl = np.asarray(sl)
            if not (native and sl.dtype.kind in "biu"):
                with np.errstate(over="raise"):   # float64 past 3.4e38 would become inf
                    try:
                        sl = sl.astype(np.float32, copy=False)
                    except FloatingPointError:
                        raise ScanError(self.path, f"slice {k} holds values beyond the float32 range "
                                                   "(|v| > 3.4e38); rescale them before saving") from None
            if sl.shape != self.shape[1:]:
                raise ScanError(self.path, f"slice {k} has shape {sl.shape}, the header declares {self.shape[1:]}")
            yield sl

    def array(self) -> np.ndarray:
        """All slices as one ``[S, H, W]`` float32 array (MONOCHROME1 inverted)."""
        out = np.empty(self.shape, np.float32)
        for k, sl in enumerate(self.slices(range(self.shape[0]))):
            out[k] = sl
        if self.invert:
            out = out.max() + out.min() - out
        return out


def array_volume(arr: np.ndarray, path="scan") -> Volume:
    """An in-memory ``[S, H, W]`` array as a :class:`Volume`."""
    if arr.ndim != 3 or 0 in arr.shape:
        raise ScanError(path, f"expected a non-empty [slices, height, width] array, got shape {tuple(arr.shape)}")
    return Volume(path, arr.shape, lambda k: arr[k])


def concat_volumes(vols: list[Volume], path) -> Volume:
    """Several files of one scan stacked in the given order (same slice shape)."""
    shapes = {v.shape[1:] for v in vols}
    if len(shapes) != 1:
        raise ScanError(path, f"the files of one scan have different slice shapes {sorted(shapes)}")
    starts = np.cumsum([0] + [len(v) for v in vols])
    stack = ExitStack()
    for v in vols:
        stack.callback(v.close)

    def get(k: int) -> np.ndarray:
        i = int(np.searchsorted(starts, k, side="right")) - 1
        return next(vols[i].slices([k - starts[i]], native=True))   # self.slices converts

    return Volume(path, (int(starts[-1]), *shapes.pop()), get, invert=any(v.invert for v in vols), stack=stack)


def reoriented_volume(path, shape, read, affine, plane, limits: Limits, **kwargs) -> Volume:
    """A stored ``[n0, n1, n2]`` volume (``read(a, b)``: stored slices a..b) in the canonical
    orientation of its plane; the output slice size is checked against ``limits`` too."""
    view = Reoriented(shape, read, affine, plane)
    limits.check(path, view.shape)
    return Volume(path, view.shape, lambda k: next(view.many([k])), many=view.many,
                  orientation=view.note, **kwargs)


class ClampedFile(io.BufferedReader):
    """A file whose ``read(n)`` never asks for more than the bytes left, so that a hostile length
    field in a header (a DICOM element, an NPY header, a NIfTI extension) cannot make a parser
    allocate the declared size: Python's buffered read allocates ``n`` bytes before reading."""

    def __init__(self, path):
        super().__init__(io.FileIO(str(path), "rb"))
        self._size = os.fstat(self.fileno()).st_size

    @property
    def size(self) -> int:
        return self._size

    def read(self, n: Optional[int] = -1) -> bytes:
        if n is not None and n >= 0:
            n = min(n, max(0, self._size - self.tell()))
        return super().read(n)

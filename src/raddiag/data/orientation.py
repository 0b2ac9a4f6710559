"""Scan orientation: a NIfTI volume or a DICOM series -> slices in one canonical orientation.

A stored volume ``[n0, n1, n2]`` with a voxel-to-world affine (NIfTI; for DICOM one built from
ImageOrientationPatient / ImagePositionPatient / PixelSpacing) is reoriented with nibabel's
orientation tools (``io_orientation`` / ``ornt_transform``, the machinery behind
``as_closest_canonical``) so that its slices ``[S, H, W]`` follow one convention whatever the
file's voxel order. The targets (nibabel axis codes, "RAS+" style: the direction each axis
increases towards) are those of a DICOM series written with the standard axial / coronal /
sagittal ImageOrientationPatient and sorted by position along its normal, so that such a
series is read exactly as stored:

- axial:    H posterior, W left, slices inferior -> superior   (``P L S``)
- coronal:  H inferior,  W left, slices anterior -> posterior  (``I L P``)
- sagittal: H inferior,  W posterior, slices left -> right     (``I P R``)

i.e. the radiological display: patient right on the image's left, anterior / superior on top.
The slice plane is the scan's declared ``plane`` (axial / coronal / sagittal; other values such
as "Frontal" describe 2D projections and are ignored) when given, else the plane across the
coarsest voxel spacing (thick slices), else axial. A volume whose orientation cannot be known
(no affine: NPY, images, a NIfTI with qform and sform codes 0 or the placeholder identity
affine, DICOM without position tags) keeps its stored order: its last axis is the slice axis.

Slices are still read one stored slice at a time: when the slice axis is the stored one, each
output slice is one stored slice transposed / flipped; otherwise the kept output slices are
gathered in one forward pass over the stored slices (a compressed NIfTI is decompressed once),
so memory follows the kept slices, not the volume.
"""
from __future__ import annotations

from typing import Callable, Iterator, Optional, Sequence

import numpy as np

PLANE_CODES = {"axial": ("P", "L", "S"), "coronal": ("I", "L", "P"), "sagittal": ("I", "P", "R")}
_PLANE_ALIASES = {"axial": "axial", "transverse": "axial", "transaxial": "axial", "ax": "axial",
                  "coronal": "coronal", "cor": "coronal", "sagittal": "sagittal", "sag": "sagittal"}
_WORLD_PLANE = {0: "sagittal", 1: "coronal", 2: "axial"}   # plane across world axis R, A, S
_BLOCK_BYTES = 16 * 2 ** 20                                  # stored slices read together when reslicing
AS_STORED = "as stored"


def slice_plane(declared: Optional[str]) -> Optional[str]:
    """``"Axial"`` / ``"transverse"`` -> ``"axial"`` etc.; None for no or a 2D-projection plane."""
    if not declared:
        return None
    return _PLANE_ALIASES.get(str(declared).strip().lower())


def plane_from_affine(affine: np.ndarray, ornt: np.ndarray) -> str:
    """The plane across the coarsest voxel axis when spacings differ (> 10 %), else axial."""
    zooms = np.sqrt((np.asarray(affine, float)[:3, :3] ** 2).sum(axis=0))
    if zooms.max() > 1.1 * zooms.min():
        return _WORLD_PLANE[int(ornt[int(np.argmax(zooms)), 0])]
    return "axial"


def known_affine(affine: Optional[np.ndarray]) -> bool:
    """False for a missing, singular or non-finite affine, or the placeholder identity many
    writers put in when they know nothing (``nib.Nifti1Image(arr, np.eye(4))``)."""
    if affine is None:
        return False
    a = np.asarray(affine, float)
    if a.shape != (4, 4) or not np.isfinite(a).all():
        return False
    if np.array_equal(a, np.eye(4)):
        return False
    return abs(np.linalg.det(a[:3, :3])) > 1e-12


class Reoriented:
    """The reoriented view of a stored ``[n0, n1, n2]`` volume: ``shape`` is ``[S, H, W]``,
    :meth:`many` yields output slices; ``read(a, b)`` returns stored slices ``[n0, n1, b - a]``."""

    def __init__(self, shape: Sequence[int], read: Callable[[int, int], np.ndarray], affine: np.ndarray,
                 plane: Optional[str] = None):
        from nibabel.orientations import axcodes2ornt, io_orientation, ornt2axcodes, ornt_transform

        self.stored = tuple(int(s) for s in shape)
        self._read = read
        ornt = io_orientation(np.asarray(affine, float))
        declared = slice_plane(plane)
        self.plane = declared or plane_from_affine(affine, ornt)
        t = ornt_transform(ornt, axcodes2ornt(PLANE_CODES[self.plane]))
        self.src = [int(np.flatnonzero(t[:, 0] == o)[0]) for o in range(3)]   # stored axis of output axis o
        self.flip = [t[self.src[o], 1] < 0 for o in range(3)]
        self.shape = tuple(self.stored[self.src[o]] for o in (2, 0, 1))
        codes = "".join(str(c) for c in ornt2axcodes(ornt))
        self.note = f"{self.plane} ({'declared' if declared else 'from the affine'}; stored {codes})"

    def _stored_index(self, k: int) -> int:
        return self.stored[self.src[2]] - 1 - k if self.flip[2] else k

    def _to_hw(self, plane: np.ndarray, axes: tuple[int, int]) -> np.ndarray:
        """A stored plane over stored ``axes`` -> ``[H, W]``."""
        if axes[0] != self.src[0]:
            plane = plane.T
        if self.flip[0]:
            plane = plane[::-1]
        if self.flip[1]:
            plane = plane[:, ::-1]
        return plane

    def many(self, indices: Sequence[int]) -> Iterator[np.ndarray]:
        indices = [int(k) for k in indices]
        axis = self.src[2]
        axes = tuple(a for a in range(3) if a != axis)
        if axis != 2:
            yield from self._gathered(indices, axis, axes)
        elif not self.flip[2]:              # the stored slice axis: one stored slice per output slice
            for k in indices:
                yield self._to_hw(np.asarray(self._read(k, k + 1))[:, :, 0], axes)
        else:   # reversed: read forward (a .gz seeks backwards by decompressing again), yield reversed
            got = {k: np.asarray(self._read(i, i + 1))[:, :, 0]
                   for k, i in sorted(((k, self._stored_index(k)) for k in set(indices)), key=lambda t: t[1])}
            for k in indices:
                yield self._to_hw(got[k], axes)

    def _gathered(self, indices: list[int], axis: int, axes: tuple[int, int]) -> Iterator[np.ndarray]:
        """Output slices across the stored slices: one forward pass, blocks of stored slices."""
        wanted = sorted(set(indices))
        planes: dict[int, np.ndarray] = {}
        n2 = self.stored[2]
        step = max(1, _BLOCK_BYTES // max(1, self.stored[0] * self.stored[1] * 4))
        for a in range(0, n2, step):
            block = np.asarray(self._read(a, min(n2, a + step)))
            for k in wanted:
                part = np.take(block, self._stored_index(k), axis=axis)   # [other stored axis, block]
                if k not in planes:
                    planes[k] = np.empty((self.stored[axes[0]], n2), dtype=part.dtype)
                planes[k][:, a: a + part.shape[1]] = part
        for k in indices:
            yield self._to_hw(planes[k], axes)


def nifti_orientation(img) -> Optional[np.ndarray]:
    """The image's affine when its header declares one (sform or qform code > 0, not the
    placeholder identity), else None."""
    sform, scode = img.header.get_sform(coded=True)
    qform, qcode = img.header.get_qform(coded=True)
    affine = sform if scode else (qform if qcode else None)
    return affine if known_affine(affine) else None


def dicom_affine(heads: Sequence, positions: Sequence[float]) -> Optional[np.ndarray]:
    """RAS voxel-to-world affine of a sorted single-frame DICOM series stored ``[rows, columns,
    slices]``, from ImageOrientationPatient, PixelSpacing and the slice positions along the
    normal (LPS -> RAS: x and y negated); None when a tag is missing or inconsistent."""
    try:
        iops = {tuple(round(float(v), 4) for v in ds.ImageOrientationPatient) for ds in heads}
        spacing = [float(v) for v in getattr(heads[0], "PixelSpacing", (1.0, 1.0))]
    except (AttributeError, TypeError, ValueError):
        return None
    if len(iops) != 1 or len(spacing) != 2:
        return None
    iop = np.array(iops.pop(), float)
    row, col = iop[:3], iop[3:]              # row: direction along a row (columns increase)
    normal = np.cross(row, col)
    steps = np.diff(np.asarray(positions, float))
    dz = float(np.median(steps)) if len(steps) else 1.0
    if not np.isfinite(normal).all() or np.linalg.norm(normal) < 0.5 or dz <= 0:
        return None
    affine = np.eye(4)
    affine[:3, 0] = col * spacing[0]        # stored axis 0: rows (down the image)
    affine[:3, 1] = row * spacing[1]        # stored axis 1: columns
    affine[:3, 2] = normal * dz
    affine[:2] *= -1                          # LPS -> RAS
    return affine

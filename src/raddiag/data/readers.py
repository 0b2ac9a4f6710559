"""Readers: any supported file (or DICOM series) -> ``[S, H, W]`` float32 slices.

Formats: NIfTI (.nii, .nii.gz), NPY ``[H, W, D]`` (the release format), PNG / JPEG,
DICOM files and series folders, NPZ (MedMNIST). RGB is converted to grey.
Every failure raises :class:`ScanError` naming the file and the reason.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from raddiag.data.case import Scan
from raddiag.data.errors import ScanError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"}


def read_scan(scan: Scan) -> np.ndarray:
    """Read all files of a scan into ``[S, H, W]`` float32 (S = 1 for a 2D image)."""
    if not scan.paths:
        raise ScanError("<scan>", "scan has no file paths")
    if len(scan.paths) == 1:
        return read_file(scan.paths[0])
    slices = [read_file(p) for p in scan.paths]
    shapes = {s.shape[1:] for s in slices}
    if len(shapes) != 1:
        raise ScanError(scan.paths[0], f"the files of one scan have different slice shapes {sorted(shapes)}")
    return np.concatenate(slices, axis=0)


def read_file(path: str | Path) -> np.ndarray:
    path = Path(path)
    if not path.exists():
        raise ScanError(path, "file does not exist")
    name = path.name.lower()
    try:
        if name.endswith(".npy"):
            return _npy(path)
        if name.endswith((".nii", ".nii.gz")):
            return _nifti(path)
        if path.suffix.lower() in IMAGE_SUFFIXES:
            return _image(path)
    except ScanError:
        raise
    except Exception as exc:  # corrupt / truncated files: name the file and the reason
        raise ScanError(path, f"cannot be read ({type(exc).__name__}: {exc})") from None
    raise ScanError(path, f"unsupported file type {path.suffix!r}")


def _as_slices(arr: np.ndarray, path: Path, hwd: bool) -> np.ndarray:
    """2D -> [1, H, W]; 3D -> [S, H, W] (from [H, W, D] when hwd)."""
    arr = np.asarray(arr)
    if arr.size == 0:
        raise ScanError(path, f"empty array of shape {arr.shape}")
    if arr.ndim == 2:
        return arr[None].astype(np.float32)
    if arr.ndim == 3:
        if hwd:
            if arr.shape[-1] in (3, 4) and _channels_equal(arr):
                return arr[..., :1].transpose(2, 0, 1).astype(np.float32)  # grey stored as RGB
            return arr.transpose(2, 0, 1).astype(np.float32)
        return arr.astype(np.float32)
    raise ScanError(path, f"expected a 2D or 3D array, got shape {arr.shape}")


def _channels_equal(arr: np.ndarray) -> bool:
    c = arr.shape[-1]
    return all(np.array_equal(arr[..., 0], arr[..., i]) for i in range(1, min(c, 3)))


def _npy(path: Path) -> np.ndarray:
    return _as_slices(np.load(path, allow_pickle=False), path, hwd=True)


def _nifti(path: Path) -> np.ndarray:
    import nibabel as nib

    data = np.asanyarray(nib.load(str(path)).dataobj)
    if data.ndim == 4 and data.shape[-1] == 1:
        data = data[..., 0]
    return _as_slices(data, path, hwd=True)


def _image(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        im.load()
        if im.mode not in ("L", "I", "I;16", "F"):
            im = im.convert("L")
        return _as_slices(np.asarray(im), path, hwd=False)

"""Readers: any supported file (or DICOM series) -> ``[S, H, W]`` float32 slices.

Formats: NIfTI (.nii, .nii.gz), NPY ``[H, W, D]`` (the release format), PNG / JPEG,
DICOM files and series folders (slices sorted by position, rescale slope / intercept
applied, MONOCHROME1 inverted, multi-frame), NPZ arrays (``file.npz#key/index``, used
for MedMNIST). RGB is converted to grey. Every failure raises :class:`ScanError`
naming the file and the reason.
"""
from __future__ import annotations

import functools

from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from raddiag.data.case import Scan
from raddiag.data.errors import ScanError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"}
DICOM_SUFFIXES = {".dcm", ".dicom", ".ima"}
NPZ_SEP = "#"   # "volumes.npz#train_images/5" = train_images[5]
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)   # ITU-R BT.601, as PIL's "L"


def read_scan(scan: Scan) -> np.ndarray:
    """Read all files of a scan into ``[S, H, W]`` float32 (S = 1 for a 2D image).

    Several DICOM files (or one series folder) form one volume sorted by slice position;
    several other files are stacked in the given order.
    """
    if not scan.paths:
        raise ScanError("<scan>", "scan has no file paths")
    if len(scan.paths) == 1:
        return read_file(scan.paths[0])
    for p in scan.paths:
        if not Path(p).exists():
            raise ScanError(p, "file does not exist")
    if all(is_dicom(p) for p in scan.paths):
        return read_dicom_series(scan.paths)
    slices = [read_file(p) for p in scan.paths]
    shapes = {s.shape[1:] for s in slices}
    if len(shapes) != 1:
        raise ScanError(scan.paths[0], f"the files of one scan have different slice shapes {sorted(shapes)}")
    return np.concatenate(slices, axis=0)


def read_file(path: str | Path) -> np.ndarray:
    spath = str(path)
    if NPZ_SEP in spath and spath.split(NPZ_SEP, 1)[0].lower().endswith(".npz"):
        return _npz_item(spath)
    path = Path(path)
    if not path.exists():
        raise ScanError(path, "file does not exist")
    if path.is_dir():
        return read_dicom_series(dicom_files_in(path))
    name = path.name.lower()
    try:
        if path.stat().st_size == 0:
            raise ScanError(path, "file is empty (0 bytes)")
        if name.endswith(".npy"):
            return _npy(path)
        if name.endswith((".nii", ".nii.gz")):
            return _nifti(path)
        if path.suffix.lower() in IMAGE_SUFFIXES:
            return _image(path)
        if is_dicom(path):
            return read_dicom_series([path])
        if name.endswith(".npz"):
            raise ScanError(path, "an .npz scan needs an array key and index: FILE.npz#KEY/INDEX")
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


@functools.lru_cache(maxsize=2)
def _npz_array(path: str, key: str) -> np.ndarray:
    with np.load(path, allow_pickle=False) as z:
        if key not in z.files:
            raise ScanError(path, f"has no array {key!r} (arrays: {', '.join(z.files)})")
        return z[key]


def _npz_item(spec: str) -> np.ndarray:
    """``FILE.npz#KEY/INDEX`` -> one volume ``[S, H, W]`` (MedMNIST stores ``[N, D, H, W]``
    or ``[N, H, W]``; a trailing channel axis of 1 is dropped)."""
    file, _, rest = spec.partition(NPZ_SEP)
    key, _, idx = rest.rpartition("/")
    if not Path(file).exists():
        raise ScanError(file, "file does not exist")
    if not key or not idx.isdigit():
        raise ScanError(spec, "an .npz scan is addressed as FILE.npz#KEY/INDEX")
    try:
        arr = _npz_array(file, key)
    except ScanError:
        raise
    except Exception as exc:
        raise ScanError(file, f"cannot be read ({type(exc).__name__}: {exc})") from None
    i = int(idx)
    if i >= len(arr):
        raise ScanError(spec, f"index {i} is out of range ({key} holds {len(arr)} items)")
    vol = np.asarray(arr[i])
    if vol.ndim == 4 and vol.shape[-1] == 1:
        vol = vol[..., 0]
    if vol.ndim == 3 and vol.shape[-1] == 3 and vol.shape[0] != 3:   # 2D RGB MedMNIST
        vol = vol.astype(np.float32) @ _LUMA
    return _as_slices(vol, Path(spec), hwd=False)


def _nifti(path: Path) -> np.ndarray:
    import nibabel as nib

    img = nib.load(str(path))
    data = np.asanyarray(img.dataobj)
    if data.ndim == 4 and data.shape[-1] == 1:
        data = data[..., 0]
    if data.dtype.names:   # RGB NIfTI (structured dtype)
        data = sum(w * data[c].astype(np.float32) for w, c in zip(_LUMA, "RGB"))
    return _as_slices(data, path, hwd=True)


def _image(path: Path) -> np.ndarray:
    """PNG / JPEG / TIFF; multi-frame images (TIFF pages, animated PNG) give one slice per frame."""
    from PIL import Image, ImageSequence

    frames = []
    with Image.open(path) as im:
        for frame in ImageSequence.Iterator(im):
            frame.load()
            if frame.mode not in ("L", "I", "I;16", "F"):
                frame = frame.convert("L")
            frames.append(np.asarray(frame, dtype=np.float32))
    if len({f.shape for f in frames}) != 1:
        raise ScanError(path, "its frames have different sizes")
    return _as_slices(np.stack(frames) if len(frames) > 1 else frames[0], path, hwd=False)


# -- DICOM ------------------------------------------------------------------------
def is_dicom(path: str | Path) -> bool:
    """True for a .dcm/.dicom/.ima file or any file with the DICOM preamble ("DICM" at byte 128)."""
    path = Path(path)
    if path.suffix.lower() in DICOM_SUFFIXES:
        return True
    if not path.is_file() or path.suffix.lower() in IMAGE_SUFFIXES | {".npy", ".npz", ".nii", ".gz", ".json"}:
        return False
    try:
        with path.open("rb") as f:
            f.seek(128)
            return f.read(4) == b"DICM"
    except OSError:
        return False


def dicom_files_in(folder: str | Path) -> list[Path]:
    """The DICOM files directly in ``folder`` (sorted by name); an error if there are none."""
    folder = Path(folder)
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.name != "DICOMDIR" and is_dicom(p))
    if not files:
        raise ScanError(folder, "folder holds no DICOM files (.dcm or files with the DICM preamble)")
    return files


def read_dicom_header(path: str | Path):
    """Header only (no pixels); ScanError if the file is not readable DICOM."""
    import pydicom

    try:
        return pydicom.dcmread(str(path), stop_before_pixels=True)
    except Exception as exc:
        raise ScanError(path, f"not a readable DICOM file ({type(exc).__name__}: {exc})") from None


def _slice_position(ds) -> Optional[float]:
    """ImagePositionPatient projected on the slice normal (row x column direction cosines)."""
    ipp, iop = getattr(ds, "ImagePositionPatient", None), getattr(ds, "ImageOrientationPatient", None)
    if ipp is None or iop is None or len(ipp) != 3 or len(iop) != 6:
        return None
    normal = np.cross(np.asarray(iop[:3], float), np.asarray(iop[3:], float))
    return float(np.dot(normal, np.asarray(ipp, float)))


def _rescale(ds) -> tuple[float, float]:
    """RescaleSlope / RescaleIntercept, top level or (enhanced multi-frame) in the shared groups."""
    slope, inter = getattr(ds, "RescaleSlope", None), getattr(ds, "RescaleIntercept", None)
    if slope is None and "SharedFunctionalGroupsSequence" in ds:
        shared = ds.SharedFunctionalGroupsSequence[0]
        if "PixelValueTransformationSequence" in shared:
            pvt = shared.PixelValueTransformationSequence[0]
            slope, inter = getattr(pvt, "RescaleSlope", None), getattr(pvt, "RescaleIntercept", None)
    return float(slope if slope is not None else 1.0), float(inter if inter is not None else 0.0)


def _dicom_pixels(path: Path) -> tuple[np.ndarray, object]:
    """One DICOM file -> ([frames, H, W] float32 in modality units, dataset)."""
    import pydicom

    try:
        ds = pydicom.dcmread(str(path))
    except Exception as exc:
        raise ScanError(path, f"not a readable DICOM file ({type(exc).__name__}: {exc})") from None
    if "PixelData" not in ds:
        raise ScanError(path, "DICOM file has no pixel data")
    try:
        arr = ds.pixel_array
    except Exception as exc:
        ts = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
        tsname = getattr(ts, "name", ts)
        raise ScanError(path, f"DICOM pixel data cannot be decoded (transfer syntax {tsname}; "
                              f"{type(exc).__name__}: {exc})") from None
    arr = np.asarray(arr)
    samples = int(getattr(ds, "SamplesPerPixel", 1))
    frames = int(getattr(ds, "NumberOfFrames", 1) or 1)
    if samples > 1:   # colour (pydicom returns RGB, YBR converted) -> grey
        arr = arr[..., :3].astype(np.float32) @ _LUMA
    arr = arr.astype(np.float32)
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3 or (frames > 1 and arr.shape[0] != frames) or arr.size == 0:
        raise ScanError(path, f"unexpected DICOM pixel array shape {arr.shape}")
    if samples == 1:
        slope, inter = _rescale(ds)
        arr = arr * slope + inter
    return arr, ds


def read_dicom_series(paths: Sequence[str | Path]) -> np.ndarray:
    """DICOM files of one series -> ``[S, H, W]`` float32, slices sorted along the slice normal
    (fallback InstanceNumber, then file name). A single multi-frame file keeps its frame order."""
    paths = [Path(p) for p in paths]
    items = []
    for p in paths:
        if not p.exists():
            raise ScanError(p, "file does not exist")
        if p.stat().st_size == 0:
            raise ScanError(p, "file is empty (0 bytes)")
        arr, ds = _dicom_pixels(p)
        items.append((arr, ds, p))
    uids = {str(getattr(ds, "SeriesInstanceUID", "")) for _, ds, _ in items}
    if len(uids) > 1:
        raise ScanError(paths[0].parent, f"files belong to {len(uids)} different DICOM series; "
                                         "give one series per scan (raddiag.data.discover groups them)")
    if len(items) > 1:
        pos = [_slice_position(ds) for _, ds, _ in items]
        if all(p is not None for p in pos):
            keys = pos
        else:
            inst = [getattr(ds, "InstanceNumber", None) for _, ds, _ in items]
            keys = [int(i) if i is not None else n for n, i in enumerate(inst)]
        items = [it for _, it in sorted(zip(keys, items), key=lambda t: (t[0], str(t[1][2])))]
    shapes = {a.shape[1:] for a, _, _ in items}
    if len(shapes) != 1:
        raise ScanError(paths[0], f"the slices of one DICOM series have different shapes {sorted(shapes)}")
    vol = np.concatenate([a for a, _, _ in items], axis=0)
    if str(getattr(items[0][1], "PhotometricInterpretation", "")).upper() == "MONOCHROME1":
        vol = vol.max() + vol.min() - vol   # MONOCHROME1: high values are dark; invert the whole series
    return vol


def dicom_modality(path: str | Path) -> str:
    """Canonical modality of a DICOM file from its ``Modality`` tag."""
    from raddiag.data.case import canonical_modality

    ds = read_dicom_header(path)
    tag = getattr(ds, "Modality", None)
    if not tag:
        raise ScanError(path, "DICOM file has no Modality tag; give the modality explicitly")
    try:
        return canonical_modality(str(tag))
    except ValueError as exc:
        raise ScanError(path, str(exc)) from None


__all__ = ["read_scan", "read_file", "read_dicom_series", "dicom_files_in", "dicom_modality",
           "read_dicom_header", "is_dicom", "IMAGE_SUFFIXES", "DICOM_SUFFIXES", "NPZ_SEP"]

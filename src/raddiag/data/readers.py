"""Readers: any supported file (or DICOM series) -> ``[S, H, W]`` float32 slices.

Formats: NIfTI (.nii, .nii.gz), NPY ``[H, W, D]`` (the release format), PNG / JPEG / TIFF,
DICOM files and series folders (slices sorted by position, rescale slope / intercept
applied, MONOCHROME1 inverted, multi-frame), NPZ arrays (``file.npz#key/index``, used
for MedMNIST). RGB is converted to grey. Every failure raises :class:`ScanError`
naming the file and the reason. DICOM is read by :mod:`raddiag.data.dicom`, PNG / JPEG / TIFF
by :mod:`raddiag.data.images`; this module chooses the reader and reads NIfTI, NPY and NPZ.

:func:`open_scan` / :func:`open_file` read the header only, check it against the size bound
(:class:`Limits`: ``max_pixels`` per slice, ``max_voxels`` per scan; over it,
:class:`InputTooLarge` before any pixel is decoded) and return a :class:`Volume` whose slices
are decoded one at a time (NIfTI array proxies, NPY memory maps, one DICOM file or frame, one
image frame). :func:`read_scan` / :func:`read_file` return the whole array.
"""
from __future__ import annotations

import functools
import gzip
import struct
import zipfile
from contextlib import ExitStack
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from raddiag.data.case import Scan
from raddiag.data.errors import InputTooLarge, ScanError
from raddiag.data.dicom import (DICOM_SUFFIXES, dicom_files_in, dicom_modality, is_dicom, open_dicom_series,
                                 read_dicom_header, read_dicom_series)
from raddiag.data.images import IMAGE_SUFFIXES, open_image
from raddiag.data.orientation import nifti_orientation
from raddiag.data.volume import (DEFAULT_LIMITS, LUMA, ClampedFile, Limits, Volume, concat_volumes,
                                 reoriented_volume)

NPZ_SEP = "#"   # "volumes.npz#train_images/5" = train_images[5]


def read_scan(scan: Scan, limits: Limits = DEFAULT_LIMITS) -> np.ndarray:
    """Read all files of a scan into ``[S, H, W]`` float32 (S = 1 for a 2D image)."""
    with open_scan(scan, limits) as vol:
        return vol.array()


def read_file(path: str | Path, limits: Limits = DEFAULT_LIMITS) -> np.ndarray:
    with open_file(path, limits) as vol:
        return vol.array()


def open_scan(scan: Scan, limits: Limits = DEFAULT_LIMITS) -> Volume:
    """The scan's :class:`Volume` from its headers. Several DICOM files (or one series folder)
    form one volume sorted by slice position; several other files are stacked in the given order."""
    if not scan.paths:
        raise ScanError("<scan>", "scan has no file paths")
    if len(scan.paths) == 1:
        return open_file(scan.paths[0], limits, scan.plane)
    for p in scan.paths:
        if not Path(p).exists():
            raise ScanError(p, "file does not exist")
    if all(is_dicom(p) for p in scan.paths):
        return open_dicom_series(scan.paths, limits, scan.plane)
    with ExitStack() as stack:
        vols = [stack.enter_context(open_file(p, limits)) for p in scan.paths]
        vol = concat_volumes(vols, scan.paths[0])
        limits.check(scan.paths[0], vol.shape)
        stack.pop_all()
        return vol


def open_file(path: str | Path, limits: Limits = DEFAULT_LIMITS, plane: Optional[str] = None) -> Volume:
    """One file (or DICOM series folder); ``plane``: the scan's declared plane, which chooses the
    slice axis of a volume with a known orientation (:mod:`raddiag.data.orientation`)."""
    spath = str(path)
    if NPZ_SEP in spath and spath.split(NPZ_SEP, 1)[0].lower().endswith(".npz"):
        return _npz_item(spath, limits)
    path = Path(path)
    if not path.exists():
        raise ScanError(path, "file does not exist")
    if path.is_dir():
        return open_dicom_series(dicom_files_in(path), limits, plane)
    name = path.name.lower()
    try:
        if path.stat().st_size == 0:
            raise ScanError(path, "file is empty (0 bytes)")
        if name.endswith(".npy"):
            return _npy(path, limits)
        if name.endswith((".nii", ".nii.gz")):
            return _nifti(path, limits, plane)
        if path.suffix.lower() in IMAGE_SUFFIXES:
            return open_image(path, limits)
        if is_dicom(path):
            return open_dicom_series([path], limits, plane)
        if name.endswith(".npz"):
            raise ScanError(path, "an .npz scan needs an array key and index: FILE.npz#KEY/INDEX")
    except ScanError:
        raise
    except Exception as exc:  # corrupt / truncated files: name the file and the reason
        raise ScanError(path, read_failure(exc)) from None
    raise ScanError(path, f"unsupported file type {path.suffix!r}")


def read_failure(exc: Exception) -> str:
    """The reason a file could not be read, in words where Python's would repeat the file name."""
    from PIL import UnidentifiedImageError

    if isinstance(exc, FileNotFoundError):
        return "cannot be read: the file was removed or renamed while it was read"
    if isinstance(exc, UnidentifiedImageError):
        return ("cannot be read: not an image Pillow can decode (a damaged file, or another type under an "
                "image's extension)")
    return f"cannot be read ({type(exc).__name__}: {exc})"


def _check_dtype(path, dtype: np.dtype) -> None:
    if dtype.hasobject:
        raise ScanError(path, "holds Python objects, not numbers")
    if dtype.kind == "c":
        raise ScanError(path, f"holds complex values ({dtype}); save the magnitude or the real part explicitly")
    if dtype.kind not in "biuf":
        raise ScanError(path, f"holds {dtype} values, not numbers")


def dims_reason(shape: Sequence[int]) -> str:
    """Why an array of ``shape`` is no scan, and, for 4 dimensions or more (a time series, several
    echoes or volumes in one NIfTI), how to give one volume of it."""
    shape = tuple(int(s) for s in shape)
    reason = f"expected a 2D or 3D array, got shape {shape}"
    if len(shape) > 3:
        reason += (f" ({len(shape)}D: several volumes in one file, e.g. a time series); give one 3D volume per "
                   "scan, e.g. the first saved on its own (nibabel: img.slicer[..., 0])")
    return reason


def _hwd_shape(path, shape: Sequence[int]) -> tuple[int, int, int]:
    """[H, W] -> [1, H, W]; [H, W, D] -> [D, H, W]; anything else is an error."""
    shape = tuple(int(s) for s in shape)
    if len(shape) not in (2, 3):
        raise ScanError(path, dims_reason(shape))
    if 0 in shape:
        raise ScanError(path, f"empty array of shape {shape}")
    return (1, *shape) if len(shape) == 2 else (shape[2], shape[0], shape[1])


def _grey_stored_as_rgb(arr) -> bool:
    """[H, W, 3 or 4] whose colour channels are equal (and whose 4th plane, if any, is a constant
    alpha): one grey image, not 3 or 4 slices. A 4th plane that varies is a slice, not alpha."""
    if arr.ndim != 3 or arr.shape[-1] not in (3, 4):
        return False
    if arr.shape[-1] == 4:
        alpha = np.asarray(arr[..., 3])
        if not np.all(alpha == alpha.flat[0]):
            return False
    return all(np.array_equal(arr[..., 0], arr[..., i]) for i in range(1, 3))


def _hwd_volume(path, arr, limits: Limits, stack: Optional[ExitStack] = None) -> Volume:
    """A volume over ``arr`` (memory map or array proxy) stored ``[H, W]`` or ``[H, W, D]``."""
    shape = _hwd_shape(path, arr.shape)
    limits.check(path, shape)
    if arr.ndim == 2:
        return Volume(path, shape, lambda k: arr[...], stack=stack)
    if _grey_stored_as_rgb(arr):
        return Volume(path, (1, *shape[1:]), lambda k: arr[..., 0], stack=stack)
    return Volume(path, shape, lambda k: arr[:, :, k], stack=stack)


def _npy_header(f, path) -> tuple[tuple, bool, np.dtype]:
    fmt = np.lib.format
    version = fmt.read_magic(f)
    readers = {(1, 0): fmt.read_array_header_1_0, (2, 0): fmt.read_array_header_2_0}
    if version not in readers:
        raise ScanError(path, f"unsupported .npy format version {version}")
    return readers[version](f)


def _npy(path: Path, limits: Limits) -> Volume:
    """Header, bound and size checks, then a memory map: slices are copied out one at a time."""
    with ClampedFile(path) as f:
        shape, fortran, dtype = _npy_header(f, path)
        offset = f.tell()
    _check_dtype(path, dtype)
    limits.check(path, _hwd_shape(path, shape))
    need, have = int(np.prod(shape, dtype=object)) * dtype.itemsize, path.stat().st_size - offset
    if need > have:
        raise ScanError(path, f"truncated: the header declares {need:,} bytes of data, the file holds {have:,}")
    mm = np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=tuple(shape), order="F" if fortran else "C")
    return _hwd_volume(path, mm, limits)


class _HeaderGzip(gzip.GzipFile):
    """While ``header_read``, ``read(n)`` decompresses 1 MiB at a time: a hostile length in the
    header (an extension of 2 GB) then costs what the stream holds, not ``n`` allocated upfront."""

    header_read = True

    def read(self, size: Optional[int] = -1) -> bytes:
        if not self.header_read or size is None or size <= 1 << 20:
            return super().read(size)
        parts = []
        while size > 0 and (part := super().read(min(size, 1 << 20))):
            parts.append(part)
            size -= len(part)
        return b"".join(parts)


def _nifti(path: Path, limits: Limits, plane: Optional[str] = None) -> Volume:
    stack = ExitStack()
    try:
        return _nifti_volume(path, limits, stack, plane)
    except BaseException:
        stack.close()
        raise


def _nifti_volume(path: Path, limits: Limits, stack: ExitStack, plane: Optional[str] = None) -> Volume:
    """The header only; the file stays open (in ``stack``): a .gz is decompressed forward once,
    slice by slice. Truncation of a .nii is found from the header and the file size. A 3D
    volume whose header declares its orientation is reoriented (:func:`~raddiag.data.volume.reoriented_volume`)."""
    import nibabel as nib

    f = stack.enter_context(ClampedFile(path))
    if path.name.lower().endswith(".gz"):
        f = stack.enter_context(_HeaderGzip(fileobj=f))
    head = f.read(4)
    f.seek(0)
    kind = nib.Nifti2Image if 540 in struct.unpack("<i", head) + struct.unpack(">i", head) else nib.Nifti1Image
    img = kind.from_file_map({"image": nib.FileHolder(filename=str(path), fileobj=f)})
    f.header_read = False   # slices are read whole: their size is checked against the limits
    proxy = img.dataobj
    shape = tuple(int(s) for s in img.shape)
    if len(shape) == 4 and shape[-1] == 1:
        shape = shape[:3]
    dtype = img.get_data_dtype()
    if not dtype.names:   # RGB NIfTI is a structured dtype, greyed below
        _check_dtype(path, dtype)
    limits.check(path, _hwd_shape(path, shape))
    if not path.name.lower().endswith(".gz"):
        need = int(np.prod(img.shape, dtype=object)) * dtype.itemsize
        have = max(0, path.stat().st_size - int(proxy.offset))
        if need > have:
            raise ScanError(path, f"truncated: the header declares {need:,} bytes of data from byte "
                                  f"{int(proxy.offset):,} (vox_offset), the file holds {have:,}")

    class _Slicer:   # [H, W(, D)] view over the proxy that drops a trailing axis of 1, greys RGB
        def __init__(self):
            self.shape, self.ndim = shape, len(shape)

        def __getitem__(self, key):
            key = key if isinstance(key, tuple) else (key,)
            data = np.asarray(proxy[key + (0,)] if len(img.shape) == 4 else proxy[key])
            if dtype.names:   # RGB NIfTI (structured dtype)
                data = sum(w * data[c].astype(np.float32) for w, c in zip(LUMA, "RGB"))
            return data

    slicer = _Slicer()
    affine = nifti_orientation(img)
    if affine is not None and len(shape) == 3 and min(shape) > 1:
        return reoriented_volume(path, shape, lambda a, b: slicer[:, :, a:b], affine, plane, limits, stack=stack)
    return _hwd_volume(path, slicer, limits, stack)


# -- NPZ (MedMNIST) -----------------------------------------------------------------
def _npz_member_header(file: str, key: str, limits: Limits) -> tuple:
    """Shape of array ``key`` of an .npz from its .npy header (nothing decoded); checks its
    dtype, the bound (the whole array is decoded and cached) and the size the zip records."""
    with zipfile.ZipFile(file) as z:
        name = f"{key}.npy"
        if name not in z.namelist():
            keys = [n[:-4] for n in z.namelist() if n.endswith(".npy")]
            raise ScanError(file, f"has no array {key!r} (arrays: {', '.join(keys)})")
        info = z.getinfo(name)
        with z.open(info) as f:
            shape, _, dtype = _npy_header(f, file)
            header = f.tell()
    _check_dtype(file, dtype)
    if len(shape) < 2:
        raise ScanError(file, f"array {key!r} of shape {tuple(shape)} holds no images")
    limits.check(file, shape[1:])
    limits.check(file, (int(np.prod(shape, dtype=object)), 1, 1))   # the array is decoded whole, once
    need = int(np.prod(shape, dtype=object)) * dtype.itemsize
    if need > info.file_size - header:
        raise ScanError(file, f"array {key!r} is truncated: its header declares {need:,} bytes, "
                              f"the archive holds {info.file_size - header:,}")
    return tuple(shape)


@functools.lru_cache(maxsize=2)
def _npz_array(path: str, key: str, stamp: tuple) -> np.ndarray:
    """The whole array, decoded once for all its items (``stamp``: the file's mtime and size, so
    that a rewritten file is read again)."""
    with np.load(path, allow_pickle=False) as z:
        return z[key]


def _npz_item(spec: str, limits: Limits) -> Volume:
    """``FILE.npz#KEY/INDEX`` -> one volume ``[S, H, W]`` (MedMNIST stores ``[N, D, H, W]``
    or ``[N, H, W]``; a trailing channel axis of 1 is dropped)."""
    file, _, rest = spec.partition(NPZ_SEP)
    key, _, idx = rest.rpartition("/")
    if not Path(file).exists():
        raise ScanError(file, "file does not exist")
    if not key or not idx.isdigit():
        raise ScanError(spec, "an .npz scan is addressed as FILE.npz#KEY/INDEX")
    try:
        shape = _npz_member_header(file, key, limits)
        i = int(idx)
        if i >= shape[0]:
            raise ScanError(spec, f"index {i} is out of range ({key} holds {shape[0]} items)")
        st = Path(file).stat()
        vol = np.asarray(_npz_array(file, key, (st.st_mtime_ns, st.st_size))[i])
    except ScanError:
        raise
    except Exception as exc:
        raise ScanError(file, read_failure(exc)) from None
    if vol.ndim == 4 and vol.shape[-1] == 1:
        vol = vol[..., 0]
    if vol.ndim == 3 and vol.shape[-1] == 3 and vol.shape[0] != 3:   # 2D RGB MedMNIST
        vol = vol.astype(np.float32) @ LUMA
    if vol.ndim == 2:
        vol = vol[None]
    if vol.ndim != 3:
        raise ScanError(spec, dims_reason(vol.shape))
    if 0 in vol.shape:
        raise ScanError(spec, f"empty array of shape {vol.shape}")
    return Volume(spec, vol.shape, lambda k: vol[k])


__all__ = ["read_scan", "read_file", "open_scan", "open_file", "open_dicom_series", "Limits", "DEFAULT_LIMITS",
           "InputTooLarge", "Volume", "read_dicom_series", "dicom_files_in", "dicom_modality",
           "read_dicom_header", "is_dicom", "IMAGE_SUFFIXES", "DICOM_SUFFIXES", "NPZ_SEP"]

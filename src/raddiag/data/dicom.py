"""DICOM: files and series folders -> a :class:`~raddiag.data.volume.Volume` from the headers
alone. Slices are sorted by position along the slice normal (fallback InstanceNumber); the
modality transform is applied (RescaleSlope / Intercept, per frame for enhanced multi-frame, or a
Modality LUT); PALETTE COLOR and RGB are made grey; MONOCHROME1 is inverted; one file or frame
is decoded at a time. Every failure raises :class:`~raddiag.data.errors.ScanError` naming the file."""
from __future__ import annotations

import os
import struct
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from raddiag.data.errors import ScanError, SkippedFilesWarning, skipped_text, warn_input
from raddiag.data.images import IMAGE_SUFFIXES
from raddiag.data.orientation import dicom_affine
from raddiag.data.volume import DEFAULT_LIMITS, LUMA, ClampedFile, Limits, Volume, reoriented_volume

DICOM_SUFFIXES = {".dcm", ".dicom", ".ima"}
_F32_MAX = float(np.finfo(np.float32).max)


def is_dicom(path: str | Path) -> bool:
    """True for a .dcm/.dicom/.ima file, any file with the DICOM preamble ("DICM" at byte 128), and
    a bare data set without preamble or file meta (older exports, ACR-NEMA style: :func:`_bare`)."""
    path = Path(path)
    if path.suffix.lower() in DICOM_SUFFIXES:
        return True
    if not path.is_file() or path.suffix.lower() in IMAGE_SUFFIXES | {".npy", ".npz", ".nii", ".gz", ".json"}:
        return False
    try:
        with path.open("rb") as f:
            head = f.read(132)
    except OSError:
        return False
    return head[128:132] == b"DICM" or _bare(head)


def _bare(head: bytes) -> bool:
    """Whether a file starting with ``head`` is a bare little-endian data set: its first element
    is of group 0008 (identifying) with an explicit VR of two capitals or an implicit length
    below 1 KiB, as an old export without preamble starts ((0008,0005), (0008,0016) ...)."""
    if len(head) < 8 or head[:2] != b"\x08\x00" or head[3] != 0:
        return False
    vr = head[4:6]
    return (vr.isalpha() and vr.isupper()) or struct.unpack("<L", head[4:8])[0] < 1024


def dicom_files_in(folder: str | Path) -> list[Path]:
    """The DICOM files directly in ``folder`` (sorted by name); an error if there are none. The
    other entries (DICOMDIR, sub-folders, other files) are skipped with a SkippedFilesWarning."""
    folder = Path(folder)
    files, skipped = [], {}
    for p in sorted(folder.iterdir()):
        if p.is_file() and p.name.upper() != "DICOMDIR" and is_dicom(p):
            files.append(p)
        else:
            why = "sub-folder (not searched)" if p.is_dir() else "DICOMDIR or not DICOM"
            skipped.setdefault(why, []).append(p.name)
    if not files:
        raise ScanError(folder, "folder holds no DICOM files (.dcm or files with the DICM preamble)"
                                + (f"; it holds {skipped_text(skipped)}" if skipped else ""))
    if skipped:
        warn_input(f"{folder}: DICOM series folder: skipped {skipped_text(skipped)}", SkippedFilesWarning,
                   stacklevel=2)
    return files


_KEPT: ContextVar[Optional[dict]] = ContextVar("raddiag_dicom_headers", default=None)


@contextmanager
def headers_kept():
    """Within it, each DICOM file's header is read once (keyed by path, size and modification
    time): a folder grouped into series (:func:`raddiag.data.discover.declared_scans`) and then read
    series by series parsed every header twice, 2-3 times the cost of reading the folder. The
    headers are dropped at its end, so memory is that of the headers the reader holds anyway."""
    token = _KEPT.set({} if _KEPT.get() is None else _KEPT.get())
    try:
        yield
    finally:
        _KEPT.reset(token)


def read_dicom_header(path: str | Path):
    """Header only (no pixels); ScanError if the file is not readable DICOM. Inside
    :func:`headers_kept`, a file read already gives its header again."""
    kept = _KEPT.get()
    if kept is None:
        return _read_header(path)
    try:
        st = os.stat(path)
    except OSError:
        return _read_header(path)   # its error names the file
    key = (os.fspath(path), st.st_size, st.st_mtime_ns)
    if key not in kept:
        kept[key] = _read_header(path)
    return kept[key]


def _read_header(path: str | Path):
    import pydicom

    try:
        with ClampedFile(path) as f:
            if f.size == 0:
                raise ScanError(path, "file is empty (0 bytes)")
            bare = _bare(f.read(8))
            f.seek(0)
            ds = pydicom.dcmread(f, stop_before_pixels=True, force=bare)
            ds.raddiag_pixel_bytes = _stored_pixel_bytes(f, ds)
            return ds
    except ScanError:
        raise
    except Exception as exc:
        raise ScanError(path, f"not a readable DICOM file ({type(exc).__name__}: {exc})") from None


def _stored_pixel_bytes(f, ds) -> Optional[int]:
    """The length of the (native, uncompressed) pixel data element that ``f`` stands at after a
    ``stop_before_pixels`` read (its tag and length are read, not its value); None when the pixel
    data is encapsulated (compressed), deflated, of undefined length or absent."""
    ts = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    if ts is not None and (ts.is_encapsulated or ts.is_deflated):
        return None
    implicit, little = ds.original_encoding
    if implicit is None:
        return None
    head = f.read(8 if implicit else 12)
    if len(head) < (8 if implicit else 12):
        return None
    end = "<" if little else ">"
    tag = struct.unpack(f"{end}HH", head[:4])
    length = struct.unpack(f"{end}L", head[4:8] if implicit else head[8:12])[0]
    if tag not in ((0x7FE0, 0x0010), (0x7FE0, 0x0008), (0x7FE0, 0x0009)) or length == 0xFFFFFFFF:
        return None
    return length


def _slice_position(path, ds) -> Optional[float]:
    """ImagePositionPatient projected on the slice normal (row x column direction cosines)."""
    try:
        ipp, iop = getattr(ds, "ImagePositionPatient", None), getattr(ds, "ImageOrientationPatient", None)
        if ipp is None or iop is None or len(ipp) != 3 or len(iop) != 6:
            return None
        normal = np.cross(np.asarray(iop[:3], float), np.asarray(iop[3:], float))
        return float(np.dot(normal, np.asarray(ipp, float)))
    except (TypeError, ValueError) as exc:
        raise ScanError(path, f"ImagePositionPatient / ImageOrientationPatient is not numbers ({exc})") from None


def _instance_number(path, ds, default: int) -> int:
    try:
        number = getattr(ds, "InstanceNumber", None)
        return int(number) if number is not None else default
    except (TypeError, ValueError) as exc:
        raise ScanError(path, f"InstanceNumber is not a number ({exc})") from None


def _rescale(path, ds, frame: int = 0) -> tuple[float, float]:
    """RescaleSlope / RescaleIntercept, top level or (enhanced multi-frame) in frame ``frame``'s
    per-frame groups or in the shared groups; a slope of 0 (every pixel the intercept), a
    non-finite or non-numeric one is an error."""
    slope, inter = getattr(ds, "RescaleSlope", None), getattr(ds, "RescaleIntercept", None)
    per_frame = list(ds.get("PerFrameFunctionalGroupsSequence") or [])[frame: frame + 1]
    shared = list(ds.get("SharedFunctionalGroupsSequence") or [])[:1]
    for group in per_frame + shared if slope is None else []:
        if "PixelValueTransformationSequence" in group:
            pvt = group.PixelValueTransformationSequence[0]
            slope, inter = getattr(pvt, "RescaleSlope", None), getattr(pvt, "RescaleIntercept", None)
            break
    try:
        slope, inter = float(slope if slope is not None else 1.0), float(inter if inter is not None else 0.0)
    except (TypeError, ValueError) as exc:
        raise ScanError(path, f"RescaleSlope / RescaleIntercept is not a number ({exc})") from None
    if not (np.isfinite(slope) and slope != 0 and np.isfinite(inter)):
        raise ScanError(path, f"RescaleSlope {slope:g} is unusable (with RescaleIntercept {inter:g}): "
                              "the slope must be a finite non-zero number")
    return slope, inter


def _dicom_geometry(path: Path, ds, limits: Limits) -> tuple[int, int, int]:
    """(frames, rows, columns) from the header, checked against the bound."""
    try:
        rows, cols = int(ds.Rows), int(ds.Columns)
        frames = int(getattr(ds, "NumberOfFrames", 1) or 1)
    except (AttributeError, TypeError, ValueError) as exc:
        raise ScanError(path, f"DICOM header has no usable Rows / Columns / NumberOfFrames ({exc})") from None
    limits.check(path, (frames, rows, cols))
    if min(frames, rows, cols) < 1:
        raise ScanError(path, f"DICOM header declares an empty image ({frames} x {rows} x {cols})")
    stored = getattr(ds, "raddiag_pixel_bytes", None)
    if stored is not None:   # more data than declared was read silently as the first rows x cols pixels
        bits = int(getattr(ds, "BitsAllocated", 0) or 0) * int(getattr(ds, "SamplesPerPixel", 1) or 1)
        need = (frames * rows * cols * bits + 7) // 8
        if str(getattr(ds, "PhotometricInterpretation", "")).upper() == "YBR_FULL_422":   # 2 samples a pixel
            need = need * 2 // 3
        if bits and stored not in (need, need + need % 2):
            raise ScanError(path, f"the pixel data holds {stored:,} bytes, the header declares {need:,} "
                                  f"({frames} frame(s) x {rows} rows x {cols} columns x {bits} bits): "
                                  f"{'truncated' if stored < need else 'Rows / Columns / NumberOfFrames understate it'}")
    return frames, rows, cols


def _bare_syntax(ds):
    """The transfer syntax of a bare data set (no file meta to name it), from how it was read."""
    from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

    implicit, little = ds.original_encoding
    return ImplicitVRLittleEndian if implicit else ExplicitVRLittleEndian if little else ExplicitVRBigEndian


def _dicom_frame(path: Path, ds, frame: int) -> np.ndarray:
    """Frame ``frame`` of one DICOM file -> [H, W] float32 in modality units (only that frame
    is decoded); ``ds`` is the file's header."""
    from pydicom.pixels import pixel_array

    try:
        with ClampedFile(path) as f:
            ts = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
            arr = pixel_array(f, index=frame, **({} if ts else {"transfer_syntax_uid": _bare_syntax(ds)}))
    except Exception as exc:
        raise ScanError(path, f"DICOM pixel data missing or cannot be decoded (transfer syntax "
                              f"{getattr(ts, 'name', ts)}; {type(exc).__name__}: {exc})") from None
    arr = np.asarray(arr)
    if str(getattr(ds, "PhotometricInterpretation", "")).upper() == "PALETTE COLOR":   # indices -> RGB
        from pydicom.pixels import apply_color_lut

        arr = apply_color_lut(arr, ds)
    if arr.ndim == 3:   # colour (pydicom returns RGB, YBR converted) -> grey
        return arr[..., :3].astype(np.float32) @ LUMA
    if "ModalityLUTSequence" in ds:   # a lookup table instead of RescaleSlope / Intercept
        from pydicom.pixels import apply_modality_lut

        return apply_modality_lut(arr, ds).astype(np.float32)
    slope, inter = _rescale(path, ds, frame)
    if arr.size and max(abs(float(arr.min())), abs(float(arr.max()))) * abs(slope) + abs(inter) > _F32_MAX:
        raise ScanError(path, f"RescaleSlope {slope:g} / RescaleIntercept {inter:g} take the pixel values "
                              "beyond the float32 range (|v| > 3.4e38)")
    return arr.astype(np.float32) * slope + inter


def _check_series(folder, heads) -> None:
    """The slices of one series must lie in one plane (a localizer holds 3), agree on
    MONOCHROME1, which inverts the whole volume, and be all grey or all colour."""
    try:
        iops = [np.asarray(ds.ImageOrientationPatient, float) for ds in heads
                if len(getattr(ds, "ImageOrientationPatient", None) or ()) == 6]
    except (TypeError, ValueError) as exc:
        raise ScanError(folder, f"a slice's ImageOrientationPatient is not 6 numbers ({exc})") from None
    planes = [iop for k, iop in enumerate(iops) if all(np.abs(iop - o).max() > 1e-3 for o in iops[:k])]
    if len(planes) > 1:
        raise ScanError(folder, f"the slices of one DICOM series lie in {len(planes)} different planes "
                                "(ImageOrientationPatient; a localizer?): give one plane per scan")
    photometric = [str(getattr(ds, "PhotometricInterpretation", "")).upper() for ds in heads]
    if len({p == "MONOCHROME1" for p in photometric}) > 1:
        raise ScanError(folder, "some slices of one DICOM series are MONOCHROME1 (inverted) and others not")
    colour = {int(getattr(ds, "SamplesPerPixel", 1) or 1) > 1 or p == "PALETTE COLOR" for ds, p in zip(heads, photometric)}
    if len(colour) > 1:
        raise ScanError(folder, "some slices of one DICOM series are colour (RGB / YBR / PALETTE COLOR) and "
                                "others grey: give the grey slices as one scan")


def _check_order(folder, paths: list[Path], keys: list[float], positioned: bool) -> None:
    """Slices sorted along the normal (or by InstanceNumber: ``keys``) must not share a place: a
    file copied twice or two acquisitions in one series were stacked in file-name order. Refused
    either way (no copy is dropped silently); the message lists the clashing files and says
    whether they are identical copies. A gap along the normal over 1.5 times the usual spacing
    (files missing?) is warned of (InputWarning)."""
    import filecmp

    for a in range(len(keys) - 1):
        if abs(keys[a + 1] - keys[a]) < 1e-3:
            b = a + 1
            while b + 1 < len(keys) and abs(keys[b + 1] - keys[a]) < 1e-3:
                b += 1
            same = all(filecmp.cmp(paths[a], paths[k], shallow=False) for k in range(a + 1, b + 1))
            names = ", ".join(p.name for p in paths[a:b + 1])
            where = f"lie at the same position {keys[a]:g} along the slice normal" if positioned else \
                f"have no position and the same InstanceNumber {keys[a]:g}"
            raise ScanError(folder, f"{b - a + 1} slices of one DICOM series {where} ({names}): "
                                    + ("they are identical copies; remove all but one" if same else "they differ "
                                       "(two acquisitions, time points or b-values in one series?); give one per scan"))
    steps = np.diff(np.asarray(keys, float))
    if positioned and len(steps) > 1 and steps.max() > 1.5 * np.median(steps):
        k = int(steps.argmax())
        warn_input(f"{folder}: a gap of {steps[k]:g} mm between slices {paths[k].name} and {paths[k + 1].name} "
                   f"of one DICOM series, whose slices are {np.median(steps):g} mm apart elsewhere: are files "
                   "missing? The volume is read as if they were evenly spaced", stacklevel=4)


def read_dicom_series(paths: Sequence[str | Path], limits: Limits = DEFAULT_LIMITS) -> np.ndarray:
    with open_dicom_series(paths, limits) as vol:
        return vol.array()


def open_dicom_series(paths: Sequence[str | Path], limits: Limits = DEFAULT_LIMITS,
                      plane: Optional[str] = None) -> Volume:
    """DICOM files of one series -> a :class:`Volume` from the headers alone, slices sorted along
    the slice normal (fallback InstanceNumber, then file name); a single multi-frame file keeps
    its frame order. Pixels are decoded one file (one frame) at a time. A series of single-frame
    files with ImageOrientationPatient / ImagePositionPatient on each is reoriented like a NIfTI
    (:mod:`raddiag.data.orientation`; ``plane``: the declared plane)."""
    paths = [Path(p) for p in paths]
    try:
        return _open_dicom_series(paths, limits, plane)
    except ScanError:
        raise
    except Exception as exc:   # a header value no check foresaw: name the series and the reason
        where = paths[0] if len(paths) == 1 else paths[0].parent
        raise ScanError(where, f"DICOM series cannot be read ({type(exc).__name__}: {exc})") from None


def _check_one_series(paths: list[Path], heads) -> None:
    """Files given as one scan must be one series: files of several are refused, not split (a
    folder is split, one scan a series: :func:`raddiag.data.discover.declared_scans`), with
    what to write in the manifest instead."""
    first: dict[str, Path] = {}
    for p, ds in zip(paths, heads):
        first.setdefault(str(getattr(ds, "SeriesInstanceUID", "")), p)
    if len(first) > 1:
        shown = ", ".join(f"{p.name}: series ...{uid[-12:] or '(none)'}" for uid, p in list(first.items())[:3])
        raise ScanError(paths[0].parent, f"the {len(paths)} DICOM files of this scan belong to {len(first)} "
                                         f"series ({shown}{', ...' if len(first) > 3 else ''}); a scan is one "
                                         "series: in the manifest, give each series as a scan of its own (its "
                                         "files as \"paths\"), or their folder as \"path\" (one scan per "
                                         "series, as predict reads a case folder)")


def _open_dicom_series(paths: list[Path], limits: Limits, plane: Optional[str]) -> Volume:
    heads = []
    for p in paths:
        if not p.exists():
            raise ScanError(p, "file does not exist")
        if p.stat().st_size == 0:
            raise ScanError(p, "file is empty (0 bytes)")
        ds = read_dicom_header(p)
        heads.append((ds, p, _dicom_geometry(p, ds, limits)))
    _check_one_series(paths, [ds for ds, _, _ in heads])
    _check_series(paths[0].parent, [ds for ds, _, _ in heads])
    positioned = False
    if len(heads) > 1:
        pos = [_slice_position(p, ds) for ds, p, _ in heads]
        positioned = all(p is not None for p in pos)
        if not positioned and any(p is not None for p in pos):
            # the series named by its first file: two series of a folder each said (one message hid the other)
            warn_input(f"{paths[0].parent}: {sum(p is None for p in pos)} of {len(pos)} slices of one DICOM "
                       f"series ({min(p.name for p in paths)}, ...) have no ImagePositionPatient / "
                       "ImageOrientationPatient: all are ordered by InstanceNumber instead of by position",
                       stacklevel=3)
        keys = pos if positioned else [_instance_number(p, ds, n) for n, (ds, p, _) in enumerate(heads)]
        order = sorted(range(len(heads)), key=lambda n: (keys[n], str(heads[n][1])))
        heads = [heads[n] for n in order]
        keys = [keys[n] for n in order]
        _check_order(paths[0].parent, [p for _, p, _ in heads], keys, positioned)
        multi = [f"{p.name}: {g[0]} frames" for _, p, g in heads if g[0] > 1]
        if multi:
            raise ScanError(paths[0].parent, f"one DICOM series of {len(heads)} files holds multi-frame files "
                                             f"({', '.join(multi[:3])}), whose frames cannot be placed among the "
                                             "other files: give each multi-frame file as its own scan")
    shapes = {g[1:] for _, _, g in heads}
    if len(shapes) != 1:
        raise ScanError(paths[0], f"the slices of one DICOM series have different shapes {sorted(shapes)}")
    frames = [(ds, p, f) for ds, p, g in heads for f in range(g[0])]
    shape = (len(frames), *shapes.pop())
    limits.check(paths[0] if len(paths) == 1 else paths[0].parent, shape)
    invert = str(getattr(heads[0][0], "PhotometricInterpretation", "")).upper() == "MONOCHROME1"
    frame = lambda k: _dicom_frame(frames[k][1], frames[k][0], frames[k][2])   # noqa: E731
    affine = dicom_affine([ds for ds, _, _ in heads], keys) if positioned and len(frames) == len(heads) else None
    if affine is not None and min(shape) > 1:
        read = lambda a, b: np.stack([frame(k) for k in range(a, b)], axis=-1)   # noqa: E731
        return reoriented_volume(paths[0], (shape[1], shape[2], shape[0]), read, affine, plane, limits, invert=invert)
    return Volume(paths[0], shape, frame, invert=invert)


def dicom_modality(path: str | Path, ds=None, fallback: Optional[str] = None) -> str:
    """Canonical modality of a DICOM file from its ``Modality`` tag (``ds``: its header, read here
    when not given); ``fallback`` (a given modality) where the file has no tag or one naming no
    modality known here (``OT``, ``SC``); without a fallback, a ScanError naming the file."""
    from raddiag.data.case import canonical_modality

    tag = getattr(read_dicom_header(path) if ds is None else ds, "Modality", None)
    if tag:
        try:
            return canonical_modality(str(tag))
        except ValueError as exc:
            if fallback is None:
                raise ScanError(path, str(exc)) from None
            return fallback
    if fallback is None:
        raise ScanError(path, "DICOM file has no Modality tag; pass the modality explicitly")
    return fallback

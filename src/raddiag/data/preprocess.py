"""Preprocessing as in the paper (Section 4.4): each slice resized to size x size
(bilinear), depth resampled uniformly to at most ``depth`` slices (fewer are kept and
padded/masked at load time), intensity optionally windowed, then min-max scaled to
[0, 1] per scan. A 2D image is a scan of depth 1.
"""
from __future__ import annotations

import functools
from typing import Callable, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from raddiag.data.errors import ScanError


# how a windowed scan is scaled to [0, 1] (DataConfig.window_scaling; meta.json's window_scaling)
FIXED, MINMAX = "fixed", "minmax"


def depth_indices(n: int, depth: int) -> np.ndarray:
    """Uniform slice indices: all slices when n <= depth, else floor(arange(0, n, n/depth))[:depth]
    (the release's rule)."""
    if n <= depth:
        return np.arange(n)
    return np.floor(np.arange(0, n, n / depth)).astype(np.int64)[:depth]


def map_key_slice(key: Optional[int], n: int, idx: np.ndarray) -> int:
    """Position of the original key slice among the kept indices (nearest kept slice); -1 if none."""
    if key is None or key < 0:
        return -1
    key = min(int(key), n - 1)
    return int(np.abs(idx - key).argmin())


def resize_slices(vol: np.ndarray | torch.Tensor, size: int) -> torch.Tensor:
    """[S, H, W] -> [S, size, size] float32, bilinear (align_corners=False)."""
    t = torch.as_tensor(np.ascontiguousarray(vol) if isinstance(vol, np.ndarray) else vol, dtype=torch.float32)
    if t.shape[-2:] == (size, size):
        return t
    return F.interpolate(t[:, None], size=(size, size), mode="bilinear", align_corners=False)[:, 0]


# stored dtypes torch widens to float32 itself (the store keeps float16: 4x numpy's speed, exact)
_TORCH_WIDENS = (np.dtype(np.float16), np.dtype(np.float32))


def store_to_input(array: np.ndarray, key: Optional[int], size: int, depth: int) -> tuple[torch.Tensor, int]:
    """A stored scan ``[n, S, S]`` (float16 in a store) as the model's input ``[1, d, size, size]``
    float32 with its key slice: resampled again in depth when deeper than ``depth``, its slices
    resized to ``size``. How training reads a store prepared at another geometry (prepare once at
    256 x 32, train at 64 x 8), and how prediction reads a scan for a run that trained so
    (``DataConfig.stored_geometry``): a new user's predictions differed from evaluate's by up to
    0.116 when prediction resized the file to 64 x 8 at once."""
    idx = depth_indices(array.shape[0], depth)
    arr = np.ascontiguousarray(array[idx])
    if arr.dtype in _TORCH_WIDENS:
        image = resize_slices(torch.from_numpy(arr).to(torch.float32), size)[None]
    else:
        image = resize_slices(np.asarray(arr, dtype=np.float32), size)[None]
    return image, map_key_slice(key, array.shape[0], idx)


def resize_large_slice(sl: np.ndarray, size: int, pixels: Callable = lambda a: a) -> torch.Tensor:
    """One ``[H, W]`` slice (any numeric dtype) -> ``[size, size]`` float32, as
    ``resize_slices(pixels(sl as float32)[None], size)[0]`` would give it, at the memory of the
    output rather than of the input: an 8192 x 8192 16-bit image is never one float32 array.

    Bilinear resizing (align_corners=False, no antialias) reads 2 source rows per output row, and
    PyTorch mixes each row's 2 columns before it mixes the 2 rows. So the rows read (with a row
    either side, so that no rounding of the source position can reach a row left out) are
    converted to float32 a few at a time, ``pixels`` (the per-pixel window / inversion) applied,
    and resized along the width only (height kept: weights 1 and 0, exact); a second call
    resizes that ``[H, size]`` result along the height (width kept). Both calls are
    ``F.interpolate`` with the original sizes, so PyTorch computes the same source positions
    and weights as the one-call path; the result is bit-identical at the sizes measured (256,
    224) and within 2e-7 of the value range elsewhere (the one-call kernel may fuse a
    multiply-add that the two calls round separately)."""
    h, w = sl.shape
    centre = np.floor(np.maximum((np.arange(size) + 0.5) * h / size - 0.5, 0)).astype(np.int64)
    rows = np.unique(np.clip(centre[:, None] + np.arange(-1, 3), 0, h - 1))
    widths = torch.zeros((h, size), dtype=torch.float32)   # rows never read stay 0
    for start in range(0, len(rows), _ROWS_AT_ONCE):
        r = rows[start: start + _ROWS_AT_ONCE]
        part = torch.from_numpy(np.ascontiguousarray(pixels(sl[r].astype(np.float32))))
        widths[r] = _bilinear(part, (len(r), size))
    return _bilinear(widths, (size, size))


def _bilinear(t: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
    return F.interpolate(t[None, None], size=hw, mode="bilinear", align_corners=False)[0, 0]


_ROWS_AT_ONCE = 64   # source rows converted to float32 together by resize_large_slice


def preprocess_volume(
    vol: np.ndarray,
    size: int,
    depth: int,
    window: Optional[Sequence[float]] = None,
    key_slice: Optional[int] = None,
    source="scan",
    scaling: str = FIXED,
) -> tuple[np.ndarray, int]:
    """``[S, H, W]`` raw slices -> (``[d, size, size]`` float32 in [0, 1] with d = min(S, depth),
    key slice index among the kept slices or -1)."""
    from raddiag.data.volume import array_volume

    return preprocess_slices(array_volume(np.asarray(vol), source), size, depth, window, key_slice,
                             scaling=scaling)


def load_scan(scan, size: int, depth: int, window: Optional[Sequence[float]] = None,
              limits=None, profile: Optional[dict] = None, scaling: str = FIXED) -> tuple[np.ndarray, int, int]:
    """Read and preprocess one :class:`~raddiag.data.case.Scan` -> (``[d, size, size]`` float32,
    key slice among the kept slices or -1, original slice count). The header is checked against
    ``limits`` (default :data:`raddiag.data.volume.DEFAULT_LIMITS`) first; then only the kept
    slices are decoded, each resized as it is read, so memory follows the output. The slices
    are in the canonical orientation of the scan's plane when the file declares its orientation
    (:mod:`raddiag.data.orientation`). ``profile``, when given, receives the raw value range
    and the orientation (see :func:`preprocess_slices`)."""
    from raddiag.data.readers import DEFAULT_LIMITS, open_scan

    with open_scan(scan, limits or DEFAULT_LIMITS) as vol:
        key = _checked_key(scan, vol.shape[0], profile)
        out, key = preprocess_slices(vol, size, depth, window, key, profile, scaling)
        return out, key, vol.shape[0]


def _checked_key(scan, n: int, profile: Optional[dict]) -> Optional[int]:
    """What the manifest says of a scan must fit the file. ``is_3d: false`` on a volume is an
    error. A key slice outside its ``n`` slices is dropped, not clamped to the last slice: the
    scan is kept (the key slice only guides key-slice training) and ``profile["note"]`` says why."""
    from raddiag.data.errors import ScanError

    if scan.is_3d is False and n > 1:
        raise ScanError(scan.paths[0] if scan.paths else "<scan>", f"is_3d is false but the file holds {n} slices")
    if scan.key_slice is not None and scan.key_slice >= n:
        add_note(profile, f"key_slice {scan.key_slice} is outside the scan's {n} slice(s) (0..{n - 1}): dropped")
        return None
    return scan.key_slice


def add_note(profile: Optional[dict], text: str) -> None:
    """One more remark on a scan kept as it is (``profile["note"]``; prepare's report lists it)."""
    if profile is not None:
        profile["note"] = f"{profile['note']}; {text}" if profile.get("note") else text


STRETCH_NOTE = 8      # slices whose sides differ more than this: stretched to a square, said


def _content_notes(vol, first: np.ndarray, size: int, profile: Optional[dict]) -> None:
    """Remarks on what a scan holds, kept but unlike a scan: a boolean array (a mask given as an
    image?) and slices far from square (5000 x 3 pixels, stretched to ``size`` x ``size``)."""
    if first.dtype.kind == "b":
        add_note(profile, "a boolean array (a segmentation mask?), read as 0 / 1")
    h, w = vol.shape[1:]
    if max(h, w) >= STRETCH_NOTE * min(h, w):
        add_note(profile, f"slices of {h} x {w} pixels, stretched to {size} x {size} "
                          f"({max(h, w) / min(h, w):.0f}:1 to 1:1)")


_BATCH_BYTES = 8 * 2 ** 20    # raw slices resized together (one interpolate call) up to this size
_LARGE = 16                   # a slice of more than 16 x the output's pixels: resize_large_slice


def preprocess_slices(vol, size: int, depth: int, window: Optional[Sequence[float]] = None,
                      key_slice: Optional[int] = None, profile: Optional[dict] = None,
                      scaling: str = FIXED) -> tuple[np.ndarray, int]:
    """The streaming form of :func:`preprocess_volume` over a :class:`~raddiag.data.volume.Volume`:
    each kept slice is checked (NaN / inf: the first bad slice raises), windowed and resized as
    it is read (integer slices stay integers until :func:`resize_large_slice` has picked the rows
    it reads, when a slice is much larger than the output); min-max scaling follows on the small
    result. Bilinear weights sum to one, so resizing before the (affine) scaling gives the
    scaled-then-resized result. ``profile``, when given, is filled with the kept slices' raw
    ``min`` / ``max`` (before windowing: the data's intensity convention,
    :mod:`raddiag.data.intensity`) and the volume's ``orientation``. With a window, ``scaling``
    :data:`FIXED` maps its ends to 0 and 1 (a given HU, one value in every scan); :data:`MINMAX`
    (data prepared before 2026-12-07) scales each scan over its values left after the clip."""
    n = vol.shape[0]
    idx = depth_indices(n, depth)
    pixels = _pixel_steps(vol, idx, window)
    large = vol.shape[1] * vol.shape[2] > _LARGE * size * size
    out = torch.empty((len(idx), size, size), dtype=torch.float32)
    vmin, vmax, done, batch = np.inf, -np.inf, 0, []
    raw = [np.inf, -np.inf]
    for j, sl in enumerate(vol.slices(idx, native=True)):   # integers stay integers: no float32 frame
        if j == 0:
            _content_notes(vol, sl, size, profile)
        if sl.dtype.kind == "f" and not np.isfinite(sl).all():
            raise ScanError(vol.path, f"contains NaN or infinite values (slice {int(idx[j])})")
        ends = np.array([sl.min(), sl.max()], dtype=np.float32)   # float32 rounding is monotone
        raw = [min(raw[0], float(ends[0])), max(raw[1], float(ends[1]))]
        ends = pixels(ends)   # so are negation and clipping: the extremes of the slice after them
        vmin, vmax = min(vmin, float(ends.min())), max(vmax, float(ends.max()))
        if large:
            out[j] = resize_large_slice(sl, size, pixels)
            continue
        batch.append(pixels(sl.astype(np.float32, copy=False)))
        if j == len(idx) - 1 or sum(b.nbytes for b in batch) >= _BATCH_BYTES:
            out[done: done + len(batch)] = resize_slices(np.stack(batch), size)
            done, batch = done + len(batch), []
    if vmax - vmin < 1e-8:
        raise ScanError(vol.path, f"constant image (every value is {vmin:g}); nothing to learn from")
    if window is not None and scaling == FIXED:
        vmin, vmax = (float(v) for v in window)
    scaled = ((out.double() - vmin) / (vmax - vmin)).clamp_(0.0, 1.0)   # float64: no overflow near 3e38
    if profile is not None:
        profile.update(min=raw[0], max=raw[1], orientation=getattr(vol, "orientation", None))
    return scaled.float().numpy(), map_key_slice(key_slice, n, idx)


def _pixel_steps(vol, idx: np.ndarray, window: Optional[Sequence[float]]) -> Callable:
    """The per-pixel steps of the kept slices ``idx`` of ``vol``: MONOCHROME1 negation and the window."""
    if window is not None and not float(window[1]) > float(window[0]):
        raise ValueError(f"intensity window [{window[0]}, {window[1]}] is empty")
    lo, hi = (float(window[0]), float(window[1])) if window is not None else (None, None)
    if vol.invert and window is not None:
        # MONOCHROME1 shows v as (max + min - v): clip(c - v, lo, hi) = clip(-v, lo - c, hi - c) + c,
        # and min-max scaling ignores the + c; negating never overflows
        c = _inversion_shift(vol, idx)
        lo, hi = lo - c, hi - c
    return functools.partial(_pixels, invert=vol.invert, lo=lo, hi=hi)


def display_slice(scan, index: int, depth: int, window: Optional[Sequence[float]] = None,
                  limits=None, stored_depth: Optional[int] = None) -> np.ndarray:
    """Slice ``index`` of a scan as the model saw it (``index`` among the ``depth`` kept slices; for
    a run trained from a store of ``stored_depth`` slices, the store's slices resampled again, as
    :func:`store_to_input` reads them), at the file's own resolution: ``[H, W]`` float32 in [0, 1],
    windowed, MONOCHROME1 inverted and min-max scaled over the slice (saliency overlays draw on it)."""
    from raddiag.data.readers import DEFAULT_LIMITS, open_scan

    with open_scan(scan, limits or DEFAULT_LIMITS) as vol:
        idx = depth_indices(vol.shape[0], stored_depth or depth)      # the slices read
        steps = _pixel_steps(vol, idx, window)
        if stored_depth:               # 40 slices, a store of 32, a run of 12: not the file's 12
            idx = idx[depth_indices(len(idx), depth)]
        if not 0 <= index < len(idx):
            raise ValueError(f"{vol.path}: slice {index} is not one of its {len(idx)} kept slices")
        sl = steps(next(iter(vol.slices(idx[index: index + 1], native=True))).astype(np.float32))
    lo, hi = float(sl.min()), float(sl.max())
    return ((sl - lo) / (hi - lo) if hi > lo else np.zeros_like(sl)).astype(np.float32)


def _pixels(sl: np.ndarray, invert: bool, lo: Optional[float], hi: Optional[float]) -> np.ndarray:
    """The per-pixel steps before resizing, on float32: MONOCHROME1 negation, the window's clip."""
    if invert:
        sl = -sl
    return np.clip(sl, lo, hi) if lo is not None else sl


def _inversion_shift(vol, idx) -> float:
    """max + min of the kept slices: MONOCHROME1 values v are shown as (max + min - v)."""
    lo, hi = np.inf, -np.inf
    for sl in vol.slices(idx):
        lo, hi = min(lo, float(np.nanmin(sl))), max(hi, float(np.nanmax(sl)))
    return lo + hi

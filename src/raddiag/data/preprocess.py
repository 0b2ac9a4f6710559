"""Preprocessing as in the paper (Section 4.4): each slice resized to size x size
(bilinear), depth resampled uniformly to at most ``depth`` slices (fewer are kept and
padded/masked at load time), intensity optionally windowed, then min-max scaled to
[0, 1] per scan. A 2D image is a scan of depth 1.
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from raddiag.data.errors import ScanError


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


def scale_intensity(vol: np.ndarray, window: Optional[Sequence[float]] = None, source="scan") -> np.ndarray:
    """Window (optional) then min-max to [0, 1]; NaN/inf or constant scans raise ScanError."""
    if not np.isfinite(vol).all():
        raise ScanError(source, "contains NaN or infinite values")
    if window is not None:
        lo, hi = float(window[0]), float(window[1])
        if not hi > lo:
            raise ValueError(f"intensity window [{lo}, {hi}] is empty")
        vol = np.clip(vol, lo, hi)
    vmin, vmax = float(vol.min()), float(vol.max())
    if vmax - vmin < 1e-8:
        raise ScanError(source, f"constant image (every value is {vmin:g}); nothing to learn from")
    return ((vol - vmin) / (vmax - vmin)).astype(np.float32)


def resize_slices(vol: np.ndarray | torch.Tensor, size: int) -> torch.Tensor:
    """[S, H, W] -> [S, size, size] float32, bilinear (align_corners=False)."""
    t = torch.as_tensor(np.ascontiguousarray(vol) if isinstance(vol, np.ndarray) else vol, dtype=torch.float32)
    if t.shape[-2:] == (size, size):
        return t
    return F.interpolate(t[:, None], size=(size, size), mode="bilinear", align_corners=False)[:, 0]


def preprocess_volume(
    vol: np.ndarray,
    size: int,
    depth: int,
    window: Optional[Sequence[float]] = None,
    key_slice: Optional[int] = None,
    source="scan",
) -> tuple[np.ndarray, int]:
    """``[S, H, W]`` raw slices -> (``[d, size, size]`` float32 in [0, 1] with d = min(S, depth),
    key slice index among the kept slices or -1)."""
    if vol.ndim != 3 or 0 in vol.shape:
        raise ScanError(source, f"expected a non-empty [slices, height, width] array, got shape {tuple(vol.shape)}")
    idx = depth_indices(vol.shape[0], depth)
    kept = vol[idx].astype(np.float32, copy=False)
    scaled = scale_intensity(kept, window, source)
    out = resize_slices(scaled, size).clamp_(0.0, 1.0).numpy()
    return out, map_key_slice(key_slice, vol.shape[0], idx)

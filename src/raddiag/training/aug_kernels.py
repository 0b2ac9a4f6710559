"""Augmentation kernels faster than MONAI's transforms, each tested against MONAI on random inputs
(``tests/test_augment_speed.py``, ``tests/test_aug_warp.py``).

:func:`adjust_contrast`: MONAI's ``AdjustContrast`` in numpy (its power 2.5x torch's).

:func:`in_plane_warp`: raddiag's affine and elastic deformation of a scan as one resampling of its
slices in-plane (MONAI's ``Affine`` and ``Resample`` conventions). Why own code: MONAI's
``RandAffine`` and ``Rand3DElastic`` took 1.5 and 2.5 ms a call on a 8 x 64 x 64 scan (issue 29:
the tiny recipe loads between its steps, and augmentation was 1.1 of the 1.4 ms a case cost to
load), each resampling the volume in 3D with trilinear weights; one bilinear resampling of the
slices as channels, its grid built in a few tensor operations, takes 0.15 ms (0.55 ms with the
elastic field's draws and smoothing).

:class:`FastRand3DElastic`: MONAI's random 3D elastic deformation (the release's) with its costly
step done faster: the same draws, the same result up to float rounding. Why own code here:
``Rand3DElastic`` smooths its random offset field with MONAI's ``GaussianFilter``, three depthwise
``conv3d`` calls with a ``(k, 1, 1)``-shaped kernel each, which torch runs on the CPU through its
slow direct 3D convolution: 81 % of the transform's time (14 ms a call on a 3 x 128 x 128 x 1
field, 7 ms on 3 x 8 x 64 x 64; 1 thread). The same zero-padded separable smoothing as one matrix
product per axis (:func:`smooth_separable`, with MONAI's ``gaussian_1d`` kernel: :func:`gaussian_kernel`)
takes 0.7 ms on the latter; every other step (the draws, the grid, the affine, the resampling) is
MONAI's.
"""
from __future__ import annotations

import math
from functools import lru_cache
from typing import Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from monai.transforms import Rand3DElastic
from monai.transforms.utils import create_grid
from monai.utils import fall_back_tuple


def smooth_separable(field: torch.Tensor, sigma: float, truncated: float = 3.0) -> torch.Tensor:
    """``GaussianFilter(field.dim() - 1, sigma, truncated)(field[None])[0]`` for a ``[C, *spatial]``
    field: MONAI's ``erf`` kernel (:func:`gaussian_kernel`) along each spatial axis in turn (the first
    first), zero padding, each pass one matrix product with the banded (Toeplitz) matrix of the
    kernel: 6-16x faster here than torch's 1D convolution of one channel, which is no faster than the
    3D one. In numpy: between two training steps (caches cold from the step) torch's version took
    310-370 us on a 2 x 64 x 64 field, numpy's 70-120 (80 and 22 warm; issue 29). The last two axes
    are multiplied in place of being moved to the end (56 -> 49 us warm at 2 x 64 x 64; the same sums
    to float rounding, 1e-8)."""
    kernel = gaussian_kernel(sigma, truncated)
    if kernel.size == 1 and kernel[0] == 1:              # MONAI skips a unit kernel
        return field
    out, banded = field.detach().cpu().numpy(), {}
    last = out.ndim - 1
    for axis in range(1, out.ndim):
        n = out.shape[axis]
        if n not in banded:                                  # one matrix per length (a square slice: one)
            banded[n] = _banded(kernel, n).T.astype(out.dtype)
        if axis == last:                                     # rows of the last axis: x @ T.T
            out = out @ banded[n]
        elif axis == last - 1:                               # columns of the one before: T @ x
            out = np.matmul(banded[n].T, out)
        else:                                                # a 3D field's first axis
            out = np.moveaxis(np.moveaxis(out, axis, -1) @ banded[n], -1, axis)
    return torch.from_numpy(np.ascontiguousarray(out)).to(field.device)


def gaussian_kernel(sigma: float, truncated: float) -> np.ndarray:
    """MONAI's ``gaussian_1d(sigma, truncated, approx="erf")`` as a float32 array: the Gaussian's mass
    over each unit pixel, ``0.5 (erf(t (x + 1/2)) - erf(t (x - 1/2)))``, ``t = 1 / (sqrt(2) sigma)``,
    ``|x| <= tail``. Why own code: MONAI's takes 60 us in ten small tensor operations, a random sigma
    per scan cannot be cached, and the ``erf`` at the 2 tail + 2 pixel edges here take 4 us (in double
    precision, then float32; within 2e-7 of MONAI's float32, ``tests/test_augment_speed.py``)."""
    if truncated <= 0.0:
        raise ValueError(f"truncated must be positive, got {truncated}.")
    sigma = float(np.float32(sigma))      # MONAI's sigma is a float32 tensor: its tail rounds that
    tail = int(max(sigma * truncated, 0.5) + 0.5)   # (1.9 * 5 is 9.5 in float64, 9.4999999 in float32)
    t = 0.70710678 / abs(sigma)
    edges = np.array([math.erf(t * (x + 0.5)) for x in range(-tail - 1, tail + 1)])
    return np.maximum(0.5 * np.diff(edges), 0.0).astype(np.float32)


def _banded(kernel: np.ndarray, n: int) -> np.ndarray:
    """``T [n, n]`` with ``(x @ T.T)[o] = sum_j kernel[j] x[o + j - pad]`` (zero outside ``x``):
    the centred convolution of a row of ``n`` values, zero-padded."""
    index, outside = _band_index(n, kernel.size)
    out = kernel[index]
    out[outside] = 0.0
    return out


@lru_cache(maxsize=32)
def _band_index(n: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """For :func:`_banded`: the kernel's index at each ``(o, i)`` (clamped) and where it is outside."""
    i = np.arange(n)
    j = i[None, :] - i[:, None] + (k - 1) // 2
    return j.clip(0, k - 1), (j < 0) | (j >= k)


class FastRand3DElastic(Rand3DElastic):
    """``monai.transforms.Rand3DElastic`` with :func:`smooth_separable` in place of its
    ``GaussianFilter`` (MONAI's ``__call__`` otherwise, line for line)."""

    def __call__(self, img, spatial_size=None, mode=None, padding_mode=None, randomize: bool = True):
        sp_size = fall_back_tuple(self.spatial_size if spatial_size is None else spatial_size, img.shape[1:])
        if randomize:
            self.randomize(grid_size=sp_size)
        device = img.device if isinstance(img, torch.Tensor) else self.device
        grid = create_grid(spatial_size=sp_size, device=device, backend="torch")
        if self._do_transform:
            offset = torch.as_tensor(self.rand_offset, device=device)
            grid[:3] += smooth_separable(offset, self.sigma) * self.magnitude
            grid = self.rand_affine_grid(grid=grid)
        return self.resampler(img, grid, mode=mode if mode is not None else self.mode,
                              padding_mode=padding_mode if padding_mode is not None else self.padding_mode)


def adjust_contrast(img: torch.Tensor, gamma: float) -> torch.Tensor:
    """MONAI's ``AdjustContrast(gamma)(img)`` for a float32 CPU tensor, ``((x - min) / (range + 1e-7))
    ** gamma * range + min``, in numpy and in place on a copy. Why own code: numpy's float32 power
    is 2.5x torch's here (40 against 100-125 us at 8 x 64 x 64), and the rest is in place; the same
    values as MONAI's to float rounding (``tests/test_aug_warp.py``, random images and gammas)."""
    x = img.detach().to(torch.float32).numpy().copy()
    low = x.min()
    span = x.max() - low
    x -= low
    x /= span + np.float32(1e-7)
    np.power(x, np.float32(gamma), out=x)
    x *= span
    x += low
    return torch.from_numpy(x)


@lru_cache(maxsize=16)
def _centred(h: int, w: int) -> np.ndarray:
    """Pixel-centre coordinates from the slice's centre, as MONAI's ``create_grid``: ``[2, h * w]``, the
    rows' then the columns', row-major (read-only: cached)."""
    r = np.arange(h, dtype=np.float32)[:, None] - np.float32((h - 1) / 2)
    c = np.arange(w, dtype=np.float32)[None, :] - np.float32((w - 1) / 2)
    q = np.stack(np.broadcast_arrays(r, c)).reshape(2, h * w)
    q.flags.writeable = False
    return q


def in_plane_grid(h: int, w: int, rotate: float = 0.0, scale: Sequence[float] = (1.0, 1.0),
                  shift: Sequence[float] = (0.0, 0.0), displacement: Optional[torch.Tensor] = None) -> torch.Tensor:
    """The ``grid_sample`` grid ``[1, h, w, 2]`` (``align_corners=False``) of an in-plane warp: output
    pixel ``p`` (centred (row, column) pixel coordinates) reads the input at ``A(p + displacement[:, p])``
    with ``A(q) = R(S q + shift)``, ``R`` the rotation by ``rotate`` radians, ``S = diag(scale)``: MONAI's
    ``Affine(rotate_params, scale_params, translate_params)`` (``R @ T @ S``) after its elastic
    ``Resample`` by ``displacement`` ``[2, h, w]`` (pixels). ``A`` and the scaling to ``grid_sample``'s
    ``[-1, 1]`` (x, y) order are one 2 x 2 matrix and an offset: one matrix product over the pixels
    (0.11 -> 0.024 ms at 64 x 64 with a displacement, against the same steps one tensor operation each)."""
    q = _centred(h, w)
    if displacement is not None:
        q = q + displacement.detach().cpu().numpy().reshape(2, h * w)
    cos, sin = math.cos(rotate), math.sin(rotate)
    s0, s1 = float(scale[0]), float(scale[1])
    t0, t1 = float(shift[0]), float(shift[1])
    kx, ky = 2.0 / w, 2.0 / h
    # grid x = kx (sin (s0 r + t0) + cos (s1 c + t1)), grid y = ky (cos (s0 r + t0) - sin (s1 c + t1))
    m = np.array([[kx * sin * s0, kx * cos * s1], [ky * cos * s0, -ky * sin * s1]], dtype=q.dtype)
    b = np.array([[kx * (sin * t0 + cos * t1)], [ky * (cos * t0 - sin * t1)]], dtype=q.dtype)
    # [2, h w], then viewed with (x, y) last: one matrix product over the long axis. In numpy: between
    # training steps torch's version (two small tensors built, addmm) took 75 us a grid (issue 29)
    g = m @ q
    g += b
    return torch.from_numpy(g).T.reshape(1, h, w, 2)


def in_plane_warp(img: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """``img`` ``[..., h, w]`` resampled at ``grid`` (:func:`in_plane_grid`): every slice the same warp,
    bilinear, zero outside (the slices as channels of one 2D ``grid_sample``)."""
    h, w = img.shape[-2:]
    return F.grid_sample(img.reshape(1, -1, h, w), grid, mode="bilinear", padding_mode="zeros",
                         align_corners=False).reshape(img.shape)

"""Per-scan training augmentation (paper Section 11.1 and 4.4).

Gaussian noise, contrast adjustment, affine and elastic deformation, each applied with
probability ``TrainConfig.aug_prob`` (0.15 in the paper), drawn independently for every
scan of every case (never one draw for the whole batch), every parameter from the case's
rng: noise of a standard deviation ~ U(0, 0.05), MONAI's contrast adjustment with gamma ~
U(0.7, 1.5), a rotation of up to pi/12, a scale of 1 +- 0.1 per axis and a shift of up to 5 %
of the slice, and a smooth random displacement (uniform noise smoothed with a Gaussian of
sigma 4-6 px, times size/4 to size/2 px; 1.1 px RMS at 64 px). The affine and the
elastic deformation warp a scan in-plane only, every slice alike (slices are thick and few;
moving anatomy across them would mix unrelated slices), as one resampling when both fire
(``training.aug_kernels.in_plane_warp``, tested against MONAI's ``Affine`` and ``Resample``).
Up to issue 29 they were MONAI's ``RandAffine`` / ``Rand3DElastic`` (whose elastic field, smoothed
across a few slices with zero padding, moved voxels 0.23 px in-plane and 0.17 px across slices,
RMS at 64 px x 8) and ``Rand2DElastic`` for 2D scans, each resampling the scan: 4 ms at 8 x 64 x
64 where the warp now takes 0.15 ms (affine) to 0.55 ms (with the elastic field; 1 thread).

``TrainConfig.aug_style: release`` (the ``paper`` preset) takes the release's MONAI transforms
and parameters instead, in the release's order: affine (rotation pi/12, shift 10 px, scale 0.1,
shear 0.2), elastic (sigma 5-7, magnitude 10-20 px, scale 0.1), Gaussian noise (std 0.07),
contrast (gamma 0.5-1.5); pixel sizes are for 256 px slices and scale with ``data.size``. As in
the release, every slice of a scan takes the same in-plane warp (the release's layout: slices as
channels, a singleton third axis for its 3D transforms) and values are not clamped. raddiag keeps
its own granularity: one draw per scan, where the release makes one per batch (one MONAI call on
the batch's flattened slices inside ``forward``); at its batch size of one case that is one per
case, and a case's scans of other modalities and sizes need not share a warp.

Key-slice swap (paper 4.4): with probability ``TrainConfig.key_slice_swap`` a 3D scan that
has a key slice is replaced by that slice as a 2D scan.

The transform is a :data:`raddiag.data.dataset.ScanTransform`: ``f(item, rng) -> item``.
Every random choice comes from ``rng`` (the dataset seeds it per case, epoch and seed), so
a run is reproducible and resumable.
"""
from __future__ import annotations

import math
from contextlib import contextmanager
from typing import Optional

import numpy as np
import torch

from raddiag.config import DataConfig, TrainConfig

from .aug_kernels import adjust_contrast, in_plane_grid, in_plane_warp, smooth_separable

NOISE_STD = 0.05          # the Gaussian noise's largest standard deviation
GAMMA = (0.7, 1.5)        # the contrast's gamma range


@contextmanager
def _untracked():
    """MONAI's transforms without their metadata (``set_track_meta(False)``, MONAI's switch for
    speed; the values are the same): a third to a half of a small transform's time went into
    building and converting MetaTensors (noise, contrast, affine at 64 px x 8). The switch is
    process-wide, so the previous setting is put back at once."""
    from monai.data import get_track_meta, set_track_meta

    kept = get_track_meta()
    set_track_meta(False)
    try:
        yield
    finally:
        set_track_meta(kept)


def reseed(transform, seed: int) -> None:
    """``transform.set_random_state(seed=seed)``, without building new random states.

    MONAI's ``set_random_state`` makes a new ``np.random.RandomState`` for the transform and for
    each random part it holds (an affine's grid, an elastic's deformation grid): 90 us each, 14 %
    of augmentation's time at 64 px x 8 (issue 29). The first call here is MONAI's, and notes the
    parts whose random state it replaced; later calls reseed those same states (1.5 us each), which
    draw the same numbers as new ones (``tests/test_augment_speed.py`` checks the outputs against
    ``set_random_state`` on random seeds and images)."""
    parts = transform.__dict__.get("_raddiag_seeded")
    if parts is None:
        candidates = [transform, *(v for v in vars(transform).values() if hasattr(v, "set_random_state"))]
        before = [getattr(c, "R", None) for c in candidates]
        transform.set_random_state(seed=seed)
        transform._raddiag_seeded = [c for c, r in zip(candidates, before) if getattr(c, "R", None) is not r]
        return
    from monai.utils import MAX_SEED

    for part in parts:
        part.R.seed(int(seed) % MAX_SEED)     # as a Python int: a numpy int32 seed would overflow


def _plain(x) -> torch.Tensor:
    """A plain float32 tensor (MONAI may hand back a MetaTensor or an ndarray)."""
    if type(x) is torch.Tensor and x.dtype == torch.float32:
        return x
    if hasattr(x, "as_tensor"):
        x = x.as_tensor()
    return torch.as_tensor(np.asarray(x) if not torch.is_tensor(x) else x, dtype=torch.float32)


class ScanAugment:
    """Callable ScanTransform; construct with :func:`build_scan_transform`."""

    def __init__(self, prob: float, key_slice_swap: float, size: int, style: str = "raddiag"):
        self.prob = float(prob)
        self.key_slice_swap = float(key_slice_swap)
        # Each transform fires with probability ``prob``, drawn from the case's rng; its parameters
        # too. The contrast is MONAI's AdjustContrast (training.aug_kernels.adjust_contrast); the affine
        # and the elastic deformation are one in-plane resampling (training.aug_kernels.in_plane_warp),
        # each tested against MONAI.
        self.rotate, self.scale, self.shift = math.pi / 12, 0.1, 0.05 * size
        self.sigma, self.magnitude = (4.0, 6.0), (size / 4, size / 2)
        self.style = style
        if style == "release":
            self.release = _release_chain(size)

    def _swap(self, item: dict, img: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
        """Key-slice swap: with probability ``key_slice_swap`` a 3D scan becomes its key slice."""
        if rng.random() < self.key_slice_swap and item.get("is_3d") and 0 <= item.get("key_slice", -1) < img.shape[1]:
            k = int(item["key_slice"])
            item["is_3d"], item["key_slice"] = False, 0
            return img[:, k:k + 1]
        return img

    def __call__(self, item: dict, rng: np.random.Generator) -> dict:
        item = dict(item)
        img = self._swap(item, item["image"], rng)
        seed = int(rng.integers(0, 2**31 - 1))
        fire = rng.random(4) < self.prob            # noise, contrast, affine, elastic (release: its order)
        if fire.any():
            img = self._chain(img, fire, seed, rng)
        item["image"] = _plain(img).contiguous()
        return item

    def _chain(self, img: torch.Tensor, fire: np.ndarray, seed: int, rng: np.random.Generator) -> torch.Tensor:
        """The transforms that fire, in order: noise, contrast, then affine and elastic as one warp."""
        if self.style == "release":
            return self._release(img, fire, seed)
        x = img
        if fire[0]:                                   # MONAI's RandGaussianNoise: std ~ U(0, 0.05)
            std = rng.uniform(0.0, NOISE_STD)
            g = torch.Generator().manual_seed(int(rng.integers(2**63)))   # torch's normals: 3x numpy's speed
            x = torch.randn(x.shape, generator=g).mul_(std).add_(x)        # x + std n, one new tensor
        if fire[1]:                                   # MONAI's AdjustContrast, gamma ~ U(0.7, 1.5)
            x = adjust_contrast(x, rng.uniform(*GAMMA))
        if fire[2] or fire[3]:
            x = in_plane_warp(x, self._grid(x.shape[-2], x.shape[-1], fire[2], fire[3], rng))
        return _plain(x).clamp_(0.0, 1.0)

    def _grid(self, h: int, w: int, affine: bool, elastic: bool, rng: np.random.Generator) -> torch.Tensor:
        """The warp's grid: a random rotation, per-axis scale and shift (as MONAI's RandAffine draws
        them) and / or a random smooth displacement (uniform noise smoothed with a Gaussian of
        sigma ~ U(4, 6) px, times a magnitude ~ U(size / 4, size / 2), as MONAI's Rand3DElastic)."""
        disp = None
        if elastic:
            sigma, magnitude = rng.uniform(*self.sigma), rng.uniform(*self.magnitude)
            field = rng.random((2, h, w), dtype=np.float32)
            field *= 2
            field -= 1                                # U(-1, 1), in place (as MONAI's: U(-1, 1))
            disp = smooth_separable(torch.from_numpy(field), sigma).mul_(magnitude)
        if not affine:
            return in_plane_grid(h, w, displacement=disp)
        return in_plane_grid(h, w, rng.uniform(-self.rotate, self.rotate), 1 + rng.uniform(-self.scale, self.scale, 2),
                             rng.uniform(-self.shift, self.shift, 2), disp)

    def _release(self, img: torch.Tensor, fire: np.ndarray, seed: int) -> torch.Tensor:
        """The release's chain on ``[1, d, H, W]``: slices as channels over spatial ``(H, W, 1)``."""
        x = img[0][..., None]
        with _untracked():
            for j in np.flatnonzero(fire):
                reseed(self.release[j], (seed + int(j)) % (2**32))
                x = self.release[j](x)
        return _plain(x)[..., 0][None]


def _release_chain(size: int) -> tuple:
    """The release's four transforms (affine, elastic, noise, contrast) for ``size`` px slices,
    always applied (the caller draws whether each fires)."""
    from monai.transforms import RandAdjustContrast, RandAffine, RandGaussianNoise

    from .aug_kernels import FastRand3DElastic

    px = size / 256                              # the release's pixel sizes are for 256 px slices
    return (RandAffine(prob=1.0, rotate_range=(0, 0, math.pi / 12), translate_range=(10 * px, 10 * px, 0),
                       scale_range=(0.1, 0.1, 0), shear_range=(0.2, 0.2, 0), mode="bilinear", padding_mode="zeros"),
            FastRand3DElastic(prob=1.0, sigma_range=(5 * px, 7 * px), magnitude_range=(10 * px, 20 * px),
                          rotate_range=(0, 0, 0), scale_range=(0.1, 0.1, 0.1), mode="bilinear",
                          padding_mode="border"),
            RandGaussianNoise(prob=1.0, mean=0.0, std=0.07),
            RandAdjustContrast(prob=1.0, gamma=(0.5, 1.5)))


def build_scan_transform(train_cfg: TrainConfig, data_cfg: Optional[DataConfig] = None) -> Optional[ScanAugment]:
    """The training ScanTransform for these settings, or None when nothing is random."""
    size = data_cfg.size if data_cfg is not None else 256
    if train_cfg.aug_prob <= 0 and train_cfg.key_slice_swap <= 0:
        return None
    for name in ("aug_prob", "key_slice_swap"):
        v = getattr(train_cfg, name)
        if not 0.0 <= v <= 1.0:
            raise ValueError(f"train.{name}={v} must be a probability in [0, 1]")
    return ScanAugment(train_cfg.aug_prob, train_cfg.key_slice_swap, size, train_cfg.aug_style)

"""Per-scan training augmentation (paper Section 11.1 and 4.4).

Gaussian noise, contrast adjustment, affine and elastic deformation, each applied with
probability ``TrainConfig.aug_prob`` (0.15 in the paper), drawn independently for every
scan of every case (never one draw for the whole batch). All four are MONAI transforms;
2D scans get the 2D variants, 3D scans the 3D ones. The affine of a 3D scan rotates,
scales and shifts in-plane only (slices are thick and few; tilting across them would mix
unrelated anatomy).

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
    if hasattr(x, "as_tensor"):
        x = x.as_tensor()
    return torch.as_tensor(np.asarray(x) if not torch.is_tensor(x) else x, dtype=torch.float32)


class ScanAugment:
    """Callable ScanTransform; construct with :func:`build_scan_transform`."""

    def __init__(self, prob: float, key_slice_swap: float, size: int, style: str = "raddiag"):
        from monai.transforms import Rand2DElastic, RandAdjustContrast, RandAffine, RandGaussianNoise

        from .aug_kernels import FastRand3DElastic

        self.prob = float(prob)
        self.key_slice_swap = float(key_slice_swap)
        rot = math.pi / 12
        shift = 0.05 * size
        spacing = max(2.0, size / 4)
        # Each transform fires with probability ``prob``, drawn here from the case's rng; the
        # MONAI transforms themselves always apply (prob=1) and only the ones that fire are seeded
        # and called. Measured on the demo's data: MONAI's per-call cost (a RandomState per
        # set_random_state, MetaTensor conversion) is paid even when a transform does not fire,
        # and made data loading 7 ms a scan, more than the tiny model's forward and backward.
        self.noise = RandGaussianNoise(prob=1.0, mean=0.0, std=0.05)
        self.contrast = RandAdjustContrast(prob=1.0, gamma=(0.7, 1.5))
        self.affine2d = RandAffine(prob=1.0, rotate_range=(rot,), scale_range=(0.1, 0.1),
                                   translate_range=(shift, shift), padding_mode="zeros")
        # spatial dims of a 3D item are (D, H, W): rotate about the depth axis only
        self.affine3d = RandAffine(prob=1.0, rotate_range=(rot, 0.0, 0.0), scale_range=(0.0, 0.1, 0.1),
                                   translate_range=(0.0, shift, shift), padding_mode="zeros")
        self.elastic2d = Rand2DElastic(spacing=(spacing, spacing), magnitude_range=(0.5, 1.5), prob=1.0,
                                       padding_mode="zeros")
        self.elastic3d = FastRand3DElastic(sigma_range=(4.0, 6.0), magnitude_range=(size / 4, size / 2), prob=1.0,
                                       padding_mode="zeros")
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
            with _untracked():
                img = self._chain(img, fire, seed)
        item["image"] = _plain(img).contiguous()
        return item

    def _chain(self, img: torch.Tensor, fire: np.ndarray, seed: int) -> torch.Tensor:
        """The transforms that fire, in order, each seeded from ``seed``."""
        if self.style == "release":
            return self._release(img, fire, seed)
        three_d = img.shape[1] > 1
        chain = (self.noise, self.contrast, self.affine3d if three_d else self.affine2d,
                 self.elastic3d if three_d else self.elastic2d)
        x = img if three_d else img[:, 0]          # [1, d, H, W] or [1, H, W]
        for j in np.flatnonzero(fire):
            reseed(chain[j], (seed + int(j)) % (2**32))
            x = chain[j](x)
        x = _plain(x).clamp_(0.0, 1.0)
        return x if three_d else x[:, None]

    def _release(self, img: torch.Tensor, fire: np.ndarray, seed: int) -> torch.Tensor:
        """The release's chain on ``[1, d, H, W]``: slices as channels over spatial ``(H, W, 1)``."""
        x = img[0][..., None]
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

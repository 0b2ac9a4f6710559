"""Per-scan training augmentation (paper Section 11.1 and 4.4).

Gaussian noise, contrast adjustment, affine and elastic deformation, each applied with
probability ``TrainConfig.aug_prob`` (0.15 in the paper), drawn independently for every
scan of every case (never one draw for the whole batch). All four are MONAI transforms;
2D scans get the 2D variants, 3D scans the 3D ones. The affine of a 3D scan rotates,
scales and shifts in-plane only (slices are thick and few; tilting across them would mix
unrelated anatomy).

Key-slice swap (paper 4.4): with probability ``TrainConfig.key_slice_swap`` a 3D scan that
has a key slice is replaced by that slice as a 2D scan.

The transform is a :data:`raddiag.data.dataset.ScanTransform`: ``f(item, rng) -> item``.
Every random choice comes from ``rng`` (the dataset seeds it per case, epoch and seed), so
a run is reproducible and resumable.
"""
from __future__ import annotations

import math
from typing import Optional

import numpy as np
import torch

from raddiag.config import DataConfig, TrainConfig


def _plain(x) -> torch.Tensor:
    """A plain float32 tensor (MONAI may hand back a MetaTensor or an ndarray)."""
    if hasattr(x, "as_tensor"):
        x = x.as_tensor()
    return torch.as_tensor(np.asarray(x) if not torch.is_tensor(x) else x, dtype=torch.float32)


class ScanAugment:
    """Callable ScanTransform; construct with :func:`build_scan_transform`."""

    def __init__(self, prob: float, key_slice_swap: float, size: int):
        from monai.transforms import (Rand2DElastic, Rand3DElastic, RandAdjustContrast, RandAffine,
                                      RandGaussianNoise)

        self.prob = float(prob)
        self.key_slice_swap = float(key_slice_swap)
        p = self.prob
        rot = math.pi / 12
        shift = 0.05 * size
        spacing = max(2.0, size / 4)
        self.noise = RandGaussianNoise(prob=p, mean=0.0, std=0.05)
        self.contrast = RandAdjustContrast(prob=p, gamma=(0.7, 1.5))
        self.affine2d = RandAffine(prob=p, rotate_range=(rot,), scale_range=(0.1, 0.1),
                                   translate_range=(shift, shift), padding_mode="zeros")
        # spatial dims of a 3D item are (D, H, W): rotate about the depth axis only
        self.affine3d = RandAffine(prob=p, rotate_range=(rot, 0.0, 0.0), scale_range=(0.0, 0.1, 0.1),
                                   translate_range=(0.0, shift, shift), padding_mode="zeros")
        self.elastic2d = Rand2DElastic(spacing=(spacing, spacing), magnitude_range=(0.5, 1.5), prob=p,
                                       padding_mode="zeros")
        self.elastic3d = Rand3DElastic(sigma_range=(4.0, 6.0), magnitude_range=(size / 4, size / 2), prob=p,
                                       padding_mode="zeros")
        self._all = (self.noise, self.contrast, self.affine2d, self.affine3d, self.elastic2d, self.elastic3d)

    def __call__(self, item: dict, rng: np.random.Generator) -> dict:
        item = dict(item)
        img = item["image"]
        swap = rng.random() < self.key_slice_swap
        if swap and item.get("is_3d") and 0 <= item.get("key_slice", -1) < img.shape[1]:
            k = int(item["key_slice"])
            img = img[:, k:k + 1]
            item["is_3d"], item["key_slice"] = False, 0
        seed = int(rng.integers(0, 2**31 - 1))
        if self.prob > 0:
            for j, t in enumerate(self._all):
                t.set_random_state(seed=(seed + j) % (2**32))
            three_d = img.shape[1] > 1
            x = img if three_d else img[:, 0]          # [1, d, H, W] or [1, H, W]
            x = self.noise(x)
            x = self.contrast(x)
            x = (self.affine3d if three_d else self.affine2d)(x)
            x = (self.elastic3d if three_d else self.elastic2d)(x)
            x = _plain(x).clamp_(0.0, 1.0)
            img = x if three_d else x[:, None]
        item["image"] = _plain(img).contiguous()
        return item


def build_scan_transform(train_cfg: TrainConfig, data_cfg: Optional[DataConfig] = None) -> Optional[ScanAugment]:
    """The training ScanTransform for these settings, or None when nothing is random."""
    size = data_cfg.size if data_cfg is not None else 256
    if train_cfg.aug_prob <= 0 and train_cfg.key_slice_swap <= 0:
        return None
    for name in ("aug_prob", "key_slice_swap"):
        v = getattr(train_cfg, name)
        if not 0.0 <= v <= 1.0:
            raise ValueError(f"train.{name}={v} must be a probability in [0, 1]")
    return ScanAugment(train_cfg.aug_prob, train_cfg.key_slice_swap, size)

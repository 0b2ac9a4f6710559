"""raddiag.training: the trainer, augmentation, resumable checkpoints and torchrun DDP.

- :func:`train` -> :class:`TrainResult` (``raddiag train``)
- :func:`raddiag.training.augment.build_scan_transform` (per-scan MONAI augmentation, key-slice swap)
"""
from .trainer import TrainResult, lr_factor, train, validate

__all__ = ["train", "TrainResult", "validate", "lr_factor"]

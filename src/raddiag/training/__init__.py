"""raddiag.training: the trainer, augmentation, resumable checkpoints and torchrun DDP.

- :func:`train` -> :class:`TrainResult` (``raddiag train``)
- :func:`raddiag.training.augment.build_scan_transform` (per-scan MONAI augmentation, key-slice swap)
"""
from raddiag._lazy import lazy_exports

_EXPORTS = {"train": ".trainer", "TrainResult": ".trainer", "validate": ".trainer", "lr_factor": ".optim"}
__getattr__ = lazy_exports(__name__, _EXPORTS)
__all__ = list(_EXPORTS)

"""raddiag: case-level, long-tailed radiology diagnosis over 2D and 3D scans.

Quick start::

    import raddiag
    model = raddiag.load("runs/my-run")
    result = model.predict(["scan1.nii.gz", "cxr.png"], modality=["CT", "X-ray"])
    print(result)
"""
from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__", "load"]


def load(run_dir, device: str = "cpu", backend: str = "auto", labels=None):
    """Load a trained run folder for inference (see :mod:`raddiag.serving.predict`;
    ``backend``: the inference fast path, :mod:`raddiag.models.fastpath`). ``run_dir`` may also be
    the authors' released checkpoint folder or file: imported on first use into a cached run
    folder, with ``disorder_label_dict.json`` from beside it or ``labels``."""
    from raddiag.serving.predict import Predictor

    return Predictor.load(run_dir, device=device, backend=backend, labels=labels)

"""Small synthetic things for the serving tests, the benchmark and the web page's demo:
a tiny run folder with random weights, and a sample scan."""
from __future__ import annotations

import io
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

SAMPLE_CLASSES = ["Normal", "Pneumonia", "Pleural effusion", "Fracture"]
SAMPLE_CODES = [None, "J18", "J90", "T14"]


def make_tiny_run(out: str | Path, classes: Sequence[str] = SAMPLE_CLASSES,
                  codes: Optional[Sequence[Optional[str]]] = None, head: str = "mlp",
                  size: int = 32, depth: int = 4, thresholds: Optional[Sequence[float]] = None,
                  overrides: Optional[list[str]] = None, seed: int = 0, model=None):
    """A complete run folder of the ``tiny`` preset (random weights unless ``model`` is given).
    ``head="knowledge"`` uses random unit label embeddings. Returns the RunFolder."""
    import torch

    from raddiag.config import preset
    from raddiag.data.labels import LabelSpace
    from raddiag.models import build_model, save_model

    cfg = preset("tiny", [f"data.size={size}", f"data.depth={depth}", f"model.head={head}", *(overrides or [])])
    if codes is None:
        codes = SAMPLE_CODES if list(classes) == SAMPLE_CLASSES else [None] * len(classes)
    labels = LabelSpace(names=list(classes), codes=list(codes), counts=[10] * len(classes),
                        thresholds=list(thresholds) if thresholds is not None else None)
    if model is None:
        torch.manual_seed(seed)
        emb = None
        if head == "knowledge":
            emb = torch.nn.functional.normalize(torch.randn(len(classes), cfg.model.text_dim), dim=1)
        model = build_model(cfg, len(classes), emb)
    return save_model(model.eval(), out, cfg, labels)


def sample_image(size: int = 64, seed: int = 0, lesion: bool = True) -> np.ndarray:
    """A grey ``[size, size]`` uint8 image: smooth noise, a body-like ellipse, optionally a bright blob."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    img = 0.25 + 0.5 * (((xx - 0.5) / 0.4) ** 2 + ((yy - 0.5) / 0.45) ** 2 < 1)
    img = img + 0.08 * rng.standard_normal((size, size))
    if lesion:
        cy, cx = rng.uniform(0.3, 0.7, 2)
        img = img + 0.6 * np.exp(-(((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * 0.06 ** 2)))
    return (np.clip(img, 0, 1) * 255).astype(np.uint8)


def sample_png(size: int = 64, seed: int = 0) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(sample_image(size, seed)).save(buf, format="PNG")
    return buf.getvalue()


def wait_until_healthy(url: str, proc, timeout: float = 120.0) -> bool:
    """Poll ``url/health`` until it answers 200 (True), or the server process ``proc`` exits or
    ``timeout`` seconds pass (False). For tests and benchmarks that start ``raddiag serve``."""
    import time

    import httpx

    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        try:
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                return True
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    return False

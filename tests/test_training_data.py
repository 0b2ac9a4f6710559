"""A tiny prepared dataset with a planted, learnable signal, shared by the training tests.

Cases have one or two scans (a 3D CT of a few slices and/or a 2D X-ray, 32 px). Class
"Bright corner" puts a bright square in the top-left of every scan, "Dark band" a bright
band at the bottom; a case may have both; cases with neither are Normal. Some 3D scans carry
a key slice (where the signal is strongest).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from raddiag.data.case import Case, Scan
from raddiag.data.store import PreparedData, prepare_cases

SIZE = 32


def _scan(rng: np.random.Generator, labels: set[str], depth: int) -> np.ndarray:
    vol = rng.normal(0.3, 0.08, size=(depth, SIZE, SIZE)).astype(np.float32)
    for z in range(depth):
        w = 1.0 if depth == 1 else 0.6 + 0.4 * (z == depth // 2)
        if "Bright corner" in labels:
            vol[z, 3:12, 3:12] += 0.6 * w
        if "Dark band" in labels:
            vol[z, 24:29, :] += 0.6 * w
    return vol


def make_tiny_data(root: str | Path, n_cases: int = 48, seed: int = 0, val_fraction: float = 0.33) -> Path:
    """Write NPY scans and a prepared dataset under ``root``; return the prepared folder."""
    root = Path(root)
    raw = root / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    cases = []
    for i in range(n_cases):
        kind = i % 4
        labels = [[], ["Bright corner"], ["Dark band"], ["Bright corner", "Dark band"]][kind]
        scans = []
        n_scans = 1 + int(rng.random() < 0.5)
        for j in range(n_scans):
            is3d = j == 0 and rng.random() < 0.7
            depth = int(rng.integers(4, 7)) if is3d else 1
            vol = _scan(rng, set(labels), depth)
            path = raw / f"c{i}_s{j}.npy"
            np.save(path, vol.transpose(1, 2, 0) if is3d else vol[0])
            scans.append(Scan(paths=[str(path)], modality="CT" if is3d else "X-ray", is_3d=is3d,
                              key_slice=depth // 2 if is3d else None))
        split = "val" if (i // 4) % 3 == 0 else "train"
        cases.append(Case(id=f"case{i:03d}", scans=scans, labels=labels or ["Normal"],
                          icd10=["R93"] if labels else [], split=split, patient=f"p{i}"))
    out = root / "prepared"
    prepare_cases(cases, out, size=SIZE, depth=4, workers=1)
    return out


def tiny_overrides(**extra) -> list[str]:
    """Overrides of the ``tiny`` preset that keep a test-sized model and data."""
    base = {"data.size": 32, "data.depth": 4, "data.max_scans": 2, "model.width": 32,
            "model.resnet_inplanes": "[8, 16, 32, 64]", "model.slice_heads": 2, "model.fusion_heads": 2,
            "model.fusion_layers": 1, "train.batch_size": 4, "train.epochs": 3, "train.warmup_epochs": 0.5,
            "train.lr": 0.003, "train.aug_prob": 0.0, "train.eval_batch_size": 16}
    base.update(extra)
    return [f"{k}={v}" for k, v in base.items()]


def test_tiny_data_is_prepared(tmp_path):
    data = PreparedData(make_tiny_data(tmp_path, n_cases=12))
    assert len(data) == 12
    assert {r["split"] for r in data.records} == {"train", "val"}
    labels = data.label_space("disorder")
    assert set(labels.names) == {"Normal", "Bright corner", "Dark band"}

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


# -- hostile uploads (the serving tests and benchmarks/serve_load.py --hostile) ----------------
def damaged_zip(how: str) -> bytes:
    """A one-entry zip of a PNG, damaged: ``crc`` (a stored byte changed), ``deflate`` (the
    compressed stream garbled), ``encrypted`` (the flag set), ``method`` (compression method 99),
    ``truncated`` (cut in half)."""
    import zipfile

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED if how == "crc" else zipfile.ZIP_DEFLATED) as z:
        z.writestr("case/a.png", sample_png(24, seed=4))
    data = bytearray(buf.getvalue())
    local, central = data.index(b"PK\x03\x04"), data.index(b"PK\x01\x02")
    start = local + 30 + len("case/a.png")                  # the entry's data
    if how == "crc":
        data[start + 100] ^= 0xFF
    elif how == "deflate":
        data[start: start + 40] = b"\xff" * 40
    elif how == "encrypted":
        data[local + 6] |= 1
        data[central + 8] |= 1
    elif how == "method":
        data[local + 8: local + 10] = data[central + 10: central + 12] = (99).to_bytes(2, "little")
    elif how == "truncated":
        data = data[: len(data) // 2]
    else:
        raise ValueError(f"unknown damage {how!r}")
    return bytes(data)


def zip_bomb(n_bytes: int, name: str = "bomb.npy") -> bytes:
    """A small zip whose one entry inflates to ``n_bytes`` (an NPY header, then zeros)."""
    import zipfile

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as z:
        with z.open(name, "w", force_zip64=True) as f:
            f.write(b"\x93NUMPY")
            chunk = bytes(1 << 20)
            left = n_bytes - 6
            while left > 0:
                f.write(chunk[: min(left, len(chunk))])
                left -= len(chunk)
    return buf.getvalue()


def oversize_nifti(shape=(4000, 4000, 40)) -> bytes:
    """A few KB of NIfTI-1 whose header declares ``shape`` float32 voxels (the data is missing)."""
    import nibabel as nib

    img = nib.Nifti1Image(np.zeros((4, 4, 2), np.float32), np.eye(4))
    img.header.set_data_shape(shape)
    raw = img.header.binaryblock + b"\x00" * 4 + np.zeros(1024, np.float32).tobytes()
    return raw


def oversize_png(side: int = 13000) -> bytes:
    """A real, highly compressed PNG of ``side`` x ``side`` grey pixels (about 164 KB at 13000)."""
    from PIL import Image

    buf = io.BytesIO()
    Image.new("L", (side, side)).save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def many_entries_zip(n: int) -> bytes:
    """A zip of ``n`` empty folder entries (about 100 bytes each): its central directory is what
    a parser holds in memory before it can count anything."""
    import zipfile

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:
        for i in range(n):
            z.writestr(zipfile.ZipInfo(f"d/{i:08d}/"), b"")
    return buf.getvalue()


def clashing_zip(file_first: bool = True, long_folder: int = 0) -> bytes:
    """A zip holding a file ``a.png`` and a folder ``a.png/`` (with ``a.png/b.png`` in it), in
    that order or the other; ``long_folder`` > 0: one entry in a folder of that many characters."""
    import zipfile

    png = sample_png(16, seed=5)
    entries = [("a.png", png), ("a.png/b.png", png)]
    if not file_first:
        entries.reverse()
    if long_folder:
        entries = [("x" * long_folder + "/c.png", png)]
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in entries:
            z.writestr(name, data)
    return buf.getvalue()


def volume_bomb(shape=(1024, 1024, 1000), dtype=np.float64) -> bytes:
    """A complete .nii.gz of zeros declaring ``shape`` (1024 x 1024 x 1000 float64: 8 GB decoded,
    about 8 MB of gzip), made in a second: one compressed member of 64 MiB of zeros, repeated
    (a gzip stream may hold several members; readers decode them one after the other)."""
    import gzip

    import nibabel as nib

    img = nib.Nifti1Image(np.zeros((1, 1, 1), dtype), np.eye(4))
    img.header.set_data_shape(shape)
    img.header["vox_offset"] = 352
    head = img.header.binaryblock + b"\x00" * 4       # no extensions; the data from byte 352
    total = int(np.prod(shape)) * np.dtype(dtype).itemsize
    block = 64 << 20
    member = gzip.compress(bytes(block), compresslevel=9)
    parts = [gzip.compress(head)] + [member] * (total // block)
    if total % block:
        parts.append(gzip.compress(bytes(total % block)))
    return b"".join(parts)


def animated_png(frames: int = 800, side: int = 1024) -> bytes:
    """An animated PNG of ``frames`` black frames of ``side`` x ``side`` (800 x 1024 x 1024: 839 MB
    decoded, under 1 MB sent): each frame is a slice the reader decodes."""
    import io

    from PIL import Image

    frame = Image.new("L", (side, side))
    buf = io.BytesIO()
    frame.save(buf, format="PNG", save_all=True, append_images=[frame] * (frames - 1), compress_level=1)
    return buf.getvalue()


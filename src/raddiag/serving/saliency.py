"""Score-CAM saliency (Wang et al., CVPR-W 2020; the method the RadDiag paper uses).

For a class ``c`` and one slice of one scan of a case:

1. forward the case once, capturing the slice backbone's activation maps ``A_k`` ``[K, h, w]``
   of that slice (a forward hook on ``model.encoder.slice_backbone.<layer>``);
2. keep the ``top_k`` channels with the largest mean activation (all of them would cost one
   forward each; 64 keeps CPU inference in seconds; ``top_k=None`` uses all);
3. upsample each map to the slice size, min-max normalise it to [0, 1] (``H_k``) and mask the
   input slice with it, every other scan and slice of the case unchanged;
4. score each masked case through the whole model: the class logit's increase over the
   baseline (the same slice set to zero), ``CIC_k = f_c(X o H_k) - f_c(X_b)``;
5. ``alpha = softmax(CIC)``, ``L = ReLU(sum_k alpha_k Up(A_k))``, scaled to [0, 1].

The masked forwards are batched (``chunk`` cases at a time). Only the ``resnet_vit`` encoder
has a per-slice 2D backbone to hook; other encoders raise a clear error.

``layer="auto"`` is the last stage (``layer4``) unless its maps are smaller than 4 x 4 (e.g.
64-px inputs give 2 x 2), then the deepest stage whose maps are at least 4 x 4; the stage
used is reported with every map.
"""
from __future__ import annotations

import base64
import io
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F

STAGES = ("layer1", "layer2", "layer3", "layer4")
MIN_MAP = 4


@dataclass
class SaliencyMap:
    scan: int                 # index among the case's scans as fed to the model
    slice: int                # index among the scan's preprocessed slices
    class_index: int
    class_name: str
    layer: str
    channels: int             # channels scored (top_k of the layer's channels)
    heatmap: np.ndarray       # [H, W] in [0, 1]
    image: np.ndarray         # [H, W] the input slice in [0, 1]


def slice_backbone(model):
    bb = getattr(getattr(model, "encoder", None), "slice_backbone", None)
    if bb is None:
        raise ValueError("Score-CAM needs a per-slice 2D backbone (model.encoder=resnet_vit); "
                         f"this model's encoder is {type(getattr(model, 'encoder', model)).__name__}")
    return bb


def _stride(layer: str) -> int:
    return {"layer1": 4, "layer2": 8, "layer3": 16, "layer4": 32}[layer]


def choose_layer(size: int, layer: str = "auto") -> str:
    if layer != "auto":
        if layer not in STAGES:
            raise ValueError(f"unknown backbone stage {layer!r}; choose one of {STAGES} or 'auto'")
        return layer
    for name in reversed(STAGES):
        if -(-size // _stride(name)) >= MIN_MAP:
            return name
    return "layer1"


class _Capture:
    def __init__(self, module):
        self.maps: list[torch.Tensor] = []
        self.active = False
        self.handle = module.register_forward_hook(self._hook)

    def _hook(self, _m, _inp, out):
        if self.active:
            self.maps.append(out.detach())

    def close(self):
        self.handle.remove()


def _logits(model, batch, images):
    return model(images, batch["scan_mask"], batch["slice_mask"], batch["modality"]).float()


@torch.inference_mode()
def score_cam(model, batch: dict, class_index: int, scan: int, slices: Optional[Sequence[int]] = None,
              top_k: Optional[int] = 64, chunk: int = 16, layer: str = "auto",
              class_name: str = "") -> list[SaliencyMap]:
    """Score-CAM maps for case 0 of a collated ``batch`` (tensors on the model's device), class
    ``class_index``, scan ``scan``; ``slices`` defaults to the scan's key slice (3D without one:
    the middle slice; 2D: slice 0)."""
    bb = slice_backbone(model)
    images = batch["images"][:1]
    scan_mask, slice_mask = batch["scan_mask"][:1].bool(), batch["slice_mask"][:1].bool()
    b1 = {"scan_mask": scan_mask, "slice_mask": slice_mask, "modality": batch["modality"][:1]}
    N, D, H, W = images.shape[1], images.shape[3], images.shape[4], images.shape[5]
    if not 0 <= scan < N or not scan_mask[0, scan]:
        raise ValueError(f"scan {scan} is not a scan of this case ({int(scan_mask[0].sum())} scans)")
    real = slice_mask[0] & scan_mask[0][:, None]                       # [N, D]
    n_real = int(real[scan].sum())
    if slices is None:
        key = int(batch["key_slice"][0, scan]) if "key_slice" in batch else -1
        slices = [key if 0 <= key < n_real else n_real // 2]
    slices = [int(s) for s in slices]
    if any(not 0 <= s < n_real for s in slices):
        raise ValueError(f"slices {slices} out of range: scan {scan} has {n_real} slices")
    layer = choose_layer(H, layer)
    cap = _Capture(getattr(bb, layer))
    try:
        cap.active = True
        _logits(model, b1, images)
        cap.active = False
        acts = torch.cat(cap.maps)                                     # [S_real, K, h, w]
    finally:
        cap.close()
    row_of = torch.cumsum(real.flatten().long(), 0) - 1                # (n, d) -> row among real slices
    out = []
    for d in slices:
        a = acts[int(row_of[scan * D + d])].float()                    # [K, h, w]
        if top_k is not None and top_k < a.shape[0]:
            keep = a.mean((1, 2)).topk(top_k).indices
            a = a[keep]
        up = F.interpolate(a[None], size=(H, W), mode="bilinear", align_corners=False)[0]   # [K, H, W]
        lo = up.amin((1, 2), keepdim=True)
        rng = up.amax((1, 2), keepdim=True) - lo
        masks = torch.where(rng > 1e-8, (up - lo) / rng.clamp(min=1e-8), torch.zeros_like(up))
        base_img = images.clone()
        base_img[0, scan, :, d] = 0
        baseline = _logits(model, b1, base_img)[0, class_index]
        scores = []
        x = images[0, scan, :, d]                                      # [C, H, W]
        for m in torch.split(masks, max(1, chunk)):
            k = m.shape[0]
            imgs = images.expand(k, -1, -1, -1, -1, -1).clone()
            imgs[:, scan, :, d] = x[None] * m[:, None]
            bk = {key: v.expand(k, *v.shape[1:]) for key, v in b1.items()}
            scores.append(_logits(model, bk, imgs)[:, class_index])
        cic = torch.cat(scores) - baseline
        alpha = torch.softmax(cic, 0)
        cam = F.relu((alpha[:, None, None] * up).sum(0))
        cam = cam / cam.max() if cam.max() > 0 else cam
        out.append(SaliencyMap(scan, d, class_index, class_name, layer, int(a.shape[0]),
                               cam.cpu().numpy().astype(np.float32), x[0].float().cpu().numpy()))
    return out


# -- overlays -----------------------------------------------------------------------------------
def overlay(image: np.ndarray, heatmap: np.ndarray, alpha: float = 0.45, min_size: int = 256) -> "Image.Image":
    """The grey slice with the heat map (jet) blended over it, as a PIL RGB image."""
    from matplotlib import colormaps
    from PIL import Image

    grey = np.repeat((np.clip(image, 0, 1) * 255).astype(np.uint8)[..., None], 3, -1)
    heat = (colormaps["jet"](np.clip(heatmap, 0, 1))[..., :3] * 255).astype(np.uint8)
    weight = (alpha * np.clip(heatmap, 0, 1))[..., None]               # transparent where there is no saliency
    rgb = (grey * (1 - weight) + heat * weight).astype(np.uint8)
    im = Image.fromarray(rgb)
    if max(im.size) < min_size:
        f = -(-min_size // max(im.size))
        im = im.resize((im.size[0] * f, im.size[1] * f), Image.BILINEAR)
    return im


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_")[:60] or "x"


def save_overlay(m: SaliencyMap, out_dir: str | Path, prefix: str, overwrite: bool = False,
                 stage: Optional[Path] = None) -> Path:
    """Write the overlay PNG for ``out_dir`` (into ``stage`` when given: the caller moves the files
    in when all are written, :func:`raddiag.staging.staged_files`; else through a temporary
    sibling renamed into place); an existing file is refused unless ``overwrite``. Returns its
    path in ``out_dir``."""
    from raddiag.staging import atomic_write

    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise NotADirectoryError(f"{out_dir}: the saliency output must be a folder; it is a file")
    path = out_dir / f"{_safe(prefix)}_scan{m.scan}_slice{m.slice}_{_safe(m.class_name or str(m.class_index))}.png"
    staged = Path(stage) / path.name if stage is not None else path
    if (path.exists() or staged.exists()) and not overwrite:
        raise FileExistsError(f"{path}: exists already; pass --overwrite (overwrite=True) to replace it")
    atomic_write(staged, lambda f: overlay(m.image, m.heatmap).save(f, format="PNG"))
    return path


def overlay_data_url(m: SaliencyMap) -> str:
    buf = io.BytesIO()
    overlay(m.image, m.heatmap).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()

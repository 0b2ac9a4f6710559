"""Score-CAM saliency (Wang et al., CVPR-W 2020; the method the RadDiag paper uses), for every
visual encoder, 2D and 3D scans.

For a class ``c`` and one scan of a case:

1. forward the case once, capturing the encoder's activation maps ``A_k`` of that scan
   (``[K, d, h, w]``; ``d = 1`` for maps of one slice or of the whole depth at once);
2. keep the ``top_k`` channels with the largest mean activation (all of them would cost one
   forward each; 64 keeps CPU inference in seconds; ``top_k=None`` uses all);
3. upsample each map to the slices it covers, min-max normalise it to [0, 1] (``H_k``) and mask
   those slices with it, every other scan and slice of the case unchanged;
4. score each masked case through the whole model: the class logit's increase over the
   baseline (the same slices set to zero), ``CIC_k = f_c(X o H_k) - f_c(X_b)``;
5. ``alpha = softmax(CIC)``, ``L = ReLU(sum_k alpha_k Up(A_k))``, scaled to [0, 1].

The maps, per encoder (Score-CAM needs only maps and forwards, so it applies to all three):

- ``resnet_vit``: the per-slice 2D ResNet's stage (``slice_backbone.layerN``): a map of one slice,
  which alone is masked; a 3D scan gets one Score-CAM per slice shown.
- ``resnet``: the shared 2D stage (``shared.layer3`` / ``shared.layer4``, stride 16 / 32) or the
  end of the 2D / 3D stem (``stem2d.layer2`` / ``stem3d.layer2``, stride 8). A 3D scan's shared
  maps are pooled over depth: one in-plane map masks all its slices; the 3D stem's maps keep depth.
- ``vit``: the ViT's output tokens (``vit.tokens``), a patch grid (2D) or a cube grid (3D).

``layer="auto"`` is the deepest stage whose maps are at least 4 x 4 (64-px inputs: stride 16);
the stage used is reported with every map. The masked forwards are batched (``chunk`` at a time).
"""
from __future__ import annotations

import base64
import hashlib
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
    heatmap: np.ndarray       # [H, W] in [0, 1], at the model's input size
    image: np.ndarray         # [H, W] the input slice in [0, 1]


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
    """Outputs of ``module``'s forward calls while active, in call order."""

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


def _captured(model, module, b1, images) -> list[torch.Tensor]:
    cap = _Capture(module)
    try:
        cap.active = True
        _logits(model, b1, images)
    finally:
        cap.close()
    return cap.maps


@dataclass
class _Maps:
    """Activation maps ``[K, d, h, w]`` of one scan and the slices they cover (masked together)."""
    maps: torch.Tensor
    region: list[int]
    layer: str


def _encoder_maps(model, b1, images, scan: int, n_real: int, is3d: bool, layer: str,
                  slices: list[int]) -> list[_Maps]:
    """The maps Score-CAM masks with: one entry per slice for ``resnet_vit``, one for the scan otherwise."""
    from raddiag.models.encoders import ResNetEncoder, ResNetViTEncoder, ViTEncoder

    enc = model.encoder
    size = images.shape[-1]
    if isinstance(enc, ResNetViTEncoder):
        name = choose_layer(size, layer)
        acts = torch.cat(_captured(model, getattr(enc.slice_backbone, name), b1, images))   # [S_real, K, h, w]
        real = (b1["slice_mask"][0] & b1["scan_mask"][0][:, None]).flatten()
        row_of = torch.cumsum(real.long(), 0) - 1                      # (n, d) -> row among the real slices
        D = images.shape[3]
        return [_Maps(acts[int(row_of[scan * D + d])][:, None], [d], f"slice_backbone.{name}") for d in slices]
    # one call per kind of scan (2D first, then 3D), a row per scan of that kind
    real = b1["slice_mask"][0] & b1["scan_mask"][0][:, None]
    kinds = (real.sum(-1) > 1)[: scan + 1]
    row = int((kinds[:scan] == is3d).sum())
    call = 1 if is3d and bool((~(real.sum(-1) > 1) & b1["scan_mask"][0]).any()) else 0
    region = list(range(n_real))
    if isinstance(enc, ResNetEncoder):
        name = choose_layer(size, layer)
        if name in ("layer1", "layer2"):
            stem = enc.stem3d if is3d else enc.stem2d
            module, call, label = stem[4 if name == "layer1" else 5], 0, f"{'stem3d' if is3d else 'stem2d'}.{name}"
        else:
            module, label = enc.shared[0 if name == "layer3" else 1], f"shared.{name}"
        out = _captured(model, module, b1, images)[call][row]            # [K, h, w] or [K, d, h, w]
        return [_Maps(out if out.dim() == 4 else out[:, None], region, label)]
    if isinstance(enc, ViTEncoder):
        if layer not in ("auto", "tokens"):
            raise ValueError(f"the ViT encoder's Score-CAM maps are its output tokens; layer {layer!r} does not apply")
        tokens = _captured(model, enc.vit, b1, images)[call][row, 1:]    # [T, width], [CLS] dropped
        H, W = images.shape[-2:]
        grid = (-1, H // enc.p, W // enc.p, tokens.shape[-1])
        maps = tokens.reshape(grid).permute(3, 0, 1, 2)                  # [K, d, h, w]
        if is3d:                                                         # cubes cover D slices, padding too
            region = list(range(images.shape[3]))
        return [_Maps(maps, region, "vit.tokens")]
    raise ValueError(f"no Score-CAM maps for the encoder {type(enc).__name__}")


@torch.inference_mode()
def score_cam(model, batch: dict, class_index: int, scan: int, slices: Optional[Sequence[int]] = None,
              top_k: Optional[int] = 64, chunk: int = 16, layer: str = "auto",
              class_name: str = "") -> list[SaliencyMap]:
    """Score-CAM maps for case 0 of a collated ``batch`` (tensors on the model's device), class
    ``class_index``, scan ``scan``; ``slices`` defaults to the scan's key slice (3D without one:
    the middle slice; 2D: slice 0)."""
    images = batch["images"][:1]
    scan_mask, slice_mask = batch["scan_mask"][:1].bool(), batch["slice_mask"][:1].bool()
    b1 = {"scan_mask": scan_mask, "slice_mask": slice_mask, "modality": batch["modality"][:1]}
    N = images.shape[1]
    if not 0 <= scan < N or not scan_mask[0, scan]:
        raise ValueError(f"scan {scan} is not a scan of this case ({int(scan_mask[0].sum())} scans)")
    n_real = int((slice_mask[0] & scan_mask[0][:, None])[scan].sum())
    if slices is None:
        key = int(batch["key_slice"][0, scan]) if "key_slice" in batch else -1
        slices = [key if 0 <= key < n_real else n_real // 2]
    slices = [int(s) for s in slices]
    if any(not 0 <= s < n_real for s in slices):
        raise ValueError(f"slices {slices} out of range: scan {scan} has {n_real} slices")
    out = []
    for m in _encoder_maps(model, b1, images, scan, n_real, n_real > 1, layer, slices):
        cam, k = _score(model, b1, images, scan, m, class_index, top_k, chunk)
        for d in (s for s in slices if s in m.region):
            heat = cam[min(m.region.index(d), cam.shape[0] - 1)]
            # the slice copied: a view would keep the whole batch's memory alive as long as the map
            out.append(SaliencyMap(scan, d, class_index, class_name, m.layer, k, heat.cpu().numpy().astype(np.float32),
                                   images[0, scan, 0, d].float().cpu().numpy().copy()))
    return out


def _score(model, b1, images, scan: int, m: _Maps, class_index: int, top_k, chunk: int):
    """``(cam [d', H, W] in [0, 1], channels scored)`` over the slices ``m.region`` of ``scan``."""
    a = m.maps.float()
    if top_k is not None and top_k < a.shape[0]:
        a = a[a.mean((1, 2, 3)).topk(top_k).indices]
    H, W = images.shape[-2:]
    depth = 1 if a.shape[1] == 1 else len(m.region)
    if depth > 1:   # maps along depth (3D stem, ViT cubes) cover the padded depth: resample, then the region
        up = F.interpolate(a[None], size=(images.shape[3], H, W), mode="trilinear", align_corners=False)[0][:, m.region]
    else:
        up = F.interpolate(a, size=(H, W), mode="bilinear", align_corners=False)           # [K, 1, H, W]
    lo = up.amin((1, 2, 3), keepdim=True)
    rng = up.amax((1, 2, 3), keepdim=True) - lo
    masks = torch.where(rng > 1e-8, (up - lo) / rng.clamp(min=1e-8), torch.zeros_like(up))
    region = torch.tensor(m.region, device=images.device)
    base_img = images.clone()
    base_img[0, scan, :, region] = 0
    baseline = _logits(model, b1, base_img)[0, class_index]
    x = images[0, scan][:, region]                                    # [C, r, H, W]
    scores = []
    for part in torch.split(masks, max(1, chunk)):
        k = part.shape[0]
        imgs = images.expand(k, -1, -1, -1, -1, -1).clone()
        imgs[:, scan, :, region] = x[None] * part[:, None]
        bk = {key: v.expand(k, *v.shape[1:]) for key, v in b1.items()}
        scores.append(_logits(model, bk, imgs)[:, class_index])
    alpha = torch.softmax(torch.cat(scores) - baseline, 0)
    cam = F.relu((alpha[:, None, None, None] * up).sum(0))             # [d', H, W]
    return (cam / cam.max() if cam.max() > 0 else cam), int(a.shape[0])


def chosen_class(class_, names: list[str], result) -> str:
    """The class a saliency map is of: a name or index, default the case's top-ranked class."""
    if class_ is None or class_ == "":
        name = result.ranked[0].name
    elif isinstance(class_, (int, np.integer)) or (isinstance(class_, str) and re.fullmatch(r"[0-9]+", class_)):
        j = int(class_)
        if not 0 <= j < len(names):
            raise ValueError(f"saliency class index {j} is out of range (0..{len(names) - 1})")
        name = names[j]
    else:
        name = str(class_)
    if name not in names:     # the class in another letter case; in other accents only pointed to
        from raddiag.data.adapters.base import similar_names

        near, by_case = similar_names(name, names)
        if by_case and len(near) == 1:
            return near[0]
        hint = f" (differing in letter case or accents: {', '.join(map(repr, near))})" if near else ""
        raise ValueError(f"saliency class {name!r} is not among the scored classes{hint}")
    return name


def saliency_caption(name: str, p: Optional[float], info, m: SaliencyMap) -> str:
    """The figure's caption: the class and its probability, the scan, and for a 3D scan which of the
    slices the model saw (a new user read "slice 4" of a 37-slice CT as the file's fifth slice)."""
    where = f", slice {m.slice} of the {info.slices} the model saw" if info.is_3d else ""
    return f"{name}" + (f" (p = {p:.3f})" if p is not None else "") + f": {info.id}{where}; Score-CAM on {m.layer}"


def case_figure(m: SaliencyMap, source, dc, limits, info, n_used: int, result, name: str, out,
                overwrite: bool, stage: Optional[Path] = None) -> dict:
    """Map ``m`` drawn on its scan's own slice (``source``: the scan's :class:`~raddiag.data.case.Scan`,
    re-read at its resolution; None: the model's input slice), ``dc`` the run's data config:
    ``{"overlay": data URL}`` (``out=True``) or ``{"path": file}`` under the folder ``out``, and
    ``size``, the figure's image size."""
    from raddiag.data.intensity import window_for
    from raddiag.data.preprocess import display_slice

    image = m.image
    if source is not None:
        image = display_slice(source, m.slice, dc.depth,
                              window_for(source.modality, source.anatomy, dc.window, dc.windows), limits,
                              stored_depth=(dc.stored_geometry or (None, None))[1])
    p = next((f.probability for f in result.ranked if f.name == name), None)
    fig = saliency_figure(image, m.heatmap, saliency_caption(name, p, info, m))
    rec = {"size": [int(image.shape[0]), int(image.shape[1])]}
    if out is True:
        return {**rec, "overlay": data_url(fig)}
    path = Path(out) / figure_name(result.case_id, name, m.scan, n_used, m.slice, info.is_3d)
    return {**rec, "path": str(save_figure(fig, path, overwrite, stage))}


# -- figures ------------------------------------------------------------------------------------
MIN_SIDE, MAX_SIDE = 256, 2048     # a figure's image panels: at the input's resolution, within these


def overlay(image: np.ndarray, heatmap: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """The grey slice with the heat map (jet) blended over it: ``[H, W, 3]`` uint8 (same sizes)."""
    from matplotlib import colormaps

    grey = np.repeat((np.clip(image, 0, 1) * 255).astype(np.uint8)[..., None], 3, -1)
    heat = (colormaps["jet"](np.clip(heatmap, 0, 1))[..., :3] * 255).astype(np.uint8)
    weight = (alpha * np.clip(heatmap, 0, 1))[..., None]               # transparent where there is no saliency
    return (grey * (1 - weight) + heat * weight).astype(np.uint8)


def _panel_size(h: int, w: int) -> tuple[int, int]:
    """The image panels' size: the input's, scaled up to MIN_SIDE or down to MAX_SIDE (long side)."""
    f = max(1.0, MIN_SIDE / max(h, w)) if max(h, w) < MIN_SIDE else min(1.0, MAX_SIDE / max(h, w))
    return max(1, round(h * f)), max(1, round(w * f))


def saliency_figure(image: np.ndarray, heatmap: np.ndarray, caption: str = "") -> "Image.Image":
    """The input slice (at its own resolution) beside the same slice with the heat map over it,
    and a colour bar (0 to 1), under a one-line caption: a PIL RGB image."""
    from matplotlib import colormaps
    from PIL import Image, ImageDraw

    h, w = _panel_size(*image.shape)
    img = np.asarray(Image.fromarray(np.clip(image * 255, 0, 255).astype(np.uint8)).resize((w, h), Image.BILINEAR),
                     dtype=np.float32) / 255
    heat = torch.as_tensor(np.ascontiguousarray(heatmap), dtype=torch.float32)[None, None]
    heat = F.interpolate(heat, size=(h, w), mode="bilinear", align_corners=False)[0, 0].clamp(0, 1).numpy()
    font = caption_font(max(12, h // 28))
    gap, bar_w = max(6, w // 60), max(14, w // 25)
    label_w = int(font.getlength("0.5")) + 8
    width = 2 * w + 3 * gap + bar_w + label_w
    lines = _wrap(caption, font, width - 4)       # a long caption on a small scan was cut at the edge
    text_h = len(lines) * (font.size + 4) + 4
    canvas = Image.new("RGB", (width, h + text_h + gap), "white")
    grey = (img * 255).astype(np.uint8)
    canvas.paste(Image.fromarray(grey).convert("RGB"), (0, text_h))
    canvas.paste(Image.fromarray(overlay(img, heat)), (w + gap, text_h))
    ramp = (colormaps["jet"](np.linspace(1, 0, h))[:, :3] * 255).astype(np.uint8)       # top: 1
    canvas.paste(Image.fromarray(np.repeat(ramp[:, None], bar_w, 1)), (2 * w + 2 * gap, text_h))
    draw = ImageDraw.Draw(canvas)
    x_text = 2 * w + 2 * gap + bar_w + 4
    for value, y in ((1.0, 0), (0.5, h // 2), (0.0, h - 1)):
        draw.text((x_text, text_h + y), f"{value:g}", fill="black", font=font,
                  anchor="lt" if value == 1 else "lb" if value == 0 else "lm")
    for i, line in enumerate(lines):
        draw.text((2, 4 + i * (font.size + 4)), line, fill="black", font=font)
    return canvas


def caption_font(size: int):
    """DejaVu Sans (matplotlib's own font file: Latin, Greek, Cyrillic, math signs) at ``size`` px,
    else Pillow's default. Pillow's default font has no Greek or signs such as "≥": a class name
    "Löffler's pneumonitis (β/γ) ≥2/3 lobes" was drawn with empty boxes."""
    from pathlib import Path

    import matplotlib
    from PIL import ImageFont

    try:
        return ImageFont.truetype(str(Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"), size)
    except OSError:                                    # pragma: no cover - a matplotlib without its fonts
        return ImageFont.load_default(size=size)


def _wrap(text: str, font, width: int) -> list[str]:
    """``text`` in lines of at most ``width`` pixels in ``font``, broken between words (a word
    longer than a line stands alone)."""
    lines: list[str] = []
    for word in text.split(" "):
        if lines and font.getlength(lines[-1] + " " + word) <= width:
            lines[-1] += " " + word
        else:
            lines.append(word)
    return lines or [""]


def _safe(name: str, limit: int = 40) -> str:
    """``name`` as a file-name part: kept where it is one already, else cleaned and cut and tagged
    with a hash of the whole name, so that two names never share a part ("case 1" and "case_1",
    two long names alike in their first ``limit`` characters: one figure replaced the other)."""
    clean = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_.")[:limit].strip("_.")
    if clean == name and clean:
        return clean
    tag = hashlib.sha1(name.encode("utf-8", "surrogatepass")).hexdigest()[:8]
    return f"{clean[:limit - 9].strip('_.')}-{tag}".lstrip("-")


def figure_name(case_id: str, class_name: str, scan: int, n_scans: int, slice_: int, is_3d: bool) -> str:
    """A short file name: ``CASE[_scanN]_[sliceD_]CLASS.png`` (the scan only when the case has
    several, the slice only for a 3D scan)."""
    parts = [_safe(case_id)] + ([f"scan{scan}"] if n_scans > 1 else []) + ([f"slice{slice_}"] if is_3d else [])
    return "_".join(parts + [_safe(class_name, 30)]) + ".png"


def save_figure(im, path: str | Path, overwrite: bool = False, stage: Optional[Path] = None) -> Path:
    """Write ``im`` as a PNG for ``path`` (into ``stage`` when given: the caller moves the files in
    when all are written, :func:`raddiag.staging.staged_files`; else through a temporary sibling
    renamed into place); an existing file is refused unless ``overwrite``. Returns ``path``."""
    from raddiag.staging import atomic_write

    path = Path(path)
    if path.parent.exists() and not path.parent.is_dir():
        raise NotADirectoryError(f"{path.parent}: the saliency output must be a folder; it is a file")
    staged = Path(stage) / path.name if stage is not None else path
    if stage is not None and staged.exists():      # a figure of this same call has the name: keep both
        path = next(p for p in (path.with_name(f"{path.stem}-{i}.png") for i in range(2, 10 ** 6))
                    if not (Path(stage) / p.name).exists())
        staged = Path(stage) / path.name
    if (path.exists() or staged.exists()) and not overwrite:
        raise FileExistsError(f"{path}: exists already; pass --overwrite (overwrite=True) to replace it")
    staged.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(staged, lambda f: im.save(f, format="PNG"))
    return path


def data_url(im) -> str:
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()

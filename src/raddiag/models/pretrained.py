"""Pre-trained initialisation of the per-slice ResNet (``model.pretrained``).

The paper does not say how its per-slice ResNet-50 starts; the release starts it from ImageNet:
it builds torchvision's ResNet-50 with ``IMAGENET1K_V1``. ``model.pretrained`` is one of:

- ``imagenet``: torchvision's ImageNet file for the model's ResNet depth (18, 34 or 50; V1, the
  release's), looked up in the torch hub cache (``torch.hub.get_dir()/checkpoints``) under the
  name torchvision gives it, so a file torchvision downloaded once is found. Nothing is downloaded
  unless asked (:func:`fetch_imagenet`, ``raddiag train --download-weights``): then torch.hub
  fetches it there and checks its SHA-256 against the prefix in its name;
- a local torchvision- or timm-format ResNet-18/34/50 state dict (``.pth`` / ``.bin`` read with
  ``torch.load(weights_only=True)``, or ``.safetensors``), e.g. torchvision's
  ``resnet50-11ad3fa6.pth`` (``IMAGENET1K_V2``) or timm's ``resnet50.a1_in1k`` ``model.safetensors``;
- ``none`` (or unset): random weights.

torchvision, timm and MONAI's ``ResNet`` (laid out as in :func:`~raddiag.models.encoders.make_resnet`)
share the inner names ``conv1``, ``bn1``, ``layerX.Y.{convZ,bnZ}``, ``layerX.Y.downsample.{0,1}``,
so keys map one to one once a common prefix is removed (``module.``, ``backbone.``, the release's
``resnet2D.``, ...). ``fc.*`` and any other key outside the backbone are left, and reported.
A 3-channel stem is adapted to the model's input channels the way timm's ``adapt_input_conv``
does: summed over the input channels for 1 channel (a grey image repeated to RGB gives the
same response), tiled and rescaled for other counts.

This is a training-time input only: the trainer calls :func:`load_pretrained_backbone` on a
fresh model; a saved run folder holds the trained weights and loads without the file.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import torch

from .encoders import RESNET_LAYERS

log = logging.getLogger(__name__)


IMAGENET = "imagenet"
# torchvision's ImageNet ResNet files (the ``IMAGENET1K_V1`` weights the release's ResNet-50 uses) by
# depth, under torchvision's own names: the 8 hex digits are the SHA-256 prefix torch.hub checks.
IMAGENET_FILES = {18: "resnet18-f37072fd.pth", 34: "resnet34-b627a593.pth", 50: "resnet50-0676ba61.pth"}
IMAGENET_URL = "https://download.pytorch.org/models/"


def imagenet_file(depth: int) -> Path:
    """Where torchvision keeps its ImageNet ResNet-``depth`` file: the torch hub cache's ``checkpoints``."""
    import torch.hub

    if depth not in IMAGENET_FILES:
        raise ValueError(f"model.pretrained=imagenet: torchvision has ImageNet weights for ResNet-"
                         f"{'/'.join(map(str, IMAGENET_FILES))}, not ResNet-{depth} (model.resnet_depth); "
                         "pass a file or --set model.pretrained=none")
    return Path(torch.hub.get_dir()) / "checkpoints" / IMAGENET_FILES[depth]


def fetch_imagenet(depth: int = 50, progress: bool = True) -> Path:
    """torchvision's ImageNet ResNet-``depth`` file in the torch hub cache, downloaded there (its
    SHA-256 checked by torch.hub) when it is missing. The one place raddiag downloads weights."""
    import torch.hub

    path = imagenet_file(depth)
    if path.is_file():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    url = IMAGENET_URL + path.name
    try:   # torch.hub writes a temporary file beside it and renames it into place once the hash matches
        torch.hub.download_url_to_file(url, str(path), hash_prefix=path.stem.rsplit("-", 1)[1], progress=progress)
    except (OSError, RuntimeError) as exc:
        raise FileNotFoundError(f"{path}: could not download {url} ({' '.join(str(exc).split())}); put the file "
                                f"there by hand, or pass --set model.pretrained=none") from None
    return path


def pretrained_file(spec: Optional[str], depth: int) -> Optional[Path]:
    """The file ``model.pretrained`` names (None for none): ``imagenet`` must already be in the
    torch hub cache; its absence is one line naming the file, the URL and the folder."""
    if spec is None or spec == "none":
        return None
    if spec != IMAGENET:
        return Path(spec)
    path = imagenet_file(depth)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: model.pretrained=imagenet needs torchvision's ImageNet ResNet-{depth} "
                                f"weights, not in the torch hub cache; download {IMAGENET_URL}{path.name} into "
                                f"{path.parent} (or pass --download-weights on a machine that is online), or train "
                                "from random weights with --set model.pretrained=none")
    return path


@dataclass
class PretrainedReport:
    path: Path
    depth: int                                   # ResNet depth found in the file
    used: list[str] = field(default_factory=list)   # file keys loaded (names without prefix)
    left: list[str] = field(default_factory=list)   # file keys not loaded (e.g. fc.weight)
    stem: str = ""                               # how conv1 was adapted ("" = as is)

    def summary(self) -> str:
        left = ", ".join(self.left[:8]) + (" ..." if len(self.left) > 8 else "") if self.left else "none"
        stem = f"; {self.stem}" if self.stem else ""
        return (f"{self.path}: ResNet-{self.depth} weights, {len(self.used)} tensors loaded into "
                f"encoder.slice_backbone{stem}; left {len(self.left)}: {left}")


def adapt_input_conv(in_chans: int, weight: torch.Tensor) -> torch.Tensor:
    """A stem conv weight ``[O, I, k, k]`` for ``in_chans`` inputs, as timm's ``adapt_input_conv``:
    1 channel sums over the input channels; otherwise the RGB filters are tiled to ``in_chans``
    and scaled by ``3 / in_chans``."""
    O, I, kh, kw = weight.shape
    if in_chans == I:
        return weight
    dtype = weight.dtype
    w = weight.float()
    if in_chans == 1:
        w = w.sum(dim=1, keepdim=True)
    else:
        reps = math.ceil(in_chans / I)
        w = w.repeat(1, reps, 1, 1)[:, :in_chans] * (I / float(in_chans))
    return w.to(dtype)


def _prefix(state: dict[str, torch.Tensor], path: Path) -> str:
    """The common prefix in front of the backbone's ``conv1.weight`` (``""`` for plain torchvision)."""
    cands = sorted((k[: -len("conv1.weight")] for k in state
                    if k.endswith("conv1.weight") and "layer" not in k), key=len)
    if not cands:
        raise ValueError(f"{path}: no ResNet stem ('conv1.weight') found; expected a torchvision- or "
                         f"timm-format ResNet-18/34/50 state dict (keys like conv1.weight, layer1.0.conv1.weight)")
    return cands[0]


def _depth(state: dict[str, torch.Tensor], path: Path) -> int:
    blocks = [len({k.split(".")[1] for k in state if k.startswith(f"layer{i}.")}) for i in range(1, 5)]
    bottleneck = "layer1.0.conv3.weight" in state
    depth = next((d for d, (b, ls) in RESNET_LAYERS.items() if ls == blocks and (b.expansion == 4) == bottleneck), None)
    if depth is None:
        raise ValueError(f"{path}: a ResNet with {blocks} blocks per stage ({'bottleneck' if bottleneck else 'basic'} "
                         f"blocks) is not ResNet-{'/'.join(map(str, sorted(RESNET_LAYERS)))}")
    return depth


def load_pretrained_backbone(model: torch.nn.Module, path: str | Path) -> PretrainedReport:
    """Load the ResNet weights in ``path`` (a file, or ``imagenet``: :func:`pretrained_file`) into
    ``model.encoder.slice_backbone`` (``resnet_vit`` encoder). Every backbone weight must come from
    the file with its exact shape (the stem's input channels adapted); anything else in the file
    is left and reported. Errors name the file."""
    from .official import read_checkpoint

    enc = getattr(model, "encoder", None)
    backbone = getattr(enc, "slice_backbone", None)
    if backbone is None:
        raise ValueError(f"model.pretrained={path}: pre-trained ResNet weights need model.encoder=resnet_vit")
    path = pretrained_file(str(path), model.cfg.model.resnet_depth)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: model.pretrained file does not exist")
    raw, path = read_checkpoint(path)
    pre = _prefix(raw, path)
    state = {k[len(pre):]: v for k, v in raw.items() if k.startswith(pre)}
    report = PretrainedReport(path, _depth(state, path))
    report.left = sorted(k for k in raw if not k.startswith(pre))
    want = model.cfg.model.resnet_depth
    if report.depth != want:
        raise ValueError(f"{path}: holds a ResNet-{report.depth}; the model's per-slice ResNet is "
                         f"ResNet-{want} (model.resnet_depth)")
    own = backbone.state_dict()
    if "conv1.weight" in state and "conv1.weight" in own:
        w = state["conv1.weight"]
        cin = own["conv1.weight"].shape[1]
        if w.ndim == 4 and w.shape[1] != cin:
            state["conv1.weight"] = adapt_input_conv(cin, w)
            report.stem = (f"conv1 adapted from {w.shape[1]} to {cin} input channel(s) "
                           + ("by summing over them" if cin == 1 else "by tiling and rescaling"))
    missing = [k for k in own if k not in state and not k.endswith("num_batches_tracked")]
    if missing:
        raise ValueError(f"{path}: missing backbone weights {missing[:6]}{' ...' if len(missing) > 6 else ''} "
                         f"({len(missing)} in all)")
    bad = [k for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if bad:
        k = bad[0]
        raise ValueError(f"{path}: shape mismatch for {len(bad)} backbone weight(s), e.g. {pre}{k}: file "
                         f"{tuple(state[k].shape)}, model {tuple(own[k].shape)} (model.resnet_inplanes="
                         f"{model.cfg.model.resnet_inplanes})")
    take = {k: state[k].to(own[k].dtype) for k in own if k in state}
    backbone.load_state_dict({**own, **take}, strict=True)
    report.used = sorted(pre + k for k in take)
    report.left += sorted(pre + k for k in state if k not in own)
    report.left.sort()
    return report


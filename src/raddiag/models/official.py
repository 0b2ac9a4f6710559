"""Import the authors' released RadDiag weights into a run folder.

What each key of the release is, its layer quirks and its modality table are written up in
``docs/official-checkpoint.md`` (in the repository root); this module follows it.

The release's module tree maps onto ours by prefix renames (our ``layer_style="official"``
modules carry the release's inner names):

=============================================  ===========================================
release                                        ours
=============================================  ===========================================
``resnet2D.*`` (torchvision ResNet-50)         ``encoder.slice_backbone.*`` (MONAI ResNet,
                                               same inner names; ``fc`` unused, dropped)
``attention1D.cls_token`` / ``.pos_emb``       ``encoder.cls_token`` / ``encoder.pos_emb``
``attention1D.transformer_encoder.encoder.*``  ``encoder.slice_transformer.*``
``vitFuse.mod_embed`` / ``.cls_token``         ``fusion.mod_embed`` / ``fusion.cls_token``
``vitFuse.transformer_encoder.encoder.*``      ``fusion.transformer.*``
``fc.0.*``, ``fc.2.*``                         ``head.fc.0.*``, ``head.fc.2.*``
=============================================  ===========================================

Ignored, as documented: ``resnet2D.fc.*`` and the template copies
``*.transformer_encoder.{multi_headed_attention,feed_forward,encoder_layer}.*``. Any other
unexpected key, any missing key and any shape mismatch is an error. A late-fusion
checkpoint (no ``vitFuse.*``) becomes ``fusion="max"`` with ``data.max_scans=1``: exactly
the released single-scan model (raise ``data.max_scans`` to max-pool over more scans).
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Optional

import torch

from raddiag.config import RunConfig, preset
from raddiag.data.labels import LabelSpace
from raddiag.run import RunFolder

from .encoders import RESNET_LAYERS
from .io import save_model
from .raddiag import RadDiag, build_model

_TEMPLATE = re.compile(r"^(attention1D|vitFuse)\.transformer_encoder\.(multi_headed_attention|feed_forward|encoder_layer)\.")
_RENAMES = [
    (re.compile(r"^resnet2D\."), "encoder.slice_backbone."),
    (re.compile(r"^attention1D\.(cls_token|pos_emb)$"), r"encoder.\1"),
    (re.compile(r"^attention1D\.transformer_encoder\.encoder\."), "encoder.slice_transformer."),
    (re.compile(r"^vitFuse\.(mod_embed|cls_token)$"), r"fusion.\1"),
    (re.compile(r"^vitFuse\.transformer_encoder\.encoder\."), "fusion.transformer."),
    (re.compile(r"^fc\.([02])\."), r"head.fc.\1."),
]


def checkpoint_file(ckpt: str | Path) -> Path:
    """The weights file of a checkpoint folder (``*.safetensors`` first, else
    ``pytorch_model.bin``) or the file itself."""
    ckpt = Path(ckpt)
    if ckpt.is_dir():
        cands = sorted(ckpt.glob("*.safetensors")) + [ckpt / "pytorch_model.bin"]
        path = next((p for p in cands if p.is_file()), None)
        if path is None:
            raise FileNotFoundError(f"{ckpt}: no *.safetensors or pytorch_model.bin in this folder")
        return path
    if ckpt.exists():
        return ckpt
    raise FileNotFoundError(f"{ckpt}: checkpoint does not exist")


def read_checkpoint(ckpt: str | Path) -> tuple[dict[str, torch.Tensor], Path]:
    """The state dict in a checkpoint folder (or file, :func:`checkpoint_file`), a
    ``pytorch_model.bin`` read with ``torch.load(weights_only=True)``."""
    path = checkpoint_file(ckpt)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path))
    else:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception:  # noqa: BLE001 - not a weights-only state dict
            raise ValueError(f"{path}: {unreadable_reason(path)}") from None
        if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
            state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path}: not a state dict of tensors")
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    return state, path


def unreadable_reason(path: Path) -> str:
    """Why ``torch.load(weights_only=True)`` refused ``path``, without torch's advice to load it with
    ``weights_only=False`` (which would run code from the file; raddiag never does)."""
    import zipfile

    with open(path, "rb") as f:
        head = f.read(9)
    if not head:
        return "an empty file"
    if head[8:9] == b"{" and int.from_bytes(head[:8], "little") < 100_000_000:
        return "a safetensors file: give it the .safetensors suffix"
    if head.startswith(b"PK\x03\x04"):
        try:
            zipfile.ZipFile(path).close()
        except zipfile.BadZipFile:
            return "a damaged or cut-short PyTorch checkpoint (not a whole zip archive: an interrupted download?)"
    elif head[:1] != b"\x80":
        return "not a PyTorch checkpoint (neither a zip archive nor a pickle: a text or other file?)"
    return ("cannot be read as weights-only PyTorch data: it holds objects other than tensors and plain "
            "types, which raddiag does not unpickle")


def map_official_keys(state: dict[str, torch.Tensor], where: str = "checkpoint") -> dict[str, torch.Tensor]:
    """Rename the release's keys to ours, dropping only the documented unused keys."""
    out, unexpected = {}, []
    for k, v in state.items():
        if _TEMPLATE.match(k) or k.startswith("resnet2D.fc."):
            continue
        for pat, rep in _RENAMES:
            if pat.match(k):
                out[pat.sub(rep, k, count=1)] = v
                break
        else:
            unexpected.append(k)
    if unexpected:
        raise ValueError(f"{where}: unexpected keys not in the released layout: {unexpected[:8]}"
                         f"{' ...' if len(unexpected) > 8 else ''} ({len(unexpected)} in all)")
    return out


def _count_layers(state, prefix) -> int:
    idx = {int(m.group(1)) for k in state if (m := re.match(re.escape(prefix) + r"layers\.(\d+)\.", k))}
    return max(idx) + 1 if idx else 0


def official_config(state: dict[str, torch.Tensor], slice_heads: int = 1, fusion_heads: int = 4,
                    where: str = "checkpoint") -> RunConfig:
    """The ``official`` preset adapted to what the (renamed) state dict holds."""
    def need(k):
        if k not in state:
            raise ValueError(f"{where}: missing key {k!r} (released name differs; see docs/official-checkpoint.md)")
        return state[k]

    cfg = preset("official")
    mc = cfg.model
    width = need("encoder.cls_token").shape[-1]
    pos = need("encoder.pos_emb").shape[0]
    blocks = [len({k.split(".")[3] for k in state if k.startswith(f"encoder.slice_backbone.layer{i}.")})
              for i in range(1, 5)]
    bottleneck = "encoder.slice_backbone.layer1.0.conv3.weight" in state
    depth = next((d for d, (b, ls) in RESNET_LAYERS.items()
                  if ls == blocks and (b.expansion == 4) == bottleneck), None)
    if depth is None:
        raise ValueError(f"{where}: ResNet with blocks {blocks} is not a supported depth")
    exp = 4 if bottleneck else 1
    inplanes = [need(f"encoder.slice_backbone.layer{i}.0.conv{3 if bottleneck else 2}.weight").shape[0] // exp
                for i in range(1, 5)]
    if inplanes[3] * exp != width:
        raise ValueError(f"{where}: ResNet features {inplanes[3] * exp} != transformer width {width}")
    mc.width, mc.resnet_depth, mc.resnet_inplanes = width, depth, inplanes
    mc.in_channels = need("encoder.slice_backbone.conv1.weight").shape[1]
    mc.layer_style = "official"
    mc.slice_layers = _count_layers(state, "encoder.slice_transformer.")
    mc.slice_heads, mc.fusion_heads = slice_heads, fusion_heads
    d_ff = need("encoder.slice_transformer.layers.0.feed_forward.w_1.weight").shape[0]
    mc.mlp_ratio = d_ff / width
    mc.head, mc.dropout = "mlp", 0.0
    if "fusion.mod_embed" in state:
        mc.fusion = "transformer"
        mc.fusion_layers = _count_layers(state, "fusion.transformer.")
        mc.num_modalities = state["fusion.mod_embed"].shape[0]
    else:  # late fusion: a single-scan model
        mc.fusion = "max"
        cfg.data.max_scans = 1
    cfg.data.depth = pos - 1
    cfg.data.modality_scheme = "official"
    return cfg


def load_official_state(model: RadDiag, state: dict[str, torch.Tensor], where: str = "checkpoint") -> None:
    """Load renamed weights strictly (shapes checked first; ``num_batches_tracked`` may be absent)."""
    own = model.state_dict()
    missing = [k for k in own if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in own]
    if missing:
        raise ValueError(f"{where}: missing keys for the model: {missing[:8]}"
                         f"{' ...' if len(missing) > 8 else ''} ({len(missing)} in all)")
    if unexpected:
        raise ValueError(f"{where}: unexpected keys: {unexpected[:8]}{' ...' if len(unexpected) > 8 else ''}")
    for k, v in state.items():
        if v.shape != own[k].shape:
            raise ValueError(f"{where}: shape mismatch for {k}: checkpoint {tuple(v.shape)}, "
                             f"model {tuple(own[k].shape)}")
    model.load_state_dict({**{k: own[k] for k in own if k not in state}, **state}, strict=True)


def import_official(ckpt_dir: str | Path, labels: str | Path, out: str | Path,
                    slice_heads: int = 1, fusion_heads: int = 4, size: Optional[int] = None,
                    train_file: Optional[str | Path] = None) -> RunFolder:
    """Read the release's checkpoint into a normal run folder (config, label space, weights).
    The label space's head / medium / tail: by the cases of ``train_file`` (a release-format
    training JSON) when given, else the release's fixed ranges of its label order."""
    raw, path = read_checkpoint(ckpt_dir)
    state = map_official_keys(raw, where=str(path))
    cfg = official_config(state, slice_heads, fusion_heads, where=str(path))
    if size is not None:
        cfg.data.size = size
    counts = None
    if train_file is not None:
        from raddiag.data.adapters.rp3d import release_label_counts

        counts = release_label_counts(train_file)
    label_space = LabelSpace.from_release(labels, counts)
    n_cls = state["head.fc.2.weight"].shape[0] if "head.fc.2.weight" in state else None
    if n_cls is None:
        raise ValueError(f"{path}: missing key 'fc.2.weight'")
    if n_cls != len(label_space):
        raise ValueError(f"{labels}: {len(label_space)} labels but the checkpoint scores {n_cls} classes")
    model = build_model(cfg, n_cls)
    load_official_state(model, state, where=str(path))
    run = RunFolder(out).create()
    save_model(model.eval(), run, cfg=cfg, labels=label_space)
    return run

"""Parameter counts and intermediate shapes of a model preset (``raddiag describe``)."""
from __future__ import annotations

from typing import Any

import torch

from raddiag.config import RunConfig

from .raddiag import build_model, stand_in_label_embeddings


def count_params(module: torch.nn.Module | None) -> int:
    return 0 if module is None else sum(p.numel() for p in module.parameters())


def describe_model(cfg: RunConfig, num_classes: int = 5569, scans: int = 2) -> dict[str, Any]:
    """Parameter counts per part, and the shapes along one forward of a case with ``scans``
    full-depth 3D scans at the configured size (the ResNet maps are traced on ONE slice at
    full size, then the rest of the pipeline runs on stand-in features, so this is quick even
    for ``paper``)."""
    mc, dc = cfg.model, cfg.data
    model = build_model(cfg, num_classes, stand_in_label_embeddings(cfg, num_classes)).eval()
    enc = model.encoder
    params = {"total": count_params(model), "encoder": count_params(enc),
              "fusion": count_params(model.fusion), "head": count_params(model.head)}
    for name, child in enc.named_children():
        params[f"encoder.{name}"] = count_params(child)
    shapes: dict[str, list[int]] = {}
    B, N, D, S = 1, scans, dc.depth, dc.size
    shapes["input images [B, N, C, D, H, W]"] = [B, N, 1, D, S, S]
    with torch.no_grad():
        if mc.encoder == "resnet_vit":
            bb = enc.slice_backbone
            hooks = [getattr(bb, n).register_forward_hook(
                lambda m, i, o, n=n: shapes.__setitem__(f"slice {n} map (per slice)", list(o.shape[1:])))
                for n in ("conv1", "maxpool", "layer1", "layer2", "layer3", "layer4")]
            feat = enc.slice_features(torch.zeros(1, 1, S, S))
            for h in hooks:
                h.remove()
            shapes["slice features (per slice)"] = list(feat.shape[1:])
            shapes["slice tokens per scan ([CLS] + D)"] = [D + 1, mc.width]
            shapes["ResNet slices per case (all real)"] = [B * N * D]
        images = torch.zeros(B, N, 1, D, S, S)
        if mc.encoder == "resnet_vit":
            # stand-in (an instance attribute over the method, deleted after): the traced feature for every slice
            enc.slice_features = lambda x: feat.expand(x.shape[0], -1)  # type: ignore[assignment]
        try:
            out = model(images, torch.ones(B, N, dtype=torch.bool), torch.ones(B, N, D, dtype=torch.bool),
                        torch.ones(B, N, dtype=torch.long), return_details=True)
        finally:
            if mc.encoder == "resnet_vit":
                del enc.slice_features
    shapes["scan embeddings [B, N, width]"] = list(out.scan_embeddings.shape)
    if model.fusion is not None:
        shapes["fusion tokens ([CLS] + N)"] = [B, N + 1, mc.width]
    shapes["case embedding [B, width]"] = list(out.case_embedding.shape)
    shapes["logits [B, C]"] = list(out.logits.shape)
    return {"preset": cfg.preset, "encoder": mc.encoder, "fusion": mc.fusion, "head": mc.head,
            "num_classes": num_classes, "architecture": architecture(cfg), "training": training_settings(cfg),
            "params": params, "shapes": shapes}


def architecture(cfg: RunConfig) -> dict[str, Any]:
    """The settings that define a preset's model and training recipe, by name (paper terms)."""
    mc, dc, tc = cfg.model, cfg.data, cfg.train
    arch: dict[str, Any] = {"input size (H = W)": dc.size, "slices per 3D scan (D)": dc.depth,
                            "scans per case": dc.max_scans, "input channels": mc.in_channels}
    if mc.encoder in ("resnet_vit", "resnet"):
        arch["ResNet depth"] = mc.resnet_depth if mc.encoder == "resnet_vit" else (
            f"{mc.stem2d_depth}/{mc.stem3d_depth} stems + {mc.shared_depth} shared")
    if mc.encoder == "resnet_vit":
        arch.update({"slice transformer layers": mc.slice_layers, "slice transformer heads": mc.slice_heads})
    elif mc.encoder == "vit":
        arch.update({"ViT layers": mc.vit_layers, "ViT heads": mc.vit_heads, "patch size": mc.patch_size})
    arch["width"] = mc.width
    if mc.fusion == "transformer":
        arch.update({"fusion layers": mc.fusion_layers, "fusion heads": mc.fusion_heads, "fusion width": mc.width})
    arch.update({"transformer layer style": mc.layer_style, "FFN width / width": mc.mlp_ratio,
                 "classifier head": mc.head,
                 "augmentation probability (each)": tc.aug_prob, "augmentation parameters": tc.aug_style,
                 "key-slice swap rate": tc.key_slice_swap, "key-slice loss weight": tc.key_slice_loss,
                 "case mixing rate": tc.case_mix, "weight decay": tc.weight_decay, "batch size": tc.batch_size,
                 "initialisation": mc.init, "knowledge-head scalar bias": mc.knowledge_bias,
                 "pretrained ResNet file": mc.pretrained or "none (random init)"})
    return arch


def scan_caps_text(dc) -> str:
    """The scan caps in words: ``at most 4 scans a case; CT 3, MRI 3, X-ray 2, other modalities 1``."""
    caps = ", ".join(f"{m} {n}" for m, n in dc.modality_caps.items())
    return f"at most {dc.max_scans} a case; {caps}{', ' if caps else ''}other modalities {dc.default_modality_cap}"


def training_settings(cfg: RunConfig) -> dict[str, Any]:
    """The recipe's training settings (those of ``architecture`` aside), by name."""
    tc, dc = cfg.train, cfg.data
    return {"task": dc.task, "epochs": tc.epochs, "warm-up epochs": tc.warmup_epochs,
            "learning rate (AdamW, cosine)": tc.lr, "weight decay": tc.weight_decay,
            "batch size": tc.batch_size, "gradient accumulation": tc.grad_accum, "mixed precision": tc.amp,
            "repeat-factor sampling threshold": tc.repeat_factor or "off",
            "early stopping (epochs)": tc.early_stop or "off", "scans per case (caps)": scan_caps_text(dc),
            "label granularity": dc.granularity}


def _changed_note(d: dict[str, Any]) -> str:
    """Said when overrides changed the parts the preset's one-line job names (a new user's
    `describe --set model.head=knowledge` read 'MLP head' below 'head=knowledge')."""
    from raddiag.config import preset

    m = preset(d["preset"]).model
    changed = [f"{k}={d[k]}" for k in ("encoder", "fusion", "head") if getattr(m, k) != d[k]]
    return f" (the preset's; here changed: {', '.join(changed)})" if changed else ""


def format_description(d: dict[str, Any]) -> str:
    from raddiag.config import PRESET_JOBS

    lines = [f"preset {d['preset']}: encoder={d['encoder']} fusion={d['fusion']} head={d['head']} "
             f"classes={d['num_classes']}"]
    if d["preset"] in PRESET_JOBS:
        lines.append(f"for: {PRESET_JOBS[d['preset']]}" + _changed_note(d))
    lines.append("architecture:")
    lines += [f"  {k:<36} {v}" for k, v in d["architecture"].items()]
    lines.append("training:")
    lines += [f"  {k:<36} {v}" for k, v in d.get("training", {}).items()]
    lines.append("parameters:")
    lines += [f"  {k:<36} {v:>13,}" for k, v in d["params"].items()]
    lines.append("shapes:")
    lines += [f"  {k:<40} {' x '.join(map(str, v))}" for k, v in d["shapes"].items()]
    return "\n".join(lines)

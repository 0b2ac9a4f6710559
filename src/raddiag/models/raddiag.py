"""The RadDiag model: visual encoder per scan -> fusion over a case's scans -> head.

``forward`` maps a batch (``docs``/batch contract) to logits; it holds no loss and no
augmentation. :func:`key_slice_attention_loss` is the optional auxiliary term the
trainer adds (weight ``TrainConfig.key_slice_loss``; 0.001 as released).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from raddiag.config import RunConfig

from .encoders import ResNetEncoder, ResNetViTEncoder, ViTEncoder
from .fusion import MIL_POOLING, POOLING, TransformerFusion, pool_mode, pool_scan_logits
from .heads import KnowledgeHead, MLPHead
from .init import release_init

ENCODERS = ("resnet_vit", "resnet", "vit")
FUSIONS = ("transformer",) + POOLING + MIL_POOLING
HEADS = ("mlp", "knowledge")


@dataclass
class ModelOutput:
    logits: torch.Tensor                          # [B, C]
    case_embedding: torch.Tensor                  # [B, width] (pooling modes: masked mean of scans)
    scan_embeddings: torch.Tensor                 # [B, N, width], zeros at padded scans
    scan_logits: Optional[torch.Tensor] = None    # [B, N, C] in the pooling modes
    slice_attention: Optional[torch.Tensor] = None  # [B, N, D] [CLS]->slice attention (resnet_vit)


class RadDiag(nn.Module):
    """One model family with named presets (``raddiag.config.PRESETS``).

    Attributes: ``encoder`` (``encoder.slice_backbone`` is the per-slice 2D ResNet of the
    ``resnet_vit`` encoder, see :class:`ResNetViTEncoder` for hooking its maps),
    ``fusion`` (None in the pooling modes), ``head``.
    Call as ``model(**{k: batch[k] for k in model.input_keys})``.
    """

    input_keys = ("images", "scan_mask", "slice_mask", "modality")

    def __init__(self, cfg: RunConfig, num_classes: int, label_embeddings: Optional[torch.Tensor] = None) -> None:
        super().__init__()
        mc, dc = cfg.model, cfg.data
        for name, value, allowed in (("encoder", mc.encoder, ENCODERS), ("fusion", mc.fusion, FUSIONS),
                                     ("head", mc.head, HEADS), ("layer_style", mc.layer_style,
                                                                ("standard", "official"))):
            if value not in allowed:
                raise ValueError(f"model.{name}={value!r}; choose one of {list(allowed)}")
        self.cfg = cfg
        if mc.encoder == "resnet_vit":
            self.encoder = ResNetViTEncoder(mc, dc.depth)
        elif mc.encoder == "resnet":
            self.encoder = ResNetEncoder(mc, dc.depth)
        else:
            self.encoder = ViTEncoder(mc, dc.depth, dc.size)
        self.fusion_mode = mc.fusion
        self.pool = pool_mode(mc.fusion)   # None with the fusion module
        self.fusion = (TransformerFusion(mc.width, mc.fusion_layers, mc.fusion_heads, mc.num_modalities,
                                         mc.layer_style, mc.mlp_ratio, mc.dropout)
                       if mc.fusion == "transformer" else None)
        if mc.head == "knowledge":
            if label_embeddings is None:
                raise ValueError("model.head=knowledge needs label_embeddings [num_classes, text_dim]")
            if label_embeddings.shape[0] != num_classes:
                raise ValueError(f"{label_embeddings.shape[0]} label embeddings for {num_classes} classes")
            if label_embeddings.shape[1] != mc.text_dim:
                raise ValueError(f"label embeddings are {label_embeddings.shape[1]}-d; model.text_dim={mc.text_dim}")
            self.head = KnowledgeHead(mc.width, label_embeddings, bias=mc.knowledge_bias)
        else:
            self.head = MLPHead(mc.width, num_classes)
        self.num_modalities = mc.num_modalities
        if mc.init == "release":
            release_init(self)

    def set_pooling(self, mode: str) -> None:
        """Pool this scan-level model's per-scan probabilities at case level with ``mode``
        (``max`` | ``mean`` | ``random``): the three paper baselines share one scan-level training,
        so one trained run evaluates as each of them."""
        if self.fusion is not None or mode not in POOLING:
            raise ValueError(f"set_pooling({mode!r}) needs a pooling model and one of {list(POOLING)}")
        self.pool = mode

    def freeze_pretrained(self) -> None:
        """Linear probe: freeze every weight but the head's; the encoder and fusion also stay
        in eval mode (BatchNorm statistics and dropout) whatever ``train()`` is called with."""
        for name, p in self.named_parameters():
            if not name.startswith("head."):
                p.requires_grad_(False)
        self._frozen = True
        self.train(self.training)

    def train(self, mode: bool = True) -> "RadDiag":
        super().train(mode)
        if getattr(self, "_frozen", False):
            for part in (self.encoder, self.fusion):
                if part is not None:
                    part.eval()
        return self

    @property
    def num_classes(self) -> int:
        return self.head.num_classes

    def set_label_embeddings(self, emb: torch.Tensor) -> None:
        """Swap the knowledge head's label embeddings (score a new label space zero-shot)."""
        if not isinstance(self.head, KnowledgeHead):
            raise ValueError("set_label_embeddings needs model.head=knowledge")
        self.head.set_label_embeddings(emb)

    def forward(self, images: torch.Tensor, scan_mask: torch.Tensor, slice_mask: torch.Tensor,
                modality: torch.Tensor, return_details: bool = False):
        if images.dim() != 6:
            raise ValueError(f"images must be [B, N, C, D, H, W], got {tuple(images.shape)}")
        B, N, C, D = images.shape[:4]
        if scan_mask.shape != (B, N) or slice_mask.shape != (B, N, D) or modality.shape != (B, N):
            raise ValueError(f"mask/modality shapes {tuple(scan_mask.shape)}, {tuple(slice_mask.shape)}, "
                             f"{tuple(modality.shape)} do not match images {tuple(images.shape)}")
        scan_mask, slice_mask = scan_mask.bool(), slice_mask.bool()
        if modality.numel() and int(modality.max()) >= self.num_modalities:
            raise ValueError(f"modality id {int(modality.max())} >= model.num_modalities={self.num_modalities}")
        scan_emb, slice_attn = self.encoder(images, scan_mask, slice_mask, need_attention=return_details)
        scan_logits = None
        if self.fusion is not None:
            case_emb = self.fusion(scan_emb, scan_mask, modality.long())
            logits = self.head(case_emb)
        else:
            scan_logits = self.head(scan_emb)
            gen = None
            if self.pool == "random" and not self.training:
                gen = torch.Generator().manual_seed(self.cfg.model.random_seed)
            logits = pool_scan_logits(scan_logits, scan_mask, self.pool, gen)
            w = scan_mask[..., None].to(scan_emb.dtype)
            case_emb = (scan_emb * w).sum(1) / w.sum(1).clamp(min=1)
        if not return_details:
            return logits
        return ModelOutput(logits, case_emb, scan_emb, scan_logits, slice_attn)


def build_model(cfg: RunConfig, num_classes: int, label_embeddings: Optional[torch.Tensor] = None) -> RadDiag:
    """A fresh (randomly initialised) model for ``cfg`` scoring ``num_classes`` classes."""
    return RadDiag(cfg, num_classes, label_embeddings)


def stand_in_label_embeddings(cfg: RunConfig, num_classes: int, seed: int = 0) -> Optional[torch.Tensor]:
    """Random unit-norm label embeddings ``[num_classes, text_dim]`` for a ``head=knowledge`` model
    built only to be measured (``raddiag describe``, benchmarks); None for other heads."""
    if cfg.model.head != "knowledge":
        return None
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(num_classes, cfg.model.text_dim, generator=g), dim=-1)


def key_slice_attention_loss(slice_attention: torch.Tensor, key_slice: torch.Tensor, slice_mask: torch.Tensor,
                             sigma: Optional[float] = None, eps: float = 1e-5) -> torch.Tensor:
    """The release's key-slice attention loss: the symmetric KL divergence
    ``(KL(g || a) + KL(a || g)) / 2`` between the [CLS] attention over a scan's real slices ``a``
    and a Gaussian ``g`` of width ``sigma`` (default ``D / 16``, D the padded slice count, i.e.
    ``data.depth``) centred on the key slice, averaged over the real scans that have a key slice.

    ``slice_attention [B, N, D]`` (``ModelOutput.slice_attention``), ``key_slice [B, N]``
    (-1 = none), ``slice_mask [B, N, D]``. Both distributions live on the real slices: ``a`` is
    renormalised over them (the attention also weights [CLS]), ``g`` is cut at the last real
    slice and normalised; then both are clamped below at ``eps`` (1e-5, as released) before the
    logs. A 2D scan (one real slice) contributes 0 but counts in the mean, as in the release.
    With several heads ``a`` is the head-averaged attention (the release softmaxes the
    head-averaged scores; the two agree for one head). Returns 0 (with a graph) when no scan has
    a key slice. The trainer weights it by ``TrainConfig.key_slice_loss`` (0.001 as released).
    """
    mask = slice_mask.bool()
    valid = (key_slice >= 0) & mask.any(-1)
    if not valid.any():
        return slice_attention.sum() * 0.0
    D = slice_attention.shape[-1]
    sigma = D / 16.0 if sigma is None else float(sigma)
    a, m, k = slice_attention[valid], mask[valid], key_slice[valid].to(slice_attention.dtype)
    pos = torch.arange(D, device=a.device, dtype=a.dtype)
    g = torch.exp(-0.5 * ((pos[None] - k[:, None]) / sigma) ** 2) * m
    g = (g / g.sum(-1, keepdim=True).clamp(min=1e-30)).clamp(min=eps)
    a = a * m
    a = (a / a.sum(-1, keepdim=True).clamp(min=1e-30)).clamp(min=eps)
    log_ratio = torch.log(g) - torch.log(a)
    kl = ((g - a) * log_ratio * m).sum(-1)   # KL(g||a) + KL(a||g) = sum (g - a)(log g - log a)
    return 0.5 * kl.mean()

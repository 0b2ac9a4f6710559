"""Transformer encoders shared by the slice transformer, the ViT encoder and the fusion module.

Two numerically different styles with one interface, ``encoder(x, mask) -> x``
(``x [B, L, d]``, ``mask [B, L]`` bool, True = real token; padded tokens are never
attended to as keys). ``encoder.last_attention`` holds the head-averaged attention of
the last layer ``[B, L, L]`` when the call asked for it (``need_attention=True``).

- ``"standard"``: a pre-norm block built from torch's own ``nn.LayerNorm`` and
  ``nn.MultiheadAttention`` (batch-first; its fused scaled-dot-product path when no
  attention weights are requested) and a GELU MLP, plus a final LayerNorm.
  (Written as a small block rather than ``nn.TransformerEncoderLayer`` so the last
  layer can return its attention map in the same pass, which the key-slice loss
  and saliency need at every training step.)
- ``"official"``: the released checkpoint's block, reproduced exactly from
  ``docs/official-checkpoint.md``: their LayerNorm (unbiased std, eps outside the
  root), attention on the *un-normalised* input, ``x + FFN(LN(x))`` with a ReLU FFN,
  and a final norm. Module names mirror the release's state-dict keys
  (``layers.{i}.self_attn.linears.{0..3}``, ``feed_forward.w_1/w_2``,
  ``sublayer.{0,1}.norm.{a,b}``, ``norm.{a,b}``) so the importer is a prefix rename.
"""
from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn


class OfficialLayerNorm(nn.Module):
    """``a * (x - mean) / (std + eps) + b`` with the UNBIASED std (the release's LayerNorm).

    ``trainable=False`` stores ``a``/``b`` as buffers: the release keeps a norm whose
    output it discards (``sublayer.0.norm``); as buffers its values round-trip through
    the state dict without being a parameter that never receives a gradient (which
    DDP would reject).
    """

    def __init__(self, d: int, eps: float = 1e-6, trainable: bool = True) -> None:
        super().__init__()
        self.eps = eps
        if trainable:
            self.a = nn.Parameter(torch.ones(d))
            self.b = nn.Parameter(torch.zeros(d))
        else:
            self.register_buffer("a", torch.ones(d))
            self.register_buffer("b", torch.zeros(d))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(-1, keepdim=True)
        std = x.std(-1, keepdim=True)  # unbiased (n - 1), as released
        return self.a * (x - mean) / (std + self.eps) + self.b


class _OfficialAttention(nn.Module):
    def __init__(self, d: int, heads: int) -> None:
        super().__init__()
        if d % heads:
            raise ValueError(f"width {d} is not divisible by {heads} heads")
        self.heads, self.d_k = heads, d // heads
        self.linears = nn.ModuleList([nn.Linear(d, d) for _ in range(4)])  # q, k, v, out

    def forward(self, x: torch.Tensor, mask: torch.Tensor, need_attention: bool):
        B, L, d = x.shape
        q, k, v = (lin(x).view(B, L, self.heads, self.d_k).transpose(1, 2) for lin in self.linears[:3])
        if not need_attention:
            # torch's fused kernel (flash / memory-efficient on a GPU: the L x L map is never stored). Same
            # result: a key the release fills with -1e9 weighs exactly 0 in fp32, as a masked-out one here (every
            # caller puts a real [CLS] key first, so no row is all masked).
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask[:, None, None, :])
            return self.linears[3](out.transpose(1, 2).reshape(B, L, d)), None
        scores = q @ k.transpose(-2, -1) / math.sqrt(self.d_k)
        scores = scores.masked_fill(~mask[:, None, None, :], -1e9)
        p = scores.softmax(-1)
        out = (p @ v).transpose(1, 2).reshape(B, L, d)
        return self.linears[3](out), p.mean(1)


class _FFN(nn.Module):
    def __init__(self, d: int, d_ff: int) -> None:
        super().__init__()
        self.w_1, self.w_2 = nn.Linear(d, d_ff), nn.Linear(d_ff, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w_2(F.relu(self.w_1(x)))


class _Sublayer(nn.Module):
    def __init__(self, d: int, trainable: bool) -> None:
        super().__init__()
        self.norm = OfficialLayerNorm(d, trainable=trainable)


class OfficialLayer(nn.Module):
    def __init__(self, d: int, heads: int, d_ff: int) -> None:
        super().__init__()
        self.self_attn = _OfficialAttention(d, heads)
        self.feed_forward = _FFN(d, d_ff)
        # sublayer.0.norm exists in the release but its output is discarded
        self.sublayer = nn.ModuleList([_Sublayer(d, trainable=False), _Sublayer(d, trainable=True)])

    def forward(self, x, mask, need_attention=False):
        a, attn = self.self_attn(x, mask, need_attention)  # attention on the un-normalised x
        x = x + a
        x = x + self.feed_forward(self.sublayer[1].norm(x))
        return x, attn


class StandardLayer(nn.Module):
    """Pre-norm transformer block from torch's LayerNorm and MultiheadAttention."""

    def __init__(self, d: int, heads: int, d_ff: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(d)
        self.self_attn = nn.MultiheadAttention(d, heads, dropout=dropout, batch_first=True)
        self.norm2 = nn.LayerNorm(d)
        self.mlp = nn.Sequential(nn.Linear(d, d_ff), nn.GELU(), nn.Dropout(dropout), nn.Linear(d_ff, d))
        self.drop = nn.Dropout(dropout)

    def forward(self, x, mask, need_attention=False):
        h = self.norm1(x)
        a, attn = self.self_attn(h, h, h, key_padding_mask=~mask, need_weights=need_attention,
                                 average_attn_weights=True)
        x = x + self.drop(a)
        x = x + self.drop(self.mlp(self.norm2(x)))
        return x, attn


class Encoder(nn.Module):
    """A stack of layers and a final norm: ``forward(x, mask, need_attention=False)``."""

    def __init__(self, d: int, layers: int, heads: int, style: str = "standard",
                 mlp_ratio: float = 1.0, dropout: float = 0.0) -> None:
        super().__init__()
        if d % heads:
            raise ValueError(f"width {d} is not divisible by {heads} heads")
        d_ff = max(1, int(round(d * mlp_ratio)))
        self.style = style
        if style == "official":
            self.layers = nn.ModuleList([OfficialLayer(d, heads, d_ff) for _ in range(layers)])
            self.norm = OfficialLayerNorm(d)
        elif style == "standard":
            self.layers = nn.ModuleList([StandardLayer(d, heads, d_ff, dropout) for _ in range(layers)])
            self.norm = nn.LayerNorm(d)
        else:
            raise ValueError(f"unknown layer_style {style!r} (standard | official)")
        self.last_attention: Optional[torch.Tensor] = None

    def forward(self, x: torch.Tensor, mask: torch.Tensor, need_attention: bool = False) -> torch.Tensor:
        attn = None
        for i, layer in enumerate(self.layers):
            x, attn = layer(x, mask, need_attention and i == len(self.layers) - 1)
        self.last_attention = attn
        return self.norm(x)

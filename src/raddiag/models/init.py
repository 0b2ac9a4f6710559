"""The release's initialisation (``model.init: release``).

The release draws its learned tokens from a standard normal (``torch.randn``: the slice
transformer's [CLS] and positions, the fusion's [CLS] and modality embeddings) and re-draws every
matrix of its transformers with Xavier-uniform (its encoder's ``reset_parameters``); biases,
norms, the ResNet and the head keep PyTorch's defaults. raddiag's own (``standard``) draws the
tokens with std 0.02, as ViT and BERT do, and keeps each layer's default.
"""
from __future__ import annotations

import torch
from torch import nn

from .layers import Encoder

TOKENS = ("cls_token", "pos_emb", "mod_embed", "pos2d", "pos3d")


@torch.no_grad()
def release_init(model: nn.Module) -> nn.Module:
    """Re-initialise ``model``'s tokens and transformer matrices as the release does; returns it."""
    for name, p in model.named_parameters():
        if name.rsplit(".", 1)[-1] in TOKENS:
            nn.init.normal_(p)
    for m in model.modules():
        if isinstance(m, Encoder):
            for p in m.parameters():
                if p.dim() > 1:
                    nn.init.xavier_uniform_(p)
    return model

"""Classifier heads: embedding ``[..., width]`` -> logits ``[..., C]``."""
from __future__ import annotations

import torch
from torch import nn


class MLPHead(nn.Module):
    """Linear, GELU, Linear (as released: ``fc.0``, ``fc.2``)."""

    def __init__(self, width: int, num_classes: int) -> None:
        super().__init__()
        self.fc = nn.Sequential(nn.Linear(width, width), nn.GELU(), nn.Linear(width, num_classes))

    @property
    def num_classes(self) -> int:
        return self.fc[2].out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x)


class KnowledgeHead(nn.Module):
    """Knowledge-guided classifier: ``logits = x . proj(E_c) (+ bias)``.

    ``E [C, text_dim]`` are frozen label-name embeddings from the knowledge encoder, kept in
    a non-persistent buffer (stored beside the weights in ``label_embeddings.safetensors``);
    :meth:`set_label_embeddings` swaps them so a trained model scores class names it never
    saw. ``proj`` (Linear text_dim -> width) and, with ``bias`` (``model.knowledge_bias``), a single
    class-agnostic scalar ``bias`` (lets BCE learn the base rate without a per-class parameter)
    are the only weights; the release has no scalar (its ``x . proj`` bias term, ``x . b``, is
    class-agnostic too). In inference the projected embeddings are cached until the weights or
    embeddings change.
    """

    def __init__(self, width: int, label_embeddings: torch.Tensor, bias: bool = True) -> None:
        super().__init__()
        if label_embeddings is None or label_embeddings.dim() != 2:
            raise ValueError("the knowledge head needs label embeddings of shape [num_classes, text_dim]")
        self.proj = nn.Linear(label_embeddings.shape[1], width)
        self.bias = nn.Parameter(torch.zeros(())) if bias else None
        self.register_buffer("label_embeddings", label_embeddings.detach().float().clone(), persistent=False)
        self._cache = None

    @property
    def num_classes(self) -> int:
        return self.label_embeddings.shape[0]

    def set_label_embeddings(self, emb: torch.Tensor) -> None:
        if emb.dim() != 2 or emb.shape[1] != self.proj.in_features:
            raise ValueError(f"label embeddings must be [C, {self.proj.in_features}], got {tuple(emb.shape)}")
        self.label_embeddings = emb.detach().to(self.proj.weight.device, torch.float32).clone()
        self._cache = None

    def class_weights(self) -> torch.Tensor:
        """The projected label embeddings ``[C, width]``."""
        if torch.is_grad_enabled():
            return self.proj(self.label_embeddings)
        key = (self.proj.weight._version, self.proj.bias._version, self.label_embeddings.data_ptr(),
               self.proj.weight.data_ptr(), self.proj.weight.dtype)
        if self._cache is None or self._cache[0] != key:
            self._cache = (key, self.proj(self.label_embeddings.to(self.proj.weight.dtype)))
        return self._cache[1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = x @ self.class_weights().to(x.dtype).T
        return logits if self.bias is None else logits + self.bias

"""Case-level fusion: the transformer fusion module, and the pooling baselines.

Transformer fusion (paper Eq. 3): learnable modality embeddings added to the scan
embeddings, a [CLS] token, no positional embedding, a transformer encoder with the scan
mask; the [CLS] output is the case embedding.

Pooling baselines (Supplementary B, "without fusion"): the head scores every scan and
the per-scan predictions are pooled over the real scans. Two ways to train them:

- ``max`` / ``mean`` / ``random`` (the paper's baselines): a *scan-level* classifier trained
  on single scans, each carrying its case's labels (the trainer feeds
  :class:`raddiag.data.dataset.ScanDataset`, one scan per sample, so the pool is the
  identity in training); at evaluation and prediction its per-scan probabilities are
  pooled at case level.
- ``mil_max`` / ``mil_mean`` / ``mil_random``: the same pools, but trained end to end
  through the pool on whole cases (multiple-instance learning).

Pooled *probabilities* are turned back into logits so the trainer's BCE-with-logits and
``sigmoid`` at prediction apply unchanged:

- ``max``: max over scan logits (sigmoid is monotone, so this IS the max probability's logit);
- ``mean``: the logit of the mean probability, ``log(mean p) - log(mean (1 - p))``, computed
  stably as ``logsumexp(logsigmoid(z)) - logsumexp(logsigmoid(-z))`` over real scans;
- ``random``: one real scan's logits per case; random in training (torch's global RNG),
  deterministic in eval (a generator seeded with ``ModelConfig.random_seed`` at every call,
  so the same batch always gets the same picks).
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from .layers import Encoder

POOLING = ("max", "mean", "random")            # scan-level training, case-level pooling
MIL_POOLING = tuple(f"mil_{m}" for m in POOLING)  # trained end to end through the pool


def pool_mode(fusion: str) -> Optional[str]:
    """The pooling (``max`` | ``mean`` | ``random``) of a ``model.fusion`` value, None for
    ``transformer``."""
    return fusion.removeprefix("mil_") if fusion in POOLING + MIL_POOLING else None


def trains_on_scans(fusion: str) -> bool:
    """Whether ``model.fusion`` is a paper baseline trained on single scans."""
    return fusion in POOLING


class TransformerFusion(nn.Module):
    def __init__(self, width: int, layers: int, heads: int, num_modalities: int,
                 style: str = "standard", mlp_ratio: float = 1.0, dropout: float = 0.0) -> None:
        super().__init__()
        self.mod_embed = nn.Parameter(torch.randn(num_modalities, width) * 0.02)
        self.cls_token = nn.Parameter(torch.randn(1, 1, width) * 0.02)
        self.transformer = Encoder(width, layers, heads, style, mlp_ratio, dropout)

    def forward(self, scan_emb: torch.Tensor, scan_mask: torch.Tensor, modality: torch.Tensor) -> torch.Tensor:
        x = scan_emb + self.mod_embed[modality]
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], 1)
        mask = torch.cat([scan_mask.new_ones(scan_mask.shape[0], 1), scan_mask], 1)
        return self.transformer(x, mask)[:, 0]


def pool_scan_logits(scan_logits: torch.Tensor, scan_mask: torch.Tensor, mode: str,
                     generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Case logits ``[B, C]`` from per-scan logits ``[B, N, C]`` over the real scans."""
    m = scan_mask[..., None]
    if mode == "max":
        return scan_logits.masked_fill(~m, float("-inf")).amax(1)
    if mode == "mean":
        neg = torch.finfo(scan_logits.dtype).min
        pos = torch.nn.functional.logsigmoid(scan_logits).masked_fill(~m, neg).logsumexp(1)
        negp = torch.nn.functional.logsigmoid(-scan_logits).masked_fill(~m, neg).logsumexp(1)
        return pos - negp
    if mode == "random":
        n_real = scan_mask.sum(1)
        u = torch.rand(scan_mask.shape[0], generator=generator, device="cpu").to(scan_logits.device)
        k = (u * n_real).long().clamp(max=n_real - 1)                  # k-th real scan
        rank = scan_mask.long().cumsum(1) - 1
        pick = (scan_mask & (rank == k[:, None])).float()[..., None]
        return (scan_logits * pick).sum(1)
    raise ValueError(f"unknown pooling {mode!r}; choose one of {POOLING}")

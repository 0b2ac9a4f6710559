"""The optimiser and its schedule: AdamW over named parameter groups, linear warm-up then cosine
(paper Section 11.1), stepped per optimiser step."""
from __future__ import annotations

import math

import torch


def lr_factor(step: int, warmup_steps: int, total_steps: int) -> float:
    """Linear warm-up from ~0 to 1 over ``warmup_steps``, then cosine to 0 at ``total_steps``."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    span = max(1, total_steps - warmup_steps)
    t = min(1.0, (step - warmup_steps) / span)
    return 0.5 * (1.0 + math.cos(math.pi * t))


def param_groups(model: torch.nn.Module, weight_decay: float, lr: float, encoder_lr_scale: float = 1.0) -> list[dict]:
    """AdamW groups: no weight decay on biases and norms; the head at ``lr``, everything else
    (the pre-trained encoder and fusion when fine-tuning) at ``lr * encoder_lr_scale``.
    Frozen parameters are left out; each group is named (``head`` / ``encoder``, ``_nd`` without
    decay). At scale 1 the head shares the groups (``all``, ``all_nd``: the layout of earlier
    checkpoints, which therefore still resume)."""
    if encoder_lr_scale < 0:
        raise ValueError(f"train.encoder_lr_scale={encoder_lr_scale}; must be >= 0")
    groups: dict[str, dict] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        part = "all" if encoder_lr_scale == 1 else "head" if name.startswith("head.") else "encoder"
        key = part if p.ndim > 1 else f"{part}_nd"
        g = groups.setdefault(key, {"params": [], "name": key, "weight_decay": weight_decay if p.ndim > 1 else 0.0,
                                    "lr": lr * (1.0 if part == "head" else encoder_lr_scale)})
        g["params"].append(p)
    return [groups[k] for k in ("all", "all_nd", "encoder", "encoder_nd", "head", "head_nd") if k in groups]


def make_optimizer(model: torch.nn.Module, tc) -> torch.optim.AdamW:
    """The run's AdamW over :func:`param_groups` (``tc``: the run's TrainConfig), fused: one kernel
    per weight updates it and both moments. torch's default on the CPU is a Python loop of ~10
    element-wise passes per weight (13 % of an ``official`` step at 2 x 16 x 128 px,
    ``benchmarks/train_speed.py``); foreach would hold a temporary copy of every moment at the peak.
    A checkpoint keeps the flag, so a run resumes with the update it started with."""
    return torch.optim.AdamW(param_groups(model, tc.weight_decay, tc.lr, tc.encoder_lr_scale), lr=tc.lr,
                             fused=True)

"""The task a run learns (``data.task``), in one place: what its logits become, its loss, and
what a case's labels must be.

- ``multilabel`` (the paper's): any number of classes per case; sigmoid probabilities, binary
  cross-entropy, a per-class threshold (chosen on validation) decides each class.
- ``multiclass``: exactly one class per case (most small clinical sets: benign / malignant /
  normal); softmax probabilities, cross-entropy, the most probable class is the prediction. A case
  with two classes (or none of the label space) is refused before training or evaluation.
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import torch
from torch import nn

from raddiag.config import TASKS

MULTICLASS = "multiclass"


def task_of(model) -> str:
    """The task of a RadDiag model (or its inference twin): its config's ``data.task``."""
    return getattr(getattr(getattr(model, "cfg", None), "data", None), "task", "multilabel")


def probabilities(logits: torch.Tensor, task: str) -> torch.Tensor:
    """``[B, C]`` probabilities of ``[B, C]`` logits: softmax for ``multiclass``, else sigmoid."""
    if task not in TASKS:
        raise ValueError(f"data.task must be one of {list(TASKS)}, got {task!r}")
    return torch.softmax(logits, -1) if task == MULTICLASS else torch.sigmoid(logits)


class OneLabelCrossEntropy(nn.Module):
    """Cross-entropy of logits against one-hot targets ``[B, C]``; a row without exactly one class
    raises (the up-front check, :func:`check_single_label`, names the case)."""

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        n = target.sum(-1)
        if not bool((n == 1).all()):
            bad = int(n[n != 1][0])
            raise ValueError(f"data.task=multiclass needs exactly one class per case; a case of the batch "
                             f"carries {bad} (set data.task=multilabel for cases with several findings)")
        return nn.functional.cross_entropy(logits, target.argmax(-1))


def task_loss(task: str) -> nn.Module:
    """The training loss of ``task``: cross-entropy for ``multiclass``, else binary cross-entropy."""
    return OneLabelCrossEntropy() if task == MULTICLASS else nn.BCEWithLogitsLoss()


def validation_loss(scores: np.ndarray, labels: np.ndarray, task: str) -> float:
    """The loss of validation probabilities ``scores`` against ``labels`` (for the training log)."""
    p = np.clip(scores.astype(np.float64), 1e-7, 1 - 1e-7)
    if task == MULTICLASS:
        return float(-(labels * np.log(p)).sum(1).mean())
    return float(-(labels * np.log(p) + (1 - labels) * np.log(1 - p)).mean())


def check_single_label(labels: np.ndarray, case_ids: Optional[Sequence[str]] = None,
                       names: Optional[Sequence[str]] = None, where: str = "the data") -> np.ndarray:
    """The class index of each case of multi-hot ``labels [N, C]``; a ValueError naming the cases
    (up to 5) that carry two or more classes, or none of the label space."""
    labels = np.asarray(labels) > 0.5
    n = labels.sum(1)
    bad = np.flatnonzero(n != 1)
    if bad.size:
        def one(i: int) -> str:
            case = repr(str(case_ids[i])) if case_ids is not None else f"number {i}"
            have = [str(names[c]) if names is not None else str(c) for c in np.flatnonzero(labels[i])]
            return f"case {case}: {', '.join(have) if have else 'no class of the label space'}"

        shown = "; ".join(one(int(i)) for i in bad[:5]) + (f"; ... ({bad.size - 5} more)" if bad.size > 5 else "")
        raise ValueError(f"{where}: data.task=multiclass needs exactly one class per case, but {bad.size} "
                         f"case(s) carry {'several or none' if (n[bad] == 0).any() else 'several'} ({shown}); "
                         "for cases with several findings pass --set data.task=multilabel (finetune keeps "
                         "its source run's task unless told)")
    return labels.argmax(1)


def check_dataset(dataset, task: str, where: str) -> None:
    """The up-front check of a case dataset's targets for ``task`` (multiclass: one class each)."""
    if task != MULTICLASS or not hasattr(dataset, "targets"):
        return
    records = getattr(dataset, "records", None)
    ids = [r.get("id") for r in records] if records is not None else None
    check_single_label(dataset.targets, ids, getattr(dataset.labels, "names", None), where)

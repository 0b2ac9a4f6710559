"""Batched inference over a prepared dataset split: the one prediction loop that
evaluation, zero-shot transfer and training-time validation share."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch


@dataclass
class Predictions:
    scores: np.ndarray          # [N, C] probabilities (sigmoid of the logits; softmax for data.task=multiclass)
    labels: np.ndarray          # [N, C'] multi-hot targets in the dataset's label space
    case_ids: list[str]
    anatomy: list[Optional[str]]


@torch.no_grad()
def predict_dataset(model, dataset, batch_size: int = 8, device: str = "cpu", progress: bool = False,
                    desc: str = "predict") -> Predictions:
    """Probabilities of ``model`` on every case of ``dataset`` (a CaseDataset), in order (sigmoid of
    the logits; softmax when the model's ``data.task`` is ``multiclass``)."""
    from raddiag.data.dataset import make_loader
    from raddiag.task import probabilities, task_of

    task = task_of(model)

    loader = make_loader(dataset, batch_size=batch_size, shuffle=False)
    if progress:
        from tqdm import tqdm

        loader = tqdm(loader, desc=desc, unit="batch", leave=False)
    was_training = model.training
    model.eval()
    scores, labels, ids, anatomy = [], [], [], []
    try:
        for batch in loader:
            inputs = {k: batch[k].to(device) for k in model.input_keys}
            scores.append(probabilities(model(**inputs).float(), task).cpu().numpy())
            labels.append(batch["labels"].numpy())
            ids += batch["case_ids"]
            anatomy += batch["anatomy"]
    finally:
        model.train(was_training)
    return Predictions(np.concatenate(scores), np.concatenate(labels), ids, anatomy)

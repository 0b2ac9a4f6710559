"""The knowledge head's label embeddings: given (a tensor or a ``knowledge embed`` file, checked
against the label space's class names) or computed once per run by a knowledge encoder, and kept in
the run folder (paper Section 4.2.2)."""
from __future__ import annotations

import logging
from pathlib import Path

import torch

from raddiag.data.labels import LabelSpace

from . import distributed as dist_utils

log = logging.getLogger(__name__)


def resolve_label_embeddings(labels: LabelSpace, label_embeddings=None, knowledge_encoder=None) -> torch.Tensor:
    """Label embeddings ``[C, d]``: a given tensor, a safetensors file (key ``embeddings``), or
    computed once from a knowledge encoder folder (None: the default text encoder)."""
    if isinstance(label_embeddings, torch.Tensor):
        emb = label_embeddings
    elif label_embeddings is not None:
        path = Path(label_embeddings)
        if not path.exists():
            raise FileNotFoundError(f"{path}: label embeddings file does not exist")
        from raddiag.run import read_safetensors

        tensors = read_safetensors(path)
        if "embeddings" not in tensors:
            raise ValueError(f"{path}: no 'embeddings' tensor (found {sorted(tensors)})")
        emb = tensors["embeddings"]
        _check_embedded_texts(path, labels)
    else:
        from raddiag.knowledge.embed import embed_labels
        from raddiag.knowledge.encoder import TextEncoder

        emb = embed_labels(TextEncoder.load(knowledge_encoder), labels)
    emb = emb.detach().float().cpu()
    if emb.ndim != 2 or emb.shape[0] != len(labels):
        raise ValueError(f"label embeddings have shape {tuple(emb.shape)}; expected [{len(labels)}, d]")
    return emb


def _check_embedded_texts(path: Path, labels: LabelSpace) -> None:
    """Refuse embeddings that ``knowledge embed`` made for other class names, or in another order
    (the texts it records): one of the same count was taken row for row, each class trained
    against another class's name (a dataset prepared again orders its classes by its new counts)."""
    from raddiag.knowledge.embed import label_texts, load_label_embeddings

    texts, want = load_label_embeddings(path)[1], label_texts(labels)
    if texts and list(texts) != list(want):
        i = next((i for i, (a, b) in enumerate(zip(texts, want)) if a != b), min(len(texts), len(want)))
        got = repr(texts[i]) if i < len(texts) else "nothing"
        raise ValueError(f"{path}: embeds other class names than this dataset's, in order (row {i}: {got}, class "
                         f"{i}: {want[i]!r}); embed this dataset's label space (knowledge embed --labels "
                         f"DATA/labels_{labels.granularity}.json)")


def run_label_embeddings(d, run, cfg, labels, label_embeddings, knowledge_encoder, resume, progress=False):
    """The knowledge head's label embeddings, computed once per run (rank 0, then broadcast) and
    kept in the run folder; None for other heads. Without given embeddings or encoder, the labels
    are embedded by the fine-tuned knowledge encoder in the cache (built there when missing); the
    run records which encoder it was and the log says it."""
    if cfg.model.head != "knowledge":
        return None
    if resume and run.label_embeddings.exists():
        return fit_text_dim(cfg, run.load_label_embeddings())
    emb = None
    if d.is_main:
        if label_embeddings is None:
            from raddiag.knowledge.train import default_knowledge_encoder, encoder_summary

            knowledge_encoder = knowledge_encoder or default_knowledge_encoder(progress)
            log.info("label embeddings: %d class names embedded by %s", len(labels), encoder_summary(knowledge_encoder))
        emb = resolve_label_embeddings(labels, label_embeddings, knowledge_encoder)
    emb = dist_utils.broadcast_object(emb, d)
    if d.is_main and label_embeddings is None:
        run.create().record_text_encoder(knowledge_encoder)
    return fit_text_dim(cfg, emb)


def fit_text_dim(cfg, emb: torch.Tensor) -> torch.Tensor:
    """``model.text_dim`` is the label embeddings' width, whichever encoder made them (MedCPT: 768)."""
    if emb.shape[1] != cfg.model.text_dim:
        log.info("model.text_dim=%d: the width of the label embeddings", emb.shape[1])
        cfg.model.text_dim = int(emb.shape[1])
    return emb

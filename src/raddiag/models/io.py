"""Save a model to, and load it from, a run folder (safetensors + YAML + JSON; never unpickles)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import torch

from raddiag.config import RunConfig
from raddiag.data.labels import LabelSpace
from raddiag.run import RunFolder

from .heads import KnowledgeHead
from .raddiag import RadDiag, build_model


def save_model(model: RadDiag, run: RunFolder | str | Path, cfg: Optional[RunConfig] = None,
               labels: Optional[LabelSpace] = None) -> RunFolder:
    """Write ``model.safetensors`` (and, for the knowledge head, ``label_embeddings.safetensors``);
    with ``cfg`` / ``labels`` also ``config.yaml`` / ``label_space.json``. Given both, the folder
    holds a new run (a new run id, :mod:`raddiag.run`); else the weights join the folder's run."""
    from raddiag.run import new_run_id

    run = run if isinstance(run, RunFolder) else RunFolder(run)
    run.create()
    run_id = new_run_id() if cfg is not None and labels is not None else run.run_id()
    run.save_weights(model, run_id)
    if isinstance(model.head, KnowledgeHead):
        run.save_label_embeddings(model.head.label_embeddings, run_id)
    if cfg is not None:
        run.save_config(cfg, run_id)
    if labels is not None:
        run.save_labels(labels, run_id)
    return run


def load_model(run_dir: RunFolder | str | Path, device: str = "cpu") -> tuple[RadDiag, RunConfig, LabelSpace]:
    """``(model in eval mode, RunConfig, LabelSpace)`` from a run folder (or the authors'
    released checkpoint: :func:`raddiag.run.resolve_run`)."""
    from raddiag.run import read_safetensors, resolve_run

    run = resolve_run(run_dir)
    cfg = run.load_config()
    labels = run.load_labels()
    emb = None
    if cfg.model.head == "knowledge":
        emb = run.load_label_embeddings()
        if emb is None:
            raise FileNotFoundError(f"{run.root}: model.head=knowledge but {run.label_embeddings.name} is missing")
    model = build_model(cfg, len(labels), emb)
    state = read_safetensors(run.weights)
    missing, unexpected = _diff(model, state)
    if missing or unexpected:
        raise ValueError(f"{run.weights}: weights do not fit config.yaml "
                         f"(missing {missing[:5]}{'...' if len(missing) > 5 else ''}, "
                         f"unexpected {unexpected[:5]}{'...' if len(unexpected) > 5 else ''})")
    own = model.state_dict()
    bad = [k for k, v in state.items() if v.shape != own[k].shape]
    if bad:
        raise ValueError(f"{run.weights}: shape mismatch for {bad[:5]} "
                         f"(e.g. {bad[0]}: file {tuple(state[bad[0]].shape)}, model {tuple(own[bad[0]].shape)})")
    model.load_state_dict(state, strict=True)
    return model.to(device).eval(), cfg, labels


def _diff(model: torch.nn.Module, state: dict) -> tuple[list[str], list[str]]:
    own = set(model.state_dict())
    return sorted(own - set(state)), sorted(set(state) - own)

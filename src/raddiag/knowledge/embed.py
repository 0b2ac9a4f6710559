"""Label embeddings: one vector per class name, computed once and stored with the run.

The knowledge head (paper Eq. 6) takes the dot product of the case embedding with these
frozen vectors; they are computed here once and saved as safetensors
(``{"embeddings": [C, d]}``, the run folder's ``label_embeddings.safetensors``), never
re-encoded during training.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional, Sequence, Union

import torch

from raddiag.data.case import NORMAL
from raddiag.data.labels import LabelSpace
from raddiag.knowledge.encoder import TextEncoder


def _code_text(code: str, kb) -> Optional[str]:
    c = kb.find(code)
    if c is None:
        return None
    # "Emergency use of U07" says nothing; a supplement synonym (COVID-19) does.
    if c.name.lower().startswith("emergency use of") and c.synonyms:
        return c.synonyms[0]
    return c.name


def label_texts(label_space: Union[LabelSpace, Sequence[str]], kb=None) -> list[str]:
    """The text encoded for each class: the disorder name; for ``granularity == "icd10"`` the
    code's ICD-10-CM description ("J12" -> "Viral pneumonia, not elsewhere classified");
    ``Normal`` -> "Normal"; an unknown code falls back to its name. A class's own
    ``description`` in the label space, when set, wins."""
    if not isinstance(label_space, LabelSpace):
        return [str(n) for n in label_space]
    if label_space.granularity != "icd10":
        return [d or n for n, d in zip(label_space.names, label_space.descriptions)]
    if kb is None:
        from raddiag.knowledge.kb import icd10cm_kb

        kb = icd10cm_kb(max_code_len=4)
    out = []
    for name, code, desc in zip(label_space.names, label_space.codes, label_space.descriptions):
        if desc:
            out.append(desc)
        elif name == NORMAL:
            out.append(NORMAL)
        else:
            out.append(_code_text(code or name, kb) or name)
    return out


def embed_labels(encoder: TextEncoder, label_space_or_names, batch_size: int = 64,
                 progress: bool = False) -> torch.Tensor:
    """``[C, d]`` L2-normalised embeddings of :func:`label_texts` (also for names never seen
    in training: zero-shot on a new label space)."""
    texts = label_texts(label_space_or_names)
    if not texts:
        raise ValueError("no class names to embed")
    return encoder.encode(texts, batch_size=batch_size, progress=progress)


def read_labels(path: str | Path) -> Union[LabelSpace, list[str]]:
    """A label space JSON (``label_space.json``), a release ``disorder_label_dict.json``
    (name -> index) or a JSON list of names; a run folder means its ``label_space.json``."""
    path = Path(path)
    if path.is_dir():
        path = path / "label_space.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: labels file does not exist")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc.msg}, line {exc.lineno})") from None
    if isinstance(data, list):
        if not all(isinstance(x, str) for x in data):
            raise ValueError(f"{path}: a list of labels must hold only strings")
        return data
    if isinstance(data, dict) and "classes" in data:
        return LabelSpace.from_dict(data)
    if isinstance(data, dict):
        return LabelSpace.from_release(path)
    raise ValueError(f"{path}: expected a label space, a name -> index object or a list of names")


def save_label_embeddings(path: str | Path, emb: torch.Tensor, texts: Sequence[str],
                          encoder: Optional[TextEncoder] = None) -> Path:
    """``{"embeddings": [C, d]}`` with the texts and the encoder in the safetensors metadata."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {"texts": json.dumps(list(texts))}
    if encoder is not None:
        meta.update(encoder=encoder.source, encoder_identity=encoder.identity, pooling=encoder.pooling)
    save_file({"embeddings": emb.detach().float().contiguous().cpu()}, str(path), metadata=meta)
    return path


def load_label_embeddings(path: str | Path) -> tuple[torch.Tensor, list[str]]:
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: label embeddings file does not exist")
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
        return f.get_tensor("embeddings"), json.loads(meta.get("texts", "[]"))

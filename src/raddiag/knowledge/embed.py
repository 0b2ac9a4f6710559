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


#: Templates of a class's prompt set (zero-shot scoring), CLIP-style; ``{modality}`` takes each of
#: :data:`PROMPT_MODALITIES`.
PROMPT_TEMPLATES = ("{}", "{} on {modality}")
PROMPT_MODALITIES = ("CT", "MRI", "X-ray")
#: Knowledge-base synonyms added to a class's prompt set (its concept's first ones).
PROMPT_SYNONYMS = 4


def prompt_set(name: str, kb=None, code: Optional[str] = None,
               modalities: Sequence[str] = PROMPT_MODALITIES) -> list[str]:
    """The texts whose mean embedding scores class ``name`` zero-shot: the templates filled with
    the name, then, when the knowledge base knows the name (or ``code``), the first
    :data:`PROMPT_SYNONYMS` synonyms of its concept and the ICD-10-CM description of the concept
    and of its 3-character category. ``Normal`` stays one text (the run was trained on it)."""
    if name == NORMAL:
        return [NORMAL]
    texts = []
    for t in PROMPT_TEMPLATES:
        texts += [t.format(name, modality=m) for m in modalities] if "{modality}" in t else [t.format(name)]
    if kb is not None:
        c = (kb.find(code) if code else None) or kb.find(name)
        if c is None:
            from raddiag.knowledge.terms import americanise

            c = kb.find(americanise(name))
        if c is not None:
            texts += [*c.synonyms[:PROMPT_SYNONYMS], _code_text(c.id, kb) or c.name]
            cat = kb.get(c.category) if c.category and c.category != c.id else None
            if cat is not None:
                texts.append(_code_text(cat.id, kb) or cat.name)
    seen, out = set(), []
    for t in texts:
        if t.lower() not in seen:
            seen.add(t.lower())
            out.append(t)
    return out


def embed_prompt_sets(encoder: TextEncoder, sets: Sequence[Sequence[str]], batch_size: int = 64,
                      progress: bool = False) -> torch.Tensor:
    """``[C, d]``: for each class the L2-normalised mean of its prompts' embeddings."""
    flat = [t for s in sets for t in s]
    emb = encoder.encode(flat, batch_size=batch_size, progress=progress)
    owner = torch.repeat_interleave(torch.arange(len(sets)), torch.tensor([len(s) for s in sets]))
    mean = torch.zeros(len(sets), emb.shape[1]).index_add_(0, owner, emb)
    return torch.nn.functional.normalize(mean, dim=-1)


def embed_labels(encoder: TextEncoder, label_space_or_names, batch_size: int = 64,
                 progress: bool = False, prompts: bool = False, kb=None, seen=(),
                 modalities: Sequence[str] = PROMPT_MODALITIES, codes: Optional[Sequence] = None) -> torch.Tensor:
    """``[C, d]`` L2-normalised embeddings of :func:`label_texts` (also for names never seen
    in training: zero-shot on a new label space). With ``prompts`` each class is the mean of
    its :func:`prompt_set` (zero-shot scoring; ``kb`` default: :func:`~raddiag.knowledge.kb.build_kb`),
    except a text in ``seen`` (the run's own class texts): the head learned that text's embedding,
    and moving it to a prompt mean costs accuracy (benchmarks/real/zeroshot_prompts.py: -2.7 AUC
    on a trained class, "Bacterial pneumonia"). ``modalities`` fill the templates; ``codes`` (default:
    the label space's) find a class's concept when its name is not a knowledge-base term."""
    texts = label_texts(label_space_or_names)
    if not texts:
        raise ValueError("no class names to embed")
    if not prompts:
        return encoder.encode(texts, batch_size=batch_size, progress=progress)
    if kb is None:
        from raddiag.knowledge.kb import build_kb

        kb = build_kb()
    if codes is None:
        codes = label_space_or_names.codes if isinstance(label_space_or_names, LabelSpace) else [None] * len(texts)
    seen = {t.strip().lower() for t in seen}
    sets = [[t] if t.strip().lower() in seen else prompt_set(t, kb, c, modalities) for t, c in zip(texts, codes)]
    return embed_prompt_sets(encoder, sets, batch_size, progress)


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


def check_embeddings_out(path: str | Path, overwrite: bool = False) -> Path:
    """``path`` if label embeddings may be written there: not a part of a run folder (its
    embeddings carry its run id and belong to its trained head: writing there, as the README once
    suggested, destroyed them and the run was refused as a mix), an existing file only with
    ``overwrite``."""
    from raddiag.data.errors import OutputExists
    from raddiag.run import RunFolder

    path = Path(path)
    if RunFolder(path.parent).looks_like_run():
        raise ValueError(f"{path}: lies in the run folder {path.parent}, whose label embeddings belong to its "
                         "trained head; write them elsewhere and train with --label-embeddings FILE")
    if path.is_dir():
        raise IsADirectoryError(f"{path}: is a folder; give a .safetensors file")
    if path.exists() and not overwrite:
        raise OutputExists(f"{path}: exists already; pass --overwrite to replace it")
    return path


def save_label_embeddings(path: str | Path, emb: torch.Tensor, texts: Sequence[str],
                          encoder: Optional[TextEncoder] = None) -> Path:
    """``{"embeddings": [C, d]}`` with the texts and the encoder in the safetensors metadata,
    written whole or not at all."""
    from safetensors.torch import save

    from raddiag.staging import atomic_write

    path = Path(path)
    meta = {"texts": json.dumps(list(texts))}
    if encoder is not None:
        meta.update(encoder=encoder.source, encoder_identity=encoder.identity, pooling=encoder.pooling)
    blob = save({"embeddings": emb.detach().float().contiguous().cpu()}, metadata=meta)
    atomic_write(path, lambda f: f.write(blob))
    return path


def load_label_embeddings(path: str | Path) -> tuple[torch.Tensor, list[str]]:
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: label embeddings file does not exist")
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
        return f.get_tensor("embeddings"), json.loads(meta.get("texts", "[]"))

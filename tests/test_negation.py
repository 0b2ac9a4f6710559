"""Negated class names (issue 18): never linked to, or scored as, the class they negate, in the
zero-shot mapping, its text mode and `predict --classes`."""
import io
import json

import numpy as np
import pytest

from raddiag.data.labels import LabelSpace
from raddiag.knowledge.negation import contradicts, parse
from raddiag.transfer.zeroshot import load_mapping, suggest_mapping, zeroshot


@pytest.mark.parametrize("name, negates", [
    ("Non-COVID-19", "COVID-19"), ("NonCOVID", "COVID"), ("non covid", "covid"), ("No pneumothorax", "pneumothorax"),
    ("without effusion", "effusion"), ("COVID-19 negative", "COVID-19"), ("COVID-negative", "COVID"),
    ("Pneumothorax (negative)", "Pneumothorax"), ("negative for malignancy", "malignancy"),
    ("absence of fracture", "fracture"), ("No evidence of pneumonia", "pneumonia"), ("not_covid", "covid"),
    ("Abnormal", "Normal"),
])
def test_negated_names(name, negates):
    assert parse(name).negates == negates and not parse(name).normal


@pytest.mark.parametrize("name", ["No finding", "No Finding", "no_findings", "No acute abnormality", "Healthy",
                                  "Normal"])
def test_names_of_a_normal_study(name):
    assert parse(name).normal and parse(name).negates is None


@pytest.mark.parametrize("name", ["COVID-19", "Non-Hodgkin lymphoma", "Non-small cell lung cancer",
                                  "Gram-negative pneumonia", "Triple-negative breast cancer", "Absent kidney",
                                  "Normal pressure hydrocephalus"])
def test_disease_names_are_not_negations(name):
    assert parse(name).negates is None and not parse(name).normal


def test_contradiction_both_ways():
    assert contradicts("Non-COVID-19", "COVID-19") and contradicts("COVID-19", "NonCOVID")
    assert contradicts("Abnormal", "No finding")
    assert not contradicts("Non-COVID-19", "Normal") and not contradicts("No finding", "Normal")


SOURCE = LabelSpace(names=["Normal", "COVID-19", "Viral pneumonia", "Glioma"], codes=[None, "U07", "J12", "C71"])


def test_suggested_mapping_never_links_a_negation_to_its_class():
    target = LabelSpace(names=["COVID-19", "Non-COVID-19", "No finding", "COVID-19 negative", "Non-glioma"])
    links = suggest_mapping(SOURCE, target)
    assert links == {"COVID-19": ["COVID-19"], "No finding": ["Normal"]}


def test_normal_meaning_name_links_to_the_sources_own_normal_name():
    source = LabelSpace(names=["No Finding", "Pneumonia"], codes=[None, "J18"])
    target = LabelSpace(names=["Normal", "Pneumonia", "No pneumonia"], codes=[None, "J18", None])
    assert suggest_mapping(source, target) == {"Normal": ["No Finding"], "Pneumonia": ["Pneumonia"]}


def test_mapping_file_may_not_link_a_negation_to_its_class(tmp_path):
    target = LabelSpace(names=["COVID-19", "Non-COVID-19"])
    p = tmp_path / "map.json"
    p.write_text(json.dumps({"COVID-19": ["COVID-19"], "Non-COVID-19": ["COVID-19"]}))
    with pytest.raises(ValueError, match=r"map.json: target class 'Non-COVID-19' is linked to 'COVID-19'"):
        load_mapping(p, SOURCE, target)
    p.write_text(json.dumps({"Non-COVID-19": ["Normal", "Viral pneumonia"]}))
    assert load_mapping(p, SOURCE, target) == {"Non-COVID-19": ["Normal", "Viral pneumonia"]}


def test_predict_classes_scores_non_x_as_one_minus_p_x(tmp_path):
    from PIL import Image

    from raddiag.serving.predict import Predictor
    from raddiag.serving.sample import make_tiny_run, sample_png

    make_tiny_run(tmp_path / "run", head="knowledge", thresholds=[0.3, 0.6, 0.5, 0.5])
    Image.open(io.BytesIO(sample_png())).save(tmp_path / "cxr.png")
    pred = Predictor.load(tmp_path / "run")
    names = ["COVID-19", "Non-COVID-19", "No finding", "Normal", "Pneumonia", "No pneumonia"]
    res = pred.predict(str(tmp_path / "cxr.png"), modality="X-ray", classes=names, top=len(names))
    f = {x.name: x for x in res.ranked}
    assert f["Non-COVID-19"].probability == pytest.approx(1 - f["COVID-19"].probability, abs=1e-6)
    assert f["No pneumonia"].probability == pytest.approx(1 - f["Pneumonia"].probability, abs=1e-6)
    assert f["No finding"].probability == pytest.approx(f["Normal"].probability, abs=1e-6)
    # thresholds: a known class's own; its negation positive exactly when the class is not
    assert f["Pneumonia"].threshold == pytest.approx(0.6) and f["No pneumonia"].threshold == pytest.approx(0.4)
    assert f["No finding"].threshold == pytest.approx(0.3) and f["No pneumonia"].code is None
    sal = pred.predict(str(tmp_path / "cxr.png"), modality="X-ray", classes=names, saliency=True,
                       saliency_class="No pneumonia").saliency
    assert sal and all(r["class"] == "No pneumonia" and r["map_of"] == "pneumonia" for r in sal)


@pytest.fixture(scope="module")
def covid_target(tmp_path_factory):
    from test_zeroshot import tiny_run_and_target

    labels = [["COVID-19", "Non-COVID-19"][i % 2] for i in range(12)]
    return tiny_run_and_target(tmp_path_factory.mktemp("neg"), SOURCE, labels, 8)


def test_zeroshot_leaves_non_covid_unmapped_and_scores_it_as_the_complement(covid_target, capsys):
    from raddiag.cli import main

    run, target, tmp = covid_target
    res = zeroshot(run, target, tmp / "out", modes=["mapping", "text"])
    m = res["mapping"]
    assert m["per_class"]["COVID-19"]["linked"] == ["COVID-19"]
    assert m["unmapped"] == ["Non-COVID-19"] and "negates 'COVID-19'" in m["notes"]["Non-COVID-19"]
    saved = np.load(tmp / "out" / "text" / "predictions.npz")
    names = json.loads((target / "labels_disorder.json").read_text())
    order = [c["name"] for c in names["classes"]] if isinstance(names, dict) else names
    i, j = order.index("COVID-19"), order.index("Non-COVID-19")
    np.testing.assert_allclose(saved["scores"][:, j], 1 - saved["scores"][:, i], atol=1e-6)
    assert res["text"]["complemented"] == ["Non-COVID-19"]
    assert main(["zeroshot", str(run), "--data", str(target), "--out", str(tmp / "cli"), "--mode", "mapping"]) == 0
    assert "unmapped: Non-COVID-19 (negates 'COVID-19'" in capsys.readouterr().out


@pytest.mark.parametrize("name", ["Non-follicular lymphoma", "Non-pressure chronic ulcer of lower limb",
                                  "Non-communicating hydrocephalus", "Non-immune hydrops fetalis",
                                  "Non-occlusive mesenteric ischemia", "Non-bacterial thrombotic endocarditis",
                                  "Non-convulsive status epilepticus", "Noninfective gastroenteritis"])
def test_a_non_compound_disease_is_not_a_negation(name):
    """Red team: 490 ICD-10-CM titles ('Non-follicular lymphoma', C83) were read as negations, so
    `knowledge map` gave them no code and zero-shot scored them as 1 - p(the rest)."""
    from raddiag.knowledge.map import no_code_reason

    assert parse(name).negates is None and no_code_reason(name) is None


@pytest.mark.parametrize("name, negated", [("Non-COVID-19", "COVID-19"), ("Non-cancerous", "cancerous"),
                                           ("Non-pneumonia", "pneumonia"), ("NonCOVID", "COVID"),
                                           ("non covid 19", "covid 19")])
def test_a_non_word_before_nothing_else_stays_a_negation(name, negated):
    assert parse(name).negates == negated


@pytest.mark.parametrize("name", ["Non-Communicating Hydrocephalus", "non-communicating hydrocephalus",
                                  "Non-Occlusive Mesenteric Ischemia", "Non-Pleural effusion",
                                  "Non-COVID pneumonia", "Non-Langerhans cell histiocytosis",
                                  "Non-COVID-19 viral pneumonia"])
def test_capitalisation_does_not_change_the_reading_and_the_guess_is_said(name):
    """A red team found Title-Case disease names ("Non-Communicating Hydrocephalus") read as
    negations by a rule on capitals, while the same class in lower case was a disease. Letters' case
    is not read; where "non-" + a word qualifying a disease is guessed to be a disease, a note says so
    and how to write the absence (a new user's "Non-Pleural effusion" was scored as the effusion
    without a word; a red team's "Non-COVID pneumonia" was scored as 1 - p(COVID pneumonia))."""
    from raddiag.knowledge.negation import compound_note

    assert parse(name).negates is None
    note = compound_note(name)
    assert note and "read as a disease of its own" in note and "write 'No " in note
    assert compound_note("Non-Hodgkin lymphoma") is None and compound_note("Non-COVID-19") is None


def test_predict_classes_says_how_a_non_compound_was_read(tmp_path, recwarn):
    from raddiag.serving.predict import check_class_names

    check_class_names(["Pneumonia", "Non-Pleural effusion", "No pleural effusion"])
    notes = [str(w.message) for w in recwarn]
    assert len(notes) == 1 and "'Non-Pleural effusion' is read as a disease of its own" in notes[0]

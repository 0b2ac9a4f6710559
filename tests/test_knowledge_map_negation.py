"""`knowledge map` follows the negation rules of `zeroshot` and `predict --classes`
(:mod:`raddiag.knowledge.negation`): a name meaning a normal study gets no ICD-10-CM code, a
negated name ("Non-X") never gets X's codes, and both say why. No model: a constant encoder."""
import json

import pytest
import torch

from raddiag.cli import main
from raddiag.knowledge.kb import Concept, KnowledgeBase
from raddiag.knowledge.map import no_code_reason, suggest_codes

NAMES = ["Non-COVID-19", "No acute abnormality", "COVID-19"]


class ConstantEncoder:
    """Every text embeds to the same unit vector: what ranks is the lexical score and exact hits."""
    identity = "test-negation-constant-encoder"

    def encode(self, texts, batch_size=32, progress=False):
        return torch.nn.functional.normalize(torch.ones(len(texts), 4), dim=1)


@pytest.fixture
def covid_kb(tmp_path, monkeypatch):
    monkeypatch.setenv("RADDIAG_CACHE", str(tmp_path))
    kb = KnowledgeBase()
    for c in (Concept("U07", "Emergency use of U07", synonyms=["COVID-19"], chapter="22"),
              Concept("U09", "Post COVID-19 condition", chapter="22"),
              Concept("R82", "Other and unspecified abnormal findings in urine", chapter="18"),
              Concept("J18", "Pneumonia, unspecified organism", chapter="10")):
        kb.add(c)
    return kb


def test_negated_and_normal_names_get_no_code(covid_kb):
    got = suggest_codes(NAMES, top=2, encoder=ConstantEncoder(), kb=covid_kb)
    assert got[0] == [] and got[1] == []
    assert got[2][0][0] == "U07"                               # an ordinary name is unchanged


@pytest.mark.parametrize("name", ["Non-COVID-19", "NonCOVID", "No COVID-19", "COVID-19 negative",
                                  "negative for COVID-19", "No finding", "Healthy", "Abnormal"])
def test_no_negation_the_shared_rule_knows_lists_a_code(name, covid_kb):
    assert suggest_codes([name, "COVID-19"], top=4, encoder=ConstantEncoder(), kb=covid_kb)[0] == []
    assert no_code_reason(name)


def test_the_reason_is_plain():
    assert no_code_reason("No acute abnormality") == "a normal study: no ICD-10-CM code (label it Normal)"
    assert no_code_reason("Non-COVID-19") == ("negates 'COVID-19': no ICD-10-CM code (a case without COVID-19 "
                                              "is labelled by what it has, or Normal)")
    assert no_code_reason("Abnormal").endswith("labelled by what it has)")
    for name in ("COVID-19", "Non-Hodgkin lymphoma", "Normal pressure hydrocephalus", "Gram-negative pneumonia"):
        assert no_code_reason(name) is None, name


def test_only_negated_names_need_no_encoder(monkeypatch):
    import raddiag.knowledge.map as kmap

    monkeypatch.setattr(kmap.TextEncoder, "load", lambda *a, **k: pytest.fail("encoder loaded"))
    assert suggest_codes(["No finding", "Non-glioma"]) == [[], []]


@pytest.fixture
def cli(covid_kb, monkeypatch):
    import raddiag.knowledge.commands as kcmd
    import raddiag.knowledge.map as kmap

    monkeypatch.setattr(kmap, "resolve_encoder", lambda e: (ConstantEncoder(), "test"))
    monkeypatch.setattr(kcmd, "_kb", lambda a: covid_kb)
    monkeypatch.setattr(kcmd, "_print_sources", lambda kb: None)


def test_cli_table_says_why_and_lists_no_negated_code(cli, capsys):
    assert main(["knowledge", "map", *NAMES, "--top", "2"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[:5] == ["Non-COVID-19", "  " + no_code_reason("Non-COVID-19"),
                       "No acute abnormality", "  a normal study: no ICD-10-CM code (label it Normal)", "COVID-19"]
    assert out[5].split()[0] == "U07" and len(out) == 7


def test_cli_json_keeps_its_shape_and_says_why_on_stderr(cli, capsys):
    assert main(["knowledge", "map", *NAMES, "--json"]) == 0
    cap = capsys.readouterr()
    got = json.loads(cap.out)
    assert got["Non-COVID-19"] == [] and got["No acute abnormality"] == [] and got["COVID-19"][0]["code"] == "U07"
    assert "Non-COVID-19: negates 'COVID-19'" in cap.err and "No acute abnormality: a normal study" in cap.err


def test_cli_with_only_negated_names_loads_no_encoder(monkeypatch, capsys):
    import raddiag.knowledge.map as kmap

    monkeypatch.setattr(kmap, "resolve_encoder", lambda e: pytest.fail("encoder loaded"))
    assert main(["knowledge", "map", "No finding"]) == 0
    assert capsys.readouterr().out.splitlines() == ["No finding", "  a normal study: no ICD-10-CM code (label it Normal)"]

"""Zero-shot normal/abnormal and mapping summaries on a target whose normal class is named
"No acute abnormality" (a new user's report): the normal figure counts those studies as normal
by the rule the mapping links them to ``Normal`` with, says why when it is n/a, and the mapping
macro names the classes it averaged and those it left out."""
import json

import numpy as np
import pytest

from raddiag.data.case import Case, Scan
from raddiag.data.labels import LabelSpace
from raddiag.data.store import prepare_cases
from raddiag.transfer.zeroshot import normal_cases, normal_classes, suggest_mapping, zeroshot

SOURCE = LabelSpace(names=["Normal", "Viral pneumonia", "Bacterial pneumonia", "Glioma"],
                    codes=[None, "J12", "J15", "C71"])
NORMAL_STUDY = ["No acute abnormality", "Non-COVID-19"]
PNEUMONIA = ["Viral pneumonia", "Non-COVID-19", "Lower respiratory tract infection"]


def _target(tmp, labels: list[list[str]]):
    """A knowledge-head run scoring SOURCE and a prepared target, every case in the test split."""
    from raddiag.serving.sample import make_tiny_run

    run = make_tiny_run(tmp / "run", classes=SOURCE.names, codes=SOURCE.codes, head="knowledge",
                        thresholds=[0.5] * len(SOURCE))
    rng = np.random.default_rng(0)
    cases = []
    for i, lab in enumerate(labels):
        np.save(tmp / f"{i}.npy", rng.normal(100, 20, (40, 40, 2)).astype(np.float32))
        cases.append(Case(id=f"c{i}", split="test", labels=lab, scans=[Scan(str(tmp / f"{i}.npy"), "X-ray")]))
    prepare_cases(cases, tmp / "target", size=32, depth=4, workers=1)
    return run.root, tmp / "target"


@pytest.fixture(scope="module")
def no_acute(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("zsn")
    return (*_target(tmp, [NORMAL_STUDY if i % 2 else PNEUMONIA for i in range(8)]), tmp)


def test_normal_cases_use_the_mappings_rule_for_a_normal_study():
    names = ["Normal", "No acute abnormality", "Non-COVID-19", "Viral pneumonia", "Abnormal"]
    target = LabelSpace(names=names)
    assert suggest_mapping(SOURCE, target)["No acute abnormality"] == ["Normal"]
    assert normal_classes(names) == ["Normal", "No acute abnormality"]
    labels = np.array([[0, 1, 1, 0, 0],      # no acute abnormality, non-COVID: normal
                       [1, 0, 0, 0, 0],      # Normal
                       [1, 0, 0, 1, 0],      # Normal and a finding: abnormal
                       [0, 1, 0, 0, 1],      # "Abnormal" asserts a finding
                       [0, 0, 1, 0, 0],      # only a negation: no normal class, abnormal
                       [0, 0, 1, 1, 0]])
    assert normal_cases(labels, names).tolist() == [True, True, False, False, False, False]


def test_no_acute_abnormality_studies_are_the_normal_cases(no_acute, capsys):
    from raddiag.cli import main

    run, target, tmp = no_acute
    res = zeroshot(run, target, tmp / "out", modes=("mapping", "normal"))
    n = res["normal"]
    assert (n["n_normal"], n["n_abnormal"]) == (4, 4) and 0 <= n["auc"] <= 1 and "na_reason" not in n
    assert n["normal_classes"] == ["Normal", "No acute abnormality"]
    assert json.loads((tmp / "out" / "zeroshot.json").read_text())["normal"] == n
    assert main(["zeroshot", str(run), "--data", str(target), "--out", str(tmp / "cli"),
                 "--mode", "mapping", "normal"]) == 0
    assert "(4 normal, 4 abnormal cases; normal classes: 'Normal', 'No acute abnormality')" in capsys.readouterr().out


def test_the_mapping_macro_names_the_classes_it_averaged_and_those_left_out(no_acute, capsys):
    from raddiag.cli import main

    run, target, tmp = no_acute
    res = zeroshot(run, target, tmp / "map", modes=("mapping",))
    m = res["mapping"]
    assert m["per_class"]["Normal"]["f1"] is None and m["per_class"]["Normal"]["linked"] == ["Normal"]
    assert m["no_positive"] == ["Normal"] and m["no_negative"] == [] and m["unmapped"] == ["Non-COVID-19"]
    assert sorted(m["averaged"]) == ["Lower respiratory tract infection", "No acute abnormality", "Viral pneumonia"]
    assert m["macro"]["acc"] == pytest.approx(np.mean([m["per_class"][t]["acc"] for t in m["averaged"]]))
    assert main(["zeroshot", str(run), "--data", str(target), "--out", str(tmp / "map-cli"), "--mode", "mapping"]) == 0
    out = capsys.readouterr().out
    assert len(m["per_class"]) == 5 and "(over 3 of 5 target classes: " in out
    assert "2 of the 5 left out of the average (unmapped: 1 ('Non-COVID-19'), without a positive: 1 ('Normal'))" in out


@pytest.mark.parametrize("labels, reason", [([PNEUMONIA] * 4, "no normal case in the test split"),
                                            ([NORMAL_STUDY] * 4, "no abnormal case in the test split")])
def test_an_na_normal_figure_says_why(tmp_path, capsys, labels, reason):
    from raddiag.cli import main

    run, target = _target(tmp_path, labels)
    assert main(["zeroshot", str(run), "--data", str(target), "--out", str(tmp_path / "out"), "--mode", "normal"]) == 0
    assert f"normal/abnormal n/a: {reason}" in capsys.readouterr().out
    n = json.loads((tmp_path / "out" / "zeroshot.json").read_text())["normal"]
    assert n["auc"] is None and n["ap"] is None and n["na_reason"] == reason


def test_the_normal_ap_takes_the_normal_cases_as_positives_and_names_the_other_reading():
    """AP depends on which side is positive (a red team found zeroshot's AP was abnormality
    detection's where evaluate's normal row and the paper's Figure 5 take the Normal class's): on
    random scores both readings equal scikit-learn's, and the printed line names each."""
    from sklearn.metrics import average_precision_score, roc_auc_score

    from raddiag.transfer.commands import normal_text
    from raddiag.transfer.zeroshot import normal_results

    rng = np.random.default_rng(3)
    target = LabelSpace(names=["Normal", "Pneumonia"])
    normal = rng.random(200) < 0.2
    labels = np.stack([normal, ~normal], axis=1).astype(np.float32)
    scores = rng.random((200, len(SOURCE))).astype(np.float32)
    scores[:, 0] = np.where(normal, rng.random(200) * 0.8 + 0.2, rng.random(200) * 0.8).astype(np.float32)
    res = normal_results(scores, labels, SOURCE, target, "test")
    p = scores[:, 0].astype(np.float64)
    assert res["auc"] == pytest.approx(roc_auc_score(normal, p), abs=1e-12)
    assert res["ap"] == pytest.approx(average_precision_score(normal, p), abs=1e-12)
    assert res["ap_abnormal"] == pytest.approx(average_precision_score(~normal, -p), abs=1e-12)
    assert abs(res["ap"] - res["ap_abnormal"]) > 0.2        # 20 % normal: the two readings far apart
    text = normal_text(res, lambda v: f"{100 * v:.2f}")
    assert f"AP {100 * res['ap']:.2f} with the normal cases as positives" in text
    assert f"{100 * res['ap_abnormal']:.2f} with the abnormal ones" in text

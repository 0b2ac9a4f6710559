"""`data.task=multiclass`: one class per case, softmax cross-entropy, the most probable class as
the prediction; accuracy, balanced accuracy, macro one-vs-rest AUC and a confusion matrix in the
terminal, metrics.json and the report; fine-tuning onto such a target; two-label cases refused."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from raddiag.cli import main
from raddiag.data.case import Case, Scan
from raddiag.data.store import prepare_cases
from raddiag.evaluation.multiclass import multiclass_metrics
from test_training_data import make_tiny_data, tiny_overrides

SIZE = 32
CLASSES = ("Bright corner", "Dark band", "Centre spot")


def _image(rng, cls: str) -> np.ndarray:
    img = rng.normal(0.3, 0.08, size=(SIZE, SIZE)).astype(np.float32)
    if cls == "Bright corner":
        img[3:12, 3:12] += 0.6
    elif cls == "Dark band":
        img[24:29, :] += 0.6
    else:
        img[13:19, 13:19] += 0.6
    return img


def make_three_class_data(root: Path, n_cases: int = 60, seed: int = 0) -> Path:
    """A single-label set: a 2D image a case, one of three planted patterns; train / val / test."""
    raw = root / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    cases = []
    for i in range(n_cases):
        cls = CLASSES[i % 3]
        np.save(raw / f"c{i}.npy", _image(rng, cls))
        split = ("val", "test", "train", "train", "train")[(i // 3) % 5]
        cases.append(Case(id=f"case{i:03d}", scans=[Scan(paths=[str(raw / f"c{i}.npy")], modality="X-ray")],
                          labels=[cls], icd10=["R93"], split=split, patient=f"p{i}"))
    prepare_cases(cases, root / "prepared", size=SIZE, depth=1, workers=1)
    return root / "prepared"


ONE_CLASS = tiny_overrides(**{"data.task": "multiclass", "data.depth": 1, "train.epochs": 4,
                              "model.encoder": "resnet"})


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("multiclass")
    data = make_three_class_data(root)
    run = root / "run"
    args = ["train", "--data", str(data), "--out", str(run), "--preset", "tiny", "--no-progress"]
    assert main(args + [x for o in ONE_CLASS for x in ("--set", o)]) == 0
    return data, run


def test_evaluate_prints_accuracy_balanced_accuracy_and_the_confusion_matrix(trained, tmp_path, capsys):
    data, run = trained
    capsys.readouterr()
    assert main(["evaluate", str(run), "--data", str(data), "--out", str(tmp_path / "ev"), "--n-boot", "50"]) == 0
    out = capsys.readouterr().out
    m = json.loads((tmp_path / "ev" / "metrics.json").read_text())["multiclass"]
    assert m["n_cases"] == 12 and m["confusion"]["rows"] == "true class"
    matrix = np.array(m["confusion"]["matrix"])
    assert matrix.sum() == 12 and set(CLASSES) <= set(m["confusion"]["classes"])
    cases = {r["name"]: r["cases"] for r in m["per_class"]}
    assert cases == {c: 4 for c in CLASSES}
    acc = m["accuracy"]["value"]
    assert acc == pytest.approx(np.trace(matrix) / 12)
    assert m["accuracy"]["ci_low"] <= acc <= m["accuracy"]["ci_high"]
    assert acc > 0.5, f"the planted patterns were not learned: {m}"      # chance: 1/3
    line = next(s for s in out.splitlines() if s.strip().startswith("accuracy"))
    assert f"{100 * acc:.1f}" in line and "[" in line
    assert "balanced accuracy" in out and "macro one-vs-rest AUC" in out
    assert "confusion matrix (rows: true class, columns: predicted class" in out
    rows = [s for s in out.splitlines() if s.strip().startswith(("(1)", "(2)", "(3)"))]
    assert [int(v) for v in rows[-1].split()[-3:]] == matrix[-1].tolist()
    report = (tmp_path / "ev" / "report.html").read_text()
    assert "Confusion matrix" in report and "Balanced accuracy" in report
    scores = np.load(tmp_path / "ev" / "predictions.npz")["scores"]
    assert np.allclose(scores.sum(1), 1, atol=1e-5)                  # softmax: one distribution a case


def test_no_case_gets_two_predicted_labels(trained, tmp_path, capsys):
    data, run = trained
    assert main(["predict", str(run), "--data", str(data), "--out", str(tmp_path / "p.jsonl")]) == 0
    rows = [json.loads(line) for line in (tmp_path / "p.jsonl").read_text().splitlines()]
    assert len(rows) == 60 and all(len(r["positive"]) == 1 for r in rows)
    assert all(r["positive"] == [r["ranked"][0]["name"]] for r in rows)
    assert all(r["ranked"][0]["threshold"] is None for r in rows)
    np.save(tmp_path / "x.npy", _image(np.random.default_rng(5), "Dark band"))
    capsys.readouterr()
    assert main(["predict", str(run), str(tmp_path / "x.npy"), "--modality", "X-ray", "--top", "3"]) == 0
    out = capsys.readouterr().out
    assert "thresholds: none: one class per case" in out
    assert sum(line.rstrip().endswith("yes") for line in out.splitlines()) == 1


def test_two_labels_on_a_case_are_refused_naming_it(tmp_path, capsys):
    data = make_tiny_data(tmp_path, n_cases=12)       # cases with both "Bright corner" and "Dark band"
    args = ["train", "--data", str(data), "--out", str(tmp_path / "run"), "--preset", "tiny", "--no-progress"]
    assert main(args + [x for o in tiny_overrides(**{"data.task": "multiclass"}) for x in ("--set", o)]) == 2
    err = capsys.readouterr().err
    assert "data.task=multiclass needs exactly one class per case" in err
    assert "case 'case007': Bright corner, Dark band" in err and "split 'train'" in err
    assert not (tmp_path / "run").exists()


def test_finetune_of_a_single_label_run_onto_multi_label_data_says_how(trained, tmp_path, capsys):
    """Fine-tuning keeps the source run's task: a new user's multiclass run fine-tuned onto
    multi-label data was told to 'set data.task=multilabel', not where or that it was inherited."""
    _, run = trained
    data = make_tiny_data(tmp_path, n_cases=12)       # cases with two classes
    args = ["finetune", str(run), "--data", str(data), "--out", str(tmp_path / "ft"), "--fraction", "1",
            "--epochs", "1", "--no-progress"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "pass --set data.task=multilabel (finetune keeps its source run's task unless told)" in err
    assert main(args + ["--set", "data.task=multilabel"]) == 0
    first = capsys.readouterr().out.splitlines()[0]
    assert first == (f"fine-tuning from {run}: encoder kept, fusion module kept; a new classification layer for "
                     "3 classes; task multilabel (the source run's: multiclass)")


def test_finetune_onto_a_single_label_target(tmp_path, capsys):
    from raddiag.serving.sample import make_tiny_run

    src = make_tiny_run(tmp_path / "src", size=SIZE, depth=1)      # a multi-label source run
    data = make_three_class_data(tmp_path, n_cases=30)
    capsys.readouterr()
    assert main(["finetune", str(src.root), "--data", str(data), "--out", str(tmp_path / "ft"), "--fraction", "1",
                 "--epochs", "1", "--no-progress", "--set", "data.task=multiclass"]) == 0
    first = capsys.readouterr().out.splitlines()[0]
    assert first.endswith("fusion module dropped (mean pooling: single-image data); a new classification layer "
                          "for 4 classes; task multiclass (the source run's: multilabel)")   # Normal is one
    from raddiag.run import RunFolder

    cfg = RunFolder(tmp_path / "ft").load_config()
    assert cfg.data.task == "multiclass"
    assert RunFolder(tmp_path / "ft").load_labels().thresholds is None     # argmax: no thresholds


def test_multiclass_metrics_against_scikit_learn_and_by_hand():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(0)
    y = np.repeat([0, 1, 2], 20)
    logits = rng.normal(size=(60, 3)) + 1.5 * np.eye(3)[y]
    p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    m = multiclass_metrics(p, np.eye(3)[y], ["a", "b", "c"], n_boot=0)
    assert m["auc_ovr"]["value"] == pytest.approx(roc_auc_score(y, p, multi_class="ovr"))
    # a label space with a class no case has (Normal beside three tumours): left out of the AUC
    p4 = np.column_stack([np.full(60, 1e-3), p * (1 - 1e-3)])
    m4 = multiclass_metrics(p4, np.eye(4)[y + 1], ["Normal", "a", "b", "c"], n_boot=0)
    assert m4["auc_ovr"]["value"] == pytest.approx(m["auc_ovr"]["value"])
    assert m4["confusion"]["classes"] == ["a", "b", "c"]
    # by hand: 4 cases, true [0, 0, 1, 2], predicted [0, 1, 1, 1]
    small = np.array([[.8, .1, .1], [.2, .7, .1], [.1, .8, .1], [.2, .5, .3]])
    m = multiclass_metrics(small, np.eye(3)[[0, 0, 1, 2]], ["a", "b", "c"], n_boot=0)
    assert m["accuracy"]["value"] == pytest.approx(2 / 4)
    assert m["balanced_accuracy"]["value"] == pytest.approx((1 / 2 + 1 + 0) / 3)
    assert m["confusion"]["matrix"] == [[1, 1, 0], [0, 1, 0], [0, 1, 0]]
    assert [r["predicted"] for r in m["per_class"]] == [1, 3, 0]
    with pytest.raises(ValueError, match=r"case 'x2': no class of the label space"):
        multiclass_metrics(small, np.array([[1, 0, 0], [0, 1, 0], [0, 0, 0], [0, 0, 1]]), ["a", "b", "c"],
                           n_boot=0, case_ids=["x0", "x1", "x2", "x3"])

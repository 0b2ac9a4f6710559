"""`raddiag demo` end to end at a test-sized budget (the full demo is `make demo`)."""
import json

import pytest


@pytest.mark.slow
def test_demo_runs_end_to_end(tmp_path, monkeypatch, capsys):
    from raddiag.cli import main

    monkeypatch.setenv("RADDIAG_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--cases", "60", "--epochs", "1", "--knowledge-steps", "2"]) == 0
    printed = capsys.readouterr().out
    assert "[4/4] evaluating" in printed and "AUC" in printed and str(out / "report.html") in printed
    metrics = json.loads((out / "metrics.json").read_text())
    assert 0.0 <= metrics["all"]["auc"]["value"] <= 1.0
    assert "<table" in (out / "report.html").read_text()
    assert (out / "run" / "model.safetensors").exists() and (out / "run" / "label_embeddings.safetensors").exists()
    assert (tmp_path / "cache" / "knowledge-minilm-s2-seed0" / "config.json").exists()
    # a second run reuses the data and the encoder, and replaces the run
    assert main(["demo", "--out", str(out), "--cases", "60", "--epochs", "1", "--knowledge-steps", "2"]) == 0
    printed = capsys.readouterr().out
    assert "reusing the generated dataset" in printed and "replacing the previous demo run" in printed


def test_within_anatomy_summary_matches_a_per_anatomy_brute_force():
    """The summary's within-anatomy AUC is, per anatomy with >= 3 classes, the mean over classes with a
    positive there of sklearn's AUC on that anatomy's cases only; the mean over anatomies is printed
    beside the overall AUC, and an anatomy with fewer classes is shown but not counted."""
    import numpy as np
    from sklearn.metrics import roc_auc_score

    from raddiag.data.labels import LabelSpace
    from raddiag.demo import MIN_ANATOMY_CLASSES, headline, within_anatomy
    from raddiag.evaluation import evaluate_predictions

    rng = np.random.default_rng(3)
    names = ["Normal"] + [f"disease {i}" for i in range(1, 8)]
    home = {"chest": [0, 1, 2, 3], "brain": [0, 4, 5, 6], "spine": [0, 7]}   # classes seen per anatomy
    anat = np.array(["chest"] * 30 + ["brain"] * 30 + ["spine"] * 12)
    y = np.zeros((len(anat), len(names)), bool)
    for i, a in enumerate(anat):
        y[i, home[a][i % len(home[a])]] = True
    # anatomy is easy (a per-anatomy offset), the disease inside chest is learned, inside brain it is noise
    offset = {"chest": 0.0, "brain": 2.0, "spine": -2.0}
    s = rng.normal(size=y.shape) + np.array([offset[a] for a in anat])[:, None]
    s[anat == "chest"] += 2.5 * y[anat == "chest"]
    s = 1 / (1 + np.exp(-s))
    space = LabelSpace(names=names, counts=[40, 30, 20, 10, 8, 6, 4, 2])
    metrics = evaluate_predictions(s, y, space, anatomy=anat, n_boot=20)["metrics"]

    expected = {}
    for a in ("brain", "chest", "spine"):
        rows = anat == a
        aucs = [roc_auc_score(y[rows, c], s[rows, c]) for c in range(len(names)) if 0 < y[rows, c].sum() < rows.sum()]
        expected[a] = (np.mean(aucs), len(aucs))
    mean, table = within_anatomy(metrics)
    assert sorted(table) == sorted(expected)
    for a, (auc, n_classes) in expected.items():
        assert table[a]["auc"] == pytest.approx(auc) and table[a]["n_classes"] == n_classes
    assert [a for a, r in table.items() if r["counted"]] == ["brain", "chest"]  # spine: 2 classes < 3
    assert MIN_ANATOMY_CLASSES == 3
    assert mean == pytest.approx((expected["brain"][0] + expected["chest"][0]) / 2)
    assert expected["chest"][0] > 0.85 and expected["brain"][0] < 0.75   # the case the summary exposes
    text = headline(metrics)
    overall = metrics["all"]["auc"]["value"]
    assert f"overall {100 * overall:.1f}, within anatomy {100 * mean:.1f}" in text
    assert "not counted" in next(line for line in text.splitlines() if line.startswith("spine"))


def test_demo_never_replaces_a_run_it_did_not_make(tmp_path, capsys):
    """Red team: `raddiag demo --out .` in a project folder deleted the user's own trained run/ (the
    demo took any run/ there for its own, and removed it before training)."""
    from raddiag.cli import main

    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "model.safetensors").write_bytes(b"weeks of training")
    assert main(["demo", "--out", str(tmp_path), "--cases", "60", "--epochs", "1", "--knowledge-steps", "2"]) == 2
    assert "is no run of raddiag demo" in capsys.readouterr().err
    assert (tmp_path / "run" / "model.safetensors").read_bytes() == b"weeks of training"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]          # nothing generated

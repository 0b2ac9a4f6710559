"""The evaluation engine: thresholds from validation, groups and anatomy subsets, outputs,
the ``raddiag metrics`` CLI and a self-contained report (optionally rendered in Chromium)."""
from __future__ import annotations

import json
import re
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import pytest

from raddiag.cli import main
from raddiag.data.labels import LabelSpace
from raddiag.evaluation import best_f1_thresholds, evaluate_predictions, per_class_metrics

C = 12


def _space():
    names = ["Normal"] + [f"disease {i}" for i in range(1, C)]
    counts = [900, 500, 150, 120, 60, 40, 35, 10, 5, 3, 2, 1]  # head 4 (with Normal), medium 3, tail 5
    return LabelSpace(names=names, counts=counts)


def _preds(seed, n):
    rng = np.random.default_rng(seed)
    y = rng.random((n, C)) < np.linspace(0.3, 0.05, C)
    s = 1 / (1 + np.exp(-(rng.normal(size=(n, C)) + 2.0 * y - 1.5)))
    anat = rng.choice(["chest", "brain"], n)
    return s, y, anat


def test_thresholds_from_validation_and_not_from_test_labels():
    space = _space()
    s, y, _ = _preds(0, 300)
    sv, yv, _ = _preds(1, 200)
    r1 = evaluate_predictions(s, y, space, sv, yv, n_boot=0)
    y2 = y[np.random.default_rng(9).permutation(len(y))]          # different test labels
    r2 = evaluate_predictions(s, y2, space, sv, yv, n_boot=0)
    np.testing.assert_array_equal(r1["thresholds"], best_f1_thresholds(sv, yv))
    np.testing.assert_array_equal(r1["thresholds"], r2["thresholds"])
    assert r1["metrics"]["meta"]["threshold_source"] == "validation"
    # F1 is evaluated at the validation threshold on the test split
    np.testing.assert_allclose(r1["per_class"]["f1"], per_class_metrics(s, y, r1["thresholds"])["f1"])
    # without validation: chosen on test, and flagged
    r3 = evaluate_predictions(s, y, space, n_boot=0, use_label_space_thresholds=False)
    assert r3["metrics"]["meta"]["threshold_note"] == "chosen on test (optimistic)"
    np.testing.assert_array_equal(r3["thresholds"], best_f1_thresholds(s, y))
    # thresholds stored in the label space are used when asked
    space.thresholds = [0.3] * C
    r4 = evaluate_predictions(s, y, space, n_boot=0)
    assert r4["metrics"]["meta"]["threshold_source"] == "label_space"
    assert (r4["thresholds"] == 0.3).all()


def test_groups_anatomy_and_exclusions(tmp_path):
    space = _space()
    s, y, anat = _preds(2, 400)
    y[:, 10] = False                      # a tail class without test positives
    r = evaluate_predictions(s, y, space, *_preds(3, 200)[:2], anatomy=anat, n_boot=50, out_dir=tmp_path)
    m = json.loads((tmp_path / "metrics.json").read_text())
    assert {"all", "head", "medium", "tail", "normal", "anatomy/chest", "anatomy/brain/normal"} <= set(m)
    keys = {"auc", "ap", "f1", "mcc", "acc", "recall_at_fpr_0.01", "recall_at_fpr_0.05", "recall_at_fpr_0.1"}
    assert set(m["all"]) == keys
    assert set(m["all"]["auc"]) == {"value", "ci_low", "ci_high", "ci_no_spread", "n_classes", "n_excluded"}
    auc = r["per_class"]["auc"]
    assert (m["head"]["auc"]["n_classes"], m["medium"]["auc"]["n_classes"]) == (4, 3)
    assert (m["tail"]["auc"]["n_classes"], m["tail"]["auc"]["n_excluded"]) == (4, 1)
    assert m["tail"]["auc"]["value"] == pytest.approx(np.nanmean(auc[space.group_mask("tail")]))
    assert m["normal"]["auc"]["value"] == pytest.approx(auc[0])
    assert m["meta"]["n_classes_no_positive"] == 1
    assert 0 <= m["all"]["auc"]["ci_low"] <= m["all"]["auc"]["value"] <= m["all"]["auc"]["ci_high"] <= 1
    rows = anat == "chest"
    sub = per_class_metrics(s[rows], y[rows], r["thresholds"])
    assert m["anatomy/chest"]["ap"]["value"] == pytest.approx(np.nanmean(sub["ap"]))
    assert m["anatomy/chest/normal"]["auc"]["value"] == pytest.approx(sub["auc"][0])
    csv = (tmp_path / "per_class.csv").read_text().splitlines()
    assert len(csv) == C + 1 and csv[0].startswith("index,name,code,group")
    z = np.load(tmp_path / "predictions.npz")
    assert z["scores"].shape == (400, C) and z["anatomy"].shape == (400,)


def test_the_printed_summary_says_how_many_classes_each_average_holds():
    """The terminal table did not say that 'all' averaged 7 of a user's 14 classes (the rest had
    no positive case in a 33-case test split): the report said it, the terminal did not."""
    from raddiag.evaluation.summary import evaluation_summary

    space = _space()
    s, y, _ = _preds(2, 400)
    y[:, 10] = False                      # a tail class without test positives
    y[:, 11] = True                       # one without test negatives
    m = evaluate_predictions(s, y, space, n_boot=0)["metrics"]
    last = evaluation_summary(m).splitlines()[-1]
    assert last == (f"classes averaged: all {C - 2}, head 4, medium 3, tail 3, normal 1; 2 of the {C} left out of "
                    "every average (without a positive: 1 ('disease 10'), without a negative: 1 ('disease 11'))")


def test_the_printed_summary_says_which_classes_fell_back_to_the_fixed_threshold():
    """A new user's run printed 'thresholds: chosen by maximal F1 on the validation split' while 5 of
    its 9 classes had no validation positive and used 0.5 (their F1 0 beside an AUC of 100): only the
    HTML report said so. The terminal now names them, and the left-out classes, beyond five by count."""
    from raddiag.evaluation.summary import evaluation_summary

    space = _space()
    s, y, _ = _preds(2, 400)
    sv, yv, _ = _preds(3, 300)
    yv[:, [3, 5, 6, 7, 8, 9, 10]] = False          # seven classes without a validation positive
    y[:, 1:8] = False                              # seven without a test positive
    m = evaluate_predictions(s, y, space, sv, yv, n_boot=0)["metrics"]
    lines = evaluation_summary(m).splitlines()
    assert lines[-3] == (f"F1 / MCC / ACC thresholds: chosen by maximal F1 on the validation split, for {C - 7} of the "
                         f"{C} classes; 7 without a chosen threshold (no positive to choose it on, or none stored) use "
                         "0.5 ('disease 3', 'disease 5', 'disease 6', 'disease 7', 'disease 8' and 2 more)")
    assert lines[-1].endswith(f"7 of the {C} left out of every average (without a positive: 7 ('disease 1', "
                              "'disease 2', 'disease 3', 'disease 4', 'disease 5' and 2 more), without a negative: 0)")
    assert m["meta"]["classes_threshold_fallback"] == [f"disease {i}" for i in (3, 5, 6, 7, 8, 9, 10)]


def _write_npz(path, s, y, anat=None):
    extra = {} if anat is None else {"anatomy": anat, "case_ids": np.array([f"c{i}" for i in range(len(s))])}
    np.savez(path, scores=s, labels=y.astype(np.uint8), **extra)


def test_metrics_cli_on_saved_predictions(tmp_path, capsys):
    space = _space()
    space.save(tmp_path / "labels.json")
    s, y, anat = _preds(4, 300)
    sv, yv, _ = _preds(5, 200)
    _write_npz(tmp_path / "test.npz", s, y, anat)
    _write_npz(tmp_path / "val.npz", sv, yv)
    rc = main(["metrics", "--pred", str(tmp_path / "test.npz"), "--val", str(tmp_path / "val.npz"),
               "--labels", str(tmp_path / "labels.json"), "--out", str(tmp_path / "out"), "--n-boot", "30"])
    assert rc == 0
    m = json.loads((tmp_path / "out" / "metrics.json").read_text())
    direct = evaluate_predictions(s, y, space, sv, yv, anatomy=anat, n_boot=0)["metrics"]
    assert m["all"]["f1"]["value"] == pytest.approx(direct["all"]["f1"]["value"])
    assert "chosen by maximal F1 on the validation split" in capsys.readouterr().out
    # bad input: a clear error, no traceback
    rc = main(["metrics", "--pred", str(tmp_path / "missing.npz"), "--out", str(tmp_path / "x")])
    assert rc == 2 and "missing.npz" in capsys.readouterr().err


def _report(tmp_path):
    space = _space()
    s, y, anat = _preds(6, 300)
    sv, yv, _ = _preds(7, 200)
    evaluate_predictions(s, y, space, sv, yv, anatomy=anat, n_boot=50, out_dir=tmp_path)
    return tmp_path / "report.html"


def test_report_is_self_contained(tmp_path):
    html = _report(tmp_path).read_text()
    assert not re.search(r"""(src|href)\s*=\s*['"]?(https?:)?//""", html)
    assert "http://" not in html and "https://" not in html
    assert html.count("data:image/png;base64,") == 3  # ROC, normal by anatomy, distributions
    assert "Head" in html and "R@0.05" in html and "Normal vs abnormal" in html


@pytest.mark.slow
def test_report_renders_in_headless_chromium(tmp_path, chromium):
    report = _report(tmp_path)
    shot = tmp_path / "shot.png"
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                        "--disable-background-networking", "--disable-component-update", "--disable-sync",
                        f"--user-data-dir={profile}", f"--screenshot={shot}", "--window-size=1280,2400",
                        report.resolve().as_uri()], capture_output=True, timeout=90)
    assert shot.exists() and shot.stat().st_size > 20_000
    from PIL import Image

    img = np.asarray(Image.open(shot).convert("RGB")).astype(int)
    # rendered plots are colourful: the ROC band (red) and bar colours, not just black text on white
    colourful = (np.abs(img[..., 0] - img[..., 2]) > 60).mean()
    assert colourful > 0.01


def test_normal_bar_plot_accepts_an_interval_that_misses_its_point_estimate():
    from raddiag.evaluation.report import normal_by_anatomy_figure

    e = lambda v, lo, hi: {"value": v, "ci_low": lo, "ci_high": hi}
    row = {"auc": e(0.40, 0.45, 0.60), "ap": e(0.2, 0.1, 0.3), "recall_at_fpr_0.05": e(None, None, None)}
    png = normal_by_anatomy_figure({"normal": row, "anatomy/Chest/normal": row})
    assert png and len(png) > 1000


def test_read_npz_equals_np_load(tmp_path):
    """The direct .npz reader of `raddiag metrics`: stored and compressed members, Fortran
    order, strings; a damaged file is a clear error naming it."""
    from raddiag.evaluation.commands import load_predictions, read_npz

    arrays = {"scores": np.random.default_rng(0).random((7, 5)).astype(np.float32),
              "labels": np.eye(7, 5, dtype=np.uint8), "f": np.asfortranarray(np.arange(6.0).reshape(2, 3)),
              "case_ids": np.array(["a", "bb", "ccc"]), "scalar": np.float64(3.5)}
    for save in (np.savez, np.savez_compressed):
        path = tmp_path / f"{save.__name__}.npz"
        save(path, **arrays)
        got = read_npz(path)
        assert set(got) == set(arrays)
        for k, v in arrays.items():
            assert got[k].dtype == np.asarray(v).dtype and np.array_equal(got[k], v), (save.__name__, k)
    raw = (tmp_path / "savez.npz").read_bytes()
    (tmp_path / "cut.npz").write_bytes(raw[:200] + raw[-400:])
    with pytest.raises(ValueError, match="cut.npz: not a readable .npz"):
        load_predictions(str(tmp_path / "cut.npz"))


def test_thresholds_stored_by_training_keep_their_fallbacks():
    """Red team: training stored 0.5 as the threshold of every class without a validation positive,
    and a later evaluation on the stored thresholds counted them as chosen ('n_threshold_fallback'
    0, every per_class.csv row 'threshold_fallback' 0, and no warning on a logit scale). A class
    without a chosen threshold is now stored as None, and counted as a fallback again."""
    import dataclasses

    from raddiag.training.metrics import f1_thresholds

    space = _space()
    s, y, _ = _preds(2, 400)
    sv, yv, _ = _preds(3, 300)
    yv[:, [4, 9]] = False
    stored = f1_thresholds(sv, yv)
    assert [i for i, t in enumerate(stored) if t is None] == [4, 9]
    on_val = evaluate_predictions(s, y, space, sv, yv, n_boot=0)
    later = evaluate_predictions(s, y, dataclasses.replace(space, thresholds=stored), n_boot=0)
    assert later["threshold_source"] == "label_space"
    assert later["metrics"]["meta"]["n_threshold_fallback"] == on_val["metrics"]["meta"]["n_threshold_fallback"] == 2
    # stored a margin below the validation choice (training.metrics.STORED_MARGIN): the same decisions
    np.testing.assert_allclose(later["thresholds"], on_val["thresholds"], rtol=0, atol=1.01e-6)
    np.testing.assert_array_equal(later["threshold_fallback"], on_val["threshold_fallback"])


def test_per_class_csv_thresholds_read_back_as_the_thresholds_used(tmp_path):
    """Red team: per_class.csv wrote thresholds to 6 digits; a float32 sigmoid's 0.99999988 read as
    1, and scoring at 1 gives F1 0 where the row said 1. The CSV's threshold is the one used, exactly."""
    import csv as csvmod

    from sklearn.metrics import f1_score

    s = np.array([0.99999994, 0.9999999, 0.5, 0.2], np.float32)[:, None]
    y = np.array([1, 1, 0, 0], bool)[:, None]
    res = evaluate_predictions(s, y, LabelSpace(names=["a"]), s, y, n_boot=0, out_dir=tmp_path)
    row = next(csvmod.DictReader((tmp_path / "per_class.csv").open()))
    t = float(row["threshold"])
    assert t == res["thresholds"][0]
    assert f1_score(y[:, 0], s[:, 0] >= t) == float(row["f1"]) == 1.0


def test_per_class_csv_names_no_group_without_training_counts(tmp_path):
    """New user: `metrics` without --labels said 'class groups: none' while per_class.csv called every
    class 'tail' with train_count 0."""
    import csv as csvmod

    s = np.array([[0.9, 0.1], [0.8, 0.7], [0.2, 0.6], [0.1, 0.3]], np.float32)
    y = np.array([[1, 0], [1, 1], [0, 1], [0, 0]], bool)
    res = evaluate_predictions(s, y, LabelSpace(names=["a", "b"]), n_boot=0, out_dir=tmp_path)
    rows = list(csvmod.DictReader((tmp_path / "per_class.csv").open()))
    assert [(r["group"], r["train_count"]) for r in rows] == [("", ""), ("", "")]
    assert "no head / medium / tail" in res["metrics"]["meta"]["class_groups"]


def test_the_threshold_note_names_the_split_the_thresholds_came_from():
    """Red team: `evaluate --val-split train` printed 'chosen by maximal F1 on the validation split'."""
    space = _space()
    s, y, _ = _preds(2, 200)
    sv, yv, _ = _preds(3, 200)
    meta = evaluate_predictions(s, y, space, sv, yv, n_boot=0, input_names={"val_split": "train"})["metrics"]["meta"]
    assert meta["threshold_note"] == "chosen by maximal F1 on the train split"
    assert evaluate_predictions(s, y, space, sv, yv, n_boot=0)["metrics"]["meta"]["threshold_note"] == \
        "chosen by maximal F1 on the validation split"

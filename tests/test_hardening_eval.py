"""Hostile inputs to ``raddiag metrics`` / ``raddiag evaluate`` and the evaluation engine: one
test per finding, each failing before its fix. Errors are one line naming the file and the reason."""
from __future__ import annotations

import json

import numpy as np
import pytest

from raddiag.cli import main


def _npz(path, n=40, c=3, seed=0, **extra):
    rng = np.random.default_rng(seed)
    y = rng.random((n, c)) < 0.3
    y[0], y[1] = True, False                 # every class has a positive and a negative
    s = rng.random((n, c))
    np.savez(path, scores=extra.pop("scores", s), labels=extra.pop("labels", y), **extra)
    return str(path)


def _metrics(tmp_path, *args):
    return main(["metrics", "--out", str(tmp_path / "out"), *args])


@pytest.mark.parametrize("args, reason", [
    (["--n-boot", "1"], "at least 2"),
    (["--n-boot", "0", "--seed", "-1"], "--seed: must be an integer >= 0, got -1"),
])
def test_metrics_refuses_one_resample_and_a_negative_seed(tmp_path, capsys, args, reason):
    pred = _npz(tmp_path / "p.npz")
    with pytest.raises(SystemExit) as e:
        _metrics(tmp_path, "--pred", pred, *args)
    err = capsys.readouterr().err
    assert e.value.code == 2 and reason in err
    assert not (tmp_path / "out").exists()


def _space_file(path, thresholds):
    classes = [{"name": n, **({} if t is None else {"threshold": t})} for n, t in zip("abc", thresholds)]
    path.write_text(json.dumps({"classes": classes}))      # json writes NaN / Infinity as such
    return str(path)


def test_a_label_space_with_thresholds_on_some_classes_falls_back_to_05_for_the_others(tmp_path):
    from raddiag.data.labels import LabelSpace

    space = LabelSpace.load(_space_file(tmp_path / "ls.json", [0.3, None, 0.2]))
    assert space.thresholds == [0.3, None, 0.2]
    thr, fallback = space.threshold_values()
    assert thr.tolist() == [0.3, 0.5, 0.2] and fallback.tolist() == [False, True, False]
    assert _metrics(tmp_path, "--pred", _npz(tmp_path / "p.npz"), "--labels", str(tmp_path / "ls.json"),
                    "--n-boot", "0") == 0
    meta = json.loads((tmp_path / "out" / "metrics.json").read_text())["meta"]
    assert meta["threshold_source"] == "label_space" and meta["n_threshold_fallback"] == 1
    rows = (tmp_path / "out" / "per_class.csv").read_text().splitlines()[1:]
    assert [r.split(",")[7:9] for r in rows] == [["0.3", "0"], ["0.5", "1"], ["0.2", "0"]]


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), "0.5", True])
def test_a_threshold_that_is_not_a_finite_number_is_refused(tmp_path, capsys, bad):
    from raddiag.data.labels import LabelSpace

    path = _space_file(tmp_path / "ls.json", [0.3, bad, 0.2])
    rc = _metrics(tmp_path, "--pred", _npz(tmp_path / "p.npz"), "--labels", path, "--n-boot", "0")
    err = capsys.readouterr().err
    assert rc == 2 and "ls.json" in err and "'b'" in err and "finite number" in err
    with pytest.raises(ValueError, match="finite number"):
        LabelSpace(names=["a", "b"], thresholds=[0.1, float("nan")])


def test_validation_thresholds_go_through_the_same_check(monkeypatch):
    from raddiag.data.labels import LabelSpace
    from raddiag.evaluation import engine

    monkeypatch.setattr(engine, "best_f1_thresholds", lambda s, y, return_fallback: (
        np.array([0.5, np.nan]), np.zeros(2, bool)))
    s, y = np.random.default_rng(0).random((10, 2)), np.tile([[True, False], [False, True]], (5, 1))
    with pytest.raises(ValueError, match="validation predictions.*finite number"):
        engine.evaluate_predictions(s, y, LabelSpace(names=["a", "b"]), val_scores=s, val_labels=y, n_boot=0)


@pytest.mark.parametrize("scores_shape, labels_shape", [((40,), (40, 3)), ((40, 3), (40,)), ((40, 3), (40, 2)),
                                                        ((3, 40), (40, 3))])
def test_scores_and_labels_of_different_shapes_are_refused_naming_the_file_and_both_shapes(
        tmp_path, capsys, scores_shape, labels_shape):
    pred = _npz(tmp_path / "p.npz", scores=np.full(scores_shape, 0.5), labels=np.zeros(labels_shape, bool))
    assert _metrics(tmp_path, "--pred", pred, "--n-boot", "0") == 2
    err = capsys.readouterr().err
    assert "p.npz" in err and f"scores {scores_shape}" in err and f"labels {labels_shape}" in err


def test_validation_predictions_with_other_classes_are_refused_naming_both_files(tmp_path, capsys):
    pred, val = _npz(tmp_path / "test.npz"), _npz(tmp_path / "val.npz", c=2)
    assert _metrics(tmp_path, "--pred", pred, "--val", val, "--n-boot", "0") == 2
    err = capsys.readouterr().err
    assert "val.npz" in err and "test.npz" in err and "2 classes" in err and "3" in err


def test_a_label_space_of_another_size_is_refused_naming_both_files(tmp_path, capsys):
    path = _space_file(tmp_path / "ls.json", [None, None, None])
    assert _metrics(tmp_path, "--pred", _npz(tmp_path / "p.npz", c=4), "--labels", path, "--n-boot", "0") == 2
    err = capsys.readouterr().err
    assert "ls.json: 3 classes, but" in err and "p.npz has 4" in err


def test_metrics_without_a_label_space_reports_no_head_medium_tail_groups(tmp_path, capsys):
    assert _metrics(tmp_path, "--pred", _npz(tmp_path / "p.npz"), "--n-boot", "0") == 0
    out = capsys.readouterr().out
    m = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert not {"head", "medium", "tail"} & set(m) and m["all"]["auc"]["n_classes"] == 3
    assert "no training counts" in m["meta"]["class_groups"] and "no training counts" in out
    assert not any(line.startswith(("head", "tail")) for line in out.splitlines())
    assert "Head" not in (tmp_path / "out" / "report.html").read_text()


def test_anatomy_names_with_a_slash_keep_their_own_groups_and_report(tmp_path):
    anatomy = np.array(["Head/Neck"] * 20 + ["Head"] * 10 + ["Head/normal"] * 10)
    pred = _npz(tmp_path / "p.npz", anatomy=anatomy)
    assert _metrics(tmp_path, "--pred", pred, "--n-boot", "20") == 0
    m = json.loads((tmp_path / "out" / "metrics.json").read_text())
    anat = sorted(k for k in m if k.startswith("anatomy/"))
    assert anat == ["anatomy/Head", "anatomy/Head%2FNeck", "anatomy/Head%2FNeck/normal", "anatomy/Head%2Fnormal",
                    "anatomy/Head%2Fnormal/normal", "anatomy/Head/normal"]
    assert m["meta"]["anatomy_cases"] == {"Head": {"n_cases": 10}, "Head/Neck": {"n_cases": 20},
                                          "Head/normal": {"n_cases": 10}}
    html = (tmp_path / "out" / "report.html").read_text()
    assert "Head/Neck" in html and "%2F" not in html


def test_an_anatomy_named_normal_keeps_its_row_in_the_table_and_report(tmp_path, capsys):
    """Red team: the anatomy "normal" has the key anatomy/normal, which ends like every anatomy's
    Normal-class group: its row was left out of the printed table and report, and its all-classes
    figures were drawn as a Normal-class bar."""
    from sklearn.metrics import roc_auc_score

    from raddiag.evaluation.engine import anatomy_groups

    anatomy = np.array(["normal"] * 20 + ["Chest"] * 20)
    pred = _npz(tmp_path / "p.npz", c=3, anatomy=anatomy)
    assert _metrics(tmp_path, "--pred", pred, "--n-boot", "0") == 0
    out = capsys.readouterr().out
    m = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert anatomy_groups(m) == ["anatomy/Chest", "anatomy/normal"]
    assert anatomy_groups(m, normal=True) == ["anatomy/Chest/normal", "anatomy/normal/normal"]
    rows = [line.split() for line in out.splitlines() if line.startswith(("normal ", "Chest "))]
    d = np.load(pred)
    rows_n = anatomy == "normal"
    expected = np.mean([roc_auc_score(d["labels"][rows_n, j], d["scores"][rows_n, j]) for j in range(3)])
    # the "normal" anatomy's row (after the class group "normal" of the overall table)
    assert [r for r in rows if r[0] == "normal"][-1][1] == f"{100 * expected:.1f}"
    assert m["anatomy/normal"]["auc"]["value"] == pytest.approx(expected, abs=1e-12)


def test_anatomy_names_that_write_alike_keep_their_own_groups():
    """Red team: "Head/Neck" and "Head%2FNeck" shared the key anatomy/Head%2FNeck, and the second
    overwrote the first: one row, with the other anatomy's AUC. Each now has its own, checked
    against scikit-learn on that anatomy's cases."""
    from sklearn.metrics import roc_auc_score

    from raddiag.data.labels import LabelSpace
    from raddiag.demo import within_anatomy
    from raddiag.evaluation import evaluate_predictions
    from raddiag.evaluation.engine import anatomy_name

    rng = np.random.default_rng(4)
    names = ["Head/Neck", "Head%2FNeck", "Head%Neck", "Head%25"]
    anatomy = np.array(names * 30)
    y = rng.random((120, 3)) < 0.4
    s = rng.random((120, 3))
    m = evaluate_predictions(s, y, LabelSpace(names=["a", "b", "c"]), anatomy=anatomy, n_boot=0)["metrics"]
    keys = sorted(k for k in m if k.startswith("anatomy/") and not k.endswith("/normal"))
    assert sorted(anatomy_name(k) for k in keys) == sorted(names)
    rows = within_anatomy(m, min_classes=1)[1]
    for name in names:
        rows_of = anatomy == name
        want = np.mean([roc_auc_score(y[rows_of, j], s[rows_of, j]) for j in range(3)])
        assert rows[name]["auc"] == pytest.approx(want)


def test_an_interval_without_spread_is_named_so_not_shown_as_a_confident_one(tmp_path):
    from raddiag.data.labels import LabelSpace
    from raddiag.evaluation import evaluate_predictions
    from raddiag.evaluation.report import _cell

    y = np.zeros((30, 2), bool)
    y[:10] = True
    s = np.where(y, 0.9, 0.1) + np.linspace(0, 0.05, 30)[:, None]     # perfectly separated: AUC 1 in every resample
    s[12, 1] = 0.95                                                    # class 1 is not: its AUC varies
    m = evaluate_predictions(s, y, LabelSpace(names=["a", "b"]), n_boot=30)["metrics"]
    assert m["all"]["auc"]["ci_no_spread"] is False and "no spread" not in _cell(m["all"]["auc"])
    m = evaluate_predictions(s[:, :1], y[:, :1], LabelSpace(names=["a"]), n_boot=30, out_dir=tmp_path)["metrics"]
    e = m["all"]["auc"]
    assert e["value"] == 1.0 and e["ci_low"] == e["ci_high"] == 1.0 and e["ci_no_spread"] is True
    assert "no spread" in _cell(e) and "[100.00, 100.00]" not in _cell(e)
    assert "no spread" in (tmp_path / "report.html").read_text()


def test_logit_scores_with_the_05_fallback_threshold_are_warned_of(tmp_path):
    from raddiag.data.errors import InputWarning
    from raddiag.data.labels import LabelSpace
    from raddiag.evaluation import evaluate_predictions

    rng = np.random.default_rng(1)
    y = rng.random((60, 2)) < 0.4
    s = rng.normal(size=(60, 2)) * 3 + 2 * y                # logits, not probabilities
    yv = y.copy()
    yv[:, 1] = False                                        # class 1: no validation positives -> 0.5
    space = LabelSpace(names=["a", "b"])
    with pytest.warns(InputWarning, match=r"outside \[0, 1\].*1 class.*0\.5"):
        r = evaluate_predictions(s, y, space, val_scores=s, val_labels=yv, n_boot=0)
    assert "outside [0, 1]" in r["metrics"]["meta"]["threshold_warning"]
    p = 1 / (1 + np.exp(-s))
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", InputWarning)
        r = evaluate_predictions(p, y, space, val_scores=p, val_labels=yv, n_boot=0)   # probabilities: fine
        evaluate_predictions(s, y, space, val_scores=s, val_labels=y, n_boot=0)        # no fallback: fine
    assert r["metrics"]["meta"]["threshold_warning"] is None


@pytest.mark.parametrize("extra, reason", [
    ({"case_ids": np.array(["a", "b"])}, "case_ids has 2 entries for 40 cases"),
    ({"anatomy": np.array(["chest"])}, "anatomy has 1 entries for 40 cases"),
])
def test_case_ids_or_anatomy_of_another_length_are_refused_naming_the_file(tmp_path, capsys, extra, reason):
    assert _metrics(tmp_path, "--pred", _npz(tmp_path / "p.npz", **extra), "--n-boot", "0") == 2
    err = capsys.readouterr().err
    assert "p.npz" in err and reason in err


@pytest.mark.parametrize("cls", ["nosuch", "7"])
def test_an_unknown_plot_class_is_bad_input_named_before_any_work(tmp_path, capsys, cls):
    rc = _metrics(tmp_path, "--pred", _npz(tmp_path / "p.npz"), "--n-boot", "0", "--plot-classes", "class_0", cls)
    err = capsys.readouterr().err
    assert rc == 2 and f"--plot-classes: {cls!r} is not a class" in err and "unexpected" not in err
    assert not (tmp_path / "out").exists()


def test_scores_beyond_float32_are_written_back_as_they_were_not_as_inf(tmp_path):
    from raddiag.evaluation.commands import load_predictions

    s = np.random.default_rng(0).random((40, 3)) * 1e300
    assert _metrics(tmp_path, "--pred", _npz(tmp_path / "p.npz", scores=s), "--n-boot", "0") == 0
    back = load_predictions(str(tmp_path / "out" / "predictions.npz"))      # refused scores as inf before
    assert np.array_equal(back["scores"], s)
    f32 = np.random.default_rng(1).random((40, 3)).astype(np.float32)
    assert _metrics(tmp_path, "--pred", _npz(tmp_path / "q.npz", scores=f32), "--n-boot", "0") == 0
    assert load_predictions(str(tmp_path / "out" / "predictions.npz"))["scores"].dtype == np.float32   # as before


def test_the_written_predictions_score_as_metrics_json_says(tmp_path):
    """Red team: float64 scores that float32 cannot tell apart (probabilities within 1e-8 of 1,
    from a boosted model) were written to predictions.npz as float32: scoring that file again gave
    AUC 0.5 where metrics.json beside it said 0.743."""
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200)
    s = 1 - 10 ** -rng.uniform(8, 12, 200) * np.where(y == 1, 0.1, 1)
    assert _metrics(tmp_path, "--pred", _npz(tmp_path / "p.npz", scores=s[:, None], labels=y[:, None]),
                    "--n-boot", "0") == 0
    first = json.loads((tmp_path / "out" / "metrics.json").read_text())["all"]["auc"]["value"]
    assert main(["metrics", "--pred", str(tmp_path / "out" / "predictions.npz"), "--out", str(tmp_path / "again"),
                 "--n-boot", "0"]) == 0
    again = json.loads((tmp_path / "again" / "metrics.json").read_text())["all"]["auc"]["value"]
    assert first == pytest.approx(roc_auc_score(y, s), abs=1e-12) and again == first


@pytest.mark.parametrize("classes, reason", [
    ([{"name": "a", "count": 1e400}, {"name": "b"}, {"name": "c"}], "count of class 'a'"),
    ([{"name": "a", "count": -5}, {"name": "b"}, {"name": "c"}], "count of class 'a'"),
    ([{"name": 1}, {"name": None}, {"name": "c"}], "class name 1"),
    ([{"name": "a"}, {"name": " "}, {"name": "c"}], "class name ' '"),
    ([{"name": "a", "count": True}, {"name": "b"}, {"name": "c"}], "count of class 'a'"),
    ([{"name": "a", "threshold": 10 ** 400}, {"name": "b"}, {"name": "c"}], "threshold of class 'a'"),
    # fixed groups: a class without one would drop out of head / medium / tail without a word
    ({"group_rule": "fixed", "classes": [{"name": "a", "group": "head"}, {"name": "b", "group": "tail"},
                                         {"name": "c"}]}, "class 'c' needs a 'group'"),
    ({"group_rule": "fixed", "classes": [{"name": "a"}, {"name": "b"}, {"name": "c"}]}, "class 'a' needs a 'group'"),
    ({"head_min": "100", "classes": [{"name": "a"}, {"name": "b"}, {"name": "c"}]}, "head_min must be an integer"),
    ({"medium_min": None, "classes": [{"name": "a"}, {"name": "b"}, {"name": "c"}]}, "medium_min must be an integer"),
    ({"head_min": 10, "medium_min": 30, "classes": [{"name": "a"}, {"name": "b"}, {"name": "c"}]},
     "no class could be medium"),
    ({"granularity": "foo", "classes": [{"name": "a"}, {"name": "b"}, {"name": "c"}]}, "granularity must be one of"),
])
def test_a_label_space_with_bad_names_or_counts_is_bad_input_naming_the_file(tmp_path, capsys, classes, reason):
    content = classes if isinstance(classes, dict) else {"classes": classes}
    (tmp_path / "ls.json").write_text(json.dumps(content))
    rc = _metrics(tmp_path, "--pred", _npz(tmp_path / "p.npz"), "--labels", str(tmp_path / "ls.json"), "--n-boot", "0")
    err = capsys.readouterr().err
    assert rc == 2 and "ls.json: not a readable label space" in err and reason in err


def test_no_class_defined_gives_a_report_without_a_python_warning(tmp_path):
    import warnings

    from raddiag.data.labels import LabelSpace
    from raddiag.evaluation import evaluate_predictions

    s, y = np.random.default_rng(0).random((20, 2)), np.ones((20, 2), bool)       # all positive: no AUC
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        m = evaluate_predictions(s, y, LabelSpace(names=["a", "b"]), n_boot=20, out_dir=tmp_path)["metrics"]
    assert m["all"]["auc"]["value"] is None and m["meta"]["n_classes_no_negative"] == 2
    assert "2 without negatives are excluded" in (tmp_path / "report.html").read_text()


def test_validation_cases_that_are_also_test_cases_are_warned_of(tmp_path, capsys):
    ids = np.array([f"c{i}" for i in range(40)])
    pred = _npz(tmp_path / "test.npz", case_ids=ids)
    val = _npz(tmp_path / "val.npz", seed=1, case_ids=np.array([f"v{i}" for i in range(38)] + ["c3", "c7"]))
    assert _metrics(tmp_path, "--pred", pred, "--val", val, "--n-boot", "0") == 0
    err = capsys.readouterr().err
    assert "raddiag: warning:" in err and "val.npz: 2 case(s) are also in" in err and "'c3'" in err
    other = _npz(tmp_path / "val2.npz", seed=1, case_ids=np.array([f"v{i}" for i in range(40)]))
    assert _metrics(tmp_path, "--pred", pred, "--val", other, "--n-boot", "0") == 0
    assert "also in" not in capsys.readouterr().err


@pytest.mark.parametrize("flag", ["--val-split", "--split"])
def test_a_misspelled_split_is_refused_up_front_naming_the_valid_ones(tmp_path, capsys, monkeypatch, flag):
    import raddiag.models

    def no_model(*a, **k):
        raise AssertionError("the model was loaded before the split was checked")
    monkeypatch.setattr(raddiag.models, "load_model", no_model)
    rc = main(["evaluate", str(tmp_path / "run"), "--data", str(tmp_path), flag, "vall", "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1
    assert f"{flag} 'vall'" in err[0] and "train, val, test" in err[0]


@pytest.mark.parametrize("content, expected", [
    ([{"name": "a"}, {"name": "b"}, {"name": "c"}], "a JSON object with 'classes', got a list"),
    ({"classes": [1, 2, 3]}, "class 0 is 1, not an object with a 'name'"),
    ({"classes": {"a": 1}}, "'classes' must be a list of objects with a 'name', got an object"),
    ({"classes": [{"name": "a"}, "b", {"name": "c"}]}, "class 1 is 'b', not an object with a 'name'"),
])
def test_a_label_space_of_the_wrong_shape_is_one_line_naming_the_file_and_what_was_expected(
        tmp_path, capsys, content, expected):
    (tmp_path / "ls.json").write_text(json.dumps(content))
    rc = _metrics(tmp_path, "--pred", _npz(tmp_path / "p.npz"), "--labels", str(tmp_path / "ls.json"), "--n-boot", "0")
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "ls.json: not a readable label space" in err[0]
    assert expected in err[0] and "TypeError" not in err[0] and "KeyError" not in err[0]
    if isinstance(content, dict):     # data prepare --label-space reads the same file the same way
        from raddiag.data.commands import _load_label_space

        with pytest.raises(ValueError, match=f"ls.json: not a readable label space.*{expected}"):
            _load_label_space(str(tmp_path / "ls.json"))


@pytest.mark.parametrize("command", ["metrics", "evaluate"])
@pytest.mark.parametrize("below", [False, True])
def test_an_out_that_is_a_file_is_refused_before_any_work(tmp_path, capsys, monkeypatch, command, below):
    import raddiag.evaluation.engine

    def no_work(*a, **k):
        raise AssertionError("computed before --out was checked")
    monkeypatch.setattr(raddiag.evaluation.engine, "evaluate_predictions", no_work)
    (tmp_path / "afile").write_text("keep me")
    out = tmp_path / "afile" / "sub" if below else tmp_path / "afile"
    args = (["metrics", "--pred", _npz(tmp_path / "p.npz")] if command == "metrics"
            else ["evaluate", str(tmp_path / "run"), "--data", str(tmp_path)])
    rc = main([*args, "--out", str(out), "--n-boot", "0"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and f"{tmp_path / 'afile'}: is a file, not a folder" in err[0]
    assert (tmp_path / "afile").read_text() == "keep me"


def test_a_damaged_predictions_file_is_refused_naming_it(tmp_path, capsys):
    """Red team: the fast .npz reader skipped the CRC: one flipped bit turned a score of 0.816 into
    1.2e-05 and the file was scored without a word (np.load refuses it)."""
    path = _npz(tmp_path / "p.npz", scores=np.random.default_rng(0).random((40, 3)))
    data = bytearray(open(path, "rb").read())
    data[data.find(b"\x93NUMPY") + 128 + 8 * 10 + 7] ^= 0x01      # a bit of the 11th score
    open(path, "wb").write(bytes(data))
    assert _metrics(tmp_path, "--pred", path, "--n-boot", "0") == 2
    err = capsys.readouterr().err
    assert "p.npz" in err and "scores.npy: damaged" in err, err
    assert not (tmp_path / "out" / "metrics.json").exists()


def test_a_report_that_fails_leaves_the_last_outputs_whole_and_no_stage(tmp_path, monkeypatch):
    """Red team: metrics.json was written first, then predictions.npz, per_class.csv and the report
    into the folder itself: a failure or a kill in the report left the new metrics.json beside the
    last call's predictions and report, which `metrics --pred out/predictions.npz` then rescored."""
    from raddiag.evaluation import report

    assert _metrics(tmp_path, "--pred", _npz(tmp_path / "a.npz", seed=1), "--n-boot", "0") == 0
    before = {p.name: p.read_bytes() for p in (tmp_path / "out").iterdir()}

    def broken(*_a, **_k):
        raise RuntimeError("the report failed half-way")

    monkeypatch.setattr(report, "write_report", broken)
    assert _metrics(tmp_path, "--pred", _npz(tmp_path / "b.npz", seed=2), "--n-boot", "0") == 1
    assert {p.name: p.read_bytes() for p in (tmp_path / "out").iterdir()} == before


@pytest.mark.parametrize("extra, reason", [
    ({"case_ids": np.array("one id")}, "case_ids must be a list of one entry per case"),
    ({"anatomy": np.full((40, 2), "Chest")}, "anatomy must be a list of one entry per case"),
    ({}, "ls.json: not a readable label space: not JSON here (nested too deeply"),
], ids=["0-d case ids", "2-d anatomy", "deep label space"])
def test_odd_arrays_and_deep_json_are_one_line_naming_the_file(tmp_path, capsys, extra, reason):
    """Red team: case_ids stored as one string (a 0-d array) raised "TypeError: iteration over a 0-d
    array (unexpected)"; a label space nested 100,000 deep raised RecursionError, naming no file."""
    labels = []
    if not extra:
        (tmp_path / "ls.json").write_text('{"classes": ' + "[" * 100_000 + "]" * 100_000 + "}")
        labels = ["--labels", str(tmp_path / "ls.json")]
    assert _metrics(tmp_path, "--pred", _npz(tmp_path / "p.npz", **extra), *labels, "--n-boot", "0") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unexpected" not in err and reason in err, err
    assert ("ls.json" if labels else "p.npz") in err, err


def test_a_label_file_in_another_class_order_than_the_columns_is_refused(tmp_path, capsys):
    """Red team: predictions carried no class names, so a label file of the same classes in another
    order filed every figure under another class's name and group. evaluate and metrics now write
    the columns' names into predictions.npz, and metrics --labels checks them, order included."""
    from raddiag.data.labels import LabelSpace

    LabelSpace(names=["a", "b", "c"], counts=[200, 50, 5]).save(tmp_path / "ls.json")
    assert _metrics(tmp_path, "--pred", _npz(tmp_path / "p.npz"), "--labels", str(tmp_path / "ls.json"),
                    "--n-boot", "0") == 0
    written = tmp_path / "out" / "predictions.npz"
    assert list(np.load(written)["class_names"]) == ["a", "b", "c"]
    LabelSpace(names=["b", "a", "c"], counts=[50, 200, 5]).save(tmp_path / "swapped.json")
    capsys.readouterr()
    rc = main(["metrics", "--pred", str(written), "--labels", str(tmp_path / "swapped.json"), "--out",
               str(tmp_path / "again"), "--n-boot", "0"])
    err = capsys.readouterr().err
    assert rc == 2 and "swapped.json: the same classes as" in err and "column 0 is 'a' there, 'b' here" in err
    assert not (tmp_path / "again").exists()
    LabelSpace(names=["a", "b", "x"]).save(tmp_path / "other.json")
    rc = main(["metrics", "--pred", str(written), "--labels", str(tmp_path / "other.json"), "--out",
               str(tmp_path / "again"), "--n-boot", "0"])
    assert rc == 2 and "e.g. 'x' not among them" in capsys.readouterr().err
    # the same file again, and without --labels: the names come from the file
    assert main(["metrics", "--pred", str(written), "--labels", str(tmp_path / "ls.json"), "--out",
                 str(tmp_path / "same"), "--n-boot", "0"]) == 0
    assert main(["metrics", "--pred", str(written), "--out", str(tmp_path / "bare"), "--n-boot", "0"]) == 0
    rows = (tmp_path / "bare" / "per_class.csv").read_text()
    assert "\n0,a," in rows and "class_0" not in rows


def test_predictions_without_a_label_space_carry_no_stand_in_names(tmp_path):
    """A first call without --labels must not pin the stand-in names class_0.. onto its output,
    which a later call with the real label file would then refuse."""
    assert _metrics(tmp_path, "--pred", _npz(tmp_path / "p.npz"), "--n-boot", "0") == 0
    written = tmp_path / "out" / "predictions.npz"
    assert "class_names" not in np.load(written)
    (tmp_path / "ls.json").write_text(json.dumps({"classes": [{"name": n} for n in "xyz"]}))
    assert main(["metrics", "--pred", str(written), "--labels", str(tmp_path / "ls.json"), "--out",
                 str(tmp_path / "named"), "--n-boot", "0"]) == 0

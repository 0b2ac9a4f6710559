"""``evaluate`` says when its figures cannot be trusted (a new user prepared the same manifest
again with other random splits at 32 px x 4 slices: 8 of its 12 test cases were training cases
of a run trained at 64 x 8, and ``evaluate`` printed a normal table): evaluated cases the run
trained on, a store coarser than the run's input, and why an anatomy row is n/a."""
from __future__ import annotations

import json
import shutil
import warnings

import numpy as np
import pytest

from test_training_data import _scan, tiny_overrides

from raddiag.data.case import Case, Scan
from raddiag.data.store import prepare_cases
from raddiag.evaluation.data_checks import DataCheckWarning

N_CASES = 36
SPLITS = ("train", "val", "test")


def _cases(raw, split_of) -> list[Case]:
    """The tiny data's cases (:mod:`test_training_data`), one scan each, ``split_of(i)`` their split."""
    raw.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    cases = []
    for i in range(N_CASES):
        labels = [[], ["Bright corner"], ["Dark band"], ["Bright corner", "Dark band"]][i % 4]
        is3d = i % 2 == 0
        vol = _scan(rng, set(labels), 6 if is3d else 1)
        path = raw / f"c{i}.npy"
        if not path.exists():
            np.save(path, vol.transpose(1, 2, 0) if is3d else vol[0])
        cases.append(Case(id=f"case{i:03d}", scans=[Scan(paths=[str(path)], modality="CT" if is3d else "X-ray",
                                                         is_3d=is3d)], labels=labels or ["Normal"],
                          split=split_of(i), patient=f"p{i}"))
    return cases


def _other_split(i: int) -> str:
    """The re-prepared splits: 8 of the 12 test cases were training cases of the first; its train
    split has other class counts."""
    if (i % 3 == 0 and i < 24) or (i % 3 == 2 and i < 12):
        return "test"
    return "val" if i % 3 == 1 and i < 30 else "train"


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    from raddiag.config import preset
    from raddiag.training import train

    d = tmp_path_factory.mktemp("guards")
    first = _cases(d / "raw", lambda i: SPLITS[i % 3])
    prepare_cases(first, d / "prep", size=32, depth=4, workers=1)               # the run's input geometry
    prepare_cases(first, d / "big", size=48, depth=6, workers=1)                # the same splits, larger
    prepare_cases(_cases(d / "raw", _other_split), d / "other", size=16, depth=2, workers=1)   # coarser
    train(d / "prep", d / "run", preset("tiny", tiny_overrides(**{"train.epochs": 1})), progress=False)
    return d


def _evaluate(run, data, out):
    """``(result, [DataCheckWarning messages])`` of evaluate_run."""
    from raddiag.evaluation.run_eval import evaluate_run

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = evaluate_run(run, data, "test", out, n_boot=0, progress=False)
    return res, [str(w.message) for w in caught if issubclass(w.category, DataCheckWarning)]


@pytest.fixture(scope="module")
def other(made):
    return _evaluate(made / "run", made / "other", made / "ev_other")


def _meta(out):
    return json.loads((out / "metrics.json").read_text())["meta"]


def test_a_split_holding_training_cases_warns_with_the_count_and_the_meta_records_it(made, other):
    res, said = other
    leak = [m for m in said if "trained on" in m]
    assert len(leak) == 1, said
    assert f"{made / 'other'} split 'test': 8 of its 12 cases are cases {made / 'run'} trained on" in leak[0]
    assert f"by scan file, from {made / 'run' / 'train_cases.json'})" in leak[0] and "optimistic" in leak[0]
    meta = _meta(made / "ev_other")
    trained = meta["trained_on_cases"]
    assert (trained["n"], trained["of"], trained["split"]) == (8, 12, "test")
    assert set(trained["case_ids"]) == {f"case{i:03d}" for i in range(0, 24, 3)}
    assert leak[0] in meta["warnings"] and res["metrics"]["meta"]["warnings"] == meta["warnings"]
    assert "optimistic" in (made / "ev_other" / "report.html").read_text()


def test_a_coarser_store_warns_that_images_are_upsampled(made, other):
    said = [m for m in other[1] if "coarser" in m]
    assert len(said) == 1, other[1]
    assert said[0].startswith(f"{made / 'other'}: prepared at 16 px x 2 slices, coarser than the input of "
                              f"{made / 'run'} (32 px x 4 slices: data.size / data.depth in "
                              f"{made / 'run' / 'config.yaml'})")
    assert "upsampled from 16 to 32 px" in said[0] and "at most 2 of the 4 slices" in said[0]
    assert _meta(made / "ev_other")["geometry"] == {"data": [16, 2], "run": [32, 4],
                                                    "note": "coarser than the run's input"}


def test_the_runs_own_test_split_at_its_geometry_or_larger_says_nothing(made):
    for data, note in (("prep", "the run's input geometry"),
                       ("big", "stored larger than the run's input: resized down on load, as in training")):
        res, said = _evaluate(made / "run", made / data, made / f"ev_{data}")
        meta = _meta(made / f"ev_{data}")
        assert said == [] and meta["warnings"] == []
        assert (meta["trained_on_cases"]["n"], meta["trained_on_cases"]["of"]) == (0, 12)
        assert meta["geometry"]["note"] == note


def test_the_cli_prints_each_warning_once_before_the_table(made, capsys):
    from raddiag.cli import main

    rc = main(["evaluate", str(made / "run"), "--data", str(made / "other"), "--out", str(made / "ev_cli"),
               "--n-boot", "0"])
    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert rc == 0
    assert lines[0].startswith("WARNING: ") and "8 of its 12 cases are cases" in lines[0]
    assert lines[1].startswith("WARNING: ") and "coarser than the input" in lines[1]
    assert lines[3].startswith("test split, macro over classes")
    assert "8 of its 12" not in err and "coarser" not in err


def _copy_run(made, tmp_path, data=None, train_cases=None):
    """The run as one trained before runs recorded their cases (no train_cases.json), or with
    ``train_cases`` as that file."""
    run = tmp_path / "runs" / "run"
    shutil.copytree(made / "run", run)
    (run / "train_cases.json").unlink()
    if data is not None:
        record = json.loads((run / "intensity.json").read_text())
        (run / "intensity.json").write_text(json.dumps({**record, "data": str(data)}))
    if train_cases is not None:
        (run / "train_cases.json").write_text(train_cases)
    return run


def test_a_run_records_the_cases_it_trained_on_and_evaluate_needs_nothing_else(made, tmp_path):
    from raddiag.data.store import PreparedData

    record = json.loads((made / "run" / "train_cases.json").read_text(encoding="utf-8"))
    assert record["case_ids"] == [r["id"] for r in PreparedData(made / "prep").records_for("train")]
    assert record["data"] == str((made / "prep").resolve())
    run = tmp_path / "run"
    shutil.copytree(made / "run", run)
    record = json.loads((run / "intensity.json").read_text())
    (run / "intensity.json").write_text(json.dumps({**record, "data": str(tmp_path / "gone")}))
    _, said = _evaluate(run, made / "other", tmp_path / "ev")
    assert f"8 of its 12 cases are cases {run} trained on" in said[0]


def test_another_data_set_whose_case_ids_repeat_the_training_ids_is_not_taken_for_them(made, tmp_path):
    """Red team: ids such as case001 repeat across data sets; cases are told apart by their files."""
    new = tmp_path / "new"
    prepare_cases(_cases(new / "raw", lambda i: "test"), new / "prep", size=32, depth=4, workers=1)
    _, said = _evaluate(made / "run", new / "prep", tmp_path / "ev")
    trained = _meta(tmp_path / "ev")["trained_on_cases"]
    assert said == [] and (trained["n"], trained["by"]) == (0, "scan file")


def test_a_store_records_absolute_scan_paths_so_files_tell_data_sets_apart(made, tmp_path, monkeypatch):
    """Red team: a manifest's relative paths were stored relative to the folder prepare ran in, so two
    data sets' 'img/0.npy' looked like one file (a false warning) and one set prepared once by a
    relative and once by an absolute path looked like two (a missed overlap)."""
    from raddiag.data.store import PreparedData

    monkeypatch.chdir(made)
    rel = [Case(id=f"x{i}", scans=[Scan(paths=[f"raw/c{i}.npy"], modality="CT" if i % 2 == 0 else "X-ray",
                                        is_3d=i % 2 == 0)], labels=["Normal"], split="test") for i in range(4)]
    prepare_cases(rel, tmp_path / "rel", size=32, depth=4, workers=1)
    paths = [s["paths"][0] for r in PreparedData(tmp_path / "rel").records for s in r["scans"]]
    assert paths == [str(made / "raw" / f"c{i}.npy") for i in range(4)]
    _, said = _evaluate(made / "run", tmp_path / "rel", tmp_path / "ev")        # the same files, other ids
    trained = _meta(tmp_path / "ev")["trained_on_cases"]
    train_files = {f"c{i}.npy" for i, sp in enumerate(SPLITS * 12) if sp == "train" and i < N_CASES}
    assert trained["n"] == sum(f"c{i}.npy" in train_files for i in range(4)) and trained["by"] == "scan file"


def test_training_data_that_is_gone_says_the_check_was_not_done(made, tmp_path):
    run = _copy_run(made, tmp_path, data=tmp_path / "gone")
    _, said = _evaluate(run, made / "other", tmp_path / "ev")
    assert said[0] == (f"{made / 'other'} split 'test': not checked for cases {run} trained on: its training "
                       f"data {tmp_path / 'gone'} (named in {run / 'intensity.json'}) is not found")
    trained = _meta(tmp_path / "ev")["trained_on_cases"]
    assert trained["n"] is None and trained["of"] == 12 and "is not found" in trained["not_checked"]


def test_training_data_prepared_again_with_other_splits_is_not_taken_for_the_trained_on(made, tmp_path):
    run = _copy_run(made, tmp_path, data=made / "other")        # its train split has other class counts
    _, said = _evaluate(run, made / "other", tmp_path / "ev")
    assert "not checked" in said[0] and said[0].endswith(f"the train split of {made / 'other'} no longer has the run's training counts "
                            "(label_space.json): prepared again since, or the run trained on a part of it")


def test_a_relative_training_path_is_found_above_the_run(made, tmp_path, monkeypatch):
    """The trainer records --data as typed ('prep'); evaluate may run from another folder."""
    import os

    run = _copy_run(made, tmp_path, data=os.path.relpath(made / "prep", tmp_path))
    monkeypatch.chdir(run)
    _, said = _evaluate(run, made / "other", tmp_path / "ev")
    assert f"8 of its 12 cases are cases {run} trained on" in said[0]
    assert f"from the train split of {made / 'prep'}" in said[0]


def test_recorded_training_cases_are_used_first(made, tmp_path):
    run = _copy_run(made, tmp_path, data=tmp_path / "gone",
                    train_cases=json.dumps({"case_ids": ["case000", "case002", "nowhere"]}))
    _, said = _evaluate(run, made / "other", tmp_path / "ev")
    assert f"2 of its 12 cases are cases {run} trained on ('case000', 'case002'; by case id, from " \
           f"{run / 'train_cases.json'}; another data set's cases may share these ids)" in said[0]
    (run / "train_cases.json").write_text("[")
    _, said = _evaluate(run, made / "other", tmp_path / "ev2")
    assert said[0].startswith(f"{made / 'other'} split 'test': not checked for cases {run} trained on: "
                              f"{run / 'train_cases.json'}: not a readable record of training cases")


def test_an_anatomy_row_that_is_na_says_why():
    from raddiag.data.labels import LabelSpace
    from raddiag.evaluation import evaluate_predictions
    from raddiag.evaluation.summary import evaluation_summary

    rng = np.random.default_rng(0)
    y = np.zeros((30, 3), bool)
    y[:20] = rng.random((20, 3)) < 0.4
    anatomy = ["Chest"] * 20 + ["Head"] * 3 + ["Knee"] * 7     # Head and Knee: no positive at all
    res = evaluate_predictions(rng.random((30, 3)), y, LabelSpace(names=["Normal", "a", "b"]),
                               anatomy=anatomy, n_boot=0)
    rows = {line.split()[0]: line for line in evaluation_summary(res["metrics"]).splitlines()
            if line.split() and line.split()[0] in ("Chest", "Head", "Knee")}
    assert rows["Head"].endswith("(n/a: none of the 3 classes has both a positive and a negative among "
                                 "its 3 cases)")
    assert rows["Knee"].endswith("among its 7 cases)") and "n/a:" not in rows["Chest"]


def test_data_whose_labels_all_miss_the_runs_classes_is_refused_not_an_empty_table(made, tmp_path, caplog):
    """New user: labels 'glioma' against the run's 'Glioma' were all dropped, and evaluate printed a
    table without rows and exited 0. Now nothing is written, the reason is one error, and the
    warning names the labels that differ from a class only in letter case."""
    from raddiag.evaluation.run_eval import evaluate_run

    cases = _cases(tmp_path / "raw", lambda i: "test")
    for c in cases:
        c.labels = [name.lower() if name != "Normal" else "dark band" for name in c.labels]
    prepare_cases(cases, tmp_path / "lower", size=32, depth=4, workers=1)
    with pytest.raises(ValueError, match=r"none of the 36 cases of split 'test' carries a class of the run's "
                                         r"label space \(3 classes"):
        evaluate_run(made / "run", tmp_path / "lower", "test", tmp_path / "ev", n_boot=0, progress=False)
    assert not (tmp_path / "ev").exists()
    said = " ".join(r.getMessage() for r in caplog.records)
    assert "'bright corner' -> 'Bright corner'" in said and "'dark band' -> 'Dark band'" in said

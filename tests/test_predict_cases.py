"""Which inputs make one case and which several, and a case with an unreadable scan: what a new
user met on their own data (the README's first example read as two cases; a typo split a case;
`predict` failed a whole case whose bad scan `data prepare` skips)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from raddiag.cli import main
from raddiag.data.errors import ScanError
from raddiag.serving.predict import CaseResult, Predictor
from raddiag.serving.sample import make_tiny_run, sample_png


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("cases")
    make_tiny_run(d / "run")
    (d / "cxr.png").write_bytes(sample_png(48, seed=1))
    (d / "series").mkdir()
    for i in range(2):
        (d / "series" / f"{i}.png").write_bytes(sample_png(40, seed=2 + i))
    rng = np.random.default_rng(0)
    good = rng.random((30, 30, 3)).astype(np.float32)
    np.save(d / "good.npy", good)
    bad = good.copy()
    bad[3, 4, 1] = np.nan
    np.save(d / "nan.npy", bad)
    np.save(d / "flat.npy", np.ones((30, 30, 3), np.float32))
    return d


@pytest.fixture(scope="module")
def pred(files):
    return Predictor.load(files / "run")


def test_a_folder_beside_a_file_is_one_case(files, pred):
    """The README's first example: ``[folder, file]`` is one case of the folder's scans and the file."""
    got = pred.predict([str(files / "series"), str(files / "cxr.png")], modality=["X-ray", "X-ray"], top=1)
    assert isinstance(got, CaseResult)
    assert sorted(s.id for s in got.scans) == ["cxr.png", "series/0.png", "series/1.png"]


def test_folders_alone_are_several_cases(files, pred):
    got = pred.predict([str(files / "series"), str(files / "series")], modality="X-ray", top=1)
    assert isinstance(got, list) and [r.case_id for r in got] == ["series", "series#2"]


def test_a_typo_in_one_file_name_is_that_cases_error_not_a_second_case(files, pred):
    with pytest.raises(FileNotFoundError, match="cxr_typo.png: no such file"):
        pred.predict([str(files / "cxr.png"), str(files / "cxr_typo.png")], modality="X-ray")


def test_an_unreadable_scan_is_skipped_and_named_and_the_rest_predicted(files, pred):
    """As `data prepare` skips it: the case is predicted from its readable scans, exactly as
    without the bad one, and the result names the skipped scan and why."""
    both = pred.predict([str(files / "nan.npy"), str(files / "good.npy")], modality="CT", top=4)
    alone = pred.predict([str(files / "good.npy")], modality="CT", top=4)
    assert [(f.name, f.probability) for f in both.ranked] == [(f.name, f.probability) for f in alone.ranked]
    bad = [s for s in both.scans if s.error]
    assert [s.id for s in bad] == ["nan.npy"] and not bad[0].used and "NaN" in bad[0].error
    assert [s.id for s in both.scans if s.used] == ["good.npy"]
    assert "1 unreadable, skipped: " in str(both) and "nan.npy" in str(both)
    assert both.to_dict()["scans"][0]["error"] == bad[0].error


def test_a_case_with_no_readable_scan_is_an_error_naming_the_first(files, pred):
    with pytest.raises(ScanError, match="nan.npy: .*NaN"):
        pred.predict([str(files / "nan.npy"), str(files / "flat.npy")], modality="CT")
    got = pred.predict([[str(files / "nan.npy")], [str(files / "good.npy")]], modality="CT", top=1)
    assert "NaN" in got[0].error and isinstance(got[1], CaseResult)


def test_an_unreadable_scan_frees_its_place_under_the_scan_caps(files, pred):
    """Caps pick the first scans of a modality; with the first unreadable, the next one is used."""
    cap = pred.cfg.data.modality_caps.get("CT", pred.cfg.data.default_modality_cap)
    many = [str(files / "nan.npy")] + [str(files / "good.npy")] * (cap + 1)
    got = pred.predict(many, modality="CT", top=1)
    assert sum(s.used for s in got.scans) == cap and not got.scans[0].used


def test_an_empty_case_name_in_the_cli_message_has_no_empty_id(files, capsys):
    assert main(["predict", str(files / "run"), "", "--modality", "X-ray", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "empty name" in err and "failed: :" not in err


def test_a_closed_pipe_ends_predict_quietly(files):
    """`raddiag predict ... --json | head`: the reader has gone; no 'error: Broken pipe'."""
    read, write = os.pipe()
    os.close(read)                                        # the reader is gone before anything is written
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    proc = subprocess.run([sys.executable, "-m", "raddiag", "predict", str(files / "run"), str(files / "cxr.png"),
                           "--modality", "X-ray", "--json"], stdout=write, stderr=subprocess.PIPE, env=env,
                          text=True, timeout=300)
    os.close(write)
    assert proc.returncode == 141 and "Broken pipe" not in proc.stderr, proc.stderr


def test_embed_and_the_cli_name_a_skipped_scan(files, tmp_path, capsys):
    """Red team: `raddiag embed` dropped an unreadable scan without a word."""
    case = f"{files / 'flat.npy'},{files / 'good.npy'}"
    assert main(["embed", str(files / "run"), case, "--modality", "CT", "--out", str(tmp_path / "e.npz"),
                 "--no-progress"]) == 0
    out, err = capsys.readouterr()
    assert "1 unreadable scan(s) skipped" in out and "flat.npy" in err and "constant" in err
    npz = np.load(tmp_path / "e.npz")
    assert list(npz["scan_ids"]) == ["good.npy"] and list(npz["skipped_scans"]) == ["flat.npy"]
    assert list(npz["skipped_case"]) == [0] and "constant" in str(npz["skipped_errors"][0])
    assert main(["predict", str(files / "run"), case, "--modality", "CT", "--top", "1"]) == 0
    out, err = capsys.readouterr()
    assert "1 unreadable, skipped" in out and "note: 1 unreadable scan(s) skipped" in err


def test_a_list_of_missing_scan_files_is_one_case_not_several(files, pred):
    """Red team: from the wrong working folder, every file of a one-case list was missing and the
    list came back as two cases."""
    with pytest.raises(FileNotFoundError, match="scan_a.png: no such file"):
        pred.predict([str(files / "nope" / "scan_a.png"), str(files / "nope" / "scan_b.png")], modality="X-ray")


def test_a_case_nested_too_deep_is_an_error_naming_it(files, pred):
    got = pred.predict((((str(files / "cxr.png"),),),), modality="X-ray")
    assert "is a tuple, not a path" in got[0].error

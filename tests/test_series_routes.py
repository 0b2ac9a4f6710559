"""One case, the same scans by every route. A case folder whose ``DICOM/`` folder holds two series
(a CT and an MR, one file a slice) beside a PNG: ``data prepare`` of a manifest naming that folder
skipped it ("2 different DICOM series") while ``predict CASE`` split it by SeriesInstanceUID, so
evaluation and prediction scored the case on different scans (a new user: 0.306 against 0.380)."""
from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest

from raddiag import cli
from raddiag.cli import main
from raddiag.data.errors import InputWarning
from raddiag.serving.sample import sample_png
from test_predict import write_dicom_series

CT_UID, MR_UID = "1.2.826.0.1.3680043.8.498.11", "1.2.826.0.1.3680043.8.498.22"
SIZE, DEPTH = 64, 8


@pytest.fixture
def case(tmp_path):
    """P038/DICOM/ (5 CT slices and 3 MR slices, two series) and P038/cxr.png."""
    root = tmp_path / "P038"
    write_dicom_series(root / "DICOM", n=5, modality="CT", series=CT_UID, seed=1, prefix="CT")
    write_dicom_series(root / "DICOM", n=3, modality="MR", series=MR_UID, seed=2, prefix="MR")
    (root / "cxr.png").write_bytes(sample_png(40, seed=3))
    return root


def _manifest(root, folder_modality="CT", dicom=None):
    rows = ["id,labels,path,modality", f"P038,Pneumonia,{dicom or 'P038/DICOM'},{folder_modality}",
            "P038,Pneumonia,P038/cxr.png,X-ray"]
    path = root.parent / "cases.csv"
    path.write_text("\n".join(rows) + "\n")
    return path


def _prepare(manifest, out):
    return main(["data", "prepare", str(manifest), "--format", "manifest", "--out", str(out),
                 "--size", str(SIZE), "--depth", str(DEPTH), "--workers", "1"])


@pytest.fixture
def data_only(monkeypatch):
    monkeypatch.setattr(cli, "COMMAND_MODULES", ["raddiag.data.commands"])


def _files(paths) -> tuple:
    return tuple(sorted(str(p) for p in paths))


def test_prepare_splits_a_folder_of_two_series_as_predict_does(case, tmp_path, data_only):
    from raddiag.data.preprocess import load_scan
    from raddiag.data.store import PreparedData
    from raddiag.serving.case_inputs import case_scans, scan_id

    assert _prepare(_manifest(case), tmp_path / "data") == 0
    data = PreparedData(tmp_path / "data")
    (rec,) = data.records
    prepared = {_files(s["paths"]): s for s in rec["scans"]}
    assert sorted((s["modality"], s["store"]["orig_depth"]) for s in rec["scans"]) == [("CT", 5), ("MRI", 3),
                                                                                         ("X-ray", 1)]
    predicted = case_scans(case, modality="X-ray")            # `raddiag predict RUN P038`
    assert len(predicted) == len(prepared) == 3
    for s in predicted:
        stored = prepared[_files(s.paths)]                    # the same files make each scan
        assert stored["modality"] == s.modality
        assert scan_id(stored.get("id"), stored["paths"]) == scan_id(s.id, s.paths)   # named alike
        arr, _, depth = load_scan(s, SIZE, DEPTH)
        assert depth == stored["store"]["orig_depth"]
        np.testing.assert_allclose(np.asarray(data.scan_array(stored), np.float32), arr, atol=1e-3)
    ids = sorted(scan_id(s.get("id"), s["paths"]) for s in rec["scans"])
    assert ids == sorted(["cxr.png", f"DICOM:{CT_UID[-12:]}", f"DICOM:{MR_UID[-12:]}"])
    report = json.loads((tmp_path / "data" / "report.json").read_text())
    assert report["skipped_scans"] == [] and report["scans_in"] == report["scans_out"] == 3


def test_the_series_tag_wins_over_the_manifest_modality_with_a_warning(case, tmp_path, data_only, capsys):
    assert _prepare(_manifest(case, folder_modality="MRI"), tmp_path / "data") == 0
    err = capsys.readouterr().err
    ct_file = case / "DICOM" / "CT0000"
    lines = [line for line in err.splitlines() if "Modality tag" in line]
    assert len(lines) == 1 and str(ct_file) in lines[0], err     # the MR series agrees: no warning
    assert "read as CT" in lines[0] and "MRI" in lines[0]
    from raddiag.data.store import PreparedData

    (rec,) = PreparedData(tmp_path / "data").records
    assert sorted(s["modality"] for s in rec["scans"]) == ["CT", "MRI", "X-ray"]
    report = (tmp_path / "data" / "report.txt").read_text()
    assert str(ct_file) in report and "read as CT" in report


def test_files_of_two_series_given_as_one_scan_are_refused_in_the_manifest_terms(case, tmp_path, data_only):
    """A list of files is the user's word that they are one scan: not split, refused with what to
    write instead; the case keeps its other scan and the report names the files."""
    from raddiag.data.case import Case, Scan
    from raddiag.data.store import prepare_cases

    files = sorted(str(p) for p in (case / "DICOM").iterdir())
    c = Case(id="P038", labels=["Pneumonia"],
             scans=[Scan(paths=files, modality="CT"), Scan(paths=[str(case / "cxr.png")], modality="X-ray")])
    report = prepare_cases([c], tmp_path / "data", size=SIZE, depth=DEPTH, workers=1)
    (skipped,) = report.skipped_scans
    assert "belong to 2 series" in skipped["reason"] and "manifest" in skipped["reason"]
    assert "raddiag." not in skipped["reason"]                 # no Python module name for a user
    assert report.scans_out == 1


def test_predict_manifest_reads_the_scans_predict_reads_from_the_folder(case, tmp_path):
    from raddiag.serving.batch import manifest_cases
    from raddiag.serving.case_inputs import case_scans
    from raddiag.serving.predict import Predictor
    from raddiag.serving.sample import make_tiny_run

    make_tiny_run(tmp_path / "run")
    pred = Predictor.load(tmp_path / "run")
    manifest = case.parent / "cases.jsonl"
    manifest.write_text(json.dumps({"id": "P038", "scans": [{"path": "P038/DICOM", "modality": "CT"},
                                                            {"path": "P038/cxr.png", "modality": "X-ray"}]}) + "\n")
    (case / "DICOM" / "notes.txt").write_text("x")
    (pending,) = manifest_cases(pred, manifest)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", InputWarning)
        sample, by_manifest, _ = pending.read()
        _, by_folder, _ = pred.prepare(case_scans(case, modality="X-ray"))
    key = lambda infos: sorted((i.id, i.modality, i.slices, i.error) for i in infos)   # noqa: E731
    assert key(by_manifest) == key(by_folder)
    assert [i.error for i in by_manifest] == [None] * 3
    # finding the folder's scans warned: the warning goes with the case's result (red team: rows said [])
    said = sample["warnings"]
    assert f"{case / 'DICOM'}: skipped 1 file(s): not a scan type: notes.txt" in said
    assert len(said) == 2 and "its DICOM Modality tag says MRI, but CT was given" in said[1]


def test_folders_format_reads_a_case_folder_as_predict_does(case, tmp_path):
    from raddiag.data.adapters import load_source
    from raddiag.serving.case_inputs import case_scans

    src = tmp_path / "images" / "pneumonia"
    src.mkdir(parents=True)
    case.rename(src / "P038")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", InputWarning)
        (c,) = load_source("folders", tmp_path / "images", modality="X-ray").cases
    predicted = case_scans(src / "P038", modality="X-ray")
    assert sorted((_files(s.paths), s.modality, s.id) for s in c.scans) == \
        sorted((_files(s.paths), s.modality, s.id) for s in predicted)


def test_a_tag_naming_no_known_modality_gives_way_to_the_given_one(tmp_path):
    """Secondary capture (SC) names no modality: the manifest's (or --modality) is used, by
    prepare and predict alike, without a warning (predict refused it, prepare took the manifest's)."""
    from raddiag.data.discover import declared_scans
    from raddiag.data.case import Scan
    from raddiag.serving.case_inputs import case_scans

    write_dicom_series(tmp_path / "sc", n=2, modality="SC")
    with warnings.catch_warnings():
        warnings.simplefilter("error", InputWarning)
        (s,) = declared_scans(Scan(paths=[str(tmp_path / "sc")], modality="X-ray"))
        (p,) = case_scans(tmp_path / "sc", modality="X-ray")
    assert s.modality == p.modality == "X-ray" and len(s.paths) == 2


def test_prepare_parses_each_dicom_header_once(case, tmp_path, monkeypatch):
    """Grouping a folder into series, then reading each series, parsed every header twice (in
    ``data prepare`` and in ``predict CASE``)."""
    from raddiag.data import dicom
    from raddiag.data.case import Case, Scan
    from raddiag.data.store import prepare_cases

    reads = []
    real = dicom._read_header
    monkeypatch.setattr(dicom, "_read_header", lambda path: reads.append(str(path)) or real(path))
    c = Case(id="P038", labels=["Pneumonia"], scans=[Scan(paths=[str(case / "DICOM")], modality="CT")])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", InputWarning)
        report = prepare_cases([c], tmp_path / "data", size=SIZE, depth=DEPTH, workers=1)
    assert report.scans_out == 2
    assert sorted(reads) == sorted(str(p) for p in (case / "DICOM").iterdir())
    reads.clear()                                   # `predict CASE` groups, then reads, the same way
    import raddiag
    from raddiag.serving.sample import make_tiny_run

    make_tiny_run(tmp_path / "run")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", InputWarning)
        res = raddiag.load(tmp_path / "run").predict(str(case / "DICOM"))
    assert len([s for s in res.scans if s.used]) == 2
    assert sorted(reads) == sorted(str(p) for p in (case / "DICOM").iterdir())


def test_a_series_folders_other_files_are_skipped_and_said_not_read_as_scans(case, tmp_path, data_only, capsys):
    """A thumbnail and a report beside the series in the manifest's DICOM folder are no CT scans:
    skipped and named, as a series folder's other files always were (the folder rule read them as
    scans of the manifest's modality); `predict` of that folder reads it alike (red team: it read
    the thumbnail as a scan, prepare did not)."""
    from raddiag.data.store import PreparedData

    (case / "DICOM" / "preview.jpg").write_bytes(sample_png(16, seed=5))
    (case / "DICOM" / "notes.txt").write_text("radiologist's notes")
    assert _prepare(_manifest(case), tmp_path / "data") == 0
    (rec,) = PreparedData(tmp_path / "data").records
    assert sorted(s["modality"] for s in rec["scans"]) == ["CT", "MRI", "X-ray"]
    err = capsys.readouterr().err.splitlines()
    said = [line for line in err if "preview.jpg" in line]
    assert len(said) == 1 and "skipped" in said[0] and any("skipped" in x and "notes.txt" in x for x in err)
    report = json.loads((tmp_path / "data" / "report.json").read_text())
    assert any("preview.jpg" in w["warning"] for w in report["warnings"])
    from raddiag.serving.case_inputs import case_scans

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", InputWarning)
        assert sorted(s.modality for s in case_scans(case / "DICOM", modality="CT")) == ["CT", "MRI"]


def test_a_normal_pool_reads_a_folder_of_two_series_as_two_scans(case, tmp_path):
    """curate's normal pool read a manifest's folder as one series (and failed on two)."""
    from raddiag.curation.normals import _pool_from

    rows = ["id,labels,path,modality", "N1,Normal,P038/DICOM,CT"]
    (tmp_path / "normals.csv").write_text("\n".join(rows) + "\n")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", InputWarning)
        (entry,), _ = _pool_from(f"manifest:{tmp_path / 'normals.csv'}", None)
        shapes = sorted((meta["modality"], read().shape[0]) for read, meta in entry["scans"])
    assert shapes == [("CT", 5), ("MRI", 3)]


def test_a_link_to_another_case_is_named_as_shared_and_a_link_to_the_parent_is_not_followed(tmp_path, data_only,
                                                                                             capsys):
    """Red team: P2's ``prior -> ../P1`` took P1's series (a test case) into P2 (a training case)
    with no word, and ``loop -> ..`` took every case's scans into one."""
    import os

    write_dicom_series(tmp_path / "P1", n=3, series="1.2.3.901", seed=1)
    write_dicom_series(tmp_path / "P2", n=3, series="1.2.3.902", seed=2)
    os.symlink(tmp_path / "P1", tmp_path / "P2" / "prior")
    os.symlink(tmp_path, tmp_path / "P2" / "loop")
    rows = [{"id": "P1", "labels": ["Pneumonia"], "split": "test", "scans": [{"path": "P1", "modality": "CT"}]},
            {"id": "P2", "labels": ["Pneumonia"], "split": "train", "scans": [{"path": "P2", "modality": "CT"}]}]
    (tmp_path / "m.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert _prepare(tmp_path / "m.jsonl", tmp_path / "data") == 0
    err = capsys.readouterr().err
    assert "link to a folder holding this one (not followed): loop" in err
    report = (tmp_path / "data" / "report.txt").read_text()
    assert "3 scan file(s) belong to more than one case, 3 of them across splits" in report
    assert "'P1' test, 'P2' train" in report


def test_a_series_without_uid_is_one_scan_and_series_alike_at_the_end_keep_apart(tmp_path):
    """Red team: a 6-slice CT whose files carry no SeriesInstanceUID became 6 one-slice scans (its
    key slice dropped); two series whose UIDs end in the same 12 characters had one name."""
    from raddiag.data.discover import scans_in_folder

    paths = write_dicom_series(tmp_path / "nouid", n=6, series="")
    (s,) = scans_in_folder(tmp_path / "nouid", modality="CT")
    assert sorted(s.paths) == sorted(paths) and s.id == "nouid"
    write_dicom_series(tmp_path / "two", n=2, series="1.2.111111111111", prefix="A")
    write_dicom_series(tmp_path / "two", n=2, series="1.3.111111111111", prefix="B")
    ids = sorted(x.id for x in scans_in_folder(tmp_path / "two"))
    assert ids == ["two:1.2.111111111111", "two:1.3.111111111111"]


def test_folders_format_keeps_the_warnings_of_finding_scans_in_the_report(case, tmp_path, data_only, capsys):
    """Red team: `--format folders` printed its warnings (a tag against --modality, a skipped
    notes.txt) but report.json / report.txt held none."""
    src = tmp_path / "images" / "pneumonia"
    src.mkdir(parents=True)
    (case / "DICOM" / "notes.txt").write_text("x")
    case.rename(src / "P038")
    assert main(["data", "prepare", str(tmp_path / "images"), "--format", "folders", "--modality", "X-ray",
                 "--out", str(tmp_path / "data"), "--size", str(SIZE), "--depth", str(DEPTH), "--workers", "1"]) == 0
    err = capsys.readouterr().err
    report = json.loads((tmp_path / "data" / "report.json").read_text())
    said = [w["warning"] for w in report["warnings"]]
    assert len(said) == 3 and all(w["case"] == "pneumonia/P038" for w in report["warnings"])
    assert any("notes.txt" in w for w in said) and sum("DICOM Modality tag says" in w for w in said) == 2
    assert all(w in err for w in said)                                   # and said once on the terminal
    assert sum(line.count("notes.txt") for line in err.splitlines()) == 1
    assert "notes.txt" in (tmp_path / "data" / "report.txt").read_text()


def test_dicom_without_uid_splits_by_modality_and_size_alike_on_every_route(tmp_path):
    """Red team: a folder's CT and MR files without SeriesInstanceUID were one "CT" scan; the same
    files given one by one were one scan a file; a structured report (SR, no image) counted as a
    series, so the PNGs beside it were skipped and the case lost."""
    from raddiag.data.discover import scans_in_folder
    from raddiag.serving.case_inputs import case_scans

    ct = write_dicom_series(tmp_path / "nouid", n=3, series="", modality="CT", prefix="C")
    mr = write_dicom_series(tmp_path / "nouid", n=2, series="", modality="MR", prefix="M", seed=3)
    key = lambda scans: sorted((s.modality, tuple(sorted(s.paths))) for s in scans)   # noqa: E731
    want = [("CT", tuple(sorted(ct))), ("MRI", tuple(sorted(mr)))]
    assert key(scans_in_folder(tmp_path / "nouid")) == want
    assert key(case_scans([*ct, *mr])) == want                       # given file by file
    sr = tmp_path / "views"
    sr.mkdir()
    for k in range(2):
        (sr / f"view{k}.png").write_bytes(sample_png(16, seed=k))
    (report,) = write_dicom_series(tmp_path / "sr", n=1, modality="SR")
    (sr / "report").write_bytes(Path(report).read_bytes())
    with pytest.warns(InputWarning, match="DICOM without an image .*: report"):
        scans = scans_in_folder(sr, modality="X-ray")
    assert sorted(Path(s.paths[0]).name for s in scans) == ["view0.png", "view1.png"]

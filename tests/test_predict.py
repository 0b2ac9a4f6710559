"""raddiag.load(RUN).predict(...) and `raddiag predict`: ranked results, batching, thresholds, errors."""
from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
import torch

import raddiag
from raddiag.cli import main
from raddiag.serving.predict import CaseResult, Finding, Predictor
from raddiag.serving.sample import SAMPLE_CLASSES, make_tiny_run, sample_png


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("pred")
    make_tiny_run(d / "run", thresholds=[0.5, 0.2, 0.9, 0.5])
    (d / "cxr.png").write_bytes(sample_png(48, seed=1))
    rng = np.random.default_rng(0)
    nib.save(nib.Nifti1Image(rng.random((40, 40, 9)).astype(np.float32), np.eye(4)), str(d / "ct.nii.gz"))
    np.save(d / "vol.npy", rng.random((30, 30, 3)).astype(np.float32))
    (d / "caseA").mkdir()
    (d / "caseA" / "a.png").write_bytes(sample_png(40, seed=2))
    (d / "caseA" / "sub").mkdir()
    (d / "caseA" / "sub" / "b.png").write_bytes(sample_png(40, seed=3))
    return d


def test_five_line_api(files):
    model = raddiag.load(files / "run")
    result = model.predict([str(files / "ct.nii.gz"), str(files / "cxr.png")], modality=["CT", "X-ray"])
    assert isinstance(result, CaseResult)
    assert len(result.ranked) == len(SAMPLE_CLASSES)
    probs = [f.probability for f in result.ranked]
    assert probs == sorted(probs, reverse=True) and all(0 <= p <= 1 for p in probs)
    assert {(s.modality, s.is_3d, s.slices) for s in result.scans} == {("CT", True, 4), ("X-ray", False, 1)}
    text = str(result)
    assert "Pneumonia" in text and "J18" in text and "thresholds: validation" in text
    # thresholds come from the run's label space
    for f in result.ranked:
        expected = {"Normal": 0.5, "Pneumonia": 0.2, "Pleural effusion": 0.9, "Fracture": 0.5}[f.name]
        assert f.threshold == pytest.approx(expected)
        assert f.above_threshold == (f.probability >= expected)
    d = json.loads(json.dumps(result.to_dict()))
    assert d["ranked"][0].keys() == {"name", "code", "probability", "threshold", "above_threshold", "default_threshold"}


def test_matches_model_forward_on_the_run_preprocessing(files):
    """The predictor's probabilities equal the model on preprocess_volume + collate_cases output."""
    from raddiag.data.dataset import collate_cases
    from raddiag.data.preprocess import preprocess_volume
    from raddiag.data.readers import read_file
    from raddiag.models import load_model

    model, cfg, labels = load_model(files / "run")
    arr, key = preprocess_volume(read_file(files / "cxr.png"), cfg.data.size, cfg.data.depth, cfg.data.window)
    sample = {"scans": [{"image": torch.from_numpy(arr)[None], "is_3d": False, "key_slice": key,
                         "modality_id": 3}], "labels": torch.zeros(len(labels)), "case_id": "x", "anatomy": None}
    batch = collate_cases([sample], cfg.data.depth)
    with torch.no_grad():
        want = torch.sigmoid(model(**{k: batch[k] for k in model.input_keys}))[0]
    got = raddiag.load(files / "run").predict(str(files / "cxr.png"), modality="X-ray", top=4)
    for f in got.ranked:
        assert f.probability == pytest.approx(float(want[labels.index(f.name)]), abs=1e-5)


def test_several_cases_batched_equal_one_by_one(files):
    pred = Predictor.load(files / "run")
    cases = [str(files / "caseA"), [str(files / "vol.npy")], [str(files / "cxr.png")]]
    batched = pred.predict(cases, modality="X-ray", top=2, batch_size=3)
    assert isinstance(batched, list) and len(batched) == 3
    assert batched[0].case_id == "caseA" and len(batched[0].scans) == 2   # sub-folders searched
    for case, res in zip(cases, batched):
        alone = pred.predict(case, modality="X-ray", top=2)
        assert [f.name for f in alone.ranked] == [f.name for f in res.ranked]
        assert alone.ranked[0].probability == pytest.approx(res.ranked[0].probability, abs=1e-5)
    assert len(batched[0].ranked) == 2


def test_cases_with_the_same_file_name_get_distinct_ids(files, tmp_path):
    """a/x.png and b/x.png are two cases: two ids, two saliency files, nothing replaced."""
    for sub in ("a", "b"):
        (tmp_path / sub).mkdir()
        (tmp_path / sub / "x.png").write_bytes(files.joinpath("cxr.png").read_bytes())
    pred = Predictor.load(files / "run")
    cases = [[str(tmp_path / "a" / "x.png")], [str(tmp_path / "b" / "x.png")], [str(files / "cxr.png")]]
    res = pred.predict(cases, modality="X-ray", top=1, saliency=tmp_path / "sal")
    assert [r.case_id for r in res] == ["x", "x#2", "cxr"]
    paths = [m["path"] for r in res for m in r.saliency]
    assert len(paths) == len(set(paths)) == 3


def test_clear_errors(files):
    pred = Predictor.load(files / "run")
    with pytest.raises(ValueError, match="modality"):
        pred.predict(str(files / "caseA"))
    with pytest.raises(FileNotFoundError, match="nope"):
        pred.predict(str(files / "nope.png"), modality="CT")
    with pytest.raises(ValueError, match="unknown modality"):
        pred.predict(str(files / "cxr.png"), modality="Xray-ish")
    with pytest.raises(ValueError, match="knowledge"):
        pred.predict(str(files / "cxr.png"), modality="X-ray", classes=["Pneumothorax"])
    with pytest.raises(FileNotFoundError, match="run folder"):
        Predictor.load(files / "missing-run")


def test_cli_predict_json_and_table(files, capsys):
    rc = main(["predict", str(files / "run"), str(files / "cxr.png"), f"{files / 'cxr.png'},{files / 'ct.nii.gz'}",
               "--modality", "X-ray", "X-ray,CT", "--top", "3", "--json"])
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    assert len(out) == 2 and all(len(c["ranked"]) == 3 for c in out)
    assert [s["modality"] for s in out[1]["scans"]] == ["X-ray", "CT"]
    rc = main(["predict", str(files / "run"), str(files / "caseA")])
    assert rc == 2 and "--modality" in capsys.readouterr().err
    rc = main(["predict", str(files / "run"), str(files / "caseA"), "--modality", "MR", "--top", "2"])
    text = capsys.readouterr().out
    assert rc == 0 and "Case caseA" in text and "MRI 2D" in text


def test_unseen_classes_through_knowledge_head(files, tmp_path):
    pytest.importorskip("raddiag.knowledge.embed", reason="knowledge.embed not built yet")
    make_tiny_run(tmp_path / "krun", head="knowledge")
    pred = Predictor.load(tmp_path / "krun")
    before = pred.model.head.label_embeddings.clone()
    res = pred.predict(str(files / "cxr.png"), modality="X-ray", classes=["Pneumothorax", "Pneumonia"])
    assert {f.name for f in res.ranked} == {"Pneumothorax", "Pneumonia"}
    assert [f.code for f in res.ranked if f.name == "Pneumonia"] == ["J18"]
    assert torch.equal(pred.model.head.label_embeddings, before)   # the run's own classes restored
    assert isinstance(res.ranked[0], Finding)


def write_dicom_series(folder, n=3, modality="CT", series="1.2.826.0.1.3680043.8.498.1", size=24, seed=0,
                       prefix="IM"):
    """``n`` slices of one DICOM series (no file extension), positions shuffled on disk, named
    ``PREFIX0000`` on (another ``prefix``: a second series in the same folder)."""
    pydicom = pytest.importorskip("pydicom")
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
        ds.SeriesInstanceUID, ds.Modality, ds.InstanceNumber = series, modality, i + 1
        ds.ImagePositionPatient = [0.0, 0.0, float(n - i)]
        ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
        ds.set_pixel_data(rng.integers(0, 4000, (size, size)).astype(np.uint16),
                          photometric_interpretation="MONOCHROME2", bits_stored=12)
        p = folder / f"{prefix}{i:04d}"
        ds.save_as(p, enforce_file_format=True)
        paths.append(str(p))
    assert pydicom
    return paths


def test_dicom_series_modality_from_tags(files, tmp_path):
    paths = write_dicom_series(tmp_path / "case" / "series1")
    pred = Predictor.load(files / "run")
    res = pred.predict(str(tmp_path / "case"))                       # no modality needed
    assert [(s.modality, s.is_3d, s.slices) for s in res.scans] == [("CT", True, 3)]
    res2 = pred.predict(paths + [str(files / "cxr.png")], modality=[None, None, None, "X-ray"])
    assert [(s.modality, s.slices) for s in res2.scans] == [("CT", 3), ("X-ray", 1)]   # files grouped by series


def test_cli_predict_says_which_files_of_a_case_folder_it_skipped(files, tmp_path, capsys):
    """A README or .DS_Store beside the scans was dropped without a word."""
    case = tmp_path / "case"
    case.mkdir()
    (case / "a.png").write_bytes(sample_png(40, seed=2))
    (case / "README.txt").write_text("notes")
    assert main(["predict", str(files / "run"), str(case), "--modality", "X-ray"]) == 0
    err = capsys.readouterr().err
    assert f"raddiag: warning: {case}: skipped 1 file(s): not a scan type: README.txt" in err


def test_a_newline_in_a_folder_or_file_name_keeps_messages_and_tables_on_one_line(files, tmp_path, capsys):
    """A case folder named with a newline split the printed table's header and the one-line
    warning / error across lines."""
    case = tmp_path / "case\nB"
    case.mkdir()
    (case / "a.png").write_bytes(sample_png(40, seed=2))
    (case / "notes\n.txt").write_text("x")
    assert main(["predict", str(files / "run"), str(case), "--modality", "X-ray"]) == 0
    out, err = capsys.readouterr()
    assert "Case case\\nB: 1 scan(s)" in out.splitlines()[0]
    warning = [line for line in err.splitlines() if "warning" in line]
    assert len(warning) == 1 and warning[0].endswith("not a scan type: notes\\n.txt")
    (case / "a.png").write_bytes(b"not a png")
    assert main(["predict", str(files / "run"), str(case), "--modality", "X-ray"]) == 2
    err = capsys.readouterr().err
    assert [line for line in err.splitlines() if "error" in line] == [line for line in err.splitlines()
                                                                      if line.startswith("raddiag: error:")]
    assert "case\\nB" in err and "case\nB" not in err


def test_classes_without_a_validation_threshold_are_named_and_marked(files, tmp_path):
    """A run whose validation split had no positive of some classes stores no threshold for them:
    predict said "thresholds: validation" for every class while those used the default 0.5 (red
    team). The head line counts them, each such finding says so, and the table marks it."""
    make_tiny_run(tmp_path / "run", thresholds=[0.5, None, 0.9, None])
    result = raddiag.load(tmp_path / "run").predict(str(files / "cxr.png"), modality="X-ray")
    assert "default 0.5 (*) for 2 of 4 classes" in result.thresholds
    by_name = {f.name: f for f in result.ranked}
    assert [n for n, f in by_name.items() if f.default_threshold] == \
        [n for n in by_name if n in ("Pneumonia", "Fracture")]
    assert by_name["Pneumonia"].threshold == pytest.approx(0.5)
    rows = {line.split()[1]: line for line in str(result).splitlines()[2:]}
    assert "0.500*" in rows["Pneumonia"] and "0.900*" not in rows["Pleural"]
    assert {f["name"]: f["default_threshold"] for f in result.to_dict()["ranked"]}["Fracture"] is True
    make_tiny_run(tmp_path / "none")                       # no thresholds stored at all: one note, no marks
    result = raddiag.load(tmp_path / "none").predict(str(files / "cxr.png"), modality="X-ray")
    assert result.thresholds.startswith("default 0.5") and "*" not in str(result)


def test_the_table_tells_a_probability_from_a_threshold_it_rounds_alike():
    """New user: rows "0.349  0.349  no" read as a contradiction; such a row shows the digits
    that tell them apart, every other row stays at 3."""
    rows = [Finding("Pneumonia", "J18", 0.34861, 0.34949, False), Finding("Glioma", None, 0.7, 0.5, True),
            Finding("Effusion", None, 0.2030001, 0.2030004, False)]
    text = str(CaseResult("c1", rows))
    assert " 0.3486  0.3495  no" in text and " 0.700  0.500  yes" in text
    assert " 0.2030001  0.2030004  no" in text

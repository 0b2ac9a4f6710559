"""`raddiag data prepare | stats` end to end, bad input reporting, and loud label drops."""
import json
import logging

import numpy as np
import pytest

from raddiag import cli
from raddiag.cli import main


@pytest.fixture(autouse=True)
def _data_commands_only(monkeypatch):
    """The real `raddiag` entry point, with only the data commands registered (other packages'
    commands import heavy libraries at parser-build time, which these tests do not need)."""
    monkeypatch.setattr(cli, "COMMAND_MODULES", ["raddiag.data.commands"])


def _bad_manifest(tmp_path):
    from PIL import Image

    d = tmp_path / "src"
    d.mkdir()
    rng = np.random.default_rng(0)
    np.save(d / "ct.npy", rng.random((16, 16, 6)).astype(np.float32))
    Image.fromarray((rng.random((20, 20)) * 255).astype(np.uint8)).save(d / "xr.png")
    nan = rng.random((8, 8, 2)); nan[0, 0, 0] = np.nan
    np.save(d / "nan.npy", nan)
    np.save(d / "flat.npy", np.full((8, 8, 2), 7.0))
    np.save(d / "zero.npy", np.zeros((0, 8, 8)))
    (d / "trunc.png").write_bytes((d / "xr.png").read_bytes()[:40])
    recs = [
        {"id": "good", "labels": ["Pneumonia"], "icd10": ["J18"], "anatomy": "Chest", "split": "train",
         "scans": [{"path": "ct.npy", "modality": "CT"}, {"path": "xr.png", "modality": "xr"}]},
        {"id": "mixed", "labels": ["Pneumonia"], "split": "train",
         "scans": [{"path": "nan.npy", "modality": "CT"}, {"path": "xr.png", "modality": "X-ray"},
                   {"path": "odd.npy", "modality": "PETCTX"}]},
        {"id": "allbad", "labels": ["Glioma"], "split": "test",
         "scans": [{"path": "flat.npy", "modality": "MRI"}, {"path": "zero.npy", "modality": "MRI"},
                   {"path": "trunc.png", "modality": "MRI"}, {"path": "missing.nii.gz", "modality": "MRI"}]},
        {"id": "normal", "labels": [], "split": "test", "scans": [{"path": "xr.png", "modality": "X-ray"}]},
    ]
    (d / "cases.jsonl").write_text("\n".join(json.dumps(r) for r in recs) + "\n")
    return d / "cases.jsonl"


def test_prepare_skips_and_reports_every_bad_input(tmp_path, capsys):
    manifest = _bad_manifest(tmp_path)
    out = tmp_path / "prep"
    assert main(["data", "prepare", str(manifest), "--format", "manifest", "--out", str(out),
                 "--size", "16", "--depth", "4", "--workers", "1"]) == 0
    text = capsys.readouterr().out
    reasons = {
        "nan.npy": "NaN", "flat.npy": "constant image", "zero.npy": "empty array", "trunc.png": "cannot be read",
        "missing.nii.gz": "file does not exist", "odd.npy": "unknown modality 'PETCTX'",
    }
    report = json.loads((out / "report.json").read_text())
    got = {s["file"].split("/")[-1]: s["reason"] for s in report["skipped_scans"]}
    for name, why in reasons.items():
        assert why in got[name], (name, got[name])
        assert name in text                                    # printed in the summary too
    assert report["skipped_cases"] == [{"case": "allbad", "reason": "no usable scan left"}]
    assert report["cases_out"] == 3 and report["scans_out"] == 4
    assert "report.txt" in text and "Pneumonia 2" in text


def test_prepare_strict_stops_with_the_file_and_reason(tmp_path, capsys):
    manifest = _bad_manifest(tmp_path)
    rc = main(["data", "prepare", str(manifest), "--format", "manifest", "--out", str(tmp_path / "p"),
               "--size", "16", "--depth", "4", "--workers", "1", "--strict"])
    err = capsys.readouterr().err
    assert rc == 2 and "odd.npy" in err and "unknown modality" in err


def test_stats_numbers_and_plots(tmp_path, capsys):
    manifest = _bad_manifest(tmp_path)
    out = tmp_path / "prep"
    main(["data", "prepare", str(manifest), "--format", "manifest", "--out", str(out), "--size", "16",
          "--depth", "4", "--workers", "1"])
    assert main(["data", "stats", str(out)]) == 0
    st = json.loads((out / "stats" / "stats.json").read_text())
    assert st["cases"] == 3 and st["scans_per_case"] == {"1": 2, "2": 1}
    assert st["modality_cases"] == {"abnormal": {"X-ray": 2, "CT": 1}, "normal": {"X-ray": 1}}
    assert st["classes"]["disorder"]["groups"] == {"head": 1, "medium": 0, "tail": 1}
    for png in ("modality.png", "anatomy.png", "scans_per_case.png", "class_distribution.png"):
        assert (out / "stats" / png).read_bytes()[:4] == b"\x89PNG"
    assert main(["data", "stats", str(tmp_path / "nothing")]) == 2
    assert "not a prepared dataset" in capsys.readouterr().err


def test_labels_outside_the_label_space_are_reported(tmp_path, caplog):
    from raddiag.config import DataConfig
    from raddiag.data.dataset import CaseDataset
    from raddiag.data.labels import LabelSpace

    manifest = _bad_manifest(tmp_path)
    out = tmp_path / "prep"
    main(["data", "prepare", str(manifest), "--format", "manifest", "--out", str(out), "--size", "16",
          "--depth", "4", "--workers", "1"])
    space = LabelSpace(names=["Normal", "Glioma"])
    with caplog.at_level(logging.WARNING, logger="raddiag.data.dataset"):
        ds = CaseDataset(out, "train", space, DataConfig(size=8, depth=2))
    assert ds.dropped_labels == {"good": ["Pneumonia"], "mixed": ["Pneumonia"]}
    assert "'Pneumonia' x2" in caplog.text and "outside the label space" in caplog.text


def test_prepare_label_space_check(tmp_path, capsys):
    manifest = _bad_manifest(tmp_path)
    (tmp_path / "dict.json").write_text(json.dumps({"Normal": 0, "Glioma": 1}))
    main(["data", "prepare", str(manifest), "--format", "manifest", "--out", str(tmp_path / "p"), "--size", "16",
          "--depth", "4", "--workers", "1", "--label-space", str(tmp_path / "dict.json")])
    assert "'Pneumonia' (2 case(s), e.g. good)" in capsys.readouterr().out


@pytest.mark.shared_data
def test_prepare_rp3d_demo_lists_missing_scans(shared_data, tmp_path, capsys):
    out = tmp_path / "rp3d"
    assert main(["data", "prepare", str(shared_data / "rp3d-demo"), "--format", "rp3d", "--out", str(out),
                 "--size", "32", "--depth", "4", "--workers", "1"]) == 0
    text = capsys.readouterr().out
    for name in ("123742.npy", "123743.npy", "127782.npy", "127783.npy"):
        assert name in text
    assert "prepared 2 of 3 cases, 4 of 8 scans" in text
    recs = [json.loads(l) for l in (out / "cases.jsonl").read_text().splitlines()]
    assert sorted(r["id"] for r in recs) == ["hip-dislocation-inferior-1", "segond-fracture-5"]


@pytest.mark.shared_data
def test_prepare_rp3d_demo_as_a_train_file_carves_a_val_split(shared_data, tmp_path, capsys):
    out = tmp_path / "rp3d"
    assert main(["data", "prepare", str(shared_data / "rp3d-demo"), "--format", "rp3d", "--out", str(out),
                 "--split-files", "train=demoData.json", "--size", "32", "--depth", "4", "--workers", "1"]) == 0
    text = capsys.readouterr().out
    assert "val = 1 of the 2 train patients with scans" in text
    assert "val = 1 of the 2 train patients" in (out / "report.txt").read_text()
    recs = [json.loads(l) for l in (out / "cases.jsonl").read_text().splitlines()]
    assert sorted(r["split"] for r in recs) == ["train", "val"]


@pytest.mark.shared_data
def test_prepare_a_slice_of_a_public_set(shared_data, tmp_path, capsys):
    out = tmp_path / "brain"
    assert main(["data", "prepare", str(shared_data / "brain-tumor-mri"), "--format", "brain-tumor-mri",
                 "--out", str(out), "--size", "32", "--limit", "12", "--workers", "1"]) == 0
    assert "prepared 12 of 12 cases" in capsys.readouterr().out
    assert json.loads((out / "meta.json").read_text())["n_slices"] == 12

"""Orientation (NIfTI / DICOM reoriented to one convention) and CT intensity (windows, the run's
recorded intensity convention, the prediction-time warning). Issue 17, parts 2 and 3."""
from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

from raddiag.data.case import Case, Scan
from raddiag.data.intensity import (IntensityWarning, parse_window, warn_unlike_training, window_for,
                                    window_options)
from raddiag.data.preprocess import preprocess_volume
from raddiag.data.readers import open_file, read_scan
from raddiag.data.store import PreparedData, prepare_cases

nib = pytest.importorskip("nibabel")

NR, NA, NS = 7, 9, 5                       # voxels along the R, A, S axes of the anatomy
SPACING = (1.0, 1.0, 3.0)                  # thick axial slices
ORIGIN = np.array([-10.0, 20.0, 5.0])


def _anatomy() -> np.ndarray:
    """An asymmetric volume indexed [i, j, k] (RAS+: i increases towards the patient's Right,
    j towards Anterior, k towards Superior), integers 0..999, with one marker voxel at the most
    right, anterior, superior corner."""
    vol = np.random.default_rng(0).integers(0, 900, size=(NR, NA, NS)).astype(np.float32)
    vol[NR - 1, NA - 1, NS - 1] = 999.0
    return vol


def _save_ras(path, vol):
    aff = np.diag([*SPACING, 1.0])
    aff[:3, 3] = ORIGIN
    nib.save(nib.Nifti1Image(vol, aff), str(path))


def _save_lps(path, vol):
    """The same anatomy stored with the first two axes reversed (L, P, S) and the affine to match."""
    aff = np.diag([-SPACING[0], -SPACING[1], SPACING[2], 1.0])
    aff[:3, 3] = ORIGIN + [(NR - 1) * SPACING[0], (NA - 1) * SPACING[1], 0]
    nib.save(nib.Nifti1Image(np.ascontiguousarray(vol[::-1, ::-1, :]), aff), str(path))


def _save_permuted(path, vol):
    """Stored [S, R, A]: the slice axis first, the affine's columns permuted alike."""
    aff = np.eye(4)
    aff[:3, :3] = np.diag(SPACING)[:, [2, 0, 1]]
    aff[:3, 3] = ORIGIN
    nib.save(nib.Nifti1Image(np.ascontiguousarray(vol.transpose(2, 0, 1)), aff), str(path))


def _save_rai(path, vol):
    """Slices stored superior -> inferior (R, A, I)."""
    aff = np.diag([SPACING[0], SPACING[1], -SPACING[2], 1.0])
    aff[:3, 3] = ORIGIN + [0, 0, (NS - 1) * SPACING[2]]
    nib.save(nib.Nifti1Image(np.ascontiguousarray(vol[:, :, ::-1]), aff), str(path))


def _expected_axial(vol):
    """Hand-derived axial convention: slice k = S index k, rows from anterior to posterior,
    columns from patient right to left (radiological display)."""
    return np.stack([vol[::-1, ::-1, k].T for k in range(NS)])


def test_nifti_ras_lps_and_permuted_prepare_to_the_same_slices(tmp_path):
    vol = _anatomy()
    files = {"ras.nii.gz": _save_ras, "lps.nii": _save_lps, "perm.nii.gz": _save_permuted, "rai.nii.gz": _save_rai}
    for name, save in files.items():
        save(tmp_path / name, vol)
    arrays = {name: read_scan(Scan(str(tmp_path / name), "CT")) for name in files}
    for name, arr in arrays.items():
        np.testing.assert_array_equal(arr, _expected_axial(vol), err_msg=name)
    # the marker (right, anterior, superior) lands top-left of the last slice
    assert np.unravel_index(np.argmax(arrays["lps.nii"]), arrays["lps.nii"].shape) == (NS - 1, 0, 0)

    # declared planes choose the slice axis; every storage order still agrees
    for plane, shape in (("Coronal", (NA, NS, NR)), ("sagittal", (NR, NS, NA))):
        got = [read_scan(Scan(str(tmp_path / name), "CT", plane=plane)) for name in files]
        assert got[0].shape == shape
        for g in got[1:]:
            np.testing.assert_array_equal(g, got[0])
    coronal = read_scan(Scan(str(tmp_path / "perm.nii.gz"), "CT", plane="coronal"))
    # coronal: slices anterior -> posterior, rows superior -> inferior, columns right -> left
    np.testing.assert_array_equal(coronal[0], vol[::-1, NA - 1, ::-1].T)

    # the whole preparation agrees too, and records the orientation of each scan
    cases = [Case(id=name, scans=[Scan(str(tmp_path / name), "CT")], labels=["Normal"], split="train")
             for name in files]
    prepare_cases(cases, tmp_path / "prep", size=16, depth=8, workers=1)
    data = PreparedData(tmp_path / "prep")
    stored = [np.asarray(data.scan_array(r["scans"][0])) for r in data.records]
    for s in stored[1:]:
        np.testing.assert_array_equal(s, stored[0])
    notes = [r["scans"][0]["store"]["orientation"] for r in data.records]
    assert notes == ["axial (from the affine; stored RAS)", "axial (from the affine; stored LPS)",
                     "axial (from the affine; stored SRA)", "axial (from the affine; stored RAI)"]


def _dicom_series(folder, slices, iop, ipps, spacing, series):
    """One single-frame file per slice (HU = stored - 1024), written in reverse order."""
    from test_readers import _dicom

    folder.mkdir()
    for n in reversed(range(len(slices))):
        _dicom(folder / f"{n:03d}.dcm", slices[n] + 1024, instance=n + 1, series=series, intercept=-1024.0,
               ipp=ipps[n], iop=iop, spacing=spacing)
    return folder


def _lps(i, j, k):
    """LPS position (mm) of RAS voxel (i, j, k) of the anatomy."""
    ras = ORIGIN + np.array([i, j, k]) * SPACING
    return np.array([-ras[0], -ras[1], ras[2]])


def test_dicom_axial_and_sagittal_series_read_like_the_nifti(tmp_path):
    pytest.importorskip("pydicom")
    vol = _anatomy() - 1024                 # HU
    _save_ras(tmp_path / "ras.nii.gz", vol)
    expected = read_scan(Scan(str(tmp_path / "ras.nii.gz"), "CT"))
    # axial acquisition: rows posterior (+y), columns left (+x); pixel [r, c] = voxel (NR-1-c, NA-1-r, k)
    axial = [vol[::-1, ::-1, k].T for k in range(NS)]
    ax = _dicom_series(tmp_path / "axial", axial, [1, 0, 0, 0, 1, 0],
                       [_lps(NR - 1, NA - 1, k) for k in range(NS)], [1.0, 1.0], "1.2.3.1")
    # sagittal acquisition: rows inferior (-z), columns posterior (+y), slices along +R;
    # pixel [r, c] of slice m = voxel (m, NA-1-c, NS-1-r); rows 3 mm apart
    sagittal = [vol[m, ::-1, ::-1].T for m in range(NR)]
    sag = _dicom_series(tmp_path / "sagittal", sagittal, [0, 1, 0, 0, 0, -1],
                        [_lps(m, NA - 1, NS - 1) for m in range(NR)], [3.0, 1.0], "1.2.3.2")
    np.testing.assert_array_equal(read_scan(Scan(str(ax), "CT")), expected)
    # the plane comes from the coarse spacing (3 mm along S: axial) or from the declaration
    np.testing.assert_array_equal(read_scan(Scan(str(sag), "CT")), expected)
    np.testing.assert_array_equal(read_scan(Scan(str(sag), "CT", plane="Axial")), expected)
    with open_file(sag) as v:
        assert v.orientation == "axial (from the affine; stored IPR)"
    np.testing.assert_array_equal(read_scan(Scan(str(sag), "CT", plane="sagittal")), np.stack(sagittal))


def test_unknown_orientation_is_prepared_as_stored_with_a_note(tmp_path):
    vol = _anatomy()
    np.save(tmp_path / "v.npy", vol)
    nib.save(nib.Nifti1Image(vol, np.eye(4)), str(tmp_path / "eye.nii.gz"))    # the placeholder affine
    img = nib.Nifti1Image(vol, None)                                          # no qform / sform at all
    img.header.set_sform(None, code=0)
    img.header.set_qform(None, code=0)
    nib.save(img, str(tmp_path / "none.nii"))
    stored = np.stack([vol[:, :, k] for k in range(NS)])
    for name in ("v.npy", "eye.nii.gz", "none.nii"):
        with open_file(tmp_path / name) as v:
            assert v.orientation is None
            np.testing.assert_array_equal(v.array(), stored, err_msg=name)
    cases = [Case(id=n, scans=[Scan(str(tmp_path / n), "CT")], labels=["Normal"], split="train")
             for n in ("v.npy", "eye.nii.gz")]
    report = prepare_cases(cases, tmp_path / "prep", size=8, depth=4, workers=1)
    note = [n for n in report.notes if n.startswith("orientation unknown")]
    assert note and "2 3D scan(s)" in note[0] and "v.npy" in note[0]
    assert "orientation unknown" in (tmp_path / "prep" / "report.txt").read_text()


# -- windows ---------------------------------------------------------------------------
def test_window_maths_against_hand_worked_values():
    assert parse_window("lung") == (-1350.0, 150.0)          # L -600, W 1500
    assert parse_window("brain") == (0.0, 80.0)              # L 40, W 80
    assert parse_window("Bone") == (-500.0, 1300.0)          # L 400, W 1800
    assert parse_window("mediastinum") == (-125.0, 225.0)    # L 50, W 350
    assert parse_window("abdomen") == (-150.0, 250.0)        # L 50, W 400
    assert parse_window("40,80") == (0.0, 80.0)
    assert parse_window([-1000, 400]) == (-1000.0, 400.0)
    for bad in ("lungs", "40,0", "40,-80", "1,2,3", [5, 5]):
        with pytest.raises(ValueError):
            parse_window(bad)
    # clipped to [-1350, 150] and scaled: -2000, -1350 -> 0; -600 -> 0.5; 150, 1000 -> 1
    row = np.array([-2000, -1350, -600, 150, 1000], np.float32)
    out, _ = preprocess_volume(np.tile(row, (1, 5, 1)), size=5, depth=1, window=parse_window("lung"))
    np.testing.assert_allclose(out[0, 0], [0, 0, 0.5, 1, 1], atol=1e-6)
    # no window (the default): plain min-max over the raw range -2000..1000
    out, _ = preprocess_volume(np.tile(row, (1, 5, 1)), size=5, depth=1)
    np.testing.assert_allclose(out[0, 0], [0, 650 / 3000, 1400 / 3000, 2150 / 3000, 1], atol=1e-6)


def test_windows_per_modality_and_anatomy_and_the_cli_form():
    windows = {"CT": "lung", "ct/Head": "brain"}
    assert window_for("CT", "Chest", None, windows) == (-1350.0, 150.0)
    assert window_for("CT", "head", None, windows) == (0.0, 80.0)      # anatomy wins, case-insensitive
    assert window_for("X-ray", "Chest", None, windows) is None         # only the CTs are windowed
    assert window_for("MR", None, [0, 500], windows) == (0.0, 500.0)   # the all-scan window
    assert window_options([["-1000", "400"]]) == ([-1000.0, 400.0], {})
    assert window_options([["CT=lung"], ["CT/Head=40,80"], ["bone"]]) == ([-500.0, 1300.0],
                                                                          {"CT": "lung", "CT/Head": "40,80"})
    # two per-modality specs after one --window (a new user's `--window CT=abdomen "CT/Head and Neck=brain"`
    # was read as LO HI: "could not convert string to float")
    assert window_options([["CT=abdomen", "CT/Head and Neck=brain"]]) == (None, {"CT": "abdomen",
                                                                                "CT/Head and Neck": "brain"})
    for bad in ([["PET/x=foo"]], [["Xyz=lung"]], [["a", "b", "c"]]):
        with pytest.raises(ValueError, match="--window"):
            window_options(bad)
    # at prediction, a CT without anatomy cannot get the run's CT/Head window: said so
    hu = {"min": -1000.0, "max": 1000.0}
    with pytest.warns(IntensityWarning, match="has no anatomy"):
        warn_unlike_training(None, Scan("a.npy", "CT"), hu, windows)
    with warnings.catch_warnings():
        warnings.simplefilter("error", IntensityWarning)
        assert warn_unlike_training(None, Scan("a.npy", "CT", anatomy="Head"), hu, windows) == []
        assert warn_unlike_training(None, Scan("a.npy", "X-ray"), hu, windows) == []


def test_prepare_cli_windows_ct_only_and_records_them(tmp_path):
    from raddiag.cli import main

    hu = np.tile(np.array([-2000, -1350, -1000, -600, 0, 150, 500, 1000], np.float32), (8, 1))
    np.save(tmp_path / "ct.npy", np.stack([hu, hu], axis=-1))
    np.save(tmp_path / "xr.npy", np.tile(np.arange(0, 240, 30, dtype=np.float32), (8, 1)))
    rec = {"id": "c1", "scans": [{"path": "ct.npy", "modality": "CT", "anatomy": "Chest"},
                                 {"path": "xr.npy", "modality": "X-ray"}], "labels": ["Normal"], "split": "train"}
    (tmp_path / "m.jsonl").write_text(json.dumps(rec) + "\n")
    assert main(["data", "prepare", str(tmp_path / "m.jsonl"), "--format", "manifest", "--out",
                 str(tmp_path / "p"), "--size", "8", "--depth", "2", "--window", "CT/Chest=lung"]) == 0
    data = PreparedData(tmp_path / "p")
    assert data.meta["windows"] == {"CT/Chest": "lung"} and data.meta["window"] is None
    assert data.meta["intensity"]["CT"]["kinds"] == {"hu": 1}
    assert data.meta["intensity"]["X-ray"]["kinds"] == {"8-bit": 1}
    ct, xr = (np.asarray(data.scan_array(s), np.float32) for s in data.records[0]["scans"])
    # lung window [-1350, 150]: -2000 -> 0, -1000 -> 350/1500, -600 -> 0.5, 0 -> 0.9, 500 -> 1
    np.testing.assert_allclose(ct[0, 0], [0, 0, 350 / 1500, 0.5, 0.9, 1, 1, 1], atol=1e-3)
    np.testing.assert_allclose(xr[0, 0], np.arange(8) / 7, atol=1e-3)          # the X-ray: raw, min-max


# -- the run's intensity convention and the warning -----------------------------------
def _hu_volume(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(-1000, 1000, size=(16, 16, 3)).astype(np.float32)


def test_run_records_its_training_intensity_and_prediction_warns_on_unlike_input(tmp_path):
    from PIL import Image

    import raddiag
    from raddiag.config import preset
    from raddiag.training import train
    from test_training_data import tiny_overrides

    cases = []
    for i in range(8):
        np.save(tmp_path / f"c{i}.npy", _hu_volume(i))
        cases.append(Case(id=f"c{i}", scans=[Scan(str(tmp_path / f"c{i}.npy"), "CT")],
                          labels=["A"] if i % 2 else ["Normal"], split="val" if i < 4 else "train"))
    prepare_cases(cases, tmp_path / "prep", size=16, depth=2, workers=1, windows={"CT": "-600,1500"})
    cfg = preset("tiny", tiny_overrides(**{"data.size": 16, "data.depth": 2, "train.epochs": 1}))
    train(tmp_path / "prep", tmp_path / "run", cfg, progress=False, max_steps=1)
    record = json.loads((tmp_path / "run" / "intensity.json").read_text())
    assert record["modalities"]["CT"]["kinds"] == {"hu": 8} and record["windows"] == {"CT": "-600,1500"}
    model = raddiag.load(tmp_path / "run")
    assert model.cfg.data.windows == {"CT": "-600,1500"}      # prediction windows as the data were

    Image.fromarray(np.random.default_rng(1).integers(0, 256, (16, 16), dtype=np.uint8)).save(tmp_path / "ct.png")
    with pytest.warns(IntensityWarning, match=r"ct.png \(CT\): its values span 0\.\.255"):
        model.predict(str(tmp_path / "ct.png"), modality="CT")
    _save_ras(tmp_path / "hu.nii.gz", _hu_volume(9))
    with warnings.catch_warnings():
        warnings.simplefilter("error", IntensityWarning)
        model.predict(str(tmp_path / "hu.nii.gz"), modality="CT")        # HU like the training data
        model.predict(str(tmp_path / "ct.png"), modality="X-ray")        # no X-ray in training: unknown


def test_an_hu_window_on_scans_that_are_not_hu_is_noted():
    """A new user's MRI (raw 0..800) came out 81 % white under `--window lung`, without a word."""
    from raddiag.data.stats import intensity_lines

    kinds = {"CT": {"kinds": {"hu": 2}, "min": -2048.0, "max": 1200.0},
             "MRI": {"kinds": {"other": 1}, "min": 0.0, "max": 800.0}}
    lines = intensity_lines({"window": [-1350.0, 150.0], "intensity": kinds})
    assert lines[-1] == ("  note: the all-scans window [-1350.0, 150.0] is in HU, and MRI scans are not (their raw "
                         "kinds above): they were clipped to it too; --window CT=NAME windows the CTs only")
    assert not any("note" in x for x in intensity_lines({"window": [0.0, 500.0], "intensity": kinds}))
    assert not any("note" in x for x in intensity_lines({"window": [-1350.0, 150.0], "intensity": {"CT": kinds["CT"]}}))


def test_a_window_maps_its_ends_to_0_and_1_whatever_the_scans_own_range(tmp_path):
    """A new user's two CT ramps from -1000 to 1000 HU, one with a scanner-padding voxel of -2048,
    under the lung window [-1350, 150]: -1000 HU was 0.0 in one and 0.233 in the other (min-max
    over what the clip left). Now (HU + 1350) / 1500 in both; data prepared and runs trained
    before keep their scaling ('minmax')."""
    from raddiag.data.preprocess import MINMAX, preprocess_volume

    ramp = np.tile(np.linspace(-1000, 1000, 32, dtype=np.float32), (1, 32, 1))      # [1, 32, 32]
    padded = ramp.copy()
    padded[0, 0, 0] = -2048
    lung = parse_window("lung")
    for vol in (ramp, padded):
        out, _ = preprocess_volume(vol, 32, 1, lung)
        np.testing.assert_allclose(out[0, 5, 1:], np.clip((ramp[0, 5, 1:] + 1350) / 1500, 0, 1), atol=1e-6)
    legacy, _ = preprocess_volume(ramp, 32, 1, lung, scaling=MINMAX)
    assert legacy[0, 5, 0] == 0.0                                                    # as before


def test_runs_and_stores_from_before_keep_their_window_scaling(tmp_path):
    from raddiag.config import RunConfig, preset
    from raddiag.data.intensity import adopt_data_windows

    cfg = preset("tiny")
    assert cfg.data.window_scaling == "fixed"
    cfg.save(tmp_path / "new.yaml")
    assert RunConfig.load(tmp_path / "new.yaml").data.window_scaling == "fixed"
    text = (tmp_path / "new.yaml").read_text().replace("  window_scaling: fixed\n", "")
    (tmp_path / "old.yaml").write_text(text)
    assert RunConfig.load(tmp_path / "old.yaml").data.window_scaling == "minmax"
    adopt_data_windows(cfg.data, {"window": [-1350.0, 150.0], "windows": {}}, tmp_path)      # an old store
    assert cfg.data.window_scaling == "minmax"
    adopt_data_windows(cfg.data, {"window": None, "windows": {}, "window_scaling": "fixed"}, tmp_path)
    assert cfg.data.window_scaling == "fixed"
    with pytest.raises(ValueError, match="data.window_scaling"):
        preset("tiny", ["data.window_scaling=linear"])


def test_the_raw_range_of_a_modality_of_several_kinds_says_it_spans_them_all():
    """New user: "CT other 2, 8-bit 3, hu 1 (-983..65436)" read as the HU scan's range."""
    from raddiag.data.stats import intensity_lines

    kinds = {"CT": {"kinds": {"other": 2, "8-bit": 3, "hu": 1}, "min": -983.0, "max": 65436.0},
             "MRI": {"kinds": {"other": 1}, "min": 0.0, "max": 800.0}}
    assert intensity_lines({"intensity": kinds}) == [
        "  raw intensity (scans, their kept slices): CT other 2, 8-bit 3, hu 1 (values of all 6: -983..65436); MRI other 1 (0..800)"]

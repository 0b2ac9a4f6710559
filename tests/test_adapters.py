"""Source adapters on small synthetic layouts, and on the real sets in ../shared/data."""
import json
import logging

import numpy as np
import pytest

from raddiag.data.adapters import ADAPTERS, load_source, parse_list
from raddiag.data.adapters.rp3d import PathRemapper


def _npy(path, shape=(8, 8, 3), seed=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, np.random.default_rng(seed).random(shape).astype(np.float32))


def _rp3d_case(data_paths, key_paths, mods, articles="['Pneumonia']", icd="['J18']", key_slice=None):
    sample = {"image_data_path": data_paths, "image_key_path": key_paths, "image_modality": mods,
              "plane_projection": "['Axial']", "articles": articles, "icd10s": icd}
    rec = {"Samples": [sample], "Anatomy": "Chest", "Modalities": "['CT']"}
    if key_slice is not None:
        rec["key_slice"] = key_slice
    return rec


def test_parse_list_is_literal_only():
    assert parse_list("['CT', 'MRI']") == ["CT", "MRI"]
    assert parse_list("CT") == ["CT"] and parse_list(None) == [] and parse_list(["a"]) == ["a"]
    with pytest.raises(ValueError, match="not a list literal"):
        parse_list("[__import__('os').system('echo hi')]")


def test_rp3d_remaps_by_longest_suffix_and_reports_missing(tmp_path):
    root = tmp_path / "rel"
    _npy(root / "Demo/data/1.npy")
    (root / "Demo/key").mkdir(parents=True)
    np.save(root / "Demo/key/1.npy", np.array([2]))
    np.save(root / "Demo/key/2.npy", np.array([5]))          # only the key of scan 2 exists, not its data
    _npy(root / "Demo/data/3.npy", (8, 8, 6))
    cluster = "/cluster/share/x/Demo"  # an absolute path of another machine, as in the release
    cases = {
        "https://radiopaedia.org/cases/a-1?lang=us": _rp3d_case(
            f"['{cluster}/data/1.npy', '{cluster}/data/2.npy']", f"['{cluster}/key/1.npy', '{cluster}/key/2.npy']",
            "['CT', 'CT']"),
        "https://radiopaedia.org/cases/b-2?lang=us": _rp3d_case(
            [f"{cluster}/data/3.npy"], [], ["MRI"], articles=["Glioma"], icd=["C71.9"], key_slice=[{"image_0": 4}]),
        "https://radiopaedia.org/cases/c-3?lang=us": _rp3d_case([f"{cluster}/data/9.npy"], [], ["CT"]),
    }
    (root / "my_train_set.json").write_text(json.dumps(cases))
    res = load_source("rp3d", root / "my_train_set.json")
    by = {c.id: c for c in res.cases}
    assert set(by) == {"a-1", "b-2", "c-3"}
    # a train file and no val: one of the two patients with a scan is carved out (c-3 has none)
    assert sorted(c.split for c in res.cases if c.scans) == ["train", "val"] and by["c-3"].split == "train"
    a = by["a-1"]
    assert [s.paths[0] for s in a.scans] == [str(root / "Demo/data/1.npy")]   # never Demo/key/1.npy
    assert a.scans[0].key_slice == 2 and a.scans[0].plane == "Axial" and a.labels == ["Pneumonia"]
    assert by["b-2"].scans[0].key_slice == 4 and by["b-2"].icd10 == ["C71"]
    assert by["c-3"].scans == []
    missing = sorted(s["file"] for s in res.skipped)
    assert missing == ["2.npy", "9.npy"]
    assert "Demo/key/2.npy" in next(s["reason"] for s in res.skipped if s["file"] == "2.npy")
    # a tie is an error for that scan, naming both candidates
    _npy(tmp_path / "tie/u/data/7.npy"); _npy(tmp_path / "tie/v/data/7.npy")
    path, why = PathRemapper(tmp_path / "tie").find("/far/away/data/7.npy")
    assert path is None and "ambiguous" in why and "u/data/7.npy" in why and "v/data/7.npy" in why


def _release_folder(root, n_train=40, n_test=10, scans_per_patient=2):
    """A release-format folder: train.json and test.json only (as RP3D-DiagDS ships), some patients
    with two cases (the same URL path in two entries is one patient)."""
    _npy(root / "img/1.npy")
    train = {f"https://radiopaedia.org/cases/p{i}?lang=us": _rp3d_case(["/c/img/1.npy"], [], ["CT"])
             for i in range(n_train)}
    test = {f"https://radiopaedia.org/cases/t{i}?lang=us": _rp3d_case(["/c/img/1.npy"], [], ["CT"])
            for i in range(n_test)}
    (root / "train.json").write_text(json.dumps(train))
    (root / "test.json").write_text(json.dumps(test))
    return root


def test_rp3d_release_without_val_gets_a_seeded_patient_level_val_split(tmp_path):
    root = _release_folder(tmp_path)
    res = load_source("rp3d", root)
    splits = {c.id: c.split for c in res.cases}
    assert sum(s == "val" for s in splits.values()) == 5          # 40 train patients / 8
    assert sum(s == "train" for s in splits.values()) == 35
    assert all(splits[f"t{i}"] == "test" for i in range(10))      # the test file is never touched
    assert any("val = 5 of the 40 train patients" in n and "--val-fraction 0.125" in n for n in res.notes)
    again = {c.id: c.split for c in load_source("rp3d", root).cases}
    assert again == splits                                        # seeded: the same carve
    other = {c.id: c.split for c in load_source("rp3d", root, seed=1).cases}
    assert other != splits and sum(s == "val" for s in other.values()) == 5
    quarter = load_source("rp3d", root, val_fraction=0.25)
    assert sum(c.split == "val" for c in quarter.cases) == 10
    given = load_source("rp3d", root, split_files={"train": "train.json", "val": "test.json"})
    assert sum(c.split == "val" for c in given.cases) == 10       # a val file given: nothing carved


def test_rp3d_val_carve_keeps_a_patient_whole(tmp_path):
    from raddiag.data.adapters.base import carve_val
    from raddiag.data.case import Case, Scan

    scan = Scan(paths=["x.npy"], modality="CT")
    cases = [Case(id=f"c{i}", scans=[scan], labels=["Normal"], split="train", patient=f"p{i // 2}")
             for i in range(32)]                                   # 16 patients of 2 cases each
    assert carve_val(cases, 0.125, seed=3) == 2
    by_patient = {}
    for c in cases:
        by_patient.setdefault(c.patient, set()).add(c.split)
    assert all(len(s) == 1 for s in by_patient.values())
    assert sum(c.split == "val" for c in cases) == 4
    with pytest.raises(ValueError, match="--val-fraction"):
        carve_val(cases, 1.0)


def test_rp3d_split_files_and_unknown_modality(tmp_path):
    _npy(tmp_path / "img/1.npy")
    rec = _rp3d_case(["/c/img/1.npy"], [], ["PETCTX"])
    (tmp_path / "a.json").write_text(json.dumps({"https://x/cases/q": rec}))
    res = load_source("rp3d", tmp_path, split_files={"test": "a.json"})
    assert res.cases[0].split == "test" and res.cases[0].scans == []
    assert "unknown modality 'PETCTX'" in res.skipped[0]["reason"] and res.skipped[0]["file"].endswith("1.npy")


def test_covid_unmapped_finding_is_an_error_naming_value_and_file(tmp_path):
    hdr = "patientid,finding,modality,folder,filename,view\n"
    (tmp_path / "images").mkdir()
    (tmp_path / "metadata.csv").write_text(hdr + "1,COVID-19,X-ray,images,a.jpg,PA\n1,\"COVID-19, ARDS\",CT,images,b.jpg,Axial\n"
                                           "2,No Finding,X-ray,images,c.jpg,PA\n")
    res = load_source("covid-chestxray", tmp_path)
    by = {c.id: c for c in res.cases}
    assert by["patient-1"].labels == ["COVID-19", "Acute respiratory distress syndrome"]
    assert by["patient-1"].icd10 == ["U07", "J80"] and len(by["patient-1"].scans) == 2
    assert by["patient-2"].labels == ["Normal"] and by["patient-2"].icd10 == []
    (tmp_path / "metadata.csv").write_text(hdr + "3,Martian flu,X-ray,images,d.jpg,PA\n")
    with pytest.raises(ValueError, match=r"metadata.csv:2 \(finding\): label 'Martian flu' has no mapping"):
        load_source("covid-chestxray", tmp_path)


def test_pneumonia_patients_across_official_splits_stay_in_test(tmp_path):
    for rel in ["train/NORMAL/IM-0001-0001.jpeg", "train/NORMAL/NORMAL2-IM-0002-0001-0002.jpeg",
                "train/PNEUMONIA/person1_bacteria_1.jpeg", "train/PNEUMONIA/person1_virus_7.jpeg",
                "test/PNEUMONIA/person1_virus_9.jpeg", "train/PNEUMONIA/person2_bacteria_3.jpeg"]:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"")
    res = load_source("chest-xray-pneumonia", tmp_path, val_fraction=0.0)
    by = {c.id: c for c in res.cases}
    assert set(by) == {"IM-0001", "NORMAL2-IM-0002", "person1", "person2"}
    assert by["person1"].split == "test" and len(by["person1"].scans) == 3
    assert by["person1"].labels == ["Bacterial pneumonia", "Viral pneumonia"] and by["person1"].icd10 == ["J15", "J12"]
    assert any("both official train and test" in n and "person1" in n for n in res.notes)
    (tmp_path / "train/PNEUMONIA/weird.jpeg").write_bytes(b"")
    with pytest.raises(ValueError, match="weird.jpeg: file name does not follow"):
        load_source("chest-xray-pneumonia", tmp_path)


def test_medmnist3d_official_split(tmp_path):
    np.savez(tmp_path / "x.npz", **{f"{s}_images": np.zeros((n, 4, 4, 4), np.uint8) for s, n in
                                     (("train", 3), ("val", 1), ("test", 2))},
             **{f"{s}_labels": np.array([[1]] + [[0]] * (n - 1)) for s, n in (("train", 3), ("val", 1), ("test", 2))})
    res = load_source("medmnist3d", tmp_path)
    assert [c.split for c in res.cases] == ["train"] * 3 + ["val"] + ["test"] * 2
    assert res.cases[0].labels == ["Adrenal mass"] and res.cases[0].icd10 == ["E27"] and res.cases[1].labels == ["Normal"]
    assert res.cases[0].scans[0].is_3d and res.cases[0].anatomy == "Abdomen and Pelvis"


def test_unknown_format_and_missing_source(tmp_path):
    with pytest.raises(ValueError, match="unknown source format"):
        load_source("dicomzip", tmp_path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_source("covid-chestxray", tmp_path / "absent")


@pytest.mark.shared_data
@pytest.mark.slow
def test_public_sets_have_the_published_counts(shared_data):
    """Expected numbers from ../shared/data/README.md (adapters only; no preprocessing)."""
    covid = load_source("covid-chestxray", shared_data / "covid-chestxray").counts()
    print("covid-chestxray", covid)
    assert covid["cases"] == 162 and covid["scans"] == 360
    assert covid["labels"]["COVID-19"] == 119 and covid["icd10"]["U07"] == 119 and covid["labels"]["Normal"] == 3
    pneu = load_source("chest-xray-pneumonia", shared_data / "chest-xray-pneumonia").counts()
    print("chest-xray-pneumonia", pneu)
    assert pneu["scans"] == 5840 and pneu["cases"] == 3103
    assert pneu["labels"] == {"Normal": 1436, "Bacterial pneumonia": 1430, "Viral pneumonia": 1216}
    brain = load_source("brain-tumor-mri", shared_data / "brain-tumor-mri")
    bc = brain.counts()
    print("brain-tumor-mri", bc)
    # 7,020 files, one of them a Jupyter checkpoint copy in a hidden folder (reported, not counted)
    assert bc["scans"] == 7019 and any(".ipynb_checkpoints" in n for n in brain.notes)
    assert bc["labels"] == {"Normal": 1996, "Glioma": 1621, "Meningioma": 1645, "Pituitary adenoma": 1757}
    adr = load_source("medmnist3d", shared_data / "adrenalmnist3d").counts()
    print("adrenalmnist3d", adr)
    assert adr["cases"] == 1584 and adr["splits"] == {"train": 1188, "val": 98, "test": 298}
    assert adr["labels"]["Adrenal mass"] + adr["labels"]["Normal"] == 1584
    for name, c in (("pneumonia", pneu), ("brain", bc)):
        assert set(c["splits"]) == {"train", "val", "test"}, name


@pytest.mark.shared_data
def test_rp3d_demo_lists_the_four_missing_scans(shared_data):
    res = load_source("rp3d", shared_data / "rp3d-demo")
    assert len(res.cases) == 3 and sum(len(c.scans) for c in res.cases) == 4
    assert sorted(s["file"] for s in res.skipped) == ["123742.npy", "123743.npy", "127782.npy", "127783.npy"]
    assert all("/data/" in s.paths[0] for c in res.cases for s in c.scans)


def test_registry_is_complete():
    assert set(ADAPTERS) == {"rp3d", "manifest", "covid-chestxray", "chest-xray-pneumonia", "brain-tumor-mri",
                             "medmnist3d", "folders"}

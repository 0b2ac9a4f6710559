"""Hostile inputs to ``raddiag data prepare`` (sources, manifests, label files): one test per
finding, each failing before its fix."""
from __future__ import annotations

import codecs
import json

import numpy as np
import pytest

from raddiag.curation.records import load_records
from raddiag.data.adapters import load_source
from raddiag.transfer.zeroshot import load_mapping

BOM = codecs.BOM_UTF8


def _manifest(path, records, bom=False):
    path.write_bytes((BOM if bom else b"") + "".join(json.dumps(r) + "\n" for r in records).encode("utf-8"))
    return path


def _case(cid, labels, split="train"):
    return {"id": cid, "scans": [{"path": f"{cid}.npy", "modality": "CT"}], "labels": labels, "split": split}


def test_files_starting_with_a_utf8_bom_are_read(tmp_path):
    from raddiag.data.commands import _load_label_space
    from raddiag.data.labels import LabelSpace

    res = load_source("manifest", _manifest(tmp_path / "m.jsonl", [_case("c1", ["Pneumonia"])], bom=True))
    assert [c.id for c in res.cases] == ["c1"]
    (tmp_path / "cx").mkdir()
    (tmp_path / "cx" / "metadata.csv").write_bytes(
        BOM + b"patientid,finding,modality,folder,filename,view\n1,COVID-19,X-ray,images,a.jpg,PA\n")
    assert [c.labels for c in load_source("covid-chestxray", tmp_path / "cx").cases] == [["COVID-19"]]
    (tmp_path / "ls.json").write_bytes(BOM + json.dumps(LabelSpace(names=["Normal", "a"]).to_dict()).encode())
    (tmp_path / "release.json").write_bytes(BOM + b'{"Normal": 0, "a": 1}')
    for p in ("ls.json", "release.json"):
        assert _load_label_space(str(tmp_path / p)).names == ["Normal", "a"]
    assert LabelSpace.load(tmp_path / "ls.json").names == ["Normal", "a"]
    np.save(tmp_path / "1.npy", np.zeros((8, 8, 3), np.float32))
    sample = {"image_data_path": "['/c/1.npy']", "image_key_path": "[]", "image_modality": "['CT']",
              "plane_projection": "['Axial']", "articles": "['Pneumonia']", "icd10s": "['J18']"}
    rec = {"Samples": [sample], "Anatomy": "Chest", "Modalities": "['CT']"}
    (tmp_path / "a.json").write_bytes(BOM + json.dumps({"https://x/cases/q": rec}).encode())
    assert len(load_source("rp3d", tmp_path, split_files={"test": "a.json"}).cases) == 1


def test_one_label_spelled_differently_becomes_one_class_and_is_warned_of_once(tmp_path):
    from raddiag.data.errors import InputWarning

    nfd = "Me\u0301ningioma"                                  # e + combining acute: 'Méningioma' in NFD
    records = [_case("c1", ["Pneumonia"]), _case("c2", ["pneumonia ", "Pneumonia"]), _case("c3", ["Pneumonia"]),
               _case("c4", ["Pleural  effusion"]), _case("c5", ["pleural effusion"]),
               _case("c6", [nfd]), _case("c7", ["M\u00e9ningioma"]), _case("c8", ["Pneumonitis"]),
               _case("c9", ["normal"])]
    with pytest.warns(InputWarning) as caught:
        res = load_source("manifest", _manifest(tmp_path / "m.jsonl", records))
    merged = [str(w.message) for w in caught if "spelled" in str(w.message)]
    assert len(merged) == 1 and "m.jsonl" in merged[0]
    assert "'pneumonia ' -> 'Pneumonia'" in merged[0] and "'Pleural  effusion'" in merged[0]
    labels = {c.id: c.labels for c in res.cases}
    assert labels["c2"] == ["Pneumonia"] and labels["c3"] == ["Pneumonia"]
    # a tie between two spellings: the first seen wins; whitespace is collapsed in the canonical one
    assert labels["c4"] == labels["c5"] == ["Pleural effusion"]
    assert labels["c6"] == labels["c7"] == [nfd.__class__("M\u00e9ningioma")]
    assert labels["c8"] == ["Pneumonitis"] and labels["c9"] == ["Normal"]   # other words stay apart


def test_a_manifest_with_one_spelling_per_label_warns_of_nothing(tmp_path, recwarn):
    res = load_source("manifest", _manifest(tmp_path / "m.jsonl", [_case("c1", ["Pneumonia"]), _case("c2", ["Edema"])]))
    assert [c.labels for c in res.cases] == [["Pneumonia"], ["Edema"]]
    assert not [w for w in recwarn if "spelled" in str(w.message)]


@pytest.mark.parametrize("text", ["", "patientid,finding,modality,folder,filename,view\n"])
def test_a_source_without_cases_is_refused_naming_the_file(tmp_path, capsys, text):
    from raddiag.cli import main

    (tmp_path / "metadata.csv").write_text(text)
    rc = main(["data", "prepare", str(tmp_path), "--format", "covid-chestxray", "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert rc == 2 and f"{tmp_path}: holds no cases" in err and not (tmp_path / "out").exists()


def test_a_case_labelled_normal_and_a_disorder_is_warned_of(tmp_path):
    from raddiag.data.errors import InputWarning
    from raddiag.data.labels import LabelSpace

    records = [_case("c1", ["Normal", "Pneumonia"]), _case("c2", ["Normal"]), _case("c3", ["Edema"])]
    with pytest.warns(InputWarning, match=r"m.jsonl: 1 case\(s\) are labelled Normal and a disorder \(e.g. 'c1'\)"):
        res = load_source("manifest", _manifest(tmp_path / "m.jsonl", records))
    space = LabelSpace.from_cases(res.cases)
    assert space.case_labels(res.cases[0]) == ["Pneumonia"]             # read as abnormal, as the warning says


def test_a_label_meaning_a_normal_study_is_read_as_normal_as_zeroshot_reads_it(tmp_path):
    """New user: a manifest's "No finding" became a disorder class (12 cases counted "without
    ICD-10-CM codes"), which zeroshot and predict --classes read as Normal."""
    from raddiag.data.errors import InputWarning
    from raddiag.data.labels import LabelSpace

    records = [_case("c1", ["No finding"]), _case("c2", ["No_finding"]), _case("c3", ["Edema"]),
               _case("c4", ["No acute abnormality", "Edema"]), _case("c5", ["Non-COVID-19"]), _case("c6", ["NORMAL"])]
    with pytest.warns(InputWarning) as caught:
        res = load_source("manifest", _manifest(tmp_path / "m.jsonl", records))
    said = [str(w.message) for w in caught]
    assert [c.labels for c in res.cases] == [["Normal"], ["Normal"], ["Edema"], ["Normal", "Edema"],
                                             ["Non-COVID-19"], ["Normal"]]
    assert any("read as 'Normal'" in m and "'No finding' x1" in m and "'No acute abnormality' x1" in m
               and "NORMAL" not in m for m in said)
    space = LabelSpace.from_cases(res.cases)
    assert sorted(space.names) == ["Edema", "Non-COVID-19", "Normal"]
    assert space.case_labels(res.cases[3]) == ["Edema"]                 # with a disorder: abnormal, as before


def test_the_python_route_merges_label_spellings_and_warns_of_normal_with_a_disorder(tmp_path):
    from raddiag.data.case import read_manifest
    from raddiag.data.errors import InputWarning

    records = [_case("c1", ["Pneumonia"]), _case("c2", ["pneumonia "]), _case("c3", ["Pneumonia"]),
               _case("c4", ["Normal", "Edema"])]
    with pytest.warns(InputWarning) as caught:
        cases = list(read_manifest(_manifest(tmp_path / "m.jsonl", records)))
    said = [str(w.message) for w in caught]
    assert [c.labels for c in cases[:3]] == [["Pneumonia"]] * 3
    assert len([m for m in said if "spelled" in m and "m.jsonl" in m]) == 1
    assert len([m for m in said if "labelled Normal and a disorder (e.g. 'c4')" in m]) == 1


def _class_folders(root, layout: dict):
    from PIL import Image

    for folder, n in layout.items():
        (root / folder).mkdir(parents=True)
        for i in range(n):
            Image.fromarray(np.full((8, 8), 10 * i, np.uint8)).save(root / folder / f"{i}.png")


def test_folders_split_folders_beside_other_folders_are_refused_naming_them(tmp_path):
    """Red team: Training/ and Testing/ beside a stray folder (unlabeled/) were read as three classes,
    "Training" and "Testing", each class folder inside them one case of all its images."""
    _class_folders(tmp_path / "src", {"Training/glioma": 3, "Testing/glioma": 2, "unlabeled": 2})
    with pytest.raises(ValueError, match=r"split folders \(Testing, Training\) beside other folders \(unlabeled\)"):
        load_source("folders", tmp_path / "src", modality="MRI")


def test_folders_train_and_test_without_val_get_a_seeded_val(tmp_path):
    """Red team: the commonest layout (Training/ and Testing/) had no val split, though --val-fraction
    says it carves one where the source has none, so `train` refused the prepared dataset."""
    _class_folders(tmp_path / "src", {"Training/a": 8, "Training/b": 8, "Testing/a": 2, "Testing/b": 2})
    res = load_source("folders", tmp_path / "src", modality="MRI", val_fraction=0.25, seed=3)
    splits = [c.split for c in res.cases]
    assert splits.count("val") == 4 and splits.count("train") == 12 and splits.count("test") == 4
    assert all(c.split != "val" for c in res.cases if c.id.startswith("test/"))
    assert "val = 4 train case(s)" in res.notes[0]
    again = load_source("folders", tmp_path / "src", modality="MRI", val_fraction=0.25, seed=3)
    assert [c.split for c in again.cases] == splits


DEEP = "[" * 100_000 + "]" * 100_000


@pytest.mark.parametrize("read, name, text", [
    (lambda p: load_source("manifest", p), "m.jsonl", '{"id": "a", "scans": ' + DEEP + "}\n"),
    (lambda p: load_source("rp3d", p), "release.json", DEEP),
    (lambda p: load_records(p.parent), "case.json", DEEP),
    (lambda p: load_mapping(p, None, None), "map.json", DEEP),
], ids=["manifest", "rp3d", "curation record", "zeroshot mapping"])
def test_json_nested_too_deeply_is_refused_naming_the_file(tmp_path, read, name, text):
    """Red team: "[" * 100000 in a manifest, a release JSON, a case record or a mapping file raised
    RecursionError: "unexpected", exit 1, naming no file."""
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(ValueError, match=rf"{name}(:1)?: .*nested too deeply"):
        read(path)


def test_prepare_into_the_manifests_own_folder_keeps_the_manifest(tmp_path, capsys):
    """Red team: `data prepare DIR/cases.jsonl --format manifest --out DIR` replaced the user's
    manifest (its own input) with the prepared case list, without --overwrite and without a word."""
    from raddiag.cli import main

    for i in range(4):
        np.save(tmp_path / f"c{i}.npy", np.random.default_rng(i).random((8, 8, 2)).astype(np.float32))
    manifest = _manifest(tmp_path / "cases.jsonl", [_case(f"c{i}", ["Pneumonia"] if i % 2 else []) for i in range(4)])
    before = manifest.read_bytes()
    for extra in ([], ["--overwrite"]):
        assert main(["data", "prepare", str(manifest), "--format", "manifest", "--out", str(tmp_path),
                     "--size", "8", *extra]) == 2
        assert "is no prepared dataset but holds cases.jsonl" in capsys.readouterr().err
    assert manifest.read_bytes() == before and not (tmp_path / "meta.json").exists()
    assert main(["data", "prepare", str(manifest), "--format", "manifest", "--out", str(tmp_path / "data"),
                 "--size", "8"]) == 0

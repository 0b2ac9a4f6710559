"""A case manifest as CSV (a new user's spreadsheet): read as the same cases as its JSON Lines
twin, every problem named with its line, and a CSV given as JSON Lines said to be one."""
from __future__ import annotations

import json

import pytest

from raddiag.data.case import read_manifest
from raddiag.data.schema import SHOWN_PROBLEMS, ManifestError


def _write(tmp_path, name, text):
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


def test_a_csv_manifest_gives_the_cases_of_its_json_lines_twin(tmp_path):
    """One row a scan; rows sharing an id are one case; labels split on ';'; header names read
    without regard to case and spaces; a BOM (a spreadsheet's export) ignored."""
    csv_text = ("\ufeffID, Path ,Modality,Labels,ICD10,Split,Patient,Anatomy,Plane,Key_Slice,is_3d\n"
                "c1,p1/ct.nii.gz,CT,Pneumothorax; Rib fracture,J93;S22,train,p1,Chest,axial,41,true\n"
                "c2,p2/cxr.png,X-ray,,,test,p2,Chest,,,\n"
                "c1,p1/cxr.png,X-ray,,,,,,,,\n")
    lines = [{"id": "c1", "labels": ["Pneumothorax", "Rib fracture"], "icd10": ["J93", "S22"], "split": "train",
              "patient": "p1", "anatomy": "Chest",
              "scans": [{"path": "p1/ct.nii.gz", "modality": "CT", "plane": "axial", "key_slice": 41, "is_3d": True},
                        {"path": "p1/cxr.png", "modality": "X-ray"}]},
             {"id": "c2", "split": "test", "patient": "p2", "anatomy": "Chest",
              "scans": [{"path": "p2/cxr.png", "modality": "X-ray"}]}]
    from_csv = [c.to_dict() for c in read_manifest(_write(tmp_path, "cases.csv", csv_text))]
    from_jsonl = [c.to_dict() for c in read_manifest(_write(tmp_path, "cases.jsonl",
                                                            "\n".join(json.dumps(x) for x in lines)))]
    assert from_csv == from_jsonl
    assert from_csv[1]["labels"] == [] and len(from_csv[0]["scans"]) == 2
    tsv = _write(tmp_path, "cases.tsv", "id\tpath\tmodality\tlabels\nc2\tp2/cxr.png\tX-ray\tPneumonia\n")
    assert [c.labels for c in read_manifest(tsv)] == [["Pneumonia"]]


def test_a_semicolon_separated_csv_is_named_as_such(tmp_path):
    """A spreadsheet in a semicolon locale saves 'id;path;modality;labels': the error said only that
    this one column was unknown."""
    with pytest.raises(ManifestError, match=r"m.csv:1: unknown column\(s\) 'id;path;modality;labels'.*the header reads "
                                            r"as one column holding ';': save the file with commas"):
        list(read_manifest(_write(tmp_path, "m.csv", "id;path;modality;labels\nc1;a.png;X-ray;Gout\n")))


def test_csv_manifest_problems_are_named_with_their_lines(tmp_path):
    with pytest.raises(ManifestError, match=r"m.csv:1: unknown column\(s\) 'lables'; missing column\(s\) modality"):
        list(read_manifest(_write(tmp_path, "m.csv", "id,path,lables\nc1,a.png,Pneumonia\n")))
    text = ("id,path,modality,split,key_slice,is_3d\n"
            "c1,a.nii.gz,CT,train,4,\n"
            "c1,b.png,X-ray,test,,\n"          # one case, two splits
            "c2,c.nii.gz,CT,,four,maybe\n"
            ",d.png,X-ray,,,\n")
    with pytest.raises(ManifestError) as e:
        list(read_manifest(_write(tmp_path, "m.csv", text)))
    probs = e.value.problems
    assert any(p.startswith(f"{tmp_path / 'm.csv'}:3: split: 'test' differs from 'train' on line 2") for p in probs)
    assert f"{tmp_path / 'm.csv'}:4: scans[0].key_slice: expected an integer >= 0 or null, got str \"four\"" in probs
    assert f"{tmp_path / 'm.csv'}:4: scans[0].is_3d: expected true, false or null, got str \"maybe\"" in probs
    assert f"{tmp_path / 'm.csv'}:5: id: required" in probs
    assert len(probs) == 4


def test_a_csv_given_as_json_lines_is_said_to_be_one_and_the_message_stays_short(tmp_path):
    """A CSV named .jsonl was 'not valid JSON' once per line: 321 problems in a 17 KB line."""
    rows = "".join(f"c{i},a{i}.png,X-ray\n" for i in range(60))
    with pytest.raises(ManifestError) as e:
        list(read_manifest(_write(tmp_path, "m.jsonl", "id,path,modality\n" + rows)))
    msg = str(e.value)
    assert "not JSON Lines: its first line looks like a CSV header" in msg.splitlines()[1]
    assert len(e.value.problems) == 62                                   # every problem kept
    assert len(msg.splitlines()) == 1 + SHOWN_PROBLEMS + 1 and msg.endswith("... and 42 more problem(s)")

"""The service's form field ``modality`` and upload names (new-user issues 3 and 4).

A case of files of different modalities is sent as ``modality=X-ray,CT``, one name per uploaded
file in upload order: the service's own 422 advised exactly that, then refused it ("unknown modality
'X-ray,CT'") and spoke of CLI options (``--modality``, ``--manifest``) the service does not have.
An upload named ``pneumothorax ñ 肺.png`` was reported as the scan ``pneumothorax.png`` (its case id
kept the name); the stored file must stay inside the upload folder whatever the name."""
from __future__ import annotations

import gzip
import io
import tempfile
import zipfile

import nibabel as nib
import numpy as np
import pytest

from raddiag.serving.sample import make_tiny_run, sample_png

UNICODE_NAME = "pneumothorax ñ 肺.png"


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return make_tiny_run(tmp_path_factory.mktemp("modalities") / "run").root


@pytest.fixture(scope="module")
def client(run_dir):
    from fastapi.testclient import TestClient

    from raddiag.serving.app import create_app

    with TestClient(create_app(run_dir), raise_server_exceptions=False) as c:
        yield c


@pytest.fixture(scope="module")
def volume() -> bytes:
    img = nib.Nifti1Image(np.random.default_rng(0).random((24, 24, 6)).astype(np.float32), np.eye(4))
    return gzip.compress(img.to_bytes())


def _files(*named):
    return [("files", (name, data)) for name, data in named]


@pytest.mark.parametrize("order", ["xray-first", "ct-first"])
def test_a_case_of_mixed_modalities_is_sent_with_one_modality_per_file(client, run_dir, volume, tmp_path, order):
    from raddiag.serving.predict import Predictor

    uploads = [("ptx_11.png", sample_png(48, seed=3), "X-ray"), ("wobble_09.nii.gz", volume, "CT")]
    uploads = uploads if order == "xray-first" else uploads[::-1]
    r = client.post("/predict", files=_files(*[(n, d) for n, d, _ in uploads]),
                    data={"modality": ",".join(m for *_, m in uploads), "top": "3"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert {s["id"]: (s["modality"], s["used"]) for s in body["scans"]} == {
        "ptx_11.png": ("X-ray", True), "wobble_09.nii.gz": ("CT", True)}
    for name, data, _ in uploads:
        (tmp_path / name).write_bytes(data)
    local = Predictor.load(run_dir).predict([tmp_path / n for n, *_ in uploads], modality=[m for *_, m in uploads],
                                            top=3)
    assert [f["name"] for f in body["ranked"]] == [f.name for f in local.ranked]
    np.testing.assert_allclose([f["probability"] for f in body["ranked"]],
                               [f.probability for f in local.ranked], atol=1e-5)
    r = client.post("/embed", files=_files(*[(n, d) for n, d, _ in uploads]),
                    data={"modality": " , ".join(m.lower() for *_, m in uploads)})     # spelling as the CLI takes it
    assert r.status_code == 200 and [s["embedding"] is not None for s in r.json()["scans"]] == [True, True], r.text


def test_a_zip_gets_its_uploads_modality_for_every_entry(client, volume):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("xr/a.png", sample_png(32, seed=1))
        z.writestr("xr/b.png", sample_png(32, seed=2))
    r = client.post("/predict", files=_files(("vol.nii.gz", volume), ("xr.zip", buf.getvalue())),
                    data={"modality": "CT,X-ray"})
    assert r.status_code == 200, r.text
    assert sorted((s["paths"][0], s["modality"]) for s in r.json()["scans"]) == [
        ("vol.nii.gz", "CT"), ("xr/a.png", "X-ray"), ("xr/b.png", "X-ray")]


@pytest.mark.parametrize("path", ["/predict", "/embed"])
def test_a_modality_count_that_does_not_match_the_files_is_a_422_naming_both(client, volume, path):
    r = client.post(path, files=_files(("ptx_11.png", sample_png(32)), ("wobble_09.nii.gz", volume)),
                    data={"modality": "X-ray,CT,MRI"})
    detail = r.json()["detail"]
    assert r.status_code == 422 and "3 modalities (X-ray,CT,MRI) for 2 uploaded files" in detail, r.text
    assert "'ptx_11.png', 'wobble_09.nii.gz'" in detail and "one per uploaded file in upload order" in detail


def test_an_unknown_name_in_the_list_is_a_422_naming_it_and_its_file(client, volume):
    r = client.post("/predict", files=_files(("ptx_11.png", sample_png(32)), ("wobble_09.nii.gz", volume)),
                    data={"modality": "X-ray,Xray-ish"})
    detail = r.json()["detail"]
    assert r.status_code == 422 and "the form field modality for 'wobble_09.nii.gz': unknown modality 'Xray-ish'" \
        in detail, r.text
    r = client.post("/predict", files=_files(("ptx_11.png", sample_png(32))), data={"modality": "X-ray,CT"})
    assert r.status_code == 422 and "2 modalities (X-ray,CT) for 1 uploaded files ('ptx_11.png')" in r.text


@pytest.mark.parametrize("path", ["/predict", "/embed"])
def test_the_missing_modality_advice_is_the_services_own(client, volume, path):
    r = client.post(path, files=_files(("ptx_11.png", sample_png(32)), ("wobble_09.nii.gz", volume)))
    detail = r.json()["detail"]
    assert r.status_code == 422 and detail.startswith("'ptx_11.png', 'wobble_09.nii.gz': no modality given"), r.text
    assert "--" not in detail and "manifest" not in detail                # no CLI options
    assert "form field modality" in detail and f"-F modality=X-ray,CT <service>{path}" in detail


def test_the_web_api_documents_the_list(client):
    spec = client.get("/openapi.json").json()
    schemas = spec["components"]["schemas"]
    for route in ("/predict", "/embed"):
        ref = spec["paths"][route]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]["$ref"]
        assert "joined by commas (X-ray,CT)" in schemas[ref.split("/")[-1]]["properties"]["modality"]["description"]


@pytest.mark.parametrize("name, case_id", [(UNICODE_NAME, "pneumothorax ñ 肺"),
                                           ("my scan 01.v2.png", "my scan 01.v2")])
def test_an_upload_keeps_its_name_as_scan_id_and_case_id(client, name, case_id):
    r = client.post("/predict", files=_files((name, sample_png(32))), data={"modality": "X-ray", "top": "1"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["case_id"] == case_id and [(s["id"], s["paths"]) for s in body["scans"]] == [(name, [name])]


def test_unsafe_upload_names_stay_in_the_upload_folder(client, tmp_path, monkeypatch):
    tmp = tmp_path / "tmp" / "inner"
    tmp.mkdir(parents=True)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    names = ["../escape ñ.png", "../../escape ñ.png", "/etc/escape ñ.png", "a/../../escape ñ.png"]
    r = client.post("/predict", files=_files(*[(n, sample_png(16, seed=i)) for i, n in enumerate(names)]),
                    data={"modality": "X-ray"})
    assert r.status_code == 200, r.text
    assert sorted(p for s in r.json()["scans"] for p in s["paths"]) == [
        "escape ñ.png", "escape ñ_1.png", "escape ñ_2.png", "escape ñ_3.png"]
    assert list(tmp_path.rglob("*.png")) == [] and list(tmp.iterdir()) == []     # none outside, none left


def _tag(whole: str) -> str:
    """What a cut name ends with: its whole text's hash (uploads._clean)."""
    import hashlib

    return "~" + hashlib.sha1(whole.encode()).hexdigest()[:8]


@pytest.mark.parametrize("name, stored", [
    ("../../evil.png", "evil.png"), ("..\\..\\evil.png", "evil.png"), ("..", "file.png"), (".hidden.png", "hidden.png"),
    ("a\x00b\nc\u202ed.png", "a_b_c_d.png"), ("  spaced name .png", "spaced name.png"),
    (UNICODE_NAME, UNICODE_NAME), ("肺" * 300 + ".png", "肺" * 47 + _tag("肺" * 300) + ".png"),
], ids=["parent-slash", "parent-backslash", "dot-dot", "hidden", "control", "spaces", "unicode", "long"])
def test_stored_names_keep_the_users_spelling_but_are_safe(tmp_path, name, stored):
    from raddiag.serving.uploads import NAME_BYTES, Budget, save_upload

    dest = tmp_path / "case"
    dest.mkdir()
    (out,) = save_upload(io.BytesIO(sample_png(16)), name, dest, Budget(4, 1 << 20), set())
    assert out.parent == dest and out.name == stored and len(out.stem.encode()) <= NAME_BYTES
    assert [p.name for p in tmp_path.rglob("*") if p.is_file()] == [stored]


def test_a_unicode_name_inside_a_zip_is_kept(client):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr(f"肺 case/{UNICODE_NAME}", sample_png(32))
    r = client.post("/predict", files=_files(("c.zip", buf.getvalue())), data={"modality": "X-ray"})
    assert r.status_code == 200, r.text
    assert [s["paths"] for s in r.json()["scans"]] == [[f"肺 case/{UNICODE_NAME}"]]


def test_a_long_unicode_folder_name_inside_a_zip_is_cut_as_file_names_are(client):
    """Red team: 86 CJK characters (258 bytes) in a zip folder name were refused with a message
    counting characters, where the same name as a file was cut to 150 bytes and taken."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("肺" * 86 + "/a.png", sample_png(32))
    r = client.post("/predict", files=_files(("c.zip", buf.getvalue())), data={"modality": "X-ray"})
    assert r.status_code == 200, r.text
    folder = r.json()["scans"][0]["paths"][0].split("/")[0]
    assert folder == "肺" * 47 + _tag("肺" * 86) and len(folder.encode()) == 150


def test_zip_folders_alike_in_their_first_150_bytes_stay_two_folders(client):
    """Red team: two series folders whose names differ only after 150 bytes became one folder."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for case in ("case1", "case2"):
            z.writestr(f"patient_{'x' * 150}_{case}/img.png", sample_png(32))
    r = client.post("/predict", files=_files(("c.zip", buf.getvalue())), data={"modality": "X-ray"})
    assert r.status_code == 200, r.text
    folders = {s["paths"][0].split("/")[0] for s in r.json()["scans"]}
    assert len(folders) == 2 and all(len(f.encode()) <= 150 for f in folders)


def test_two_spellings_of_one_name_are_two_visibly_different_scans(client):
    """NFC and NFD 'é.png' printed alike as two scans; stored names are NFC, the second one renamed."""
    import unicodedata

    nfc, nfd = unicodedata.normalize("NFC", "é.png"), unicodedata.normalize("NFD", "é.png")
    r = client.post("/predict", files=_files((nfc, sample_png(32, seed=1)), (nfd, sample_png(32, seed=2))),
                    data={"modality": "X-ray"})
    assert r.status_code == 200, r.text
    paths = sorted(s["paths"][0] for s in r.json()["scans"])
    assert len(set(paths)) == 2 and all(unicodedata.is_normalized("NFC", p) for p in paths)

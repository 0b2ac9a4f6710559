"""Issue 13: property-based fuzz of the HTTP service (Hypothesis). Mutated bytes of every
accepted upload format (truncated, bit-flipped, bytes overwritten or inserted, declared sizes
inflated) and wrong form types are posted to ``/predict``; every answer is a 200 or a 4xx with a
reason, never a 500.

Bounded run time: ``RADDIAG_FUZZ_EXAMPLES`` examples per format (default 12, about a minute on
2 cores); a longer run: ``RADDIAG_FUZZ_EXAMPLES=500 pytest tests/test_serving_fuzz.py``.

While a test runs, the process's data segment is capped (``RLIMIT_DATA``, +2 GiB) so a header that
declares a huge scan cannot take the shared machine down: such an allocation ends as a
``MemoryError`` the service answers with 413 (with the readers' size bound, the scan is refused from
its header before any allocation, also 413)."""
from __future__ import annotations

import gzip
import io
import os
import re
import resource
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from raddiag.serving.sample import make_tiny_run, sample_png

EXAMPLES = int(os.environ.get("RADDIAG_FUZZ_EXAMPLES", "12"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                       HealthCheck.data_too_large])
STATUSES = {200, 400, 413, 415, 422}


def _npy() -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.random.default_rng(0).random((24, 24, 3)).astype(np.float32))
    return buf.getvalue()


def _nifti() -> bytes:
    img = nib.Nifti1Image(np.random.default_rng(1).random((16, 16, 4)).astype(np.float32), np.eye(4))
    return img.to_bytes()


def _dicom() -> bytes:
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    meta.MediaStorageSOPInstanceUID = "1.2.826.0.1.3680043.8.498.2"
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.SeriesInstanceUID, ds.Modality = "1.2.826.0.1.3680043.8.498.1", "CT"
    ds.set_pixel_data(np.random.default_rng(2).integers(0, 4000, (16, 16)).astype(np.uint16),
                      photometric_interpretation="MONOCHROME2", bits_stored=12)
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def _zip() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("case/a.png", sample_png(24, seed=3))
        z.writestr("case/v.npy", _npy())
    return buf.getvalue()


SEEDS = {"png": (sample_png(24, seed=1), "a.png"), "npy": (_npy(), "v.npy"), "nifti": (_nifti(), "v.nii"),
         "nifti.gz": (gzip.compress(_nifti()), "v.nii.gz"), "dicom": (_dicom(), "IM0001.dcm"),
         "zip": (_zip(), "case.zip")}
# where each format declares its size: (offset, byte width, byte order) of the fields to inflate
SIZE_FIELDS = {"png": [(16, 4, "big"), (20, 4, "big")], "nifti": [(42, 2, "little"), (44, 2, "little"),
                                                                   (46, 2, "little"), (40, 2, "little")]}
BIG = [0, 1, 255, 4096, 13000, 32767, 65535, 1 << 20, 1 << 31, (1 << 32) - 1]


def _inflate_npy(data: bytearray, n: int) -> bytearray:
    head_end = data.index(b"\n") + 1
    head = data[:head_end].decode("latin1")
    new = re.sub(r"\(\d+, \d+, \d+\)", f"({n}, {n}, 3)", head)
    return bytearray(new.encode("latin1")) + data[head_end:]


def _inflate_dicom(data: bytearray, n: int) -> bytearray:
    for tag in (b"\x28\x00\x10\x00US\x02\x00", b"\x28\x00\x11\x00US\x02\x00"):    # Rows, Columns
        i = data.find(tag)
        if i >= 0:
            data[i + 8: i + 10] = (n & 0xFFFF).to_bytes(2, "little")
    return data


@st.composite
def mutated(draw, kind: str) -> bytes:
    data = bytearray(SEEDS[kind][0])
    for op in draw(st.lists(st.sampled_from(["truncate", "flip", "set", "insert", "inflate"]), min_size=1,
                            max_size=3)):
        n = len(data)
        if n == 0:
            break
        if op == "truncate":
            data = data[:draw(st.integers(0, n - 1))]
        elif op == "flip":
            data[draw(st.integers(0, n - 1))] ^= 1 << draw(st.integers(0, 7))
        elif op == "set":
            i = draw(st.integers(0, n - 1))
            data[i: i + 4] = draw(st.binary(min_size=1, max_size=4))
        elif op == "insert":
            i = draw(st.integers(0, n))
            data[i:i] = draw(st.binary(min_size=1, max_size=64))
        else:                                   # inflate a declared size
            big = draw(st.sampled_from(BIG))
            if kind in SIZE_FIELDS:
                off, width, order = draw(st.sampled_from(SIZE_FIELDS[kind]))
                if off + width <= n:
                    data[off: off + width] = (big % (1 << (8 * width))).to_bytes(width, order)
            elif kind == "npy":
                data = _inflate_npy(data, big)
            elif kind == "dicom":
                data = _inflate_dicom(data, big)
            elif kind == "nifti.gz":                 # inflate inside the stream (of the seed)
                inner = bytearray(gzip.decompress(SEEDS[kind][0]))
                inner[42:44] = (big & 0x7FFF).to_bytes(2, "little")
                data = bytearray(gzip.compress(bytes(inner)))
    return bytes(data)


FORMS = st.fixed_dictionaries({}, optional={
    "modality": st.one_of(st.sampled_from(["X-ray", "CT", "MRI", "", "Xray-ish", "ct, mri"]), st.text(max_size=12)),
    "top": st.one_of(st.integers(-3, 20000).map(str), st.text(max_size=6)),
    "saliency": st.sampled_from(["true", "false", "maybe", "1", ""]),
    "case_id": st.text(max_size=250),
    "saliency_class": st.one_of(st.sampled_from(["0", "99", "Pneumonia", "Nope"]), st.text(max_size=8)),
})


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    from fastapi.testclient import TestClient

    from raddiag.serving.app import create_app

    run = make_tiny_run(tmp_path_factory.mktemp("fuzz") / "run")
    with TestClient(create_app(run.root, max_files=8, max_bytes=2 << 20), raise_server_exceptions=False) as c:
        yield c


@pytest.fixture
def capped_memory():
    """Cap the data segment at its size now + 2 GiB while the test runs (see the module doc)."""
    status = Path("/proc/self/status")
    if not status.exists():                 # not Linux: no cap (the size bound still holds)
        yield
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_DATA)
    vm_data = next(int(line.split()[1]) * 1024 for line in status.read_text().splitlines()
                   if line.startswith("VmData:"))
    cap = vm_data + (2 << 30)
    resource.setrlimit(resource.RLIMIT_DATA, (cap if hard == resource.RLIM_INFINITY else min(cap, hard), hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_DATA, (soft, hard))


def check_answer(r, what: str) -> None:
    assert r.status_code in STATUSES, (what, r.status_code, r.text[:500])
    if r.status_code != 200:
        detail = r.json().get("detail")
        assert detail, (what, r.text[:500])


@pytest.mark.parametrize("kind", sorted(SEEDS))
def test_mutated_uploads_get_200_or_4xx_with_a_reason(client, capped_memory, kind):
    name = SEEDS[kind][1]
    r = client.post("/predict", files=[("files", (name, SEEDS[kind][0]))], data={"modality": "CT"})
    assert r.status_code == 200, r.text          # the unmutated file is fine

    @FUZZ
    @given(data=mutated(kind), form=FORMS)
    def one(data, form):
        r = client.post("/predict", files=[("files", (name, data))], data=form)
        check_answer(r, f"{kind} {len(data)} bytes, form {form}")

    one()


REQUESTS = st.one_of(
    st.builds(lambda v: {"data": {"files": v, "modality": "CT"}}, st.text(max_size=20)),      # text, not a file
    st.builds(lambda v: {"files": [("top", ("t.png", v))], "data": {"modality": "CT"}}, st.binary(max_size=64)),
    st.builds(lambda n, v: {"files": [("files", (n, v))], "data": {"top": "ten"}},
              st.text(max_size=40), st.binary(max_size=600)),
    st.builds(lambda v: {"content": v, "headers": {"content-type": "multipart/form-data; boundary=x"}},
              st.binary(max_size=400)),
    st.builds(lambda v: {"json": {"files": v}}, st.text(max_size=20)),
)


@FUZZ
@given(req=REQUESTS)
def test_wrong_form_types_get_4xx_with_a_reason(client, req):
    r = client.post("/predict", **req)
    check_answer(r, str(req)[:300])
    assert r.status_code != 200

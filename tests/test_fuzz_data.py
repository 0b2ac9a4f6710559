"""Fuzzing the data layer with Hypothesis (issue 13): mutated bytes of every supported format
(truncated, bit-flipped, overwritten, header sizes inflated) through the readers and
``prepare_cases``, and manifests with wrong types and values through the manifest adapter.

Asserted each time: a one-line :class:`ScanError` naming the file, or a skipped-and-reported
scan, or a clean result; no other exception type; the peak heap under a bound that follows the
size limits; a previous prepared dataset untouched by a failed run, and no debris.

Run time is bounded: ``RADDIAG_FUZZ_EXAMPLES`` examples per property (default 25). A longer
run: ``RADDIAG_FUZZ_EXAMPLES=2000 python -m pytest tests/test_fuzz_data.py`` (README).
"""
from __future__ import annotations

import gzip
import io
import json
import os
import re
import shutil
import struct
import tracemalloc
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings, strategies as st  # noqa: E402

from raddiag.data.case import Case, Scan  # noqa: E402
from raddiag.data.errors import ScanError  # noqa: E402
from raddiag.data.preprocess import load_scan  # noqa: E402
from raddiag.data.schema import ManifestError  # noqa: E402
from raddiag.data.store import PreparedData, prepare_cases  # noqa: E402
from raddiag.data.volume import Limits  # noqa: E402

EXAMPLES = int(os.environ.get("RADDIAG_FUZZ_EXAMPLES", "25"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, database=None, print_blob=True,
                suppress_health_check=list(HealthCheck))
LIMITS = Limits(max_pixels=2 ** 18, max_voxels=2 ** 21)   # 512 x 512 per slice, 2 M voxels per scan
PEAK_MB = 2 ** 21 * 8 * 3 / 2 ** 20 + 16                 # a few float64 copies of the bound + slack


# -- seed files, one per format ---------------------------------------------------------------
def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


class _Seeds(dict):
    def __repr__(self) -> str:   # Hypothesis prints the arguments of a failing example
        return f"seeds({', '.join(self)})"


@pytest.fixture(scope="module")
def seeds(tmp_path_factory) -> dict[str, bytes]:
    import nibabel as nib
    from PIL import Image

    from test_readers import _dicom

    d = tmp_path_factory.mktemp("seeds")
    rng = np.random.default_rng(0)
    vol = rng.normal(100, 20, (24, 20, 6)).astype(np.float32)
    img = rng.integers(0, 255, (24, 20), dtype=np.uint8)
    nib.save(nib.Nifti1Image(vol, np.eye(4)), d / "v.nii")
    nib.save(nib.Nifti1Image(vol, np.eye(4)), d / "v.nii.gz")
    np.save(d / "v.npy", vol)
    Image.fromarray(img).save(d / "i.png")
    Image.fromarray(img).save(d / "i.jpg", quality=90)
    pages = [Image.fromarray(np.roll(img, k)) for k in range(3)]
    pages[0].save(d / "m.tif", save_all=True, append_images=pages[1:])
    _dicom(d / "s.dcm", img.astype(np.uint16) * 4, slope=2.0, intercept=-100)
    _dicom(d / "mf.dcm", rng.integers(0, 4000, (3, 16, 12)))
    np.savez(d / "a.npz", train_images=rng.integers(0, 255, (3, 6, 8, 8), dtype=np.uint8))
    return _Seeds({p.name: p.read_bytes() for p in d.iterdir()})


def _scan_path(folder: Path, name: str) -> str:
    return f"{folder / name}#train_images/1" if name.endswith(".npz") else str(folder / name)


# -- header-size inflation per format -----------------------------------------------------------
def _inflate_nifti(data: bytes, dims) -> bytes:
    b = bytearray(data)
    b[42:48] = struct.pack("<3h", *dims)          # dim[1..3] of the NIfTI-1 header
    return bytes(b)


def _inflate_npy(data: bytes, dims) -> bytes:
    f = io.BytesIO(data)
    np.lib.format.read_magic(f)
    shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
    out = io.BytesIO()
    np.lib.format.write_array_header_1_0(out, {"descr": np.lib.format.dtype_to_descr(dtype),
                                               "fortran_order": fortran, "shape": tuple(dims[: len(shape)])})
    return out.getvalue() + data[f.tell():]


def _inflate_png(data: bytes, dims) -> bytes:
    ihdr = struct.pack(">II", dims[0], dims[1]) + data[24:29]
    return data[:8] + _png_chunk(b"IHDR", ihdr) + data[33:]


def _inflate_jpeg(data: bytes, dims) -> bytes:
    b = bytearray(data)
    i = max(data.find(b"\xff\xc0"), data.find(b"\xff\xc2"))
    if i >= 0:
        b[i + 5: i + 9] = struct.pack(">HH", dims[0] & 0xFFFF, dims[1] & 0xFFFF)
    return bytes(b)


def _inflate_tiff(data: bytes, dims) -> bytes:
    b = bytearray(data)
    for tag, v in ((256, dims[0]), (257, dims[1])):      # ImageWidth / ImageLength, SHORT or LONG
        for typ, fmt in ((3, "<H"), (4, "<I")):
            entry = struct.pack("<HHI", tag, typ, 1)
            for m in re.finditer(re.escape(entry), bytes(b)):
                b[m.end(): m.end() + struct.calcsize(fmt)] = struct.pack(fmt, v & (0xFFFF if typ == 3 else 0xFFFFFFFF))
    return bytes(b)


def _inflate_dicom(data: bytes, dims) -> bytes:
    b = bytearray(data)
    for elem, v in ((b"\x28\x00\x10\x00US\x02\x00", dims[0]), (b"\x28\x00\x11\x00US\x02\x00", dims[1])):
        i = data.find(elem)
        if i >= 0:
            b[i + 8: i + 10] = struct.pack("<H", v & 0xFFFF)
    return bytes(b)


def _inflate_npz(data: bytes, dims) -> bytes:
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        member = z.read("train_images.npy")
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        z.writestr("train_images.npy", _inflate_npy(member, dims + dims))
    return out.getvalue()


def _inflate_gz(data: bytes, dims) -> bytes:
    return gzip.compress(_inflate_nifti(gzip.decompress(data), dims))


INFLATE = {"v.nii": _inflate_nifti, "v.nii.gz": _inflate_gz, "v.npy": _inflate_npy, "i.png": _inflate_png,
           "i.jpg": _inflate_jpeg, "m.tif": _inflate_tiff, "s.dcm": _inflate_dicom, "mf.dcm": _inflate_dicom,
           "a.npz": _inflate_npz}
SIZES = st.sampled_from([0, 1, 2, 7, 255, 4096, 32767, 65535, 2 ** 31 - 1])


@st.composite
def mutated(draw, seeds: dict[str, bytes]):
    """(file name, mutated bytes)."""
    name = draw(st.sampled_from(sorted(INFLATE)))
    data = seeds[name]
    kind = draw(st.sampled_from(["truncate", "flip", "overwrite", "inflate"]))
    if kind == "truncate":
        return name, data[: draw(st.integers(0, len(data) - 1))]
    if kind == "flip":
        b = bytearray(data)
        for pos, bit in draw(st.lists(st.tuples(st.integers(0, len(b) - 1), st.integers(0, 7)), min_size=1, max_size=8)):
            b[pos] ^= 1 << bit
        return name, bytes(b)
    if kind == "overwrite":
        val = draw(st.sampled_from([b"\xff\xff\xff\x7f", b"\xff\xff", b"\x00\x00\x00\x00", b"\xff" * 8, b"\x80"]))
        pos = draw(st.integers(0, len(data) - 1))
        return name, (data[:pos] + val + data[pos + len(val):])[: len(data)]
    dims = [draw(SIZES) for _ in range(3)]
    try:
        return name, INFLATE[name](data, dims)
    except (struct.error, ValueError):   # a size the header field cannot hold
        return name, data


def _assert_one_line_naming(exc: BaseException, name: str) -> None:
    msg = str(exc)
    assert isinstance(exc, ScanError), f"{type(exc).__name__}: {msg}"
    assert "\n" not in msg and name in msg, msg


def _peak_mb(fn):
    """(result or the ScanError raised, peak traced heap in MB)."""
    tracemalloc.start()
    try:
        try:
            res = fn()
        except ScanError as exc:
            res = exc
        return res, tracemalloc.get_traced_memory()[1] / 2 ** 20
    finally:
        tracemalloc.stop()


# -- properties -----------------------------------------------------------------------------------
@FUZZ
@given(data=st.data())
def test_mutated_files_give_a_clean_result_or_one_error_naming_the_file(seeds, tmp_path_factory, data):
    name, raw = data.draw(mutated(seeds))
    folder = tmp_path_factory.mktemp("read")
    (folder / name).write_bytes(raw)
    res, peak = _peak_mb(lambda: load_scan(Scan(_scan_path(folder, name), "CT"), 16, 4, limits=LIMITS))
    if isinstance(res, Exception):
        _assert_one_line_naming(res, name)
    else:
        out, key, n = res
        assert out.shape[1:] == (16, 16) and 1 <= out.shape[0] <= 4 and n >= out.shape[0]
        assert np.isfinite(out).all() and out.min() >= 0 and out.max() <= 1
    assert peak < PEAK_MB, f"{name}: peak {peak:.0f} MB"
    shutil.rmtree(folder)


@pytest.fixture(scope="module")
def previous(tmp_path_factory):
    """A prepared dataset every prepare example starts over (overwrite=True)."""
    root = tmp_path_factory.mktemp("prev")
    np.save(root / "good.npy", np.random.default_rng(1).normal(size=(12, 12, 3)).astype(np.float32))
    prepare_cases([Case(id="good", split="train", labels=["A"], scans=[Scan(str(root / "good.npy"), "CT")])],
                  root / "out", size=8, depth=2, workers=1)
    return root


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


@FUZZ
@given(data=st.data(), strict=st.booleans())
def test_prepare_over_mutated_files_reports_them_and_never_damages_the_previous_output(
        seeds, previous, tmp_path_factory, data, strict):
    name, raw = data.draw(mutated(seeds))
    work = tmp_path_factory.mktemp("prep")
    shutil.copytree(previous / "out", work / "out")
    before = _snapshot(work / "out")
    (work / name).write_bytes(raw)
    cases = [Case(id="good", labels=["A"], scans=[Scan(str(previous / "good.npy"), "CT")]),
             Case(id="fuzzed", labels=["B"], scans=[Scan(_scan_path(work, name), "MRI")])]
    try:
        report = prepare_cases(cases, work / "out", size=8, depth=2, workers=1, strict=strict, overwrite=True,
                               limits=LIMITS)
    except ScanError as exc:
        assert strict
        _assert_one_line_naming(exc, name)
        assert _snapshot(work / "out") == before
    else:
        assert report.cases_out in (1, 2) and report.cases_in == 2
        if report.cases_out == 1:
            (skip,) = report.skipped_scans
            assert name in skip["file"] and skip["case"] == "fuzzed" and "\n" not in skip["reason"]
        assert len(PreparedData(work / "out")) == report.cases_out
    assert not [p for p in (work / "out").iterdir() if p.name.startswith(".") or p.name.endswith(".tmp")]
    shutil.rmtree(work)


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-3, 3) | st.floats(allow_nan=False) | st.text(max_size=6),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=6)
CASE_KEYS = ["id", "scans", "labels", "icd10", "split", "anatomy", "patient", "meta", "bogus"]
SCAN_KEYS = ["path", "paths", "modality", "anatomy", "plane", "is_3d", "key_slice", "id", "entry", "bogus"]


@st.composite
def manifest_lines(draw) -> list[bytes]:
    lines = []
    for i in range(draw(st.integers(0, 4))):
        rec = {"id": f"c{i}", "scans": [{"path": "good.npy", "modality": "CT"}], "labels": ["A"], "split": "train"}
        for _ in range(draw(st.integers(0, 3))):
            how = draw(st.sampled_from(["case", "scan", "drop", "dup", "raw"]))
            if how == "case":
                rec[draw(st.sampled_from(CASE_KEYS))] = draw(JSON_VALUES)
            elif how == "scan" and isinstance(rec.get("scans"), list) and rec["scans"] and isinstance(rec["scans"][0], dict):
                rec["scans"][0][draw(st.sampled_from(SCAN_KEYS))] = draw(JSON_VALUES)
            elif how == "drop":
                rec.pop(draw(st.sampled_from(["id", "scans"])), None)
            elif how == "dup":
                rec["id"] = "c0"
            else:
                lines.append(draw(st.sampled_from([b"{", b"[1, 2]", b"\xff\xfe{}", b"null", b"# comment", b""])))
        lines.append(json.dumps(rec).encode())
    return lines


def _typed(case: Case) -> bool:
    strs = lambda xs: isinstance(xs, list) and all(isinstance(x, str) and x for x in xs)  # noqa: E731
    return (isinstance(case.id, str) and strs(case.labels) and strs(case.icd10)
            and all(strs(s.paths) and s.paths for s in case.scans))


@FUZZ
@given(lines=manifest_lines())
def test_generated_manifests_are_read_typed_or_refused_with_every_problem(previous, tmp_path_factory, lines):
    from raddiag.data.adapters.manifest import load_manifest

    work = tmp_path_factory.mktemp("man")
    shutil.copy(previous / "good.npy", work / "good.npy")
    path = work / "m.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    try:
        result = load_manifest(path)
    except ManifestError as exc:
        assert exc.problems and all(re.match(rf"{re.escape(str(path))}(:\d+)?: \S", p) for p in exc.problems)
        assert all("\n" not in p for p in exc.problems)
    else:
        assert result.cases and all(_typed(c) for c in result.cases)
        assert len({c.id for c in result.cases}) == len(result.cases)
        try:
            report = prepare_cases(result.cases, work / "out", size=8, depth=2, workers=1,
                                   pre_skipped=result.skipped, limits=LIMITS)
        except ValueError as exc:   # e.g. every scan skipped: one message, nothing written
            assert "no usable case" in str(exc) and not (work / "out").exists()
        else:
            assert report.cases_out >= 1 and len(PreparedData(work / "out")) == report.cases_out
    shutil.rmtree(work)

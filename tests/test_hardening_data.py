"""Issue 13, data layer: one test per finding (bounded memory, manifest schema, prepared store,
overwrites, NaN), each failing before the fix. The fuzz suite is tests/test_fuzz_data.py."""
from __future__ import annotations

import json
import struct
import tracemalloc

import numpy as np
import pytest

from raddiag.data.case import Case, Scan, read_manifest
from raddiag.data.errors import InputTooLarge, ScanError
from raddiag.data.preprocess import load_scan, preprocess_volume
from raddiag.data.readers import read_file
from raddiag.data.schema import ManifestError
from raddiag.data.store import PreparedData, prepare_cases
from raddiag.data.volume import Limits, parse_count


def _peak_mb(fn) -> float:
    """Peak Python + numpy heap (tracemalloc tracks numpy buffers) while ``fn`` runs, in MB."""
    tracemalloc.start()
    try:
        fn()
    except Exception:
        pass
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak / 2 ** 20


def _nifti_declaring(path, shape, data_bytes=b"\0" * 4096):
    """A tiny .nii whose header declares ``shape`` float32 (the file holds only ``data_bytes``)."""
    import nibabel as nib

    hdr = nib.Nifti1Header()
    hdr.set_data_shape(shape)
    hdr.set_data_dtype(np.float32)
    raw = hdr.binaryblock + b"\0" * 4   # 348-byte header + extension flag; data at offset 352
    path.write_bytes(raw + data_bytes)
    return path


def _png_declaring(path, w, h):
    """A valid-looking PNG header (IHDR) for w x h 8-bit grey, with a tiny IDAT: a pixel bomb."""
    import zlib

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
                     + chunk(b"IEND", b""))
    return path


# -- finding 1: memory follows the output, the declared size is bounded ---------------------
def test_declared_size_over_the_bound_is_refused_before_any_allocation(tmp_path):
    nii = _nifti_declaring(tmp_path / "huge.nii", (4000, 4000, 40))      # 2.5 GB declared, 4 KB on disk
    with pytest.raises(InputTooLarge, match="huge.nii: the header declares 640,000,000 voxels"):
        read_file(nii, Limits(max_voxels=10 ** 8))
    assert _peak_mb(lambda: read_file(nii, Limits(max_voxels=10 ** 8))) < 5
    png = _png_declaring(tmp_path / "big.png", 9000, 9000)               # 81 M pixels
    with pytest.raises(InputTooLarge, match="big.png: .*81,000,000 pixels per slice"):
        read_file(png)                                                     # the default bound (64 M)
    bomb = _png_declaring(tmp_path / "bomb.png", 13000, 13000)            # over PIL's bomb limit too
    with pytest.raises(InputTooLarge, match="bomb.png: .*decompression-bomb limit"):
        read_file(bomb)
    assert max(_peak_mb(lambda: read_file(png)), _peak_mb(lambda: read_file(bomb))) < 5
    np.lib.format.open_memmap(tmp_path / "big.npy", "w+", np.float32, (100, 100, 30)).flush()
    with pytest.raises(InputTooLarge, match="big.npy: .*300,000 voxels"):
        read_file(tmp_path / "big.npy", Limits(max_voxels=299_999))
    assert read_file(tmp_path / "big.npy", Limits(max_voxels=300_000)).shape == (30, 100, 100)
    assert Limits.of("64M", "1G") == Limits() and parse_count("2k") == 2048
    with pytest.raises(ValueError, match="positive count"):
        parse_count("-5")


def test_truncated_header_inflated_file_fails_before_allocating(tmp_path):
    """Under the bound but bigger than the file: refused from the header, nothing allocated."""
    nii = _nifti_declaring(tmp_path / "cut.nii", (1000, 1000, 50))       # 200 MB declared
    with pytest.raises(ScanError, match="cut.nii: truncated: the header declares 200,000,000 bytes"):
        read_file(nii)
    assert _peak_mb(lambda: read_file(nii)) < 5


def test_gzip_nifti_truncated_fails_on_the_first_missing_slice(tmp_path):
    import gzip

    import nibabel as nib

    vol = np.random.default_rng(0).normal(size=(64, 64, 40)).astype(np.float32)
    nib.save(nib.Nifti1Image(vol, np.eye(4)), tmp_path / "v.nii.gz")
    raw = gzip.decompress((tmp_path / "v.nii.gz").read_bytes())
    (tmp_path / "cut.nii.gz").write_bytes(gzip.compress(raw[: 352 + 64 * 64 * 4 * 10 + 100]))   # 10 slices
    with pytest.raises(ScanError, match=r"cut.nii.gz: slice 1[0-9] cannot be read"):
        load_scan(Scan(str(tmp_path / "cut.nii.gz"), "CT"), 16, 40)


def test_preprocessing_memory_follows_the_output_not_the_input(tmp_path):
    """A 512 x 512 x 400 float32 NPY (400 MB) prepared to 32 x 32 x 8: the peak heap is a few
    slices, where reading the whole array would take its full size."""
    big = np.lib.format.open_memmap(tmp_path / "ct.npy", "w+", np.float32, (512, 512, 400))
    big[:, :, ::50] = np.random.default_rng(0).normal(size=(512, 512, 8)).astype(np.float32)
    big.flush()
    del big
    scan = Scan(str(tmp_path / "ct.npy"), "CT")
    out = []
    peak = _peak_mb(lambda: out.append(load_scan(scan, 32, 8)))
    assert out and out[0][0].shape == (8, 32, 32) and out[0][2] == 400
    assert peak < 40, f"{peak:.0f} MB for a 400 MB scan"


def test_streaming_preprocess_matches_the_whole_array_computation():
    """Independent check: scale the whole kept array then resize (torch on the full array)."""
    import torch
    import torch.nn.functional as F

    vol = np.random.default_rng(1).normal(50, 30, (37, 41, 29)).astype(np.float32)
    out, key = preprocess_volume(vol, 16, 8, window=(20, 90), key_slice=36)
    kept = np.clip(vol[np.floor(np.arange(0, 37, 37 / 8)).astype(int)[:8]], 20, 90)
    scaled = (kept - kept.min()) / (kept.max() - kept.min())
    ref = F.interpolate(torch.from_numpy(scaled)[:, None], size=(16, 16), mode="bilinear",
                        align_corners=False)[:, 0].clamp(0, 1).numpy()
    assert np.allclose(out, ref, atol=1e-5) and key == 7


# -- findings 3 and 4: the manifest schema ----------------------------------------------------
def _manifest(tmp_path, lines, name="m.jsonl"):
    p = tmp_path / name
    p.write_text("\n".join(lines) + "\n")
    return p


def test_manifest_problems_all_reported_with_line_and_field(tmp_path):
    ok = {"path": "a.png", "modality": "CT"}
    lines = [json.dumps(x) for x in [
        {"id": "a", "scans": "x"},
        {"id": "b", "scans": [42]},
        {"id": "c", "scans": [ok], "labels": 5},
        {"id": "d", "scans": [ok], "labels": [1, None]},
        {"id": ["x"], "scans": [ok]},
        {"id": "f", "scans": [{"path": None, "modality": "CT"}]},
        {"id": "a", "scans": [ok]},
        {"id": "g", "scans": [ok], "split": "training"},
        {"scans": [ok]},
    ]]
    with pytest.raises(ManifestError) as e:
        list(read_manifest(_manifest(tmp_path, lines)))
    msg = str(e.value)
    for want in ["m.jsonl:1: scans: expected a non-empty list of scan objects, got str \"x\"",
                 "m.jsonl:2: scans[0]: expected an object with 'path' and 'modality', got int 42",
                 "m.jsonl:3: labels: expected a string or a list of non-empty strings, got int 5",
                 "m.jsonl:4: labels: expected a string or a list of non-empty strings, got list [1, null]",
                 "m.jsonl:5: id: expected a non-empty string, got list [\"x\"]",
                 "m.jsonl:6: scans[0].path: expected a non-empty string, got null",
                 "m.jsonl:7: id: duplicate case id 'a' (first at line 1)",
                 "m.jsonl:8: split: expected one of train, val, test or null, got str \"training\"",
                 "m.jsonl:9: id: required"]:
        assert want in msg
    assert len(e.value.problems) == 9


def test_manifest_empty_non_utf8_and_icd_string(tmp_path):
    from raddiag.data.adapters.manifest import load_manifest

    with pytest.raises(ManifestError, match="holds no cases"):
        load_manifest(_manifest(tmp_path, ["# only a comment", ""]))
    bad = tmp_path / "latin.jsonl"
    bad.write_bytes(b'{"id": "a", "scans": [{"path": "x.png", "modality": "CT"}]}\n{"id": "caf\xe9"}\n')
    with pytest.raises(ManifestError, match=r"latin.jsonl:2: not valid UTF-8 \(byte 0xe9 at column 12\)"):
        load_manifest(bad)
    one = _manifest(tmp_path, [json.dumps({"id": "a", "scans": [{"path": "x.png", "modality": "CT"}],
                                           "icd10": "J93", "labels": "Pneumothorax"})], "one.jsonl")
    (case,) = load_manifest(one).cases
    assert case.icd10 == ["J93"] and case.labels == ["Pneumothorax"]      # one code, not J, 9, 3


def test_prepare_refuses_empty_input_and_duplicate_ids(tmp_path):
    with pytest.raises(ValueError, match="no cases to prepare"):
        prepare_cases([], tmp_path / "p", size=8, depth=2, workers=1)
    dup = [Case(id="x", scans=[Scan("a.npy", "CT")]), Case(id="x", scans=[Scan("b.npy", "CT")])]
    with pytest.raises(ValueError, match="duplicate case ids .*'x'"):
        prepare_cases(dup, tmp_path / "p", size=8, depth=2, workers=1)
    assert not (tmp_path / "p").exists()


def test_complex_npy_is_rejected_not_truncated_to_its_real_part(tmp_path):
    np.save(tmp_path / "c.npy", (np.ones((8, 8, 2)) + 1j).astype(np.complex64))
    with pytest.raises(ScanError, match="c.npy: holds complex values"):
        read_file(tmp_path / "c.npy")


# -- findings 5, 6, 7: the prepared store --------------------------------------------------------
def _cases(tmp_path, n=3, value=None):
    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        arr = rng.normal(size=(12, 12, 3)).astype(np.float32) if value is None else np.full((12, 12, 3), value)
        np.save(tmp_path / f"s{i}.npy", arr.astype(np.float32))
        out.append(Case(id=f"c{i}", split="train", labels=["A"], scans=[Scan(str(tmp_path / f"s{i}.npy"), "CT")]))
    return out


def test_manifest_key_slice_and_is_3d_must_fit_the_file(tmp_path):
    """A key slice past the volume's end is not clamped to the last slice (dropped, with a note),
    and ``is_3d: false`` on a volume is not ignored (the scan is skipped with the reason)."""
    cases = _cases(tmp_path, n=3)
    cases[0].scans[0].key_slice = 7          # the file holds 3 slices
    cases[1].scans[0].is_3d = False
    cases[2].scans[0].key_slice = 2
    report = prepare_cases(cases, tmp_path / "out", size=8, depth=4, workers=1)
    reasons = {s["case"]: s["reason"] for s in report.skipped_scans}
    assert list(reasons) == ["c1"] and "is_3d is false but the file holds 3 slices" in reasons["c1"]
    assert any("s0.npy: key_slice 7 is outside the scan's 3 slice(s) (0..2): dropped" in n for n in report.notes)
    rec = {r["id"]: r for r in PreparedData(tmp_path / "out").records}
    assert rec["c0"]["scans"][0]["store"]["key"] == -1     # kept, without a key slice
    assert rec["c2"]["scans"][0]["store"]["key"] == 2


def _snapshot(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_prepared_store_errors_name_the_file(tmp_path):
    out = tmp_path / "p"
    prepare_cases(_cases(tmp_path), out, size=8, depth=2, workers=1)
    good = _snapshot(out)
    (out / "slices.f16").write_bytes(good["slices.f16"][:-10])
    with pytest.raises(ValueError, match=r"slices.f16: holds .* bytes, meta.json declares .*truncated"):
        PreparedData(out)
    (out / "slices.f16").write_bytes(good["slices.f16"])
    (out / "cases.jsonl").write_bytes(good["cases.jsonl"][:-30])
    with pytest.raises(ValueError, match=r"cases.jsonl:3: not valid JSON"):
        PreparedData(out)
    (out / "cases.jsonl").write_bytes(good["cases.jsonl"].split(b"\n", 1)[1])   # a whole line lost
    with pytest.raises(ValueError, match=r"cases.jsonl: holds 2 cases, meta.json declares 3"):
        PreparedData(out)
    (out / "cases.jsonl").write_bytes(good["cases.jsonl"])
    (out / "meta.json").write_text('{"format_version": 1, "size": 8,')
    with pytest.raises(ValueError, match=r"meta.json: not valid JSON"):
        PreparedData(out)
    (out / "meta.json").write_text('{"format_version": 1, "size": "8", "depth": 2, "n_slices": 6}')
    with pytest.raises(ValueError, match=r"meta.json: size: expected a positive integer"):
        PreparedData(out)
    # red team: meta.json nested too deeply raised RecursionError; a slice range that is a string, or
    # a negative count, raised TypeError or read another scan's slices
    (out / "meta.json").write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(ValueError, match=r"meta.json: not valid JSON here \(nested too deeply"):
        PreparedData(out)
    (out / "meta.json").write_bytes(good["meta.json"])
    for store in ({"start": "0", "n": 2}, {"start": 2, "n": -2}, [0, 2]):
        rec = json.loads(good["cases.jsonl"].split(b"\n", 1)[0])
        rec["scans"][0]["store"] = store
        (out / "cases.jsonl").write_bytes(json.dumps(rec).encode() + b"\n" + good["cases.jsonl"].split(b"\n", 1)[1])
        with pytest.raises(ValueError, match=r"cases.jsonl: case .* points at slices .* outside"):
            PreparedData(out)


def test_prepare_over_a_prepared_dataset_needs_overwrite_and_failures_leave_it_untouched(tmp_path):
    out = tmp_path / "p"
    prepare_cases(_cases(tmp_path), out, size=8, depth=2, workers=1)
    before = _snapshot(out)
    with pytest.raises(FileExistsError, match="--overwrite"):
        prepare_cases(_cases(tmp_path), out, size=16, depth=2, workers=1)
    bad = _cases(tmp_path) + [Case(id="gone", scans=[Scan(str(tmp_path / "missing.npy"), "CT")])]
    with pytest.raises(ScanError, match="missing.npy"):
        prepare_cases(bad, out, size=16, depth=2, workers=1, strict=True, overwrite=True)
    assert _snapshot(out) == before                        # untouched, and no slices.f16.tmp / temp folder
    prepare_cases(_cases(tmp_path), out, size=16, depth=2, workers=1, overwrite=True)
    assert PreparedData(out).size == 16 and sorted(p.name for p in out.iterdir()) == sorted(before)
    with pytest.raises(ScanError):                         # a new folder: nothing left behind at all
        prepare_cases(bad, tmp_path / "new", size=8, depth=2, workers=1, strict=True)
    assert not (tmp_path / "new").exists()


def test_nan_scans_are_skipped_at_prepare_time_and_an_all_nan_dataset_fails_there(tmp_path):
    cases = _cases(tmp_path)
    nan = np.random.default_rng(1).normal(size=(12, 12, 3)).astype(np.float32)
    nan[5, 5, 2] = np.inf
    np.save(tmp_path / "inf.npy", nan)
    cases[0].scans.append(Scan(str(tmp_path / "inf.npy"), "CT"))
    report = prepare_cases(cases, tmp_path / "p", size=8, depth=4, workers=1)
    assert report.skipped_scans == [{"case": "c0", "file": str(tmp_path / "inf.npy"),
                                     "reason": "contains NaN or infinite values (slice 2)"}]
    with pytest.raises(ValueError, match="no usable case: all 3 cases were skipped .*NaN"):
        prepare_cases(_cases(tmp_path / "p", value=np.nan), tmp_path / "q", size=8, depth=2, workers=1)
    assert not (tmp_path / "q").exists()


def test_non_finite_loss_stops_training_at_the_first_step_with_case_ids(tmp_path):
    from raddiag.config import preset
    from raddiag.training import train
    from test_training_data import make_tiny_data, tiny_overrides

    data = make_tiny_data(tmp_path / "data", n_cases=8)
    sl = np.memmap(data / "slices.f16", dtype=np.float16, mode="r+")
    sl[:] = np.nan                                          # what prepare now refuses: poison the store
    sl.flush()
    del sl
    cfg = preset("tiny", tiny_overrides(**{"train.epochs": 2}))
    with pytest.raises(FloatingPointError, match=r"training loss is nan at epoch 1, step 1; cases of the batch: "):
        train(data, tmp_path / "run", cfg, progress=False)
    assert not (tmp_path / "run").exists()     # the folder it created held no checkpoint: removed
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("the user's")
    with pytest.raises(FloatingPointError):
        train(data, tmp_path / "mine", cfg, progress=False)
    assert (tmp_path / "mine" / "notes.txt").read_text() == "the user's"   # a folder it did not create stays


def test_hostile_length_fields_do_not_allocate_the_declared_size(tmp_path):
    """Found by the fuzz suite: a DICOM element (or NPY header) length of 2 GB made the parser
    allocate 2 GB before finding the file short."""
    from test_readers import _dicom

    data = bytearray(open(_dicom(tmp_path / "ok.dcm", np.arange(64).reshape(8, 8)), "rb").read())
    i = data.find(b"\x02\x00\x01\x00OB\x00\x00")
    data[i + 8: i + 12] = b"\xff\xff\xff\x7f"
    (tmp_path / "long.dcm").write_bytes(bytes(data))
    with pytest.raises(ScanError, match="long.dcm"):
        read_file(tmp_path / "long.dcm")
    assert _peak_mb(lambda: read_file(tmp_path / "long.dcm")) < 5
    npy = bytearray((tmp_path / "ok.dcm").read_bytes()[:0]) + b"\x93NUMPY\x02\x00" + struct.pack("<I", 2 ** 31)
    (tmp_path / "long.npy").write_bytes(bytes(npy) + b"{" * 100)
    with pytest.raises(ScanError, match="long.npy"):
        read_file(tmp_path / "long.npy")
    assert _peak_mb(lambda: read_file(tmp_path / "long.npy")) < 5


def test_gzip_nifti_extension_length_does_not_allocate_the_declared_size(tmp_path):
    """A .nii.gz whose header extension declares 2 GB made the gzip reader allocate 2 GB (the
    plain .nii was clamped to the file size; a gzip stream's size is not known in advance)."""
    import gzip

    import nibabel as nib

    nib.save(nib.Nifti1Image(np.zeros((4, 5, 3), np.float32), np.eye(4)), tmp_path / "x.nii")
    raw = bytearray((tmp_path / "x.nii").read_bytes())
    raw[348] = 1                                    # "extensions follow"
    struct.pack_into("<f", raw, 108, 352 + 16.0)    # data after one 16-byte extension
    body = bytes(raw[:352]) + struct.pack("<ii", 2 ** 31 - 8, 0) + b"\0" * 8 + bytes(raw[352:])
    (tmp_path / "ext.nii.gz").write_bytes(gzip.compress(body))
    with pytest.raises(ScanError, match="ext.nii.gz: cannot be read"):
        read_file(tmp_path / "ext.nii.gz")
    assert _peak_mb(lambda: read_file(tmp_path / "ext.nii.gz")) < 5


def test_values_near_the_float32_limit_scale_without_nan(tmp_path):
    """Found by the fuzz suite: a min-max range over 3.4e38 overflowed float32 into NaN."""
    vol = np.zeros((8, 8, 2), np.float32)
    vol[0, 0, 0], vol[1, 1, 1] = 3e38, -3e38
    np.save(tmp_path / "wide.npy", vol)
    out, _, _ = load_scan(Scan(str(tmp_path / "wide.npy"), "CT"), 8, 2)
    assert np.isfinite(out).all() and out.max() == 1.0 and out.min() == 0.0
    assert abs(float(out[0, 4, 4]) - 0.5) < 1e-6        # zero sits half-way between -3e38 and 3e38


def test_cli_prepare_bounds_overwrite_and_manifest_problems(tmp_path, capsys):
    from raddiag.cli import main

    np.save(tmp_path / "a.npy", np.random.default_rng(0).normal(size=(20, 20, 3)).astype(np.float32))
    np.save(tmp_path / "b.npy", np.random.default_rng(1).normal(size=(20, 20)).astype(np.float32))
    man = _manifest(tmp_path, [json.dumps({"id": "a", "scans": [{"path": "a.npy", "modality": "CT"}]}),
                               json.dumps({"id": "b", "scans": [{"path": "b.npy", "modality": "X-ray"}]})])
    args = ["data", "prepare", str(man), "--format", "manifest", "--out", str(tmp_path / "p"), "--size", "8",
            "--depth", "2", "--workers", "1"]
    assert main(args + ["--max-voxels", "1000"]) == 0                # a.npy (1,200 voxels) skipped
    report = (tmp_path / "p" / "report.txt").read_text()
    assert "a.npy: the header declares 1,200 voxels" in report and "--max-voxels" in report
    capsys.readouterr()
    import raddiag.data.adapters

    def unread(*a, **k):
        raise AssertionError("the source was read before --out was refused")
    with pytest.MonkeyPatch.context() as mp:       # new user: refused only after 7.5 s of reading
        mp.setattr(raddiag.data.adapters, "load_source", unread)
        assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "holds a prepared dataset already; pass --overwrite" in err
    assert main(args + ["--overwrite"]) == 0 and "cases: 2 prepared of 2" in (tmp_path / "p" / "report.txt").read_text()
    bad = _manifest(tmp_path, ['{"id": 1, "scans": []}', '{"id": "x", "scans": "x.npy"}'], "bad.jsonl")
    capsys.readouterr()
    assert main(["data", "prepare", str(bad), "--format", "manifest", "--out", str(tmp_path / "q")]) == 2
    err = capsys.readouterr().err
    assert "bad.jsonl:1: id: expected a non-empty string, got int 1" in err
    assert "bad.jsonl:1: scans: expected a non-empty list" in err and "bad.jsonl:2: scans: expected" in err
    assert "nothing was read: " in err and ":;" not in err                  # new user: "nothing was read:; ..."
    assert not (tmp_path / "q").exists()


def test_empty_label_string_means_no_label(tmp_path):
    """Found by the fuzz suite: "labels": "" gave the label "" (before the schema: no label)."""
    from raddiag.data.adapters.manifest import load_manifest

    man = _manifest(tmp_path, [json.dumps({"id": "a", "scans": [{"path": "x.png", "modality": "CT"}],
                                           "labels": "", "icd10": " "})])
    (case,) = load_manifest(man).cases
    assert case.labels == [] and case.icd10 == [] and case.is_normal


# -- a large 2D image: memory follows the output, the values do not change ---------------------
@pytest.mark.parametrize("shape", [(1000, 777), (8192, 300), (257, 8192), (2049, 513)])
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int32, np.float32])
def test_large_slice_resize_equals_the_full_frame_resize(shape, dtype):
    """resize_large_slice on the native array (windowed, MONOCHROME1-negated) against
    resize_slices on the whole float32 frame: bit-identical at 256 and 224, within float32
    rounding (1e-6 of the range) at the other sizes."""
    import functools

    import torch

    from raddiag.data.preprocess import _pixels, resize_large_slice, resize_slices

    rng = np.random.default_rng(sum(shape))
    x = (rng.normal(size=shape).astype(np.float32) if dtype == np.float32
         else rng.integers(0, np.iinfo(dtype).max, shape, dtype=dtype))
    lo, hi = (float(v) for v in np.percentile(x, [10, 90]))
    for size in (256, 224, 64, 37):
        for pixels in (lambda a: a, functools.partial(_pixels, invert=True, lo=-hi, hi=-lo)):
            ref = resize_slices(pixels(x.astype(np.float32))[None], size)[0]
            got = resize_large_slice(x, size, pixels)
            if size in (256, 224):
                assert torch.equal(got, ref), (size, pixels)
            else:
                assert torch.allclose(got, ref, rtol=0, atol=1e-6 * float(ref.max() - ref.min()))


def test_large_16_bit_png_prepares_as_the_full_float32_frame_did(tmp_path):
    """A 4096 x 4096 uint16 PNG through load_scan (what data prepare and predict call) gives
    what the full float32 frame resized by resize_slices gave, windowed or not; the traced heap
    stays under the size of that float32 frame (64 MB)."""
    from PIL import Image

    from raddiag.data.preprocess import resize_slices

    rng = np.random.default_rng(3)
    img = rng.integers(0, 65535, (64, 64), dtype=np.uint16).repeat(64, 0).repeat(64, 1)
    img += rng.integers(0, 512, img.shape, dtype=np.uint16) // 2
    Image.fromarray(img).save(tmp_path / "big.png")
    scan = Scan(str(tmp_path / "big.png"), "CT")
    for window in (None, (10000.0, 50000.0)):
        frame = img.astype(np.float32) if window is None else np.clip(img.astype(np.float32), *window)
        ref = resize_slices(frame[None], 256).double()
        ref = ((ref - frame.min()) / (frame.max() - frame.min())).clamp(0, 1).float().numpy()
        out, key, n = load_scan(scan, 256, 1, window)
        assert n == 1 and out.shape == (1, 256, 256) and np.array_equal(out, ref)
    peak = _peak_mb(lambda: load_scan(scan, 256, 1))
    assert peak < 64, f"{peak:.0f} MB traced for a 4096 x 4096 16-bit PNG"


def test_a_boolean_array_and_a_far_from_square_image_are_kept_and_remarked_on(tmp_path):
    """New user: a boolean .npy (a mask?) and a 5000 x 3 image were prepared without a word."""
    from raddiag.data.case import Case, Scan
    from raddiag.data.store import prepare_cases

    rng = np.random.default_rng(0)
    np.save(tmp_path / "mask.npy", rng.random((40, 40)) > 0.5)
    np.save(tmp_path / "thin.npy", rng.integers(0, 1000, (5000, 3)))
    np.save(tmp_path / "fine.npy", rng.random((40, 30)).astype(np.float32))
    cases = [Case(id=n, scans=[Scan(paths=[str(tmp_path / f"{n}.npy")], modality="X-ray")], labels=["a"], split="train")
             for n in ("mask", "thin", "fine")]
    report = prepare_cases(cases, tmp_path / "p", size=16, depth=2, workers=1)
    notes = "\n".join(report.notes)
    assert "mask.npy: a boolean array (a segmentation mask?), read as 0 / 1" in notes
    assert "thin.npy: slices of 5000 x 3 pixels, stretched to 16 x 16 (1667:1 to 1:1)" in notes
    assert "fine.npy" not in notes and len(report.notes) >= 2

"""Readers (DICOM series / multi-frame / colour, images, NIfTI, NPY, NPZ) and case-folder discovery."""
import numpy as np
import pytest

from raddiag.data.case import Scan
from raddiag.data.discover import scans_in_folder
from raddiag.data.errors import ScanError
from raddiag.data.readers import read_file, read_scan

pydicom = pytest.importorskip("pydicom")


def _dicom(path, pixels, *, z=0.0, instance=1, series="1.2.3.4", slope=1.0, intercept=0.0,
           modality="CT", photometric="MONOCHROME2", frames=None, ipp=None, iop=(1, 0, 0, 0, 1, 0), spacing=None,
           uid=None):
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    meta.MediaStorageSOPInstanceUID = uid or generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.SeriesInstanceUID = series
    ds.Modality = modality
    ds.InstanceNumber = instance
    ds.ImagePositionPatient = [float(v) for v in ipp] if ipp is not None else [0.0, 0.0, float(z)]
    ds.ImageOrientationPatient = [float(v) for v in iop]
    if spacing is not None:
        ds.PixelSpacing = [float(v) for v in spacing]
    ds.RescaleSlope = slope
    ds.RescaleIntercept = intercept
    arr = np.asarray(pixels)
    if photometric == "RGB":
        ds.set_pixel_data(arr.astype(np.uint8), photometric_interpretation="RGB", bits_stored=8)
    else:
        ds.set_pixel_data(arr.astype(np.uint16), photometric_interpretation=photometric, bits_stored=12)
    ds.save_as(path, enforce_file_format=True)
    return str(path)


def test_dicom_series_sorted_by_position_with_rescale(tmp_path):
    folder = tmp_path / "series"
    folder.mkdir()
    # slice k holds value k; written in shuffled order with instance numbers that lie
    order = [3, 0, 4, 1, 2]
    for n, k in enumerate(order):
        _dicom(folder / f"f{n}.dcm", np.full((6, 5), k + 10), z=-2.5 * k, instance=n + 1,
               slope=2.0, intercept=-1024)
    vol = read_file(folder)
    assert vol.shape == (5, 6, 5)
    # z decreases with k, so sorting along the normal (+z) gives k = 4, 3, 2, 1, 0
    assert vol[:, 0, 0].tolist() == [2 * (k + 10) - 1024 for k in (4, 3, 2, 1, 0)]
    files = sorted(str(p) for p in folder.iterdir())
    assert np.array_equal(read_scan(Scan(files, "CT")), vol)   # a list of files is a series too


def test_dicom_multiframe_monochrome1_and_rgb(tmp_path):
    frames = np.stack([np.full((4, 4), v) for v in (1, 2, 3)])
    vol = read_file(_dicom(tmp_path / "mf.dcm", frames, slope=0.5))
    assert vol.shape == (3, 4, 4) and vol[:, 0, 0].tolist() == [0.5, 1.0, 1.5]
    inv = read_file(_dicom(tmp_path / "m1.dcm", np.array([[0, 100], [50, 100]]), photometric="MONOCHROME1"))
    assert inv[0].tolist() == [[100, 0], [50, 0]]
    rgb = np.zeros((4, 4, 3)); rgb[..., 0] = 255
    grey = read_file(_dicom(tmp_path / "rgb.dcm", rgb, photometric="RGB"))
    assert grey.shape == (1, 4, 4) and np.allclose(grey, 0.299 * 255, atol=0.01)


def test_dicom_corrupt_and_truncated_files_name_the_file(tmp_path):
    good = _dicom(tmp_path / "good.dcm", np.arange(64).reshape(8, 8))
    data = open(good, "rb").read()
    (tmp_path / "trunc.dcm").write_bytes(data[: len(data) - 40])
    (tmp_path / "junk.dcm").write_bytes(b"not a dicom file at all" * 10)
    (tmp_path / "empty.dcm").write_bytes(b"")
    for name in ("trunc.dcm", "junk.dcm", "empty.dcm"):
        with pytest.raises(ScanError) as e:
            read_file(tmp_path / name)
        assert name in str(e.value)


def test_images_rgb_multiframe_nifti_npy_npz_and_bad_inputs(tmp_path):
    from PIL import Image
    import nibabel as nib

    rgb = np.zeros((5, 7, 3), np.uint8); rgb[..., 1] = 200
    Image.fromarray(rgb).save(tmp_path / "c.png")
    img = read_file(tmp_path / "c.png")
    assert img.shape == (1, 5, 7) and abs(img.mean() - 0.587 * 200) < 1.5
    pages = [Image.fromarray(np.full((4, 4), v, np.uint8)) for v in (10, 20, 30)]
    pages[0].save(tmp_path / "m.tif", save_all=True, append_images=pages[1:])
    assert read_file(tmp_path / "m.tif")[:, 0, 0].tolist() == [10, 20, 30]
    nib.save(nib.Nifti1Image(np.random.rand(6, 5, 4).astype(np.float32), np.eye(4)), tmp_path / "v.nii.gz")
    assert read_file(tmp_path / "v.nii.gz").shape == (4, 6, 5)
    np.savez(tmp_path / "m.npz", train_images=np.random.rand(3, 4, 5, 6))
    assert read_file(f"{tmp_path / 'm.npz'}#train_images/2").shape == (4, 5, 6)
    with pytest.raises(ScanError, match="out of range"):
        read_file(f"{tmp_path / 'm.npz'}#train_images/9")
    with pytest.raises(ScanError, match="has no array 'val_images'"):
        read_file(f"{tmp_path / 'm.npz'}#val_images/0")
    np.save(tmp_path / "zero.npy", np.zeros((0, 4, 4)))
    with pytest.raises(ScanError, match="zero.npy: empty array"):
        read_file(tmp_path / "zero.npy")
    np.save(tmp_path / "ok.npy", np.random.rand(16, 16, 4))
    (tmp_path / "cut.npy").write_bytes((tmp_path / "ok.npy").read_bytes()[:300])
    with pytest.raises(ScanError, match="cut.npy: truncated"):
        read_file(tmp_path / "cut.npy")
    (tmp_path / "cut.png").write_bytes((tmp_path / "c.png").read_bytes()[:30])
    with pytest.raises(ScanError, match="cut.png: cannot be read"):
        read_file(tmp_path / "cut.png")
    with pytest.raises(ScanError, match="nope.nii.gz: file does not exist"):
        read_file(tmp_path / "nope.nii.gz")
    with pytest.raises(ScanError, match="unsupported file type"):
        (tmp_path / "x.txt").write_text("hi"); read_file(tmp_path / "x.txt")


def test_scans_in_folder_groups_series_and_needs_modality_for_other_files(tmp_path):
    case = tmp_path / "case"
    (case / "ct").mkdir(parents=True)
    for k in range(3):
        _dicom(case / "ct" / f"{k}.dcm", np.full((4, 4), k), z=k, series="1.1")
        _dicom(case / "ct" / f"mr{k}.dcm", np.full((4, 4), k), z=k, series="2.2", modality="MR")
    scans = scans_in_folder(case)
    assert sorted((s.modality, len(s.paths)) for s in scans) == [("CT", 3), ("MRI", 3)]
    np.save(case / "xr.npy", np.random.rand(8, 8))
    with pytest.raises(ValueError, match="xr.npy: .*pass it explicitly"):
        scans_in_folder(case)
    scans = scans_in_folder(case, modality="X-ray")
    assert sorted(s.modality for s in scans) == ["CT", "MRI", "X-ray"]
    assert sorted(s.id for s in scans if s.modality != "X-ray") == ["ct:1.1", "ct:2.2"]
    series = scans_in_folder(case / "ct")                      # a series folder given as the case
    assert sorted(s.id for s in series) == ["ct:1.1", "ct:2.2"]   # was ".:1.1": the folder went unnamed
    with pytest.raises(FileNotFoundError):
        scans_in_folder(tmp_path / "absent")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no scans found"):
        scans_in_folder(tmp_path / "empty")


@pytest.mark.parametrize("mode", ["I;16", "I;16B"])
def test_16_bit_images_keep_their_values_in_either_byte_order(tmp_path, mode):
    """A big-endian 16-bit TIFF ("I;16B") was read through convert("L"), which clips to 0..255."""
    from PIL import Image

    values = (np.arange(12 * 10).reshape(12, 10) * 500).astype(np.uint16)   # up to 59,500
    raw = values.astype(">u2" if mode.endswith("B") else "<u2").tobytes()
    Image.frombuffer(mode, (10, 12), raw, "raw", mode, 0, 1).save(tmp_path / "s.tif")
    assert Image.open(tmp_path / "s.tif").mode == mode
    got = read_file(tmp_path / "s.tif")
    assert got.dtype == np.float32 and np.array_equal(got[0], values.astype(np.float32))


# -- values that were wrong without a word ----------------------------------------------------
def test_complex_nifti_is_refused_not_read_as_its_real_part(tmp_path):
    import nibabel as nib

    data = (np.arange(60).reshape(4, 5, 3) + 1j * np.arange(60).reshape(4, 5, 3)[::-1]).astype(np.complex64)
    nib.save(nib.Nifti1Image(data, np.eye(4)), tmp_path / "c.nii")
    with pytest.raises(ScanError, match="c.nii: holds complex values"):
        read_file(tmp_path / "c.nii")


def test_a_four_slice_npy_whose_first_three_slices_match_keeps_its_fourth_slice(tmp_path):
    """[H, W, 4] with equal slices 0..2 was taken for grey RGBA and slice 3 dropped, whatever it held."""
    vol = np.zeros((6, 5, 4), np.float32)
    vol[..., 3] = np.arange(30).reshape(6, 5)   # padding slices first, the data last
    np.save(tmp_path / "v.npy", vol)
    got = read_file(tmp_path / "v.npy")
    assert got.shape == (4, 6, 5) and np.array_equal(got[3], vol[..., 3])
    rgba = np.dstack([vol[..., 3]] * 3 + [np.full((6, 5), 255.0)])   # grey RGBA, opaque: one image
    np.save(tmp_path / "g.npy", rgba)
    assert np.array_equal(read_file(tmp_path / "g.npy"), vol[None, ..., 3])


def test_float64_values_beyond_float32_are_refused_not_made_infinite(tmp_path):
    """1e300 became inf in the float32 cast: read_file returned inf, load_scan said 'NaN or infinite'."""
    from raddiag.data.preprocess import load_scan

    np.save(tmp_path / "big.npy", np.linspace(1e300, 2e300, 30).reshape(6, 5))
    with pytest.raises(ScanError, match="big.npy: slice 0 holds values beyond the float32 range"):
        read_file(tmp_path / "big.npy")
    with pytest.raises(ScanError, match="beyond the float32 range"):
        load_scan(Scan(str(tmp_path / "big.npy"), "CT"), 8, 1)


def _rewrite(path, change):
    ds = pydicom.dcmread(path)
    change(ds)
    ds.save_as(path)
    return path


def test_dicom_modality_lut_palette_colour_and_unusable_rescale(tmp_path):
    """A Modality LUT Sequence and a PALETTE COLOR lookup were ignored: the stored indices came
    out as the values. A RescaleSlope of 0 or NaN gave a 'constant' or 'NaN' error that hid why."""
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    def modality_lut(ds):
        del ds.RescaleSlope, ds.RescaleIntercept
        item = Dataset()
        item.LUTDescriptor, item.ModalityLUTType = [4, 0, 16], "HU"
        item.LUTData = np.array([100, 200, 300, 4000], np.uint16).tobytes()
        ds.ModalityLUTSequence = Sequence([item])

    lut = _rewrite(_dicom(tmp_path / "lut.dcm", [[0, 1], [2, 3]]), modality_lut)
    assert read_file(lut)[0].tolist() == [[100, 200], [300, 4000]]

    def palette(ds):
        ds.PhotometricInterpretation = "PALETTE COLOR"
        for n, level in enumerate((60000, 0, 0)):   # red, green, blue: index 1 is pure red
            ds.add_new(0x00281101 + n, "US", [4, 0, 16])
            ds.add_new(0x00281201 + n, "OW", np.array([0, level, 0, 0], np.uint16).tobytes())

    pal = _rewrite(_dicom(tmp_path / "pal.dcm", [[0, 1], [1, 2]]), palette)
    assert np.allclose(read_file(pal)[0], [[0, 0.299 * 60000], [0.299 * 60000, 0]], atol=0.1)

    for name, slope in (("zero.dcm", 0.0), ("nan.dcm", float("nan"))):
        with pytest.raises(ScanError, match=f"{name}: RescaleSlope {slope:g} is unusable"):
            read_file(_dicom(tmp_path / name, np.arange(16).reshape(4, 4), slope=slope))
    with pytest.raises(ScanError, match="huge.dcm: RescaleSlope 1e.40 / RescaleIntercept 0 take the pixel values beyond"):
        read_file(_dicom(tmp_path / "huge.dcm", np.arange(16).reshape(4, 4), slope=1e40))


_EXIF_ORIENTED = {1: lambda a: a, 2: np.fliplr, 3: lambda a: np.rot90(a, 2), 4: np.flipud, 5: lambda a: a.T,
                  6: lambda a: np.rot90(a, -1), 7: lambda a: np.rot90(a, 2).T, 8: lambda a: np.rot90(a, 1)}


def test_exif_orientation_is_honoured_or_refused(tmp_path):
    """A JPEG / PNG with an EXIF orientation tag came out as stored (a radiograph on its side); a
    non-square TIFF rotated by 90 degrees gave a slice of the wrong shape (Pillow decodes it wrongly)."""
    from PIL import Image

    pixels = np.arange(8 * 12, dtype=np.uint8).reshape(8, 12) * 2
    for o, oriented in _EXIF_ORIENTED.items():
        im = Image.fromarray(pixels)
        exif = im.getexif()
        exif[0x0112] = o
        im.save(tmp_path / f"o{o}.png", exif=exif)
        assert np.array_equal(read_file(tmp_path / f"o{o}.png")[0], oriented(pixels)), o
        square = np.ascontiguousarray(pixels[:, :8])
        Image.fromarray(square).save(tmp_path / f"o{o}.tif", exif=exif)   # Pillow orients a TIFF itself
        assert np.array_equal(read_file(tmp_path / f"o{o}.tif")[0], oriented(square)), o
    stripes = np.zeros((64, 96), np.uint8)
    stripes[:, :32] = 255
    im = Image.fromarray(stripes)
    exif = im.getexif()
    exif[0x0112] = 6
    im.save(tmp_path / "o6.jpg", exif=exif, quality=100)
    got = read_file(tmp_path / "o6.jpg")[0]
    assert got.shape == (96, 64) and np.abs(got - np.rot90(stripes, -1)).max() < 8
    im.save(tmp_path / "wide6.tif", exif=exif)
    with pytest.raises(ScanError, match="wide6.tif: EXIF orientation 6"):
        read_file(tmp_path / "wide6.tif")


def test_16_bit_colour_png_is_refused_not_cut_to_8_bits(tmp_path):
    """Pillow opens a 16-bit RGB or grey + alpha PNG as 8-bit RGB / RGBA: 40000 was read as 156."""
    import struct
    import zlib

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    for name, colour_type, channels in (("rgb16.png", 2, 3), ("la16.png", 4, 2)):
        pixels = np.full((4, 4, channels), 40000, ">u2")
        rows = b"".join(b"\0" + row.tobytes() for row in pixels)
        (tmp_path / name).write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 4, 4, 16, colour_type, 0, 0, 0))
                                      + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))
        with pytest.raises(ScanError, match=f"{name}: stores 16-bit .* samples, which Pillow cuts to 8 bits"):
            read_file(tmp_path / name)


def test_enhanced_multiframe_per_frame_rescale_is_applied(tmp_path):
    """Rescale slope / intercept in the per-frame functional groups were ignored: raw values came out."""
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    def per_frame(ds):
        del ds.RescaleSlope, ds.RescaleIntercept
        groups = []
        for k in range(3):
            pvt, group = Dataset(), Dataset()
            pvt.RescaleSlope, pvt.RescaleIntercept = k + 1, -5
            group.PixelValueTransformationSequence = Sequence([pvt])
            groups.append(group)
        ds.PerFrameFunctionalGroupsSequence = Sequence(groups)

    path = _rewrite(_dicom(tmp_path / "mf.dcm", np.full((3, 4, 4), 10)), per_frame)
    assert read_file(path)[:, 0, 0].tolist() == [5, 15, 25]


def test_a_dicom_series_mixing_orientations_or_monochrome1_is_refused(tmp_path):
    """A localizer series (slices in different planes) was stacked as one volume, sorted along
    normals that differ; a MONOCHROME1 slice in a MONOCHROME2 series was left uninverted."""
    planes, mixed = tmp_path / "planes", tmp_path / "mixed"
    planes.mkdir(), mixed.mkdir()
    _dicom(planes / "a.dcm", np.full((4, 4), 1), z=0)
    _dicom(planes / "b.dcm", np.full((4, 4), 2), z=1, iop=(0, 1, 0, 0, 0, 1))
    with pytest.raises(ScanError, match="planes: the slices of one DICOM series lie in 2 different planes"):
        read_file(planes)
    _dicom(mixed / "a.dcm", np.full((4, 4), 10), z=0, photometric="MONOCHROME1")
    _dicom(mixed / "b.dcm", np.full((4, 4), 20), z=1)
    with pytest.raises(ScanError, match="mixed: .* MONOCHROME1 .* and others not"):
        read_file(mixed)


def test_dicom_series_with_unparsable_position_or_instance_number_names_the_file(tmp_path):
    """'abcde' in ImagePositionPatient (or 'z' in InstanceNumber) escaped as a bare ValueError."""
    from raddiag.data.discover import scans_in_folder

    for tag, value, bad in (("ImagePositionPatient", [0.0, 0.0, 8.125], b"8.125"), ("InstanceNumber", 8, b"8 ")):
        folder = tmp_path / tag
        folder.mkdir()
        for k in range(3):
            # fixed UIDs: a random one held "8.125" once in a while (twice in the file: meta and dataset)
            _dicom(folder / f"{k}.dcm", np.full((4, 4), k), ipp=(0.0, 0.0, 7.125 + k), instance=7 + k,
                   uid=f"1.2.3.4.5.{k}")
        if tag == "InstanceNumber":
            for k in range(3):
                _rewrite(folder / f"{k}.dcm", lambda ds: delattr(ds, "ImagePositionPatient"))
        data = (folder / "1.dcm").read_bytes()
        assert data.count(bad) == 1
        (folder / "1.dcm").write_bytes(data.replace(bad, b"abcde"[:len(bad)]))
        for read in (lambda: read_file(folder), lambda: read_scan(scans_in_folder(folder)[0])):
            with pytest.raises(ScanError, match=f"1.dcm: {tag}"):
                read()


def test_nifti_data_offset_past_the_end_says_so(tmp_path):
    """A vox_offset of 1e9 in a small file gave 'the file holds -999,999,408' bytes."""
    import struct

    import nibabel as nib

    nib.save(nib.Nifti1Image(np.zeros((4, 5, 3), np.float32), np.eye(4)), tmp_path / "x.nii")
    raw = bytearray((tmp_path / "x.nii").read_bytes())
    struct.pack_into("<f", raw, 108, 1e9)
    (tmp_path / "far.nii").write_bytes(bytes(raw))
    with pytest.raises(ScanError, match=r"far.nii: truncated: .* from byte 1,000,000,000 \(vox_offset\), the file holds 0$"):
        read_file(tmp_path / "far.nii")


def test_dicom_pixel_data_longer_or_shorter_than_the_header_declares_is_refused(tmp_path):
    """Rows 3 over a stored 4 x 4 image, or NumberOfFrames 1 over 3 stored frames, was read
    silently as the first rows x columns pixels."""
    rows = _rewrite(_dicom(tmp_path / "rows.dcm", np.arange(16).reshape(4, 4)), lambda ds: setattr(ds, "Rows", 3))
    with pytest.raises(ScanError, match=r"rows.dcm: the pixel data holds 32 bytes, the header declares 24"):
        read_file(rows)
    frames = _rewrite(_dicom(tmp_path / "frames.dcm", np.full((3, 4, 4), 7)), lambda ds: setattr(ds, "NumberOfFrames", 1))
    with pytest.raises(ScanError, match=r"frames.dcm: the pixel data holds 96 bytes, the header declares 32"):
        read_file(frames)
    short = _rewrite(_dicom(tmp_path / "short.dcm", np.arange(16).reshape(4, 4)),
                     lambda ds: setattr(ds, "PixelData", ds.PixelData[:-4]))
    with pytest.raises(ScanError, match=r"short.dcm: .* holds 28 bytes, the header declares 32 .*truncated"):
        read_file(short)
    odd = _dicom(tmp_path / "odd.dcm", np.full((3, 3, 3), 9), photometric="RGB")   # 27 bytes + 1 pad byte
    assert read_file(odd).shape == (1, 3, 3)


def test_dicom_slices_sharing_one_position_are_refused_naming_the_files(tmp_path):
    """A file copied twice ('IM1 copy.dcm') or two acquisitions in one series were stacked in
    file-name order: a volume with a repeated or interleaved slice."""
    import shutil

    copies, twice = tmp_path / "copies", tmp_path / "twice"
    copies.mkdir(), twice.mkdir()
    for k in range(3):
        _dicom(copies / f"IM{k}.dcm", np.full((4, 4), k), z=k)
        _dicom(twice / f"a{k}.dcm", np.full((4, 4), k), z=k)
        _dicom(twice / f"b{k}.dcm", np.full((4, 4), 10 + k), z=k)
    shutil.copy(copies / "IM1.dcm", copies / "IM1 copy.dcm")
    with pytest.raises(ScanError, match=r"copies: 2 slices .* same position 1 .*\(IM1 copy.dcm, IM1.dcm\): "
                                        r"they are identical copies"):
        read_file(copies)
    with pytest.raises(ScanError, match=r"twice: 2 slices .* same position 0 .*\(a0.dcm, b0.dcm\): they differ"):
        read_scan(scans_in_folder(twice)[0])


def test_a_dicom_series_mixing_grey_and_colour_slices_is_refused(tmp_path):
    """An RGB slice in a grey series was made grey and stacked with the others."""
    _dicom(tmp_path / "a.dcm", np.full((4, 4), 100), z=0)
    _dicom(tmp_path / "b.dcm", np.full((4, 4, 3), 100), z=1, photometric="RGB")
    _dicom(tmp_path / "c.dcm", np.full((4, 4), 100), z=2)
    with pytest.raises(ScanError, match="some slices of one DICOM series are colour .* and others grey"):
        read_file(tmp_path)


def test_scans_in_folder_says_what_it_skips_and_follows_linked_folders(tmp_path):
    """README.txt, Thumbs.db, .DS_Store, a hidden PNG, a broken link were dropped without a word;
    a linked series folder was not searched (its scan lost); a lower-case 'dicomdir' was read as
    a scan (an error: no Modality tag)."""
    import os

    from raddiag.data.errors import SkippedFilesWarning

    real, case = tmp_path / "elsewhere" / "series", tmp_path / "case"
    real.mkdir(parents=True), case.mkdir()
    for k in range(2):
        _dicom(real / f"{k}.dcm", np.full((4, 4), k), z=k)
    _dicom(case / "own.dcm", np.full((4, 4), 5), series="9.9")
    for name in ("README.txt", "Thumbs.db", ".DS_Store", ".hidden.png"):
        (case / name).write_bytes(b"x")
    (case / "dicomdir").write_bytes(bytes(128) + b"DICM")
    os.symlink(real, case / "linked")
    os.symlink(case, case / "loop")
    os.symlink(tmp_path / "gone.png", case / "dead.png")
    with pytest.warns(SkippedFilesWarning) as w:
        scans = scans_in_folder(case)
    assert sorted(len(s.paths) for s in scans) == [1, 2]   # the linked series is found
    said = str(w[0].message)
    for name in ("README.txt", "Thumbs.db", ".DS_Store", ".hidden.png", "dicomdir", "loop", "dead.png"):
        assert name in said
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "notes.txt").write_text("x")
    with pytest.raises(ValueError, match=r"junk: no scans found .*skipped 1 file\(s\): not a scan type: notes.txt"):
        scans_in_folder(tmp_path / "junk")
    deep = tmp_path / "deep"
    (deep.joinpath(*["d"] * 300)).mkdir(parents=True)
    np.save(deep.joinpath(*["d"] * 300, "x.npy"), np.ones((4, 4)))
    assert len(scans_in_folder(deep, modality="CT")) == 1


def test_a_dicom_series_folder_says_what_it_skips_and_an_empty_dcm_says_empty(tmp_path):
    """A series folder (a manifest's scan path) dropped a sub-folder of slices and other files
    without a word; an empty .dcm in a case folder gave pydicom's 'DICM prefix is missing'."""
    from raddiag.data.errors import SkippedFilesWarning

    _dicom(tmp_path / "a.dcm", np.full((4, 4), 1), z=0)
    (tmp_path / "more").mkdir()
    _dicom(tmp_path / "more" / "b.dcm", np.full((4, 4), 2), z=1)
    with pytest.warns(SkippedFilesWarning, match=r"skipped 1 file\(s\): sub-folder \(not searched\): more"):
        assert read_file(tmp_path).shape == (1, 4, 4)
    (tmp_path / "more" / "empty.dcm").write_bytes(b"")
    with pytest.raises(ScanError, match=r"empty.dcm: file is empty \(0 bytes\)"):
        scans_in_folder(tmp_path / "more")


def test_dicom_series_without_positions_sharing_an_instance_number_is_refused(tmp_path):
    """Without ImagePositionPatient the slices are sorted by InstanceNumber; two with one number
    were stacked in file-name order."""
    for k, number in enumerate((1, 2, 2, 3)):
        _rewrite(_dicom(tmp_path / f"f{k}.dcm", np.full((4, 4), k), instance=number),
                 lambda ds: delattr(ds, "ImagePositionPatient"))
    with pytest.raises(ScanError, match=r"no position and the same InstanceNumber 2 \(f1.dcm, f2.dcm\)"):
        read_file(tmp_path)


def test_multiframe_files_of_one_series_are_scans_of_their_own(tmp_path):
    """Ultrasound clips (multi-frame files) sharing a SeriesInstanceUID were concatenated into one
    volume, and a multi-frame file's frames were stacked before or after the single-frame files."""
    _dicom(tmp_path / "clip1.dcm", np.full((3, 4, 4), 7), modality="US")
    _dicom(tmp_path / "clip2.dcm", np.full((5, 4, 4), 3), modality="US", z=1)
    scans = scans_in_folder(tmp_path)
    assert sorted((s.id, len(read_scan(s))) for s in scans) == [("clip1.dcm", 3), ("clip2.dcm", 5)]
    _dicom(tmp_path / "still.dcm", np.full((4, 4), 1), modality="US", z=2)
    with pytest.raises(ScanError, match=r"holds multi-frame files \(clip1.dcm: 3 frames, clip2.dcm: 5 frames\)"):
        read_file(tmp_path)


def test_a_gap_in_a_dicom_series_is_warned_of(tmp_path):
    """Slices at 0, 1, 2, 5, 6 mm (files missing) were read as evenly spaced without a word."""
    from raddiag.data.errors import InputWarning

    for k, z in enumerate((0, 1, 2, 5, 6)):
        _dicom(tmp_path / f"f{k}.dcm", np.full((4, 4), k), z=z)
    with pytest.warns(InputWarning, match="a gap of 3 mm between slices f2.dcm and f3.dcm .* 1 mm apart"):
        assert read_file(tmp_path).shape == (5, 4, 4)


@pytest.mark.parametrize("implicit", [True, False])
def test_a_bare_dicom_data_set_without_preamble_or_extension_is_read(tmp_path, implicit):
    """Older exports write the data set alone (no 128-byte preamble, no "DICM", no file meta, often
    no extension): it was skipped in a case folder and refused as "not a readable DICOM file"."""
    from pydicom.dataset import Dataset
    from pydicom.filebase import DicomFileLike
    from pydicom.filewriter import write_dataset
    from pydicom.uid import generate_uid

    ds = Dataset()
    ds.SOPClassUID, ds.SOPInstanceUID = "1.2.840.10008.5.1.4.1.1.2", generate_uid()
    ds.Modality, ds.SeriesInstanceUID = "CT", generate_uid()
    ds.Rows, ds.Columns, ds.SamplesPerPixel, ds.PhotometricInterpretation = 4, 5, 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.RescaleSlope, ds.RescaleIntercept = 2, -10
    ds.PixelData = (np.arange(20, dtype=np.uint16) * 7).tobytes()
    case = tmp_path / "case"
    case.mkdir()
    with open(case / "IM0001", "wb") as f:
        fp = DicomFileLike(f)
        fp.is_little_endian, fp.is_implicit_VR = True, implicit
        write_dataset(fp, ds)
    assert (case / "IM0001").read_bytes()[:2] == b"\x08\x00"
    (case / "notes").write_bytes(b"\x08\x00 not DICOM at all" * 4)   # a first element no data set has
    with pytest.warns(UserWarning, match="notes"):
        scans = scans_in_folder(case)
    assert [s.modality for s in scans] == ["CT"]
    got = read_scan(scans[0])
    assert got.shape == (1, 4, 5)
    assert np.array_equal(got[0].ravel(), np.arange(20) * 7 * 2 - 10)


def test_a_series_where_some_slices_lack_a_position_says_it_orders_by_instance_number(tmp_path):
    """Slices ordered by position, except that one lacks it: all fell back to InstanceNumber
    order without a word."""
    import pydicom

    from raddiag.data.errors import InputWarning

    paths = [_dicom(tmp_path / f"{k}.dcm", np.full((4, 4), k), z=-k, instance=k + 1) for k in range(3)]
    ds = pydicom.dcmread(paths[1])
    del ds.ImagePositionPatient
    ds.save_as(paths[1])
    with pytest.warns(InputWarning, match="1 of 3 slices .* no ImagePositionPatient .* InstanceNumber"):
        got = read_scan(Scan(paths=paths, modality="CT"))
    assert got[:, 0, 0].tolist() == [0, 1, 2]      # InstanceNumber order (by position it is 2, 1, 0)


def test_a_4d_nifti_is_refused_with_how_to_give_one_volume(tmp_path):
    """New user: a 4D NIfTI was refused with "expected a 2D or 3D array" and nothing on what to do;
    the hint's own recipe must give a file the reader takes."""
    import nibabel as nib

    path = tmp_path / "fmri.nii.gz"
    img = nib.Nifti1Image(np.random.default_rng(0).random((6, 5, 4, 3), dtype=np.float32), np.eye(4))
    nib.save(img, str(path))
    with pytest.raises(ScanError, match=r"got shape .*4D: several volumes .* img\.slicer\[\.\.\., 0\]") as err:
        read_file(path)
    assert str(path) in str(err.value)
    nib.save(nib.load(str(path)).slicer[..., 0], str(tmp_path / "first.nii.gz"))     # the hint, followed
    assert read_file(tmp_path / "first.nii.gz").shape == (4, 6, 5)


def test_two_series_missing_positions_in_one_folder_are_each_said(tmp_path):
    """Red team: two series of a folder, each with a slice without ImagePositionPatient, gave one
    warning naming neither (one message hid the other)."""
    from raddiag.data.errors import collect_input_warnings

    for prefix, uid in (("A", "1.2.3.1"), ("B", "1.2.3.2")):
        for k in range(3):
            _dicom(tmp_path / f"{prefix}{k}.dcm", np.full((4, 4), k), z=k, instance=k + 1, series=uid)
        ds = pydicom.dcmread(tmp_path / f"{prefix}1.dcm")
        del ds.ImagePositionPatient
        ds.save_as(tmp_path / f"{prefix}1.dcm")
    with collect_input_warnings(show=False) as said:
        for s in scans_in_folder(tmp_path):
            read_scan(s)
    said = [str(w) for w in said]
    assert len(said) == 2 and "(A0.dcm, ...)" in said[0] and "(B0.dcm, ...)" in said[1]

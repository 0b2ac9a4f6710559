"""Peak heap and time of preparing one scan: the whole array read then preprocessed, against
the slice-by-slice path ``load_scan`` that ``data prepare`` and ``predict`` use (issue 13).

    python benchmarks/scan_memory.py [--hw 512 --slices 200 --size 256 --depth 32]

Prints, per format (NPY, NIfTI, NIfTI.gz, a DICOM series), the peak traced heap (tracemalloc,
numpy buffers included) and the seconds of both paths, side by side in one run.
"""
from __future__ import annotations

import argparse
import tempfile
import time
import tracemalloc
from pathlib import Path


def _measure(fn):
    tracemalloc.start()
    t = time.perf_counter()
    fn()
    dt = time.perf_counter() - t
    peak = tracemalloc.get_traced_memory()[1] / 2 ** 20
    tracemalloc.stop()
    return peak, dt


def make_scans(folder: Path, hw: int, d: int) -> dict:
    import nibabel as nib
    import numpy as np

    from raddiag.data.case import Scan

    vol = (np.random.default_rng(0).normal(0, 300, (hw, hw, d)) + 40).astype(np.float32)
    np.save(folder / "v.npy", vol)
    nib.save(nib.Nifti1Image(vol, np.eye(4)), folder / "v.nii")
    nib.save(nib.Nifti1Image(vol, np.eye(4)), folder / "v.nii.gz")
    series = folder / "dicom"
    series.mkdir()
    _dicom_series(series, vol[..., : min(d, 64)])
    return {"npy": Scan(str(folder / "v.npy"), "CT"), "nifti": Scan(str(folder / "v.nii"), "CT"),
            "nifti.gz": Scan(str(folder / "v.nii.gz"), "CT"), "dicom series (64)": Scan(str(series), "CT")}


def _dicom_series(folder: Path, vol) -> None:
    import numpy as np
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    for k in range(vol.shape[-1]):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta, ds.SeriesInstanceUID, ds.Modality = meta, "1.2.3", "CT"
        ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
        ds.ImagePositionPatient, ds.ImageOrientationPatient = [0.0, 0.0, float(k)], [1.0, 0, 0, 0, 1.0, 0]
        ds.RescaleSlope, ds.RescaleIntercept = 1.0, -1024.0
        ds.set_pixel_data(np.clip(vol[..., k] + 1024, 0, 4095).astype(np.uint16),
                          photometric_interpretation="MONOCHROME2", bits_stored=12)
        ds.save_as(folder / f"{k:03d}.dcm", enforce_file_format=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hw", type=int, default=512)
    ap.add_argument("--slices", type=int, default=200)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--depth", type=int, default=32)
    args = ap.parse_args(argv)

    import torch

    from raddiag.data.preprocess import load_scan, preprocess_volume
    from raddiag.data.readers import read_scan

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        scans = make_scans(Path(tmp), args.hw, args.slices)
        print(f"scan {args.hw} x {args.hw} x {args.slices} float32 -> {args.size} x {args.size} x {args.depth}")
        print(f"{'format':<20}{'whole MB':>10}{'sliced MB':>11}{'whole s':>9}{'sliced s':>10}")
        for name, scan in scans.items():
            whole = _measure(lambda: preprocess_volume(read_scan(scan), args.size, args.depth))
            sliced = _measure(lambda: load_scan(scan, args.size, args.depth))
            print(f"{name:<20}{whole[0]:>10.0f}{sliced[0]:>11.0f}{whole[1]:>9.2f}{sliced[1]:>10.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Input warnings of a read (a DICOM series with a slice missing, a scan unlike the training data)
go with what the read made: the prepared dataset's report, a prediction's ``warnings`` (the Python
result, its to_dict, the ``predict --out`` rows, the service's answer). Each is shown once, as one
``raddiag: warning:`` line, with worker processes or without, and when saliency reads the file again."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from raddiag.cli import main
from raddiag.serving.sample import sample_png
from test_predict import write_dicom_series

GAP = "a gap of 2 mm between slices IM0003 and IM0001 of one DICOM series, whose slices are 1 mm apart elsewhere"


def gap_series(folder: Path) -> Path:
    """A CT series at 1, 2, 4, 5 mm: the slice at 3 mm (IM0002) is missing."""
    Path(write_dicom_series(folder, n=5)[2]).unlink()
    return folder


def warning_lines(err: str) -> list[str]:
    """The warning lines of stderr, from "raddiag: warning:" on (a progress bar may share a line)."""
    return [line[line.index("raddiag: warning:"):] for line in err.replace("\r", "\n").splitlines()
            if "raddiag: warning:" in line]


@pytest.mark.parametrize("workers", ["1", "2"])
def test_prepare_shows_and_reports_a_missing_slice_the_same_with_any_workers(tmp_path, capfd, workers):
    """With worker processes the warning came as Python's source-line warning inside the progress
    bar, and in neither case was it in report.json / report.txt."""
    series = gap_series(tmp_path / "dcm" / "series")
    recs = [{"id": "dcm", "labels": ["A"], "scans": [{"path": str(series), "modality": "CT"}]}]
    for i in range(9):            # over 8 scans: --workers 2 starts worker processes
        (tmp_path / f"x{i}.png").write_bytes(sample_png(24, seed=i))
        recs.append({"id": f"c{i}", "labels": ["A" if i % 2 else "B"],
                     "scans": [{"path": f"x{i}.png", "modality": "X-ray"}]})
    (tmp_path / "cases.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    out = tmp_path / "prep"
    assert main(["data", "prepare", str(tmp_path / "cases.jsonl"), "--format", "manifest", "--out", str(out),
                 "--size", "16", "--depth", "4", "--workers", workers]) == 0
    err = capfd.readouterr().err
    assert warning_lines(err) == [f"raddiag: warning: {series}: {GAP}: are files missing? The volume is read "
                                  "as if they were evenly spaced"]
    assert "InputWarning" not in err and ".py:" not in err           # no Python source-line warning
    (got,) = json.loads((out / "report.json").read_text())["warnings"]
    assert got["case"] == "dcm" and got["file"] == str(series) and GAP in got["warning"]
    assert f"warnings (1):\n  case dcm: {series}: {GAP}" in (out / "report.txt").read_text()

"""Input warnings of a read (a DICOM series with a slice missing, a scan unlike the training data)
go with what the read made: the prepared dataset's report, a prediction's ``warnings`` (the Python
result, its to_dict, the ``predict --out`` rows, the service's answer). Each is shown once, as one
``raddiag: warning:`` line, with worker processes or without, and when saliency reads the file again."""
from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import pytest

from raddiag.cli import main
from raddiag.serving.sample import make_tiny_run, sample_png
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


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    d = tmp_path_factory.mktemp("warn-run")
    make_tiny_run(d / "run")
    return d / "run"


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


def test_prediction_carries_its_warnings_and_says_each_once_with_saliency(run, tmp_path):
    import raddiag

    case = tmp_path / "case"
    gap_series(case / "series")
    (case / "notes.txt").write_text("x")
    model = raddiag.load(run)
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        res = model.predict(str(case), saliency=True)
    assert res.saliency                                         # the series was read again for the maps
    assert len(res.warnings) == 2 and GAP in res.warnings[1]
    assert res.warnings[0] == f"{case}: skipped 1 file(s): not a scan type: notes.txt"
    assert res.to_dict()["warnings"] == res.warnings == json.loads(json.dumps(res.to_dict()))["warnings"]
    messages = [str(w.message) for w in said]
    assert [messages.count(w) for w in res.warnings] == [1, 1]            # the gap was said twice before


def test_a_scan_unlike_the_training_data_is_in_the_result(run, tmp_path):
    import raddiag

    shutil.copytree(run, tmp_path / "run")
    (tmp_path / "run" / "intensity.json").write_text(json.dumps(
        {"modalities": {"CT": {"kinds": {"hu": 8}, "min": -1024.0, "max": 1500.0}}}))
    (tmp_path / "ct.png").write_bytes(sample_png(32, seed=4))
    with pytest.warns(UserWarning, match="unlike anything it learnt from"):
        res = raddiag.load(tmp_path / "run").predict(str(tmp_path / "ct.png"), modality="CT")
    (w,) = res.warnings
    assert w.startswith(f"{tmp_path / 'ct.png'} (CT): its values span") and "unlike anything it learnt from" in w


def test_cli_out_rows_carry_warnings_and_saliency_says_them_once(run, tmp_path, capsys):
    case = gap_series(tmp_path / "case")
    assert main(["predict", str(run), str(case), "--out", str(tmp_path / "preds.jsonl")]) == 0
    (row,) = [json.loads(line) for line in (tmp_path / "preds.jsonl").read_text().splitlines()]
    assert len(row["warnings"]) == 1 and row["warnings"][0].startswith(f"{case}: {GAP}")
    assert warning_lines(capsys.readouterr().err) == [f"raddiag: warning: {row['warnings'][0]}"]
    assert main(["predict", str(run), str(case), "--saliency", str(tmp_path / "maps"), "--json"]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)[0]["warnings"] == row["warnings"]
    assert warning_lines(err) == [f"raddiag: warning: {row['warnings'][0]}"]      # said twice before


@pytest.mark.parametrize("endpoint", ["/predict", "/embed"])
def test_service_answer_carries_warnings_naming_the_uploaded_file(run, tmp_path, endpoint):
    from fastapi.testclient import TestClient

    from raddiag.serving.app import create_app

    paths = write_dicom_series(tmp_path / "s", n=5)
    Path(paths[2]).unlink()
    files = [("files", (Path(p).name, Path(p).read_bytes())) for p in paths if Path(p).exists()]
    with TestClient(create_app(run)) as client:
        r = client.post(endpoint, files=files)
    assert r.status_code == 200, r.text
    gap = GAP.replace("IM0003", "IM0003.dcm").replace("IM0001", "IM0001.dcm")     # stored with a suffix
    assert r.json()["warnings"] == [f"upload: {gap}: are files missing? The volume is read as if they were "
                                    "evenly spaced"]
    assert str(tmp_path) not in r.text and "raddiag-upload-" not in r.text


def test_page_shows_warnings_as_text(tmp_path, chromium):
    """The web page lists the answer's warnings, escaped (a file name is the user's)."""
    import re
    import subprocess

    from test_serving import CHROME_FLAGS, HOSTILE, _tags

    page = (Path(__file__).parents[1] / "src/raddiag/serving/static/index.html").read_text()
    answer = {"case_id": "c", "thresholds": "validation", "scans": [], "ranked": [], "saliency": [],
              "warnings": [f"{HOSTILE}: {GAP}"]}
    html = page.replace("</body>", f"<script>render({json.dumps(answer)});</script></body>")
    (tmp_path / "page.html").write_text(html)
    cmd = [chromium, *CHROME_FLAGS, f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=3000",
           "--dump-dom", (tmp_path / "page.html").as_uri()]
    dom = subprocess.run(cmd, capture_output=True, text=True, timeout=120).stdout
    dom = re.sub(r"<script>.*?</script>", "", dom, flags=re.S)
    assert 'class="warnings"' in dom and GAP in dom and "y&lt;b&gt;.png" in dom, dom[-2000:]
    assert not [t for t in _tags(dom) if t[0] == "b" or any(k.startswith("on") for k, _ in t[1])]


def test_an_embedding_carries_the_warnings_of_its_reads_as_a_prediction_does(run, tmp_path):
    import raddiag

    case, clean = tmp_path / "case", tmp_path / "clean"
    gap_series(case / "series")
    clean.mkdir()
    (clean / "cxr.png").write_bytes(sample_png(32, seed=1))
    model = raddiag.load(run)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        emb, pred = model.embed(str(case)), model.predict(str(case))
        both = model.embed([str(case), str(clean)], modality="X-ray")
    assert emb.warnings == pred.warnings and any(GAP in w for w in emb.warnings)
    assert emb.to_dict()["warnings"] == emb.warnings
    assert both[0].warnings == emb.warnings and both[1].warnings == []   # each case's own, in a batch


def test_a_case_that_fails_keeps_the_warnings_said_while_finding_its_scans(run, tmp_path):
    """Red team: PNGs beside a DICOM series were skipped and said; the series then failed to read
    and the case's error row carried none of it."""
    import raddiag
    from raddiag.serving.predict import CaseError

    case = tmp_path / "bad"
    (bad,) = write_dicom_series(case, n=1)
    Path(bad).write_bytes(Path(bad).read_bytes()[:-200])         # its pixel data cut short
    (case / "view.png").write_bytes(sample_png(16))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = raddiag.load(run).predict([str(case), str(tmp_path / "bad")])
    assert all(isinstance(r, CaseError) for r in res)
    assert any("view.png" in w for w in res[0].warnings), (res[0].error, res[0].warnings)
    assert res[0].to_dict()["warnings"] == res[0].warnings

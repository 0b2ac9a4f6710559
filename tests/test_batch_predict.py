"""`raddiag predict RUN --manifest cases.jsonl --out preds.jsonl` (raddiag.serving.batch):
one row per case, error rows, resume after an interruption, a prepared dataset as input."""
from __future__ import annotations

import json

import numpy as np
import pytest

from raddiag.cli import main
from raddiag.serving import batch
from raddiag.serving.predict import Predictor
from raddiag.serving.sample import make_tiny_run, sample_png

N_OK = 7


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A run with validation thresholds and a manifest of 9 cases: 7 readable (1-3 scans, 2D and
    3D), one whose file is missing and one with an unknown modality."""
    d = tmp_path_factory.mktemp("batch")
    make_tiny_run(d / "run", thresholds=[0.5, 0.45, 0.55, 0.5])
    rng = np.random.default_rng(0)
    rows = []
    for i in range(N_OK):
        (d / f"c{i}").mkdir()
        scans = []
        for j in range(1 + i % 3):
            if (i + j) % 2:
                np.save(d / f"c{i}" / f"s{j}.npy", rng.random((24, 24, 3 + j)).astype(np.float32))
                scans.append({"path": f"c{i}/s{j}.npy", "modality": "CT"})
            else:
                (d / f"c{i}" / f"s{j}.png").write_bytes(sample_png(32, seed=100 * i + j))
                scans.append({"path": f"c{i}/s{j}.png", "modality": "X-ray"})
        rows.append({"id": f"case{i}", "scans": scans, "labels": ["Pneumonia"] if i % 2 else []})
    rows.insert(3, {"id": "gone", "scans": [{"path": "nowhere/x.png", "modality": "X-ray"}]})
    rows.insert(6, {"id": "oddmod", "scans": [{"path": "c0/s0.png", "modality": "Sonar"}]})
    (d / "cases.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return d


@pytest.fixture(scope="module")
def pred(files):
    return Predictor.load(files / "run")


def _run(pred, files, out, **kw):
    return batch.predict_to_jsonl(pred, batch.manifest_cases(pred, files / "cases.jsonl"), out, batch_size=3, **kw)


def _rows(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def full(files, pred, tmp_path_factory):
    out = tmp_path_factory.mktemp("full") / "preds.jsonl"
    s = _run(pred, files, out, top=2)
    return out, s


def test_one_row_per_case_in_order_with_error_rows(full, files, pred):
    out, s = full
    rows = _rows(out)
    assert (s.written, s.skipped, s.errors, s.dropped_partial) == (9, 0, 2, False)
    assert [r["case_id"] for r in rows] == [json.loads(x)["id"] for x in (files / "cases.jsonl").read_text().splitlines()]
    errors = {r["case_id"]: r for r in rows if "error" in r}
    assert set(errors) == {"gone", "oddmod"} and all(set(r) == {"case_id", "error", "warnings", "made_by"} for r in errors.values())
    assert "nowhere/x.png" in errors["gone"]["error"] and "does not exist" in errors["gone"]["error"]
    assert "Sonar" in errors["oddmod"]["error"] and "cases.jsonl:7" in errors["oddmod"]["error"]
    # each row is the case as predicted on its own: top 2 ranked, and every class over its threshold
    for r in rows:
        if "error" in r:
            continue
        i = int(r["case_id"][4:])
        alone = pred.predict([str(p) for p in sorted((files / f"c{i}").iterdir())],
                             modality=["CT" if p.suffix == ".npy" else "X-ray"
                                       for p in sorted((files / f"c{i}").iterdir())], top=4)
        assert [f["name"] for f in r["ranked"]] == [f.name for f in alone.ranked[:2]]
        assert r["ranked"][0]["probability"] == pytest.approx(alone.ranked[0].probability, abs=1e-5)
        assert set(r["positive"]) == {f.name for f in alone.ranked if f.above_threshold}
        assert len(r["scans"]) == 1 + i % 3


def test_resume_after_an_interruption_gives_the_same_file(full, files, pred, tmp_path, monkeypatch):
    want = full[0].read_bytes()
    out = tmp_path / "preds.jsonl"
    calls = {"n": 0}
    real = Predictor.predict_batch

    def interrupted(self, *a, **kw):           # Ctrl-C during the third batch
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(self, *a, **kw)

    monkeypatch.setattr(Predictor, "predict_batch", interrupted)
    with pytest.raises(KeyboardInterrupt):
        _run(pred, files, out, top=2)
    monkeypatch.undo()
    assert len(_rows(out)) == 6
    s = _run(pred, files, out, top=2)
    assert (s.written, s.skipped, s.errors) == (3, 6, 2)
    assert out.read_bytes() == want


def test_resume_drops_a_cut_off_last_line_and_reads_only_the_cases_left(full, files, pred, tmp_path, monkeypatch):
    want = full[0].read_bytes()
    lines = want.splitlines(keepends=True)
    out = tmp_path / "preds.jsonl"
    out.write_bytes(b"".join(lines[:4]) + lines[4][:25])          # killed while writing row 5
    read = []
    real = batch.manifest_cases

    def counting(p, path):
        cases = real(p, path)
        for c in cases:
            c.read = (lambda f, cid: lambda: (read.append(cid), f())[1])(c.read, c.case_id)
        return cases

    monkeypatch.setattr(batch, "manifest_cases", counting)
    s = batch.predict_to_jsonl(pred, batch.manifest_cases(pred, files / "cases.jsonl"), out, batch_size=3, top=2)
    assert s.dropped_partial and (s.written, s.skipped) == (5, 4)
    assert out.read_bytes() == want
    ids = [json.loads(x)["case_id"] for x in lines]
    # batches [0-2] done: not read; [3-5] written in part: read whole (same numbers); the rest read
    assert read == ids[3:]


def test_retry_errors_and_a_damaged_middle_line(files, pred, tmp_path):
    out = tmp_path / "preds.jsonl"
    _run(pred, files, out, top=2)
    (files / "nowhere").mkdir()
    (files / "nowhere" / "x.png").write_bytes(sample_png(32, seed=3))
    try:
        s = _run(pred, files, out, top=2)                  # plain resume: nothing to do
        assert (s.written, s.skipped, s.errors) == (0, 9, 2)
        s = _run(pred, files, out, top=2, retry_errors=True)
        assert (s.written, s.errors) == (2, 1)
        rows = {r["case_id"]: r for r in _rows(out)}
        assert len(rows) == 9 and "ranked" in rows["gone"] and "error" in rows["oddmod"]
        # the retried row in its input place (red team: it was appended at the end)
        assert [r["case_id"] for r in _rows(out)] == [p.case_id for p in batch.manifest_cases(pred, files / "cases.jsonl")]
    finally:
        (files / "nowhere" / "x.png").unlink()
        (files / "nowhere").rmdir()
    text = out.read_text().splitlines()
    text[2] = text[2][:-5]
    out.write_text("\n".join(text) + "\n")
    with pytest.raises(ValueError, match=r"preds\.jsonl:3: not a prediction row"):
        _run(pred, files, out)


def test_cli_manifest_and_prepared_dataset(files, tmp_path, capsys):
    out = tmp_path / "p.jsonl"
    rc = main(["predict", str(files / "run"), "--manifest", str(files / "cases.jsonl"), "--out", str(out),
               "--batch-size", "4"])
    captured = capsys.readouterr()
    assert rc == 2 and "9 case(s) written" in captured.out and "2 error row(s)" in captured.out
    assert "predict" in captured.err                                   # the progress bar
    assert len(_rows(out)) == 9
    # a prepared dataset of the same manifest: every prepared case gets a row, ids as prepared
    data = tmp_path / "data"
    assert main(["data", "prepare", str(files / "cases.jsonl"), "--format", "manifest", "--out", str(data),
                 "--size", "32", "--depth", "4"]) == 0
    capsys.readouterr()
    out2 = tmp_path / "p2.jsonl"
    rc = main(["predict", str(files / "run"), "--data", str(data), "--out", str(out2), "--top", "1"])
    assert rc == 0, capsys.readouterr().err
    prepared = [json.loads(x)["id"] for x in (data / "cases.jsonl").read_text().splitlines()]
    rows = _rows(out2)
    assert [r["case_id"] for r in rows] == prepared and len(prepared) == N_OK
    assert all(len(r["ranked"]) == 1 and r["scans"][0]["used"] for r in rows)
    # scans named by their file, as --manifest names them (they were all 'scan0', 'scan1')
    by_manifest = {r["case_id"]: [x["id"] for x in r["scans"]] for r in _rows(out) if "scans" in r}
    assert all([x["id"] for x in r["scans"]] == by_manifest[r["case_id"]] for r in rows)


@pytest.mark.parametrize("argv, message", [
    (["CASE", "--manifest", "M"], "one of them; CASE and --manifest given"),
    (["--manifest", "M"], "give --out preds.jsonl"),
    (["--manifest", "M", "--out", "o.jsonl", "--modality", "CT"], "--modality applies to CASE"),
    (["--manifest", "M", "--out", "o.jsonl", "--split", "test"], "--split selects"),
    (["--manifest", "M", "--out", "o.jsonl", "--saliency", "s"], "--saliency is not available with --out"),
    ([], "none given"),
])
def test_cli_input_errors(files, tmp_path, capsys, argv, message):
    argv = [str(files / "cases.jsonl") if a == "M" else str(files / "c0") if a == "CASE" else
            str(tmp_path / a) if a.endswith(".jsonl") else a for a in argv]
    assert main(["predict", str(files / "run"), *argv]) == 2
    assert message in capsys.readouterr().err


# -- issue 27 item 7: a resumed file is never a mix of runs or options, nor counts a case twice ----
def test_resume_refuses_rows_of_another_run_or_other_options(full, files, pred, tmp_path):
    """Every row records what made it; rows of another run (same label count, other names and
    weights), another --top or other --classes are refused, naming what differs; the file is
    left as it was."""
    other = Predictor.load(make_tiny_run(tmp_path / "other", classes=["Normal", "Pituitary adenoma", "Gout",
                                                                      "Scurvy"], seed=1).root)
    out = tmp_path / "preds.jsonl"
    out.write_bytes(full[0].read_bytes())
    for who, kw, needle in ((other, {"top": 2}, "run "), (pred, {"top": 3}, "top 2 (now 3)"),
                            (pred, {"top": 2, "classes": ["Pneumonia", "Fracture"]}, "classes None (now ")):
        with pytest.raises(ValueError, match="rows come from another run or other options") as exc:
            _run(who, files, out, **kw)
        assert needle in str(exc.value) and str(out) in str(exc.value)
    assert out.read_bytes() == full[0].read_bytes()
    assert {json.dumps(r["made_by"]) for r in _rows(out)} == {json.dumps(batch.made_by(pred, 2))}
    legacy = tmp_path / "legacy.jsonl"                      # rows that do not say what made them
    legacy.write_text("".join(json.dumps({k: v for k, v in r.items() if k != "made_by"}) + "\n" for r in _rows(out)))
    with pytest.raises(ValueError, match="do not record what made them"):
        _run(pred, files, legacy, top=2)


def test_a_repeated_row_is_removed_and_the_count_is_true(full, files, pred, tmp_path, capsys):
    lines = full[0].read_bytes().splitlines(keepends=True)
    out = tmp_path / "preds.jsonl"
    out.write_bytes(b"".join(lines[:5] + [lines[1]] + lines[5:]))       # 10 rows for 9 cases
    s = _run(pred, files, out, top=2)
    assert out.read_bytes() == full[0].read_bytes()
    assert (s.written, s.skipped, s.duplicates) == (0, 9, 1)
    out.write_bytes(b"".join(lines + [lines[0]]))
    assert main(["predict", str(files / "run"), "--manifest", str(files / "cases.jsonl"), "--out", str(out),
                 "--top", "2", "--batch-size", "3"]) == 2                # its 2 error rows
    said = capsys.readouterr().out
    assert "0 case(s) written, 9 found there already (1 repeated row(s) of a case removed)" in said
    assert len(_rows(out)) == 9


def test_resume_refuses_rows_of_case_files_read_as_another_modality(files, tmp_path, capsys):
    """Red team: `predict RUN CASE ... --modality CT --out p.jsonl` then the same with --modality X-ray
    (or none) resumed the CT rows as done: the file mixed cases read as two modalities."""
    out, cases = tmp_path / "p.jsonl", [str(files / "c0"), str(files / "c2")]
    argv = ["predict", str(files / "run"), *cases, "--out", str(out), "--top", "2"]
    assert main([*argv, "--modality", "X-ray"]) == 0
    before = out.read_bytes()
    assert main([*argv, "--modality", "CT"]) == 2
    err = capsys.readouterr().err
    assert "rows come from another run or other options" in err and "modality" in err, err
    assert main(argv) == 2 and "modality" in capsys.readouterr().err
    assert out.read_bytes() == before
    assert main([*argv, "--modality", "X-ray"]) == 0 and "0 case(s) written, 2 found" in capsys.readouterr().out

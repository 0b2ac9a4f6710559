"""Issue 27 item 6 and the saliency part of item 4: outputs that replace earlier ones are built
beside them and put in place only when complete; a failure half-way leaves the old output whole."""
from __future__ import annotations

import pytest

from test_cli_errors import cases  # noqa: F401 - the fixture: a tiny run, case folders good1, good2, bad


def test_a_failed_saliency_overwrite_leaves_the_old_overlays(cases, tmp_path, monkeypatch):
    """The second of two maps fails: no overlay of this call lands (the first one was replaced
    already), the earlier ones stay as they were, nothing hidden is left; then a good call
    replaces them."""
    import raddiag.serving.saliency as sal
    from raddiag.serving.predict import Predictor

    pred = Predictor.load(cases / "run")
    two = [str(cases / "good1"), str(cases / "good2")]
    out = tmp_path / "sal"
    pred.predict(two, modality="X-ray", saliency=out, saliency_top_k=4)
    files = sorted(out.iterdir())
    assert len(files) == 2
    for f in files:
        f.write_bytes(b"an earlier model's overlay")
    real, calls = sal.overlay, []

    def overlay_then_fail(*a, **k):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("disk gone")
        return real(*a, **k)

    monkeypatch.setattr(sal, "overlay", overlay_then_fail)
    with pytest.raises(RuntimeError, match="disk gone"):
        pred.predict(two, modality="X-ray", saliency=out, saliency_top_k=4, overwrite=True)
    assert sorted(out.iterdir()) == files                     # no stage left either
    assert {f.read_bytes() for f in files} == {b"an earlier model's overlay"}
    monkeypatch.setattr(sal, "overlay", real)
    got = pred.predict(two, modality="X-ray", saliency=out, saliency_top_k=4, overwrite=True)
    assert sorted(out.iterdir()) == files and all(f.read_bytes().startswith(b"\x89PNG") for f in files)
    assert sorted(s["path"] for r in got for s in r.saliency) == [str(f) for f in files]


# -- curate export -------------------------------------------------------------------------------
CODES = {"Pneumothorax": "J93", "Hip dislocation": "S73", "Segond fracture": "S82", "Meningioma": "D32",
         "Appendicitis": "K35", "Renal cell carcinoma": "C64"}


def _suggest(names, top):
    """Each disorder its code with a clear lead; Meningioma's top score is low (ambiguous)."""
    return [[(CODES[n], n, 0.4 if n == "Meningioma" else 0.9)] for n in names]


@pytest.fixture
def work(tmp_path):
    from raddiag.curation.filter import run_filter
    from raddiag.curation.mapping import run_mapping
    from raddiag.curation.synth import make_records

    recs = make_records(tmp_path / "records", n_cases=12, size=8, n_normal=1)
    run_filter(recs, tmp_path / "w", rules=True)
    run_mapping(tmp_path / "w", suggester=_suggest)
    return {"records": recs, "work": tmp_path / "w"}


def _tree(folder):
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_failed_export_leaves_the_previous_export_whole(work, tmp_path, monkeypatch):
    """The disk fills up at the third scan: the previous export is as it was, nothing is left beside it."""
    import errno

    import raddiag.curation.export as export

    out = tmp_path / "ds"
    export.export_dataset(work["work"], out)
    before = _tree(out)
    real, n = export._write_image, []

    def full_disk(src, dst, link):
        n.append(1)
        if len(n) == 3:
            raise OSError(errno.ENOSPC, "No space left on device", str(dst))
        return real(src, dst, link)

    monkeypatch.setattr(export, "_write_image", full_disk)
    with pytest.raises(OSError, match="No space left"):
        export.export_dataset(work["work"], out)
    assert _tree(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds", "records", "w"]


def test_an_unreadable_npy_is_left_out_and_named(work, tmp_path):
    from raddiag.curation.export import export_dataset

    bad = work["records"] / "images" / "case003_0.npy"
    bad.write_bytes(bad.read_bytes()[:100])                     # truncated
    rep = export_dataset(work["work"], tmp_path / "ds")
    why = {d["case"]: d["reason"] for d in rep["dropped"]}
    assert "case003_0.npy: cannot be read" in why["case-003"]
    assert "case-003" in (tmp_path / "ds" / "meta" / "export_report.txt").read_text()
    assert rep["cases"] == 11 and not list(tmp_path.glob(".ds.*"))


def test_unreviewed_ambiguous_mappings_are_exported_with_a_warning(work, tmp_path, caplog):
    import csv

    from raddiag.curation.export import export_dataset

    rep = export_dataset(work["work"], tmp_path / "ds")
    assert rep["unreviewed_ambiguous"] == ["Meningioma"]
    warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any("ambiguous" in m and "Meningioma" in m and "mapping.csv" in m for m in warned), warned
    path = work["work"] / "map" / "mapping.csv"
    rows = list(csv.DictReader(path.open()))
    for r in rows:
        r["confirmed"] = "yes" if r["disorder"] == "Meningioma" else r["confirmed"]
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    assert export_dataset(work["work"], tmp_path / "ds")["unreviewed_ambiguous"] == []


def test_cases_whose_names_clean_alike_keep_a_figure_each(cases, tmp_path):
    """Red team: "case 1" and "case_1" (and "x#2", the second folder named x, beside a folder
    "x_2") had one file name; the second case's figure replaced the first's, both reported."""
    import shutil

    from raddiag.serving.predict import Predictor

    folders = []
    for name in ("case 1", "case_1"):
        shutil.copytree(cases / "good1", tmp_path / "in" / name)
        folders.append(str(tmp_path / "in" / name))
    got = Predictor.load(cases / "run").predict(folders, modality="X-ray", saliency=tmp_path / "sal")
    paths = [s["path"] for r in got for s in r.saliency]
    assert len(paths) == 2 and len(set(paths)) == 2
    assert sorted(str(p) for p in (tmp_path / "sal").iterdir()) == sorted(paths)


def test_figure_names_of_distinct_cases_or_classes_differ():
    """Over random names (Hypothesis): distinct case ids, or distinct class names, never give one
    file name; a name that is a file name already is kept as it is."""
    from hypothesis import given, settings
    from hypothesis import strategies as st

    from raddiag.serving.saliency import figure_name

    names = st.text(st.characters(codec="utf-8"), max_size=60)

    @settings(max_examples=300, deadline=None)
    @given(names, names, names)
    def check(a, b, cls):
        if a != b:
            assert figure_name(a, cls, 0, 1, 0, False) != figure_name(b, cls, 0, 1, 0, False)
            assert figure_name(cls, a, 0, 1, 0, True) != figure_name(cls, b, 0, 1, 0, True)
        name = figure_name(a, cls, 1, 2, 3, True)
        assert "/" not in name and "\0" not in name and len(name) <= 100

    check()
    assert figure_name("P001", "Pneumonia", 0, 1, 0, False) == "P001_Pneumonia.png"

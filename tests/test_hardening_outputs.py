"""Red-team cases of the files people open (issue 27): CSV cells a spreadsheet would run as a
formula, CSV files the project cannot read back, names matplotlib would read as math."""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from raddiag.csvfile import read_csv, sheet_cell, write_csv

FORMULAS = ['=HYPERLINK("http://x", "y")', "@SUM(A1:A9)", "+1+2", "-2+3", "\tTab first", "\rCR first",
            "'=already quoted", "''@twice", "=cmd|' /C calc'!A0"]
LONG = "Long title " + "x" * 200_000          # over csv's default field limit of 131,072 characters


def _raw_cells(path) -> list[str]:
    with open(path, newline="", encoding="utf-8") as f:
        return [c for row in csv.reader(f) for c in row]


def _no_formula(path) -> None:
    bad = [c[:40] for c in _raw_cells(path) if c[:1] in ("=", "+", "-", "@", "\t", "\r")
           and not c.lstrip("+-").replace(".", "", 1).isdigit()]
    assert not bad, f"{path.name}: cells a spreadsheet runs: {bad}"


@settings(max_examples=60, deadline=None)
@given(st.lists(st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"))
                .filter(lambda t: t == t.strip()), min_size=1, max_size=4))     # read_csv strips a cell
def test_any_text_reads_back_as_written_and_no_cell_is_a_formula(tmp_path_factory, cells):
    path = tmp_path_factory.mktemp("csv") / "t.csv"
    header = [f"c{i}" for i in range(len(cells))]
    write_csv(path, header, [cells, dict(zip(header, cells))])
    rows = read_csv(path)
    assert [[r[h] for h in header] for r in rows] == [cells] * 2
    _no_formula(path)


def test_numbers_stay_numbers_and_formulas_become_text():
    assert [sheet_cell(v) for v in ("-0.5", "+1e-3", "12", 3, -2.5)] == ["-0.5", "+1e-3", "12", 3, -2.5]
    assert [sheet_cell(v) for v in ("=1+2", "-x", "@a", "'=b")] == ["'=1+2", "'-x", "'@a", "''=b"]


def _curate_to_review(tmp_path, titles):
    """A curation work folder whose filter sent ``titles`` to review.csv (the model gave no answer)."""
    from test_curation_llm import FakeLLM

    from raddiag.curation.filter import run_filter

    records = tmp_path / "records"
    records.mkdir()
    for i, t in enumerate(titles):
        rec = {"id": f"c{i}", "articles": [t], "studies": [{"modality": "CT", "images": [{"path": f"i{i}.npy"}]}]}
        (records / f"c{i}.json").write_text(json.dumps(rec))
    llm = FakeLLM()
    llm.content = "I cannot tell."
    try:
        s = run_filter(records, tmp_path / "w", llm_url=llm.url, model="m", batch=4, timeout=5, retries=0)
    finally:
        llm.close()
    assert s["pending"] == len(titles)
    return tmp_path / "w"


def test_review_csv_holds_no_formula_and_reads_back_every_title(tmp_path):
    """Issue 27.3 (review.csv written as is) and 27.12 (a title over 131,072 characters: curate
    review could not read the review.csv it wrote)."""
    from raddiag.curation.filter import accepted_disorders, apply_review

    titles = FORMULAS + [LONG, "Pneumothorax"]
    work = _curate_to_review(tmp_path, titles)
    path = work / "filter" / "review.csv"
    _no_formula(path)
    with open(path, newline="", encoding="utf-8") as f:          # a person answers in a spreadsheet
        rows = list(csv.reader(f))
    for r in rows[1:]:
        r[-1] = "yes"
    with open(path, "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows(rows)
    assert apply_review(work)["pending"] == 0
    assert set(accepted_disorders(work)) == {t.strip() for t in titles}     # records strip a title


def test_mapping_and_checklist_csv_hold_no_formula(tmp_path):
    from raddiag.curation.mapping import read_mapping, run_mapping
    from raddiag.curation.qc import sample_checklist
    from raddiag.curation.work import write_json

    work = tmp_path / "w"
    names = FORMULAS + [LONG]
    write_json(work / "filter" / "decisions.json", {t: {"disorder": True, "how": "rules", "cases": 1} for t in names})
    run_mapping(work, suggester=lambda ns, k: [[("J93.9", "Pneumothorax", 0.9)] for _ in ns])
    _no_formula(work / "map" / "mapping.csv")
    assert read_mapping(work) == {t: "J93" for t in names}
    _no_formula(sample_checklist(work, n=len(names)))


def _label_space(names):
    from raddiag.data.labels import LabelSpace

    return LabelSpace(names=list(names), codes=[None] * len(names), counts=[50] * len(names))


def test_per_class_csv_holds_no_formula_and_a_math_like_name_is_drawn_as_text(tmp_path):
    """Issue 27.3 (per_class.csv) and 27.11: a class or anatomy name holding ``$...$`` crashed the
    report (matplotlib math text) after metrics.json was written."""
    from raddiag.evaluation.engine import evaluate_predictions

    names = ["Normal", r"$\sqrt{x$", '=HYPERLINK("http://x", "y")', "-1 dB", "@x"]
    rng = np.random.default_rng(0)
    labels = rng.random((60, len(names))) < 0.4
    labels[:2] = [[True] + [False] * 4, [False] + [True] * 4]
    anatomy = np.array([r"$\frac{1$", "Chest", "$a$b$"] * 20, dtype=object)
    evaluate_predictions(rng.random(labels.shape), labels, _label_space(names), anatomy=anatomy,
                         out_dir=tmp_path, n_boot=0, plot_classes=names[:3])
    _no_formula(tmp_path / "per_class.csv")
    assert [r["name"] for r in read_csv(tmp_path / "per_class.csv")] == names
    html = (tmp_path / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 3               # ROC, normal by anatomy, distributions


def test_data_stats_draws_a_math_like_anatomy_name_as_text(tmp_path):
    from raddiag.data.stats import plot_stats
    from raddiag.data.synth import synthesize

    synthesize(tmp_path / "prep", n_cases=8, size=16, depth=2, workers=1, raw_size=(24, 32), raw_depth=(4, 8))
    from raddiag.data.stats import compute_stats

    stats = compute_stats(tmp_path / "prep")
    stats["anatomy_cases"]["abnormal"][r"$\sqrt{x$"] = 2
    stats["modality_cases"]["normal"]["$$"] = 1
    files = plot_stats(stats, tmp_path / "png")
    assert all(f.stat().st_size > 1000 for f in files)

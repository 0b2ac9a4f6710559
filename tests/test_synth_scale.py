"""`raddiag data synth --label-space paper`: the generated label space at the paper's counts."""
import json
from collections import Counter

import numpy as np
import pytest

from raddiag.data import synth_scale as X
from raddiag.data.case import NORMAL, read_manifest

cm = pytest.importorskip("simple_icd_10_cm")


def _real_names(code: str) -> set[str]:
    """Every term ICD-10-CM gives for ``code`` and its children, and the qualified category name."""
    codes = [code] + cm.get_descendants(code)
    terms = {" ".join(cm.get_description(c).split()) for c in codes}
    for c in codes:
        terms.update(" ".join(t.split()) for t in cm.get_inclusion_term(c))
    base = cm.get_description(code)
    terms.update(f"{q} {base[0].lower()}{base[1:]}" for q in X.QUALIFIERS)
    return terms


def test_paper_counts_and_real_names():
    tables = X.paper_label_space()
    assert len(tables.disorders) == 5568
    assert len({d.name for d in tables.disorders}) == 5568
    assert len(tables.categories) == 930 == len({d.code for d in tables.disorders})
    assert all(cm.is_category(c) for c in tables.categories)
    for d in tables.disorders[::97]:   # a sample: the check re-reads ICD-10-CM per category
        assert d.name in _real_names(d.code), (d.name, d.code)
    # hand-written looks are kept where synth has them
    assert tables.categories["J18"].params["family"] == "patchy"
    assert tables.categories["I63"].anatomy == "Head and Neck"


def test_plan_at_paper_counts_keeps_every_class():
    tables = X.paper_label_space()
    plans = X.plan_cases(tables, X.PAPER_CASES, seed=0)
    assert len(plans) == X.PAPER_CASES
    seen = Counter(d.name for p in plans for d in p["disorders"])
    assert len(seen) == 5568 and min(seen.values()) >= 3            # + Normal: 5,569 classes
    assert len({d.code for p in plans for d in p["disorders"]}) == 930
    counts = np.sort(np.array(list(seen.values())))[::-1]
    assert counts[0] > 50 * np.median(counts)                         # a long tail
    normal = sum(not p["disorders"] for p in plans) / len(plans)
    assert 0.15 < normal < 0.19


def test_scans_per_case_one_to_eight():
    tables = X.paper_label_space(40, 10)
    plan = {"disorders": [tables.disorders[0]], "anatomy": tables.disorders[0].anatomy}
    rng = np.random.default_rng(0)
    n = [len(X._case_scans(plan, tables, rng, (8, 8), (1, 1))) for _ in range(3000)]
    assert set(n) == set(range(1, 9))
    assert 4.5 < np.mean(n) < 5.1                                     # the paper: 4.76


def _generate(tmp_path, name, seed):
    out = tmp_path / name
    X.generate_paper_cases(out, n_cases=40, seed=seed, n_disorders=30, n_categories=8,
                           raw_size=(8, 10), raw_depth=(1, 2), workers=1, chunk=16)
    return out


def test_generate_small_deterministic(tmp_path):
    a, b, c = _generate(tmp_path, "a", 3), _generate(tmp_path, "b", 3), _generate(tmp_path, "c", 4)
    tables = X.paper_label_space(30, 8)
    cases = list(read_manifest(a / "raw" / "manifest.jsonl"))
    assert [x.id for x in cases] == [f"synth-{i:06d}" for i in range(40)]
    names = {d.name for d in tables.disorders}
    for case in cases:
        assert 1 <= len(case.scans) <= 8
        assert set(case.labels) <= names | {NORMAL}
        assert set(case.icd10) <= set(tables.categories)
        assert all(s.paths[0].startswith(str(a / "raw")) for s in case.scans)
    man = lambda d: (d / "raw" / "manifest.jsonl").read_text()
    assert man(a) == man(b) and man(a) != man(c)
    files = sorted(p.relative_to(a) for p in (a / "raw").rglob("scan*"))
    assert files and all((a / f).read_bytes() == (b / f).read_bytes() for f in files)


def test_cli_synth_paper(tmp_path, capsys):
    from raddiag.cli import main

    out = tmp_path / "d"
    rc = main(["data", "synth", "--label-space", "paper", "--out", str(out), "--cases", "60", "--disorders", "20",
               "--icd-categories", "6", "--size", "16", "--depth", "2", "--workers", "1"])
    assert rc == 0
    icd = json.loads((out / "labels_icd10.json").read_text())["classes"]
    dis = json.loads((out / "labels_disorder.json").read_text())["classes"]
    assert 2 <= len(icd) <= 7 and icd[0]["name"] == NORMAL
    assert 2 <= len(dis) <= 21
    assert "disorder:" in capsys.readouterr().out
    assert main(["data", "synth", "--label-space", "paper", "--out", str(tmp_path / "e"), "--with-defects"]) != 0
    assert "--with-defects goes with the default label space only" in capsys.readouterr().err
    assert main(["data", "synth", "--out", str(tmp_path / "f"), "--disorders", "9"]) != 0
    assert "--disorders go(es) with --label-space paper only" in capsys.readouterr().err

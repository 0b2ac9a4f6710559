"""What prepare says about the split it made (a new user's long-tailed set: every case of two rare
classes in train, no Normal case in val, one image in a train and a test case; prepare ended with
'nothing skipped')."""
from raddiag.data.case import Case, Scan
from raddiag.data.splits import coverage_note, shared_files_note


def case(i, labels, split, path=None):
    return Case(id=f"c{i}", labels=labels, split=split, scans=[Scan(path or f"/d/{i}.png", "X-ray")])


def test_coverage_note_names_the_classes_without_a_val_or_test_case():
    cases = [*[case(i, ["Aortic dissection"], "train") for i in range(6)],
             case(6, ["Achalasia"], "train"), case(7, ["Achalasia"], "test"),
             case(8, ["Lonely"], "train"),                                   # one case: cannot cover
             *[case(10 + i, [], s) for i, s in enumerate(["train", "test", "val"])],
             case(20, ["Gout"], "val"), case(21, ["Gout"], "test")]
    assert coverage_note(cases) == (
        "split coverage: 2 without a val case (its F1 / MCC / ACC threshold falls back to "
        "0.5): 'Achalasia' (test 1, train 1), 'Aortic dissection' (train 6); 1 without a test case (no test figure): "
        "'Aortic dissection' (train 6). Give such cases a split (a 'split' column in a manifest, or train / val / "
        "test folders), or prepare with --split-by label (each class of 3 patients or more in every split).")


def test_coverage_note_is_empty_when_every_class_reaches_val_and_test():
    cases = [case(i, ["Gout"] if i % 2 else [], s) for i, s in enumerate(["train", "val", "test"] * 2)]
    assert coverage_note(cases) == ""


def test_normal_beside_a_disorder_is_not_counted_as_normal():
    """A case labelled "Normal; Lung nodule" is abnormal in the label space (Normal 1 there); the
    note counted it as a Normal case (a new user's "'Normal' (train 2)")."""
    cases = [case(0, ["Normal"], "train"), case(1, ["Normal", "Lung nodule"], "train"),
             *[case(2 + i, ["Lung nodule"], s) for i, s in enumerate(["val", "test"])]]
    assert coverage_note(cases) == ""
    cases.append(case(9, [], "train"))                       # a second normal case, both in train
    assert "'Normal' (train 2)" in coverage_note(cases) and "Lung nodule" not in coverage_note(cases)


def test_shared_files_note_names_files_in_several_cases_across_splits_first():
    cases = [case(1, [], "train", "/d/cxr1.png"), case(2, [], "test", "/d/cxr1.png"),
             case(3, [], "train", "/d/a.png"), case(4, [], "train", "/d/a.png"), case(5, [], "val", "/d/b.png")]
    assert shared_files_note(cases) == ("2 scan file(s) belong to more than one case, 1 of them across splits "
                                        "(trained on and tested on): /d/cxr1.png ('c1' train, 'c2' test), "
                                        "/d/a.png ('c3' train, 'c4' train)")
    assert shared_files_note(cases[2:]) .startswith("1 scan file(s) belong to more than one case, 0 of them")
    assert shared_files_note(cases[4:]) == ""


# -- data prepare --split-by label -------------------------------------------------------------
from hypothesis import given, settings, strategies as st  # noqa: E402

from raddiag.data.splits import assign_splits  # noqa: E402

LABELS = ["Normal", "A", "B", "C", "D", "E", "F"]


@st.composite
def long_tailed_cases(draw, single_label: bool):
    """Patients of one or two cases, labels drawn with long-tailed weights."""
    n = draw(st.integers(1, 60))
    weights = [0.4, 0.25, 0.15, 0.08, 0.06, 0.04, 0.02]
    rnd = draw(st.randoms(use_true_random=False))
    cases = []
    for p in range(n):
        k = 1 if single_label else draw(st.integers(1, 2))
        labels = rnd.choices(LABELS, weights, k=k)
        labels = [] if labels == ["Normal"] else sorted(set(labels) - {"Normal"}) or ["Normal"]
        for j in range(draw(st.integers(1, 2))):
            cases.append(Case(id=f"p{p}c{j}", patient=f"p{p}", labels=list(labels), scans=[Scan("x.png", "CT")]))
    return cases


@settings(max_examples=60, deadline=None)
@given(long_tailed_cases(single_label=True), st.integers(0, 5))
def test_split_by_label_puts_every_class_of_three_patients_in_every_split(cases, seed):
    assign_splits(cases, seed=seed, by_label=True)
    by_patient = {}
    for c in cases:
        assert by_patient.setdefault(c.patient, c.split) == c.split       # a patient is never split
    patients = {}
    for c in cases:
        patients.setdefault(tuple(c.labels) or ("Normal",), {})[c.patient] = c.split
    for label, split_of in patients.items():
        if len(split_of) >= 3:
            assert set(split_of.values()) == {"train", "val", "test"}, label


@settings(max_examples=40, deadline=None)
@given(long_tailed_cases(single_label=False), st.integers(0, 5), st.randoms(use_true_random=False))
def test_split_by_label_keeps_given_splits_and_ignores_case_order(cases, seed, rnd):
    import copy

    fixed = {c.patient: rnd.choice(["train", "val", "test"]) for c in cases if rnd.random() < 0.2}
    for c in cases:
        c.split = fixed.get(c.patient)
    shuffled = copy.deepcopy(cases)
    rnd.shuffle(shuffled)
    assign_splits(cases, seed=seed, by_label=True)
    assign_splits(shuffled, seed=seed, by_label=True)
    assert {c.id: c.split for c in cases} == {c.id: c.split for c in shuffled}
    assert all(c.split == fixed[c.patient] for c in cases if c.patient in fixed)
    assert all(c.split in ("train", "val", "test") for c in cases)


def test_cli_prepare_split_by_label(tmp_path, capsys):
    import json

    from raddiag.cli import main
    from raddiag.serving.sample import sample_png

    lines = []
    for i in range(12):
        (tmp_path / f"{i}.png").write_bytes(sample_png(16 + i))
        lines.append(json.dumps({"id": f"c{i}", "labels": ["Rare thing"] if i < 3 else [],
                                 "scans": [{"path": f"{i}.png", "modality": "X-ray"}]}))
    (tmp_path / "m.jsonl").write_text("\n".join(lines) + "\n")
    assert main(["data", "prepare", str(tmp_path / "m.jsonl"), "--format", "manifest", "--out", str(tmp_path / "d"),
                 "--size", "16", "--depth", "1", "--split-by", "label", "--workers", "1"]) == 0
    out = capsys.readouterr().out
    splits = {json.loads(line)["id"]: json.loads(line)["split"] for line in (tmp_path / "d" / "cases.jsonl").open()}
    assert {splits[f"c{i}"] for i in range(3)} == {"train", "val", "test"}
    assert "split coverage" not in out


def test_split_by_label_never_uses_a_split_of_ratio_0_and_says_when_it_leaves_the_ratios():
    """Red team: 100 classes of 3 patients each split 100 / 100 / 100 without a word, and a test ratio
    of 0 still got patients."""
    import pytest

    from raddiag.data.errors import InputWarning

    cases = [Case(id=f"c{i}", labels=[f"L{i // 3}"], scans=[Scan("x.png", "CT")]) for i in range(300)]
    with pytest.warns(InputWarning, match=r"the split by label gives train / val / test 0.33 / 0.33 / 0.33 of the "
                                          r"300 patients it placed, asked 0.7 / 0.1 / 0.2"):
        assign_splits(cases, seed=0, by_label=True)
    cases = [Case(id=f"c{i}", labels=[f"L{i // 3}"], scans=[Scan("x.png", "CT")]) for i in range(30)]
    assign_splits(cases, ratios=(0.9, 0.1, 0.0), seed=0, by_label=True)
    assert {c.split for c in cases} == {"train", "val"}

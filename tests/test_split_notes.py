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
        "split coverage (by patient, not by label): 2 without a val case (its F1 / MCC / ACC threshold falls back to "
        "0.5): 'Achalasia' (test 1, train 1), 'Aortic dissection' (train 6); 1 without a test case (no test figure): "
        "'Aortic dissection' (train 6). Give such cases a 'split' in the manifest to place them.")


def test_coverage_note_is_empty_when_every_class_reaches_val_and_test():
    cases = [case(i, ["Gout"] if i % 2 else [], s) for i, s in enumerate(["train", "val", "test"] * 2)]
    assert coverage_note(cases) == ""


def test_shared_files_note_names_files_in_several_cases_across_splits_first():
    cases = [case(1, [], "train", "/d/cxr1.png"), case(2, [], "test", "/d/cxr1.png"),
             case(3, [], "train", "/d/a.png"), case(4, [], "train", "/d/a.png"), case(5, [], "val", "/d/b.png")]
    assert shared_files_note(cases) == ("2 scan file(s) belong to more than one case, 1 of them across splits "
                                        "(trained on and tested on): /d/cxr1.png ('c1' train, 'c2' test), "
                                        "/d/a.png ('c3' train, 'c4' train)")
    assert shared_files_note(cases[2:]) .startswith("1 scan file(s) belong to more than one case, 0 of them")
    assert shared_files_note(cases[4:]) == ""

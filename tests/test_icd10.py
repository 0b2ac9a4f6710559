"""ICD-10-CM labels as users write them (raddiag.data.icd10): a new user's manifest gave Achalasia
as K22, K22.0 and K21 in three cases and one case two disorders with one code; prepare printed the
codes and trained K21, K22 and K22.0 as three classes without a word."""
import warnings

import pytest

from raddiag.data.case import Case, Scan
from raddiag.data.errors import InputWarning
from raddiag.data.icd10 import category, settle_icd10


def case(i, labels, icd10):
    return Case(id=f"m{i:02d}", labels=labels, icd10=icd10, scans=[Scan(f"s{i}.png", "X-ray")])


def settle(cases):
    with warnings.catch_warnings(record=True) as got:
        warnings.simplefilter("always")
        settle_icd10(cases, "my.csv")
    return [str(w.message) for w in got if issubclass(w.category, InputWarning)]


def test_category_reads_codes_and_refuses_what_is_not_icd10():
    assert [category(c) for c in ("K22.0", "k220", " J12 ", "A00")] == ["K22", "K22", "J12", "A00"]
    for bad in ("K2", "XYZ", "K99.9", "Normal", "S00-T88", "A00-B99", "E880.9", "J12XYZ", "J12.9999", "", None):
        with pytest.raises(ValueError, match="is not an ICD-10-CM code"):
            category(bad)


def test_a_new_users_codes_are_settled_with_a_warning_for_each_doubt():
    cases = [case(1, ["Achalasia"], ["K22"]), case(2, ["Achalasia"], ["K22.0"]), case(3, ["Achalasia"], ["K21"]),
             *[case(10 + i, ["Hydronephrosis"], ["N13"]) for i in range(3)],
             case(9, ["Multiple sclerosis", "Hydronephrosis"], ["G35"]),
             case(20, ["Rare thing"], ["MYCODE"]), case(21, ["Normal"], ["Normal"])]
    msgs = settle(cases)
    assert [c.icd10 for c in cases[:3]] == [["K22"], ["K22"], ["K21"]]
    assert cases[7].icd10 == ["MYCODE"] and cases[8].icd10 == ["Normal"]
    assert msgs[0] == ("my.csv: 1 ICD-10 code(s) in 1 case(s) read as their 3-character category, the icd10 label "
                       "space's unit (a finer code, or another spelling): 'K22.0' -> K22")
    assert msgs[1] == ("my.csv: 1 icd10 label(s) are not ICD-10-CM codes, kept as written (each its own class): "
                       "'MYCODE' x1")
    assert msgs[2] == ("my.csv: 1 disorder(s) are given different ICD-10 categories in different cases, so the "
                       "icd10 label space counts them as different classes: 'Achalasia': K22 x2, K21 x1")
    assert msgs[3] == ("my.csv: 1 case(s) have ICD-10 codes that leave out the category one of their disorders "
                       "has in every other case, so the icd10 label space misses it there: "
                       "'m09' ('Hydronephrosis', N13 elsewhere)")
    assert len(msgs) == 4


def test_consistent_category_codes_pass_without_a_word():
    cases = [case(1, ["Achalasia"], ["K22"]), case(2, ["Achalasia", "Hydronephrosis"], ["K22", "N13"]),
             case(3, ["Hydronephrosis"], ["N13"]), case(4, ["Normal"], [])]
    assert settle(cases) == []
    assert [c.icd10 for c in cases] == [["K22"], ["K22", "N13"], ["N13"], []]


def test_a_manifest_read_settles_its_codes(tmp_path):
    from raddiag.data.case import read_manifest

    (tmp_path / "a.png").write_bytes(b"")
    (tmp_path / "m.jsonl").write_text(
        '{"id": "a", "labels": ["Achalasia"], "icd10": ["K22.0"], "scans": [{"path": "a.png", "modality": "X-ray"}]}\n')
    with pytest.warns(InputWarning, match=r"m.jsonl: 1 ICD-10 code\(s\) in 1 case\(s\) read as their 3-character"):
        cases = list(read_manifest(tmp_path / "m.jsonl"))
    assert cases[0].icd10 == ["K22"]


def test_normal_joined_empty_and_non_codes_are_read_as_a_user_meant_them():
    """Red team: 'normal' / 'NORMAL' became disease classes of the icd10 space; 'S72.001A; S82.1' kept
    only S72; a chapter range 'S00-T88' and the ICD-9 'E880.9' passed as S00 and E88 (only their first
    3 characters were checked); an empty code became a class named ''; None crashed with AttributeError."""
    cases = [case(1, [], ["normal"]), case(2, [], [" NORMAL "]), case(3, ["Fracture"], ["S72.001A; S82.1"]),
             case(4, ["Injury"], ["S00-T88"]), case(5, ["Fall"], ["E880.9"]), case(6, ["Gout"], ["M10", "  "])]
    msgs = settle(cases)
    assert [c.icd10 for c in cases] == [["Normal"], ["Normal"], ["S72", "S82"], ["S00-T88"], ["E880.9"], ["M10"]]
    assert msgs[:2] == ["my.csv: 1 ICD-10 text(s) held several codes, read as each: 'S72.001A; S82.1' -> S72.001A, "
                        "S82.1", "my.csv: 1 empty ICD-10 code(s) left out, in case(s) 'm06'"]
    assert "2 icd10 label(s) are not ICD-10-CM codes, kept as written (each its own class): 'S00-T88' x1, " \
           "'E880.9' x1" in msgs[3]
    with pytest.raises(ValueError, match="case 'm07': ICD-10 code None is not text"):
        settle_icd10([case(7, [], [None])], "my.csv")

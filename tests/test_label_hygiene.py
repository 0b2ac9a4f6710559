"""What prepare, stats and train say about labels a new user got wrong or cannot learn from: a CSV
cell "Pneumothorax, Rib fracture" (a comma for ';') read as one class, a one-case typo
"Pneumothrax" read as a class of its own, classes whose every case is outside train, and (at
``--granularity icd10``) abnormal training cases without a code training as negatives of every
class. All said, none silently changed."""
from __future__ import annotations

import json
import warnings
from types import SimpleNamespace

import pytest

from raddiag.cli import main
from raddiag.data.case import Case, Scan, read_manifest
from raddiag.data.errors import InputWarning
from raddiag.data.stats import compute_stats, stats_text
from raddiag.data.store import PreparedData, prepare_cases
from raddiag.serving.sample import sample_png


def _pngs(tmp_path, n):
    for i in range(n):
        (tmp_path / f"{i}.png").write_bytes(sample_png(16, seed=i))


def _settled(tmp_path, rows, name="m.jsonl"):
    """``[(id, labels, split)]`` read through a manifest: (its cases, the input warnings)."""
    path = tmp_path / name
    path.write_text("".join(json.dumps({"id": i, "labels": labels, "split": split,
                                        "scans": [{"path": "0.png", "modality": "X-ray"}]}) + "\n"
                            for i, labels, split in rows))
    with warnings.catch_warnings(record=True) as got:
        warnings.simplefilter("always")
        cases = list(read_manifest(path))
    return cases, [str(w.message) for w in got if issubclass(w.category, InputWarning)]


# -- A: a comma where ';' was meant ---------------------------------------------------------------
def test_a_csv_cell_of_labels_joined_by_a_comma_is_said_and_the_summary_reads_one_way(tmp_path, capsys):
    _pngs(tmp_path, 4)
    (tmp_path / "m.csv").write_text('id,path,modality,labels,split\nc1,0.png,X-ray,"Pneumothorax, Rib fracture",train\n'
                                    "c2,1.png,X-ray,Pneumothorax,train\nc3,2.png,X-ray,Rib fracture,val\n"
                                    "c4,3.png,X-ray,Pneumothorax,test\n")
    assert main(["data", "prepare", str(tmp_path / "m.csv"), "--format", "manifest", "--out", str(tmp_path / "d"),
                 "--size", "16", "--depth", "1", "--workers", "1"]) == 0
    out, err = capsys.readouterr()
    assert (f"raddiag: warning: {tmp_path / 'm.csv'}: 1 label(s) hold commas between names that are labels of their "
            "own here, and are read as one class each: 'Pneumothorax, Rib fracture' (1 case(s): c1); if they are "
            "several labels, separate them with ';' in the cell (README 'A CSV manifest')") in err.splitlines()
    assert "  disorder labels (3): Pneumothorax 2, 'Pneumothorax, Rib fracture' 1, Rib fracture 1" in out.splitlines()
    labels = json.loads((tmp_path / "d" / "labels_disorder.json").read_text())
    assert "Pneumothorax, Rib fracture" in [c["name"] for c in labels["classes"]]        # said, not changed
    assert main(["data", "stats", str(tmp_path / "d"), "--no-plots"]) == 0
    assert "  cases per class: Pneumothorax 2, 'Pneumothorax, Rib fracture' 1, Rib fracture 1" in \
        capsys.readouterr().out.splitlines()


def test_a_disorder_name_holding_a_comma_is_not_taken_for_two_labels(tmp_path):
    """ICD-10 titles hold commas: only a name whose every part is a label of its own is said."""
    rows = [("c1", ["Fracture of femur, closed"], "train"), ("c2", ["Fracture of femur"], "train"),
            ("c3", ["Crohn disease, unspecified"], "test")]
    cases, said = _settled(tmp_path, rows)
    assert said == [] and cases[0].labels == ["Fracture of femur, closed"]
    cases, said = _settled(tmp_path, rows + [("c4", ["closed"], "val"), ("c5", ["pneumothorax"], "val"),
                                             ("c6", ["Pneumothorax,Rib fracture"], "val"), ("c7", ["rib fracture"], "val")])
    assert said == [f"{tmp_path / 'm.jsonl'}: 2 label(s) hold commas between names that are labels of their own here, "
                    "and are read as one class each: 'Fracture of femur, closed' (1 case(s): c1), "
                    "'Pneumothorax,Rib fracture' (1 case(s): c6); if they are several labels, give them as separate "
                    "items of the case's 'labels' list"]


# -- B: a one-case typo -------------------------------------------------------------------------
def test_a_one_case_label_written_nearly_as_a_common_one_is_said_and_kept(tmp_path):
    rows = [(f"p{i}", ["Pneumothorax"], "train") for i in range(8)] + [("typo", ["Pneumothrax"], "train")]
    cases, said = _settled(tmp_path, rows)
    assert said == [f"{tmp_path / 'm.jsonl'}: 1 label(s) of one case look like a typo of a label of several cases, "
                    "and are read as classes of their own: 'Pneumothrax' (case typo) for 'Pneumothorax' (8 cases); "
                    "if they are typos, correct them in the manifest"]
    assert cases[-1].labels == ["Pneumothrax"]                                       # warned, never changed


@pytest.mark.parametrize("one, common", [("Gas", "Mass"), ("Hepatitis C", "Hepatitis B"), ("Arthritis", "Arteritis"),
                                         ("Type 2 diabetes", "Type 1 diabetes"), ("Hypothyroidism", "Hyperthyroidism"),
                                         ("Colitis", "Coxitis"), ("Grade III glioma", "Grade II glioma"),
                                         # red team: real ICD-10-CM titles one letter apart
                                         ("Malignant neoplasm of uvula", "Malignant neoplasm of vulva"),
                                         ("Symptomatic premature menopause", "Asymptomatic premature menopause"),
                                         ("Follicular lymphoma grade IIIa, lymph nodes of head",
                                          "Follicular lymphoma grade IIIb, lymph nodes of head"),
                                         ("Prolymphocytic leukemia of B-cell type", "Prolymphocytic leukemia of T-cell type")])
def test_different_names_that_look_alike_are_not_taken_for_typos(tmp_path, one, common):
    _, said = _settled(tmp_path, [("a", [one], "train"), ("b", [common], "train"), ("c", [common], "test")])
    assert said == []


def test_no_two_icd10_titles_are_taken_for_typos_of_each_other_but_plurals():
    """Thousands of real, distinct ICD-10-CM titles (neoplasms: uvula / vulva, IIIa / IIIb), half of
    one case and half of two: none is said to be a typo, but for a title one letter from its own
    plural ('... organ' / '... organs'), which a user's set would mean as one class."""
    import re

    import simple_icd_10_cm as cm

    from raddiag.data.adapters.base import _typos_text

    titles = list(dict.fromkeys(cm.get_description(c) for c in cm.get_all_codes(with_dots=True)))
    start = next(i for i, t in enumerate(titles) if t.startswith("Malignant neoplasm of"))
    chosen = titles[start:start + 3000]
    cases = [SimpleNamespace(id=f"c{i}-{k}", labels=[t]) for i, t in enumerate(chosen) for k in range(1 + i % 2)]
    pairs = re.findall(r"'([^']+)' \(case [^)]+\) for '([^']+)'", _typos_text(cases))
    assert all(a.rstrip("s") == b.rstrip("s") for a, b in pairs), pairs


def test_a_typo_check_of_thousands_of_labels_takes_little_time(tmp_path):
    import random
    import string
    import time

    from raddiag.data.adapters.base import settle_labels

    rnd = random.Random(0)
    names = {" ".join("".join(rnd.choices(string.ascii_lowercase, k=rnd.randint(4, 10))) for _ in range(3))
             for _ in range(6000)}
    cases = [Case(id=f"{n}{j}", scans=[], labels=[n]) for i, n in enumerate(sorted(names)) for j in range(1 + i % 2)]
    t = time.perf_counter()
    settle_labels(cases, "big.jsonl")
    assert time.perf_counter() - t < 3          # an all-pairs difflib took 16 s here


# -- C: classes training never sees ---------------------------------------------------------------
def _prepared(tmp_path, rows):
    """A prepared folder of ``[(id, labels, icd10, split)]``, one PNG each."""
    _pngs(tmp_path, 1)
    cases = [Case(id=i, labels=labels, icd10=icd, split=split, scans=[Scan(str(tmp_path / "0.png"), "X-ray")])
             for i, labels, icd, split in rows]
    return prepare_cases(cases, tmp_path / "d", size=16, depth=1, workers=1), PreparedData(tmp_path / "d")


TYPO_SET = ([(f"p{i}", ["Pneumothorax"], ["J93"], s) for i, s in enumerate(["train"] * 5 + ["val", "test"])]
            + [(f"n{i}", [], [], s) for i, s in enumerate(["train", "train", "val", "test"])]
            + [("effusion", ["Pleural effusion"], ["J90"], "test"), ("gout", ["Gout"], [], "val"),
               ("gout2", ["Gout"], [], "test"), ("lonely", ["Lonely"], [], "train")])


def test_prepare_and_stats_name_the_classes_without_a_training_case(tmp_path):
    report, data = _prepared(tmp_path, TYPO_SET)
    assert ("split coverage: 2 class(es) without a train case (never learned): 'Gout' (test 1, val 1), "
            "'Pleural effusion' (test 1). Give one of their cases the split 'train' in the manifest, or leave them "
            "out.") in report.notes
    lines = stats_text(compute_stats(data)).splitlines()
    assert lines[lines.index(next(x for x in lines if x.startswith("disorder:"))) + 2] == (
        "  2 class(es) without a training case (never learned): 'Gout', 'Pleural effusion'")
    assert "  1 class(es) without a training case (never learned): 'J90'" in lines


def test_a_set_with_no_training_case_at_all_is_not_told_its_classes_are_never_learned(tmp_path):
    from raddiag.data.splits import untrained_note

    cases = [Case(id=f"c{i}", labels=["Gout"], split="test", scans=[Scan("x.png", "CT")]) for i in range(3)]
    assert untrained_note(cases) == ""


def _summary(tmp_path, data, granularity="disorder"):
    import torch

    from raddiag.config import preset
    from raddiag.run import RunFolder
    from raddiag.training.summary import start_summary

    cfg = preset("cpu", [f"data.granularity={granularity}"])
    d = SimpleNamespace(device=torch.device("cpu"), world_size=1)
    text = start_summary(data, RunFolder(tmp_path / "run"), cfg, data.label_space(granularity),
                         torch.nn.Linear(2, 2), d, 3, data.count("train"), workers=0)
    return [line for line in text.splitlines() if line.startswith(("  classes", "  without a class"))]


def test_the_train_summary_names_the_classes_without_training_cases(tmp_path):
    _, data = _prepared(tmp_path, TYPO_SET)
    assert _summary(tmp_path, data) == [
        "  classes (5; 2 without training cases, never learned: 'Gout', 'Pleural effusion'), training cases each: "
        "Pneumothorax 5, Normal 2, Lonely 1"]


def test_the_train_summary_names_ten_classes_without_training_cases_then_counts_the_rest(tmp_path):
    rows = [(f"c{i}", [f"Rare {i:02d}"], [], "test") for i in range(13)] + [("t", [], [], "train")]
    _, data = _prepared(tmp_path, rows)
    line = _summary(tmp_path, data)[0]
    assert line.startswith("  classes (14; 13 without training cases, never learned: 'Rare 00', ")
    assert "'Rare 09' and 3 more), training cases each: Normal 1" in line


# -- D: abnormal training cases without a class of the run's granularity -----------------------------
def test_the_train_summary_says_how_many_abnormal_training_cases_have_no_class_at_icd10(tmp_path):
    rows = ([(f"u{i}", ["Pneumothorax"], [], "train") for i in range(6)]
            + [(f"k{i}", ["Kidney stone"], ["N20"], s) for i, s in enumerate(["train", "train", "val"])]
            + [(f"n{i}", [], [], s) for i, s in enumerate(["train", "val"])])
    _, data = _prepared(tmp_path, rows)
    assert _summary(tmp_path, data, "icd10") == [
        "  classes (2), training cases each: N20 2, Normal 1",
        "  without a class: 6 of the 9 training cases are abnormal but carry no ICD-10-CM code, so they train as "
        "negatives of every class; --granularity disorder trains on their disorder names, or give them 'icd10' "
        "codes in the manifest"]
    assert _summary(tmp_path, data, "disorder") == [
        "  classes (3), training cases each: Pneumothorax 6, Kidney stone 2, Normal 1"]


def test_a_fraction_of_the_train_split_is_counted_on_the_cases_trained_on(tmp_path):
    """New user: `finetune --fraction 0.01` printed the scan caps' losses (and the cases without a
    class) of the whole train split, where it trained on 24 of its cases."""
    import torch

    from raddiag.config import preset
    from raddiag.run import RunFolder
    from raddiag.training.summary import start_summary

    rows = ([(f"u{i}", ["Pneumothorax"], [], "train") for i in range(6)]
            + [(f"k{i}", ["Kidney stone"], ["N20"], s) for i, s in enumerate(["train", "train", "val"])])
    _, data = _prepared(tmp_path, rows)
    cfg = preset("cpu", ["data.granularity=icd10"])
    d = SimpleNamespace(device=torch.device("cpu"), world_size=1)
    order = [r["id"] for r in data.records_for("train")]
    part = [order.index("u0"), order.index("k0")]
    text = start_summary(data, RunFolder(tmp_path / "run"), cfg, data.label_space("icd10"), torch.nn.Linear(2, 2),
                         d, 1, len(part), workers=0, train_indices=part)
    assert "without a class: 1 of the 2 training cases are abnormal" in text


def test_a_set_whose_cases_are_all_one_class_is_said_to_be(tmp_path):
    """New user: `data prepare --limit 300` took the first 300 cases of a source sorted by class, all
    Normal, without a word."""
    from raddiag.data.splits import one_class_note

    same = [Case(id=f"c{i}", labels=[], split="train", scans=[Scan("x.png", "CT")]) for i in range(4)]
    assert one_class_note(same).startswith("one class: all 4 cases are 'Normal', so there is nothing")
    mixed = same + [Case(id="d", labels=["Gout"], split="train", scans=[Scan("x.png", "CT")])]
    assert one_class_note(mixed) == ""


@pytest.mark.parametrize("one, common", [("Pnuemonia", "Pneumonia"), ("Hip fractures", "Hip fracture"),
                                         ("Renal cysts", "Renal cyst")])
def test_a_swap_or_a_plural_is_still_said_beside_the_icd10_word_check(tmp_path, one, common):
    """Red team: the ICD-10-CM word check hid plural slips ('fractures' is a word of its titles), and
    a swap of two letters scored under the cutoff (0.89)."""
    _, said = _settled(tmp_path, [("a", [one], "train"), ("b", [common], "train"), ("c", [common], "test")])
    assert len(said) == 1 and f"{one!r} (case a) for {common!r}" in said[0]


def test_labels_joined_by_a_bar_slash_or_plus_are_said_and_accent_variants_pointed_out(tmp_path):
    """New user: "Pneumonia | pneumothorax, left" and "Pneumonia/Pleural effusion" became classes of
    their own without a word (only a comma was said); "Kienböck disease", "Kienbock disease" and
    "Kienbock's disease" were three classes without a word. Accents are said, never merged: marks
    tell words apart in many languages (a red team's Vietnamese "Sởi" measles and "Sỏi" stones)."""
    rows = [("c1", ["Pneumonia | Pleural effusion"], "train"), ("c2", ["Pneumonia/Pleural effusion"], "train"),
            ("c3", ["Pneumonia + pleural effusion"], "train"), ("c4", ["Pneumonia"], "train"),
            ("c5", ["Pleural effusion"], "val"), ("c6", ["Kienböck disease"], "train"),
            ("c7", ["Kienbock disease"], "train"), ("c8", ["Kienböck disease"], "test"),
            ("c9", ["KIENBOCK'S DISEASE"], "val"), ("c10", ["Ulnar/radial fracture"], "val"),
            ("c11", ["Sởi"], "train"), ("c12", ["Sỏi"], "train"), ("c13", ["ぜんそく"], "train"),
            ("c14", ["せんそく"], "train")]
    cases, said = _settled(tmp_path, rows)
    joined = [s for s in said if "between names that are labels of their own" in s]
    assert len(joined) == 1 and joined[0].startswith(f"{tmp_path / 'm.jsonl'}: 3 label(s) hold '+' or '/' or '|' ")
    for name in ("'Pneumonia | Pleural effusion' (1 case(s): c1)", "'Pneumonia/Pleural effusion' (1 case(s): c2)",
                 "'Pneumonia + pleural effusion' (1 case(s): c3)"):
        assert name in joined[0]
    assert "Ulnar" not in joined[0]                                  # its parts are no labels here
    assert [c.labels[0] for c in cases[5:]] == ["Kienböck disease", "Kienbock disease", "Kienböck disease",
                                               "KIENBOCK'S DISEASE", "Ulnar/radial fracture", "Sởi", "Sỏi",
                                               "ぜんそく", "せんそく"]         # never merged
    (alike,) = [s for s in said if "differ only in accents" in s]
    assert ("'Kienböck disease' (2 case(s)); 'Kienbock disease' (1 case(s)); \"KIENBOCK'S DISEASE\" (1 case(s))"
            in alike)
    assert "3 group(s)" in alike and "'Sởi' (1 case(s)); 'Sỏi' (1 case(s))" in alike


def test_a_class_in_another_spelling_is_pointed_to_by_saliency_and_evaluate():
    """New user: --saliency-class "Kienbock disease" of a run whose class is "Kienböck disease"
    failed with "not among the scored classes" and no hint. Letter case alone finds the class;
    accents are pointed to, never taken (a red team's "Sỏi", stones, drew the map of "Sởi", measles)."""
    from raddiag.data.dataset import case_hint
    from raddiag.data.labels import LabelSpace
    from raddiag.serving.saliency import chosen_class

    names = ["Normal", "Kienböck disease", "Pneumonia", "Sởi", "Sỏi"]
    assert chosen_class("sởi", names, None) == "Sởi" and chosen_class("PNEUMONIA", names, None) == "Pneumonia"
    with pytest.raises(ValueError, match=r"'Kienbock disease' is not among the scored classes \(differing in "
                                         r"letter case or accents: 'Kienböck disease'\)"):
        chosen_class("Kienbock disease", names, None)
    with pytest.raises(ValueError, match=r"'Soi' is not .* accents: 'Sởi', 'Sỏi'\)"):
        chosen_class("Soi", names, None)
    with pytest.raises(ValueError, match="'Kienbock fracture' is not among the scored classes$"):
        chosen_class("Kienbock fracture", names, None)
    with pytest.raises(ValueError, match="'²' is not among the scored classes"):      # no int('²') traceback
        chosen_class("²", names, None)
    assert chosen_class("2", names, None) == "Pneumonia"
    hint = case_hint(["Kienbock disease", "Glioma", "sởi", "Soi"], LabelSpace(names=names))
    assert "'Kienbock disease' -> 'Kienböck disease'" in hint and "Glioma" not in hint
    assert "'sởi' -> 'Sởi'," in hint and "'Soi' -> 'Sởi' or 'Sỏi'" in hint

"""Curation steps without an LLM: rules, QC, ICD-10-CM mapping, normal cases, export, and an
end-to-end run (records -> dataset -> rp3d adapter -> prepare -> train)."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from raddiag.curation.work import read_json, write_json


def _write_csv(path: Path, rows: list[dict]) -> None:
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


# -- rules -------------------------------------------------------------------------------
RULE_CASES = {
    # disorders
    "Pneumothorax": True, "Hip dislocation": True, "Segond fracture": True, "Meningioma": True,
    "Anterior cruciate ligament tear": True, "Crohn's disease": True, "Subdural haemorrhage": True,
    "Osteoid osteoma": True, "Appendicitis": True, "Renal cell carcinoma": True, "Sarcoidosis": True,
    "Down syndrome": True, "Situs inversus": True, "Pectus excavatum": True, "COVID-19": True,
    # not disorders: techniques, signs, anatomy, measurements, classifications
    "Chest radiograph": False, "Hounsfield unit": False, "Air crescent sign": False,
    "Salter-Harris classification": False, "Lateral view": False, "Brain anatomy": False,
    "Anterior cruciate ligament": False, "T2 weighted imaging": False, "Bosniak classification": False,
    "Double bubble sign": False, "Kidney": False,
}


def test_rules_on_a_title_list():
    from raddiag.curation.rules import classify_title, normalise

    got = {t: classify_title(t) for t in RULE_CASES}
    wrong = {t: why for t, (yes, why) in got.items() if yes != RULE_CASES[t]}
    assert not wrong, wrong
    assert got["Pneumothorax"][1].startswith("ICD-10-CM term (J93")
    assert "excluded" in got["Chest radiograph"][1]
    assert normalise("Subdural haemorrhage (acute)") == "subdural hemorrhage acute"


# -- qc ----------------------------------------------------------------------------------
def test_qc_confusion_from_checked_sample(tmp_path):
    from raddiag.curation.qc import run_qc

    work = tmp_path / "w"
    decisions = {f"t{i}": {"disorder": i % 2 == 0, "how": "rules", "cases": 1} for i in range(20)}
    decisions["pending"] = {"disorder": None, "how": "review", "cases": 1}
    write_json(work / "filter" / "decisions.json", decisions)
    rep = run_qc(work, sample=10, seed=1)
    assert rep["sampled"] == 10 and rep["unchecked"] == 10 and rep["n"] == 0 and rep["precision"] is None
    path = work / "qc" / "checklist.csv"
    rows = list(csv.DictReader(path.open()))
    assert "pending" not in {r["title"] for r in rows}
    assert run_qc(work, sample=10, seed=99)["sampled"] == 10       # the filled-in list is kept, not redrawn
    assert [r["title"] for r in csv.DictReader(path.open())] == [r["title"] for r in rows]
    # truth: every predicted "yes" is right; one predicted "no" is actually a disorder; one left blank
    for i, r in enumerate(rows):
        r["truth"] = r["predicted"]
    flip = next(r for r in rows if r["predicted"] == "no")
    flip["truth"] = "yes"
    rows[-1]["truth"] = "" if rows[-1] is not flip else rows[-1]["truth"]
    _write_csv(path, rows)
    pairs = [(r["predicted"] == "yes", r["truth"] == "yes") for r in rows if r["truth"]]
    rep = run_qc(work, sample=10)
    tp = sum(p and t for p, t in pairs)
    fn = sum((not p) and t for p, t in pairs)
    assert rep["fp"] == 0 and rep["fn"] == fn == 1 and rep["tp"] == tp
    assert rep["precision"] == 1.0 and rep["recall"] == pytest.approx(tp / (tp + 1))
    assert rep["n"] == len(pairs) and (work / "qc" / "report.txt").read_text().startswith("checked")
    rows[0]["truth"] = "maybe"
    _write_csv(path, rows)
    with pytest.raises(ValueError, match="not yes / no"):
        run_qc(work, sample=10)


# -- mapping -----------------------------------------------------------------------------
def _fake_suggest(names, top):
    table = {"Pneumothorax": [("J93.9", "Pneumothorax, unspecified", 0.92), ("J93.1", "x", 0.90),
                              ("S27.0", "Traumatic pneumothorax", 0.70)],
             "Segond fracture": [("S82.1", "Fracture of upper end of tibia", 0.61), ("S83.5", "Sprain of cruciate", 0.60)],
             "Meningioma": [("D32.9", "Benign neoplasm of meninges", 0.45)],
             "Oddity": []}
    return [table[n] for n in names]


def _decided(work: Path, titles: dict[str, bool]):
    write_json(work / "filter" / "decisions.json",
               {t: {"disorder": v, "how": "rules", "cases": 2} for t, v in titles.items()})


def test_mapping_suggest_flag_and_read_back(tmp_path):
    from raddiag.curation.mapping import read_mapping, run_mapping

    work = tmp_path / "w"
    _decided(work, {"Pneumothorax": True, "Segond fracture": True, "Meningioma": True, "Oddity": True,
                    "Chest radiograph": False})
    s = run_mapping(work, suggester=_fake_suggest)
    assert s["disorders"] == 4 and s["unmapped"] == 1
    rows = {r["disorder"]: r for r in csv.DictReader((work / "map" / "mapping.csv").open())}
    assert "Chest radiograph" not in rows
    # 3-character level: J93.9 and J93.1 merge into J93, which stays clearly ahead of S27
    assert rows["Pneumothorax"]["code"] == "J93" and rows["Pneumothorax"]["ambiguous"] == "no"
    assert rows["Pneumothorax"]["suggestions"].startswith("J93 ")
    assert rows["Segond fracture"]["ambiguous"] == "yes"          # S82 vs S83 too close
    assert rows["Meningioma"]["ambiguous"] == "yes"               # low top score
    assert rows["Oddity"]["code"] == "" and rows["Oddity"]["ambiguous"] == "yes"
    assert read_mapping(work) == {"Pneumothorax": "J93", "Segond fracture": "S82", "Meningioma": "D32", "Oddity": None}

    # the person edits: a finer code is reduced to its category; their rows survive a rerun
    rows["Segond fracture"].update(code="S83.5", confirmed="yes")
    _write_csv(work / "map" / "mapping.csv", list(rows.values()))
    calls = []
    run_mapping(work, suggester=lambda n, k: calls.append(list(n)) or _fake_suggest(n, k))
    assert calls == []                                             # nothing new to suggest
    assert read_mapping(work)["Segond fracture"] == "S83"
    rows["Oddity"]["code"] = "XYZ.1"
    _write_csv(work / "map" / "mapping.csv", list(rows.values()))
    with pytest.raises(ValueError, match="Oddity.*not an ICD-10-CM code"):
        read_mapping(work)


def test_lexical_suggester_finds_exact_terms():
    from raddiag.curation.mapping import lexical_suggest

    (pnx,), (app,) = [s[:1] for s in lexical_suggest(["Pneumothorax", "Appendicitis"], top=3)]
    assert pnx[0] == "J93" and pnx[2] == pytest.approx(1.0)
    assert app[0] in ("K35", "K36", "K37")


# -- records, normals, export, end to end -------------------------------------------------
def test_records_validation_names_the_file(tmp_path):
    from raddiag.curation.records import load_records

    (tmp_path / "a.json").write_text(json.dumps({"id": "a", "studies": [{"modality": "CT", "images": ["x.npy"]}],
                                                 "articles": ["Pneumothorax"]}))
    assert load_records(tmp_path)[0]["studies"][0]["images"][0]["path"] == str(tmp_path / "x.npy")
    (tmp_path / "b.json").write_text(json.dumps({"id": "b", "studies": [{"modality": "Sonar", "images": ["y.npy"]}]}))
    with pytest.raises(ValueError, match=r"b\.json.*unknown modality 'Sonar'"):
        load_records(tmp_path)
    (tmp_path / "b.json").write_text(json.dumps({"id": "a", "studies": [{"modality": "CT", "images": ["y.npy"]}]}))
    with pytest.raises(ValueError, match="duplicate case ids"):
        load_records(tmp_path)


def _normal_pool(tmp_path: Path) -> Path:
    """A prepared dataset with 5 normal chest X-rays, 3 normal head MRIs and 2 abnormal cases."""
    from raddiag.data.case import Case, Scan
    from raddiag.data.store import prepare_cases

    rng = np.random.default_rng(0)
    cases = []
    for i, (anat, mod, lab) in enumerate([("Chest", "X-ray", "Normal")] * 5 + [("Head and Neck", "MRI", "Normal")] * 3
                                         + [("Chest", "X-ray", "Pneumonia")] * 2):
        f = tmp_path / "pool_src" / f"{i}.npy"
        f.parent.mkdir(exist_ok=True)
        np.save(f, rng.normal(size=(16, 16, 1 if mod == "X-ray" else 3)).astype(np.float32))
        cases.append(Case(id=f"p{i}", scans=[Scan(paths=[str(f)], modality=mod, anatomy=anat)], labels=[lab],
                          anatomy=anat, split="train"))
    prepare_cases(cases, tmp_path / "pool", size=16, depth=4, workers=1)
    return tmp_path / "pool"


def test_normals_balance_and_export_release_format(tmp_path):
    from raddiag.curation.export import export_dataset
    from raddiag.curation.filter import run_filter
    from raddiag.curation.mapping import run_mapping
    from raddiag.curation.normals import add_normals
    from raddiag.curation.synth import make_records
    from raddiag.data.adapters import load_source

    recs = make_records(tmp_path / "records", n_cases=12, size=16, n_normal=1)
    work = tmp_path / "w"
    run_filter(recs, work, rules=True)
    run_mapping(work, suggester=_lexical_cached)
    pool = _normal_pool(tmp_path)
    s = add_normals(work, [str(pool)], ratio=0.5, min_per_cell=1)
    cells = {(c["anatomy"], c["modality"]): c for c in s["cells"]}
    chest = cells[("Chest", "X-ray")]       # synth: 1 abnormal, 1 normal chest X-ray: target 1 already met
    assert (chest["abnormal"], chest["normal_before"], chest["normal_after"]) == (1, 1, 1)
    head = cells[("Head and Neck", "MRI")]  # 2 abnormal, no normal -> 1 normal wanted, taken from the pool
    assert (head["abnormal"], head["normal_before"], head["normal_after"]) == (2, 0, 1)
    ct = cells[("Abdomen and Pelvis", "CT")]  # 4 abnormal -> 2 wanted, but the pool has none of this cell
    assert ct["normal_after"] == 0
    assert s["added"] == sum(c["normal_after"] - c["normal_before"] for c in s["cells"])
    assert "normal before" in s["table"] and (work / "normals" / "report.txt").exists()
    s2 = add_normals(work, [str(pool)], ratio=0.5, min_per_cell=1)      # rerun: same selection
    assert s2["cells"] == s["cells"]

    out = tmp_path / "ds"
    rep = export_dataset(work, out)
    assert rep["cases"] == 12 + s["added"] and rep["normal_cases"] == 1 + s["added"]
    data = read_json(out / "dataset.json")
    case = data["https://example.org/cases/case-001"]
    assert case["Samples"][0]["articles"] == ["Hip dislocation"]           # non-disorder title dropped
    assert case["Samples"][0]["image_data_path"][0].startswith("data/")
    assert case["key_slice"][0] == {"image_0": 0}
    arr = np.load(out / case["Samples"][0]["image_data_path"][0])
    assert arr.dtype == np.float32 and arr.ndim == 3
    labels = read_json(out / "disorder_label_dict.json")
    assert labels["Normal"] == 0 and sorted(labels.values()) == list(range(len(labels)))
    icd = read_json(out / "icd10_label_dict.json")
    assert icd["Normal"] == 0 and "J93" in icd
    res = load_source("rp3d", out)
    assert len(res.cases) == rep["cases"] and not res.skipped
    assert sum(c.is_normal for c in res.cases) == rep["normal_cases"]
    pnx = next(c for c in res.cases if c.labels == ["Pneumothorax"])
    assert pnx.icd10 == ["J93"] and pnx.scans[0].key_slice == 0


def test_normals_rerun_that_fails_keeps_the_previous_normals(tmp_path, monkeypatch):
    """Red team: `curate normals` deleted WORK/normals first; an unreadable pool scan (or a kill)
    then left no normal cases, and export went on without any, without a word."""
    from raddiag.curation import normals
    from raddiag.curation.filter import run_filter
    from raddiag.curation.mapping import run_mapping
    from raddiag.curation.synth import make_records

    work = tmp_path / "w"
    run_filter(make_records(tmp_path / "records", n_cases=12, size=16, n_normal=1), work, rules=True)
    run_mapping(work, suggester=_lexical_cached)
    pool = _normal_pool(tmp_path)
    assert normals.add_normals(work, [str(pool)], ratio=0.5, min_per_cell=1)["added"] > 0
    before = {p.relative_to(work): p.read_bytes() for p in (work / "normals").rglob("*") if p.is_file()}
    recs = normals.normal_records(work)
    assert all(Path(im["path"]).is_file() for r in recs for st in r["studies"] for im in st["images"])

    def failing(*_a, **_k):                      # the first image of the rerun cannot be written
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(np, "save", failing)
    with pytest.raises(OSError, match="No space left"):
        normals.add_normals(work, [str(pool)], ratio=0.5, min_per_cell=1)
    assert {p.relative_to(work): p.read_bytes() for p in (work / "normals").rglob("*") if p.is_file()} == before
    assert [p.name for p in work.iterdir() if p.name.startswith(".")] == []


_LEX = {}


def _lexical_cached(names, top):
    from raddiag.curation.mapping import lexical_suggest

    return [_LEX.setdefault(n, lexical_suggest([n], top)[0]) for n in names]


@pytest.mark.slow
def test_end_to_end_records_to_training(tmp_path):
    """Generated records -> filter (rules) -> map -> export -> rp3d adapter -> prepare -> train 2 steps."""
    from raddiag.cli import main
    from raddiag.config import preset
    from raddiag.curation.synth import make_records
    from raddiag.data.store import PreparedData
    from raddiag.training import train

    recs = make_records(tmp_path / "records", n_cases=24, size=32, splits=True)
    try:
        import raddiag.knowledge.map  # noqa: F401
        suggester = "knowledge"
    except ModuleNotFoundError:
        suggester = "lexical"
    rc = main(["curate", "all", str(recs), "--work", str(tmp_path / "w"), "--out", str(tmp_path / "ds"),
               "--suggester", suggester, "--prepare", str(tmp_path / "prep"), "--size", "32", "--depth", "4"])
    assert rc == 0
    assert sorted(p.name for p in (tmp_path / "ds").glob("*.json")) == [
        "disorder_label_dict.json", "icd10_label_dict.json", "test.json", "train.json", "val.json"]
    data = PreparedData(tmp_path / "prep")
    assert len(data) == 24 and {r["split"] for r in data.records} == {"train", "val", "test"}
    assert (tmp_path / "prep" / "stats" / "stats.json").exists()
    names = data.label_space("disorder").names
    assert names[0] == "Normal" and "Pneumothorax" in names and "Chest radiograph" not in names
    cfg = preset("tiny", ["data.size=32", "data.depth=4", "train.batch_size=4"])
    result = train(tmp_path / "prep", tmp_path / "run", cfg, max_steps=2, progress=False)
    assert result.steps == 2 and (tmp_path / "run" / "model.safetensors").exists()

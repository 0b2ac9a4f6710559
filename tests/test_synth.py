"""The generated dataset (`raddiag data synth`): label space, shape, determinism, learnability."""
import hashlib
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from raddiag.config import DataConfig
from raddiag.data import synth
from raddiag.data.dataset import CaseDataset, collate_cases
from raddiag.data.readers import read_file
from raddiag.data.store import PreparedData

SMALL = dict(raw_size=(32, 48), raw_depth=(6, 16))


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth")
    report = synth.synthesize(out, n_cases=120, seed=3, size=32, depth=4, workers=1, **SMALL)
    return out, report


# -- label space ---------------------------------------------------------------------------
def test_codes_are_real_icd10cm_and_hierarchy_fixes_the_look():
    import simple_icd_10_cm as icd

    assert 30 <= len(synth.DISORDERS) <= 50
    assert len({d.name for d in synth.DISORDERS}) == len(synth.DISORDERS)
    assert {d.anatomy for d in synth.DISORDERS} == set(synth.ANATOMIES)
    for d in synth.DISORDERS:
        assert len(d.code) == 3 and icd.is_valid_item(d.code), d
        assert icd.is_category(d.code), d
        # the hard-coded block / chapter table agrees with the ICD-10-CM release
        assert synth.ICD_PARENTS[d.code] == (icd.get_parent(d.code), icd.get_ancestors(d.code)[-1])
        assert d.code in synth.CATEGORIES
    # several disorders share a category, and categories share blocks and chapters
    by_code = Counter(d.code for d in synth.DISORDERS)
    assert sum(n > 1 for n in by_code.values()) >= 3
    blocks = Counter(synth.icd_block(c) for c in by_code)
    assert blocks["J09-J18"] == 3 and blocks["I60-I69"] >= 3
    # the look follows the hierarchy: same block -> same family; all neoplasms are masses,
    # all injuries fractures; one category -> one location
    fam = {c: synth.lesion_family(c) for c in by_code}
    for block in blocks:
        assert len({fam[c] for c in by_code if synth.icd_block(c) == block}) == 1, block
    assert {fam[c] for c in by_code if synth.icd_chapter(c) == "2"} == {"mass"}
    assert {fam[c] for c in by_code if synth.icd_chapter(c) == "19"} == {"fracture"}
    glioma, gbm = (synth.lesion_params(d) for d in synth.DISORDERS if d.code == "C71")
    assert (glioma["cv"], glioma["cu"], glioma["family"]) == (gbm["cv"], gbm["cu"], gbm["family"])
    assert glioma != gbm  # ... and the disorder adds its own variation


def test_class_frequencies_are_long_tailed():
    plans = synth._plan(400, seed=0)
    counts = Counter(d.name for p in plans for d in p["disorders"])
    assert set(counts) == {d.name for d in synth.DISORDERS}     # every class present
    top = counts.most_common()
    assert top[0][1] >= 45 and top[-1][1] <= 5                  # head vs a handful
    assert sum(n <= 6 for _, n in top) >= len(top) // 2          # most classes are tail
    normal = sum(not p["disorders"] for p in plans)
    assert 0.15 <= normal / 400 <= 0.2
    assert 0.05 <= sum(len(p["disorders"]) == 2 for p in plans) / 400 <= 0.2
    for p in plans:  # a second disorder is of the same anatomy
        assert len({d.anatomy for d in p["disorders"]}) <= 1
    assert synth.label_groups(400) == (synth.SYNTH_HEAD_MIN, synth.SYNTH_MEDIUM_MIN)


# -- the generated files and the prepared dataset ---------------------------------------------
def test_raw_cases_have_the_shape_of_the_problem(prepared):
    out, report = prepared
    cases = [json.loads(l) for l in (out / "raw" / "manifest.jsonl").read_text().splitlines()]
    assert len(cases) == 120 and report.cases_out == 120 and not report.skipped_scans
    scans = [s for c in cases for s in c["scans"]]
    assert {c["anatomy"] for c in cases} == set(synth.ANATOMIES)
    assert {"CT", "MRI", "X-ray", "Ultrasound"} <= {s["modality"] for s in scans}
    assert set(Counter(len(c["scans"]) for c in cases)) == {1, 2, 3, 4}
    assert any(len({s["is_3d"] for s in c["scans"]}) == 2 for c in cases)  # 2D and 3D in one case
    assert any(len(c["labels"]) == 2 for c in cases)
    assert 0.1 <= sum(c["labels"] == ["Normal"] for c in cases) / 120 <= 0.25
    assert max(Counter(c["patient"] for c in cases).values()) == 2           # returning patients
    for c in cases:
        shown = c["meta"]["lesion_in_scan"]
        assert len(shown) == len(c["scans"])
        assert any(shown) == (c["labels"] != ["Normal"])                    # seen in >= 1 scan
        assert all(not Path(s["paths"][0]).is_absolute() for s in c["scans"])
        if c["labels"] != ["Normal"]:
            assert len(c["icd10"]) >= 1 and all(len(x) == 3 for x in c["icd10"])
    assert any(not all(c["meta"]["lesion_in_scan"]) for c in cases if c["labels"] != ["Normal"])
    for s in scans[:40]:
        f = out / "raw" / s["paths"][0]
        vol = read_file(f)
        if s["is_3d"]:
            assert f.suffix == ".npy" and np.load(f).ndim == 3
            assert 6 <= vol.shape[0] <= 16 and 0 <= s["key_slice"] < vol.shape[0]
        else:
            assert f.suffix == ".png" and vol.shape[0] == 1 and s["key_slice"] is None


def test_prepared_dataset_feeds_the_batch_contract(prepared):
    out, _ = prepared
    data = PreparedData(out)
    assert {r["split"] for r in data.records} == {"train", "val", "test"}
    ls = data.label_space("disorder")
    assert (ls.head_min, ls.medium_min) == synth.label_groups(120)
    assert data.label_space("icd10").names[0] == "Normal" and len(data.label_space("icd10")) < len(ls)
    cfg = DataConfig(size=32, depth=4)
    ds = CaseDataset(data, "train", ls, cfg)
    batch = collate_cases([ds[i] for i in range(8)], depth=cfg.depth)
    N = batch["scan_mask"].shape[1]
    assert batch["images"].shape == (8, N, 1, 4, 32, 32) and batch["images"].dtype == torch.float32
    assert 0 <= batch["images"].min() and batch["images"].max() <= 1
    assert batch["scan_mask"].any(1).all() and batch["labels"].shape == (8, len(ls))
    assert (batch["labels"].sum(1) >= 1).all()
    two_d = batch["scan_mask"] & ~batch["is_3d"]
    assert (batch["slice_mask"][two_d].sum(-1) == 1).all()
    assert ((batch["modality"] > 0) == batch["scan_mask"]).all()
    text = synth.summary(out)
    assert "cases: train" in text and "disorder:" in text and "icd10:" in text and "tail" in text


def _digest(root: Path) -> dict:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_same_files_other_seed_other_files(tmp_path):
    kw = dict(n_cases=10, raw_size=(24, 32), raw_depth=(4, 8))
    synth.generate_cases(tmp_path / "a", seed=5, **kw)
    synth.generate_cases(tmp_path / "b", seed=5, **kw)
    synth.generate_cases(tmp_path / "c", seed=6, **kw)
    a, b, c = (_digest(tmp_path / x / "raw") for x in "abc")
    assert a == b and "manifest.jsonl" in a and len(a) > 10
    assert a != c and a["manifest.jsonl"] != c["manifest.jsonl"]


def test_defects_are_reported_not_fatal(tmp_path):
    report = synth.synthesize(tmp_path, n_cases=4, seed=0, size=16, depth=2, workers=1, with_defects=True,
                              raw_size=(24, 32), raw_depth=(4, 8))
    reasons = " | ".join(s["reason"] for s in report.skipped_scans)
    assert "does not exist" in reasons and "constant" in reasons and "NaN" in reasons
    assert "truncated" in reasons  # the truncated NPY
    assert [c["case"] for c in report.skipped_cases] == ["defect-truncated"]
    assert report.cases_out == 4 + 3


def _data_cli(argv):
    """The `data` command group alone (cli.main would import every sub-package's commands)."""
    import argparse

    from raddiag.data import commands

    parser = argparse.ArgumentParser(prog="raddiag")
    commands.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    return args.func(args)


def test_cli_synth(tmp_path, capsys):
    rc = _data_cli(["data", "synth", "--out", str(tmp_path / "d"), "--cases", "8", "--seed", "1",
                    "--size", "16", "--depth", "2"])
    out = capsys.readouterr().out
    assert rc == 0 and "cases: train" in out and "disorder:" in out
    assert PreparedData(tmp_path / "d").meta["size"] == 16
    with pytest.raises(ValueError, match="--cases must be at least 1"):
        _data_cli(["data", "synth", "--out", str(tmp_path / "e"), "--cases", "0"])


# -- learnability: lesions are visible, siblings look alike ------------------------------------
def _scans(name: str, modality: str, n: int, seed: int, shape, region: str = "forearm") -> np.ndarray:
    """Cheap features of n rendered scans of ``name`` (or ``Normal:<anatomy>``), 2D or the key
    slice: intensity histogram, high-pass histogram and an 8 x 8 thumbnail (min-max scaled first,
    as preprocessing does)."""
    import torch.nn.functional as F

    d = next((d for d in synth.DISORDERS if d.name == name), None)
    anatomy = d.anatomy if d else name.split(":")[1]
    out = []
    for i in range(n):
        rng = np.random.default_rng([seed, i])
        les = synth._case_lesions([d], rng) if d else []
        reg = next((p["region"] for p in les if p.get("region")), region)
        pose = (rng.uniform(-0.12, 0.12), rng.uniform(0.88, 1.06), rng.uniform(-0.05, 0.05), rng.uniform(-0.05, 0.05))
        img = synth.render_scan(anatomy, modality, shape, pose, les, reg, rng)
        if img.ndim == 3:
            z = les[0]["cz_case"] if les else rng.uniform(-0.3, 0.3)
            img = img[:, :, int(round((z + 1) / 2 * (img.shape[2] - 1)))]
        t = torch.from_numpy(img)[None, None]
        t = (t - t.min()) / (t.max() - t.min())
        hp = t - F.avg_pool2d(t, 5, 1, 2, count_include_pad=False)
        sm = F.avg_pool2d(t, 3, 1, 1, count_include_pad=False)
        out.append(torch.cat([torch.histc(sm, 24, 0, 1) / sm.numel(),
                              torch.histc(hp.clamp(-0.3, 0.3), 24, -0.3, 0.3).log1p(),
                              F.adaptive_avg_pool2d(t, 8).flatten()]).numpy())
    return np.stack(out)


def _model():
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=3000))


def _heldout_auc(pos: np.ndarray, neg: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    X = np.concatenate([pos, neg]); y = np.r_[np.ones(len(pos)), np.zeros(len(neg))]
    idx = np.random.default_rng(0).permutation(len(y))
    tr, te = idx[: len(y) // 2], idx[len(y) // 2:]
    clf = _model().fit(X[tr], y[tr])
    return roc_auc_score(y[te], clf.predict_proba(X[te])[:, 1])


# Large lesions only: small local ones (fracture lines, disc bulges, stones) are visible to a CNN
# but not to a linear model on global features.
@pytest.mark.parametrize("name,modality,shape", [
    ("Pneumonia", "X-ray", (48, 48)),
    ("Ischaemic stroke", "CT", (40, 40, 12)),
    ("Pleural effusion", "X-ray", (48, 48)),
    ("Lung cancer", "X-ray", (48, 48)),
])
def test_head_classes_separate_from_normal_on_heldout_scans(name, modality, shape):
    anatomy = next(d.anatomy for d in synth.DISORDERS if d.name == name)
    pos = _scans(name, modality, 40, seed=1, shape=shape)
    neg = _scans(f"Normal:{anatomy}", modality, 40, seed=2, shape=shape)
    assert _heldout_auc(pos, neg) > 0.8


def test_hierarchy_siblings_look_alike():
    """A model of viral pneumonia (J12) vs normal also flags bacterial pneumonia (J15, same block)
    far more often than held-out normal scans."""
    shape = (48, 48)
    viral = _scans("Viral pneumonia", "X-ray", 40, 1, shape)
    normal = _scans("Normal:Chest", "X-ray", 40, 2, shape)
    clf = _model().fit(np.r_[viral, normal], np.r_[np.ones(40), np.zeros(40)])
    sib = clf.predict_proba(_scans("Bacterial pneumonia", "X-ray", 25, 3, shape))[:, 1].mean()
    held_normal = clf.predict_proba(_scans("Normal:Chest", "X-ray", 25, 4, shape))[:, 1].mean()
    assert sib > held_normal + 0.2


def test_synth_refuses_a_folder_with_a_dataset_unless_overwrite(tmp_path):
    from raddiag.data.errors import OutputExists

    kw = dict(n_cases=4, size=16, depth=2, workers=1, raw_size=(24, 32), raw_depth=(4, 8))
    synth.synthesize(tmp_path, seed=0, **kw)
    before = (tmp_path / "raw" / "manifest.jsonl").read_text()
    with pytest.raises(OutputExists, match="holds a dataset already"):
        synth.synthesize(tmp_path, seed=1, **kw)
    assert (tmp_path / "raw" / "manifest.jsonl").read_text() == before   # untouched
    synth.synthesize(tmp_path, seed=1, overwrite=True, **kw)
    assert (tmp_path / "raw" / "manifest.jsonl").read_text() != before


# Same ICD category, told apart by the disorder's own look (a glioblastoma is larger, ring-enhancing
# and oedematous; lacunes are several small deep infarcts): siblings look alike, not identical.
@pytest.mark.parametrize("name,sibling,modality", [
    ("Glioblastoma", "Glioma", "MRI"),
    ("Lacunar infarct", "Ischaemic stroke", "CT"),
])
def test_same_category_siblings_are_told_apart(name, sibling, modality):
    shape = (40, 40, 12)
    assert _heldout_auc(_scans(name, modality, 40, 1, shape), _scans(sibling, modality, 40, 2, shape)) > 0.8

"""Case mixing (train.case_mix, the release's early-fusion rule): label union, the anatomy rule,
the scan caps, determinism and resume, and never at evaluation."""
from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest

from raddiag.config import preset
from raddiag.data.case import Case, Scan
from raddiag.data.case_mix import RELEASE_ANATOMY_WEIGHTS, CaseMix
from raddiag.data.dataset import CaseDataset
from raddiag.data.store import PreparedData, prepare_cases

# anatomy -> (labels of its cases, scans per case as modalities)
PLAN = {"Chest": (["Pneumonia"], ["X-ray", "X-ray", "X-ray", "CT"]),
        "Spine": (["Spinal stenosis"], ["MRI", "MRI", "MRI", "MRI"]),
        "Breast": (["Normal"], ["Mammography", "Mammography"])}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """12 Chest, 6 Spine, 6 Breast training cases (Breast ones normal) and 3 val cases; 8 px scans."""
    root = tmp_path_factory.mktemp("mix")
    rng = np.random.default_rng(0)
    cases = []
    for anatomy, n in (("Chest", 12), ("Spine", 6), ("Breast", 6)):
        labels, mods = PLAN[anatomy]
        for i in range(n + 1):
            scans = []
            for j, m in enumerate(mods):
                path = root / f"{anatomy}{i}_{j}.npy"
                np.save(path, rng.random((8, 8), dtype=np.float32))
                scans.append(Scan(paths=[str(path)], modality=m, is_3d=False))
            cases.append(Case(id=f"{anatomy}{i}", scans=scans, labels=labels, icd10=[], anatomy=anatomy,
                              split="val" if i == n else "train", patient=f"{anatomy}{i}"))
    prepare_cases(cases, root / "prepared", size=8, depth=1, workers=1)
    return PreparedData(root / "prepared")


def _cfg(**extra):
    sets = {"data.size": 8, "data.depth": 1, "data.max_scans": 3, "train.aug_prob": 0.0, **extra}
    return preset("tiny", [f"{k}={v}" for k, v in sets.items()])


def _mix(data, prob=1.0, seed=0, **extra):
    cfg = _cfg(**extra)
    labels = data.label_space("disorder")
    return CaseMix(CaseDataset(data, "train", labels, cfg.data, train=True, seed=seed), prob, seed)


def test_mixed_labels_are_the_union_and_normal_only_without_a_disorder(data):
    ds = _mix(data)
    names = ds.labels.names
    by_id = {r["id"]: r for r in data.records}
    for n in range(len(ds)):
        s = ds[n]
        a, b = s["case_id"].split("+")
        union = set(by_id[a]["labels"]) | set(by_id[b]["labels"])
        want = union - {"Normal"} if union - {"Normal"} else {"Normal"}
        got = {names[c] for c in np.flatnonzero(s["labels"].numpy())}
        assert got == want, s["case_id"]
        assert s["anatomy"] == by_id[a]["anatomy"]


def test_partner_is_of_another_anatomy_drawn_by_the_release_weights(data):
    ds = _mix(data)
    chest = [i for i in ds.indices if ds.parent.records[i]["anatomy"] == "Chest"][0]
    rng = np.random.default_rng(5)
    drawn = Counter(ds.parent.records[ds.partner(chest, rng)]["anatomy"] for _ in range(3000))
    assert set(drawn) == {"Spine", "Breast"}                       # never its own anatomy
    p = RELEASE_ANATOMY_WEIGHTS["Spine"] / (RELEASE_ANATOMY_WEIGHTS["Spine"] + RELEASE_ANATOMY_WEIGHTS["Breast"])
    assert abs(drawn["Spine"] / 3000 - p) < 4 * math.sqrt(p * (1 - p) / 3000)      # 6 : 1
    for n in range(len(ds)):
        a, b = ds[n]["case_id"].split("+")
        assert a.rstrip("0123456789") != b.rstrip("0123456789")


def test_each_case_keeps_its_scan_caps_and_the_partner_follows(data):
    ds = _mix(data, **{"data.max_scans": 3})
    by_id = {r["id"]: r for r in data.records}
    for n in range(len(ds)):
        s = ds[n]
        a, b = s["case_id"].split("+")
        own = len(ds.cases[n]["scans"])
        assert own == min(3, len(by_id[a]["scans"]), sum(min(v, ds.cfg.modality_caps.get(k, 1))
                                                         for k, v in Counter(x["modality"] for x in by_id[a]["scans"]).items()))
        mods = [x["modality"] for x in s["scans"]]
        part = Counter(mods[own:])
        assert len(mods) - own <= 3 and all(v <= ds.cfg.modality_caps.get(k, 1) for k, v in part.items())
        assert {x["modality"] for x in by_id[b]["scans"]} >= set(part)
    # max_scans 1: a mixed case is exactly two scans, one of each case
    one = _mix(data, **{"data.max_scans": 1})
    assert {len(one[n]["scans"]) for n in range(len(one))} == {2}


def test_rate_determinism_and_resume(data):
    ds = _mix(data, prob=0.3, seed=4)
    def draws(d, epoch):
        d.set_epoch(epoch)
        return [(d[n]["case_id"], [x["image"].sum().item() for x in d[n]["scans"]]) for n in range(len(d))]
    first = draws(ds, 0)
    assert draws(_mix(data, prob=0.3, seed=4), 0) == first       # a resumed run: a fresh dataset, same draws
    mixed = [cid for e in range(6) for cid, _ in draws(ds, e) if "+" in cid]
    assert abs(len(mixed) / (6 * len(ds)) - 0.3) < 4 * math.sqrt(0.21 / (6 * len(ds)))
    assert draws(ds, 1) != first                                 # a new epoch draws again
    plain = CaseDataset(data, "train", ds.labels, ds.cfg, train=True, seed=4)
    off = CaseMix(plain, 0.0, 4)
    assert [off[n]["case_id"] for n in range(len(off))] == [plain[n]["case_id"] for n in range(len(plain))]


def test_trainer_mixes_training_cases_only(data):
    from raddiag.training.trainer import _train_data
    from raddiag.training import distributed as dist_utils
    from raddiag.data.dataset import make_loader

    cfg = _cfg(**{"train.case_mix": 1.0})
    labels = data.label_space("disorder")
    train_ds, val_ds, *_ = _train_data(dist_utils.Dist(), data, cfg, labels, None, CaseDataset, make_loader)
    assert isinstance(train_ds, CaseMix) and all("+" in train_ds[n]["case_id"] for n in range(len(train_ds)))
    assert type(val_ds) is CaseDataset and not val_ds.train
    assert all("+" not in val_ds[n]["case_id"] for n in range(len(val_ds)))
    with pytest.raises(ValueError, match="case_mix joins cases"):
        _train_data(dist_utils.Dist(), data, _cfg(**{"train.case_mix": 0.3, "model.fusion": "max"}), labels, None,
                    CaseDataset, make_loader)
    with pytest.raises(ValueError, match="train.case_mix must be a probability"):
        _cfg(**{"train.case_mix": 1.5})

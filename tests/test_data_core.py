"""The data core: preprocessing, splits, the prepared store and the batch contract."""
import json

import numpy as np
import pytest
import torch

from raddiag.config import DataConfig
from raddiag.data.case import Case, Scan, read_manifest, write_manifest
from raddiag.data.dataset import CaseDataset, collate_cases, make_loader, select_scans
from raddiag.data.errors import ScanError
from raddiag.data.labels import LabelSpace
from raddiag.data.preprocess import depth_indices, preprocess_volume
from raddiag.data.splits import assign_splits
from raddiag.data.store import PreparedData, prepare_cases


def _vol(path, shape, seed=0):
    np.save(path, np.random.default_rng(seed).normal(100, 20, shape).astype(np.float32))
    return str(path)


def test_depth_resampling_follows_the_release_rule():
    assert depth_indices(5, 32).tolist() == list(range(5))
    idx = depth_indices(100, 32)
    assert len(idx) == 32 and idx[0] == 0 and idx[-1] == 96 and np.all(np.diff(idx) > 0)


def test_preprocess_scales_resizes_and_maps_key_slice():
    vol = np.random.default_rng(0).normal(0, 1, (64, 40, 50)).astype(np.float32)
    out, key = preprocess_volume(vol, size=16, depth=8, key_slice=33)
    assert out.shape == (8, 16, 16) and out.min() >= 0 and out.max() <= 1
    assert key == 4  # slice 32 is kept at position 4; 33 is nearest to it
    with pytest.raises(ScanError, match="constant image"):
        preprocess_volume(np.ones((1, 8, 8)), 8, 8, source="flat.png")
    bad = vol.copy(); bad[0, 0, 0] = np.nan
    with pytest.raises(ScanError, match="NaN"):
        preprocess_volume(bad, 8, 8)
    with pytest.raises(ScanError, match="shape"):
        preprocess_volume(np.zeros((0, 8, 8)), 8, 8)


def test_splits_are_patient_level_seeded_and_exact():
    cases = [Case(id=f"c{i}", patient=f"p{i // 3}", scans=[Scan("x.npy", "CT")]) for i in range(300)]
    assign_splits(cases, seed=1)
    by_patient = {}
    for c in cases:
        assert by_patient.setdefault(c.patient, c.split) == c.split
    counts = {s: sum(c.split == s for c in cases) for s in ("train", "val", "test")}
    assert counts == {"train": 210, "val": 30, "test": 60}
    again = [Case(id=c.id, patient=c.patient, scans=c.scans) for c in reversed(cases)]
    assign_splits(again, seed=1)
    assert {c.id: c.split for c in again} == {c.id: c.split for c in cases}


def test_label_space_groups_and_round_trip(tmp_path):
    cases = ([Case(id=f"a{i}", split="train", labels=["Pneumonia"], icd10=["J18"], scans=[]) for i in range(120)]
             + [Case(id=f"b{i}", split="train", labels=["Glioma"], icd10=["C71"], scans=[]) for i in range(40)]
             + [Case(id=f"c{i}", split="train", labels=["Rare thing"], icd10=["Q99"], scans=[]) for i in range(3)]
             + [Case(id="n", split="train", labels=[], scans=[]), Case(id="t", split="test", labels=["Unseen"], scans=[])])
    ls = LabelSpace.from_cases(cases)
    assert ls.names[:4] == ["Normal", "Pneumonia", "Glioma", "Rare thing"] and "Unseen" in ls
    assert list(ls.groups[:4]) == ["head", "head", "medium", "tail"]
    assert ls.codes[1] == "J18" and ls.counts[ls.index("Unseen")] == 0
    icd = LabelSpace.from_cases(cases, granularity="icd10")
    assert icd.names[:2] == ["Normal", "J18"]
    ls.save(tmp_path / "l.json")
    assert LabelSpace.load(tmp_path / "l.json").names == ls.names
    with pytest.raises(KeyError, match="not in the label space"):
        ls.encode(["Nope"])


def test_manifest_round_trip_and_errors(tmp_path):
    c = Case(id="x", scans=[Scan("img/a.png", "xr")], labels=["Pneumonia"])
    write_manifest([c], tmp_path / "m.jsonl")
    (case,) = read_manifest(tmp_path / "m.jsonl")
    assert case.scans[0].modality == "X-ray" and case.scans[0].paths == [str(tmp_path / "img/a.png")]
    (tmp_path / "bad.jsonl").write_text('{"id": "y", "scans": [{"path": "a.png", "modality": "PETCTX"}]}\n')
    with pytest.raises(ValueError, match=r"bad.jsonl:1: case 'y' scan 0: .*unknown modality 'PETCTX'"):
        list(read_manifest(tmp_path / "bad.jsonl"))
    (tmp_path / "broken.jsonl").write_text('{"id": \n')
    with pytest.raises(ValueError, match=r"broken.jsonl:1: not valid JSON"):
        list(read_manifest(tmp_path / "broken.jsonl"))


@pytest.fixture
def prepared(tmp_path):
    cases = [
        Case(id="ct+xr", split="train", labels=["Pneumonia"], icd10=["J18"], anatomy="Chest",
             scans=[Scan(_vol(tmp_path / "ct.npy", (40, 40, 20)), "CT", key_slice=10),
                    Scan(_vol(tmp_path / "xr.npy", (50, 40), 1), "X-ray")]),
        Case(id="mri", split="train", labels=["Glioma"], icd10=["C71"], anatomy="Head and Neck",
             scans=[Scan(_vol(tmp_path / "mr.npy", (32, 32, 5), 2), "MRI")]),
        Case(id="broken", split="test", labels=["Glioma"], scans=[Scan(str(tmp_path / "missing.npy"), "MRI")]),
        Case(id="flat", split="val", labels=["Normal"],
             scans=[Scan(str(tmp_path / "flat.npy"), "CT"), Scan(_vol(tmp_path / "ok.npy", (20, 20), 3), "X-ray")]),
    ]
    np.save(tmp_path / "flat.npy", np.ones((8, 8, 3), np.float32))
    out = tmp_path / "prep"
    report = prepare_cases(cases, out, size=16, depth=8, workers=1)
    return out, report


def test_prepare_reports_every_skip(prepared):
    out, report = prepared
    assert report.cases_out == 3 and report.scans_out == 4
    reasons = {s["file"].split("/")[-1]: s["reason"] for s in report.skipped_scans}
    assert reasons["missing.npy"] == "file does not exist"
    assert "constant image" in reasons["flat.npy"]
    assert report.skipped_cases == [{"case": "broken", "reason": "no usable scan left"}]
    text = (out / "report.txt").read_text()
    assert "missing.npy" in text and "flat.npy" in text


def test_prepare_strict_stops_at_first_problem(tmp_path):
    case = Case(id="m", scans=[Scan(str(tmp_path / "missing.npy"), "CT")])
    with pytest.raises(ScanError, match="missing.npy: file does not exist"):
        prepare_cases([case], tmp_path / "p", size=8, depth=4, strict=True, workers=1)


def test_batches_follow_the_contract(prepared):
    out, _ = prepared
    data = PreparedData(out)
    labels = data.label_space("disorder")
    cfg = DataConfig(size=8, depth=4)  # smaller than stored: resampled on load
    ds = CaseDataset(data, "train", labels, cfg)
    batch = collate_cases([ds[0], ds[1]], depth=cfg.depth)
    assert batch["images"].shape == (2, 2, 1, 4, 8, 8)
    assert batch["scan_mask"].tolist() == [[True, True], [True, False]]
    assert batch["slice_mask"][0].sum(1).tolist() == [4, 1]       # CT 20 -> 4 slices; X-ray one
    assert batch["is_3d"].tolist() == [[True, False], [True, False]]
    assert batch["modality"][1, 1] == 0 and batch["modality"][0, 0] == 1
    assert batch["key_slice"][0, 0] == 2 and batch["key_slice"][0, 1] == -1
    assert batch["images"][1, 1].abs().sum() == 0 and batch["images"][0, 1, :, 1:].abs().sum() == 0
    assert batch["labels"][0, labels.index("Pneumonia")] == 1 and batch["labels"][1, labels.index("Glioma")] == 1
    assert float(batch["images"].max()) <= 1.0
    loader = make_loader(ds, batch_size=2)
    assert next(iter(loader))["images"].shape[3] == 4


def test_scan_selection_caps_and_fixed_eval_order():
    scans = [{"modality": m} for m in ["CT", "CT", "CT", "CT", "X-ray", "X-ray", "X-ray", "Ultrasound", "Ultrasound"]]
    cfg = DataConfig(max_scans=10)
    assert select_scans(scans, cfg, None) == [0, 1, 2, 4, 5, 7]
    cfg4 = DataConfig(max_scans=4)
    assert select_scans(scans, cfg4, None) == select_scans(scans, cfg4, None)
    picks = {tuple(sorted(select_scans(scans, cfg4, np.random.default_rng(s)))) for s in range(20)}
    assert len(picks) > 1 and all(len(p) == 4 for p in picks)


def test_abnormal_case_without_codes_is_not_normal_at_icd_granularity():
    ls = LabelSpace(names=["Normal", "J18"], granularity="icd10")
    assert ls.case_labels(Case(id="a", scans=[], labels=["Odd disorder"], icd10=[])) == []
    assert ls.case_labels(Case(id="n", scans=[], labels=["Normal"])) == ["Normal"]
    assert ls.case_labels({"labels": [], "icd10": ["J18"]}) == ["J18"]
    dis = LabelSpace(names=["Normal", "Odd disorder"])
    assert dis.case_labels({"labels": [], "icd10": ["J18"]}) == []


@pytest.mark.timeout(300)
def test_parallel_prepare_after_thread_pools_started(tmp_path):
    """Worker processes must not inherit a forked copy of running thread pools (torch/OpenMP, the
    tokenizers' pool): with fork the children deadlocked when prepare ran after model code."""
    from raddiag.knowledge.encoder import TextEncoder

    torch.set_num_threads(2)
    TextEncoder.load(None).encode([f"term {i}" for i in range(64)])
    cases = [Case(id=f"c{i}", split="train", labels=["X"], scans=[Scan(_vol(tmp_path / f"{i}.npy", (24, 24, 3), i), "CT")])
             for i in range(12)]
    report = prepare_cases(cases, tmp_path / "p", size=16, depth=4, workers=2)
    assert report.scans_out == 12
    assert np.asarray(PreparedData(tmp_path / "p").scan_array(PreparedData(tmp_path / "p").records[5]["scans"][0])).shape == (3, 16, 16)


class _AddEpochNoise:
    """A scan transform that adds one random number of the case's generator (picklable)."""

    def __call__(self, item, rng):
        item["image"] = item["image"] + float(rng.normal())
        return item


def test_loader_workers_see_each_epochs_draws(prepared):
    """Augmentation is seeded by (seed, epoch, case): a worker process must see the new epoch
    (persistent workers kept their first-epoch copy of the dataset and replayed its draws)."""
    from raddiag.data.dataset import make_loader

    out, _ = prepared
    data = PreparedData(out)
    ds = CaseDataset(data, "train", data.label_space("disorder"), DataConfig(size=8, depth=4), train=True,
                     scan_transform=_AddEpochNoise())
    loader = make_loader(ds, batch_size=2, num_workers=1)
    firsts = []
    for epoch in (0, 1):
        ds.set_epoch(epoch)
        firsts.append(next(iter(loader))["images"].clone())
        ds.set_epoch(epoch)
        assert torch.equal(collate_cases([ds[0], ds[1]], depth=4)["images"], firsts[-1]), epoch
    assert not torch.equal(firsts[0], firsts[1])


def test_persistent_workers_follow_the_samplers_epoch(prepared):
    """With a resumable sampler the train loader keeps its worker process across epochs; each
    index carries its epoch, so the worker reads every epoch's draws (never the first's again),
    the same batches as loading in this process."""
    from raddiag.training.sampler import ResumableSampler

    out, _ = prepared
    data = PreparedData(out)

    def batches(workers):
        ds = CaseDataset(data, "train", data.label_space("disorder"), DataConfig(size=8, depth=4), train=True,
                         scan_transform=_AddEpochNoise())
        sampler = ResumableSampler(ds, shuffle=True, seed=0)
        loader = make_loader(ds, batch_size=2, sampler=sampler, num_workers=workers, seed=0)
        got = []
        for epoch in (0, 1, 2):
            sampler.set_epoch(epoch)
            ds.set_epoch(epoch)
            got.append(list(loader))
        return loader, got

    loader, with_worker = batches(1)
    assert loader.persistent_workers
    _, in_process = batches(0)
    for epoch_w, epoch_p in zip(with_worker, in_process):
        for a, b in zip(epoch_w, epoch_p, strict=True):
            # the same batch contract: small tensors crossed by value come back as tensors
            assert a.keys() == b.keys()
            for k in a:
                assert type(a[k]) is type(b[k]), k
                if torch.is_tensor(a[k]):
                    assert a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]), k
                else:
                    assert a[k] == b[k], k
    assert not torch.equal(with_worker[0][0]["images"], with_worker[1][0]["images"])


def test_a_loader_with_workers_passes_a_callers_collate_through(prepared):
    """A collate the caller sets that returns no dict works with worker processes as without."""
    from raddiag.data.dataset import make_loader

    out, _ = prepared
    data = PreparedData(out)
    ds = CaseDataset(data, "train", data.label_space("disorder"), DataConfig(size=8, depth=4))
    got = {}
    for workers in (0, 1):
        loader = make_loader(ds, batch_size=2, num_workers=workers)
        loader.collate_fn = lambda samples: [s["case_id"] for s in samples]
        got[workers] = list(loader)
    assert got[0] == got[1] and got[0][0] == [ds[0]["case_id"], ds[1]["case_id"]]

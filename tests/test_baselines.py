"""The paper's pooling baselines (Supplementary B): a scan-level classifier trained on single
scans carrying their case's labels, its per-scan probabilities pooled at case level."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from test_training_data import make_tiny_data, tiny_overrides


def _record_forward(monkeypatch) -> list[tuple[bool, list[int]]]:
    """Instrument RadDiag.forward: (training?, real scans per sample) of every batch."""
    from raddiag.models.raddiag import RadDiag

    calls: list[tuple[bool, list[int]]] = []
    real = RadDiag.forward

    def spy(self, images, scan_mask, *a, **k):
        calls.append((self.training, scan_mask.sum(1).tolist()))
        return real(self, images, scan_mask, *a, **k)

    monkeypatch.setattr(RadDiag, "forward", spy)
    return calls


@pytest.mark.slow
def test_pooling_baseline_trains_on_single_scans_and_mil_on_cases(tmp_path, monkeypatch):
    from raddiag.config import preset
    from raddiag.data.dataset import CaseDataset
    from raddiag.data.store import PreparedData
    from raddiag.inference import predict_dataset
    from raddiag.models import load_model
    from raddiag.training import train

    data = make_tiny_data(tmp_path / "d", n_cases=16)
    prepared = PreparedData(data)
    train_scans = sum(len(r["scans"]) for r in prepared.records_for("train"))
    train_cases = len(prepared.records_for("train"))
    assert train_scans > train_cases                       # some training cases have two scans
    # no last batch of a single 1-slice 32 px scan (BatchNorm cannot train on one value per channel)
    bs = next(b for b in (4, 3, 5, 6) if train_scans % b != 1 and train_cases % b != 1)
    calls = _record_forward(monkeypatch)
    train(data, tmp_path / "max", preset("tiny", tiny_overrides(**{"train.epochs": 1, "model.fusion": "max",
                                                                  "train.batch_size": bs})), progress=False)
    seen = [n for training, per in calls if training for n in per]
    assert seen == [1] * train_scans                       # every training sample is one scan, each scan once
    assert any(n > 1 for training, per in calls if not training for n in per)   # validation pools whole cases

    calls.clear()
    train(data, tmp_path / "mil", preset("tiny", tiny_overrides(**{"train.epochs": 1, "model.fusion": "mil_max",
                                                                  "train.batch_size": bs})), progress=False)
    seen = [n for training, per in calls if training for n in per]
    assert len(seen) == train_cases and max(seen) == 2     # MIL: whole cases through the pool

    # the run folder works like any other: thresholds from validation, prediction at case level
    monkeypatch.undo()
    model, cfg, labels = load_model(tmp_path / "max")
    assert cfg.model.fusion == "max" and labels.thresholds is not None
    pred = predict_dataset(model, CaseDataset(data, "val", labels, cfg.data), batch_size=4)
    assert pred.scores.shape == (len(prepared.records_for("val")), len(labels))


def _case_batch(B=3, N=3, D=4, S=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    images = torch.rand(B, N, 1, D, S, S, generator=g)
    scan_mask = torch.tensor([[1, 1, 1], [1, 0, 0], [1, 1, 0]], dtype=torch.bool)[:B, :N]
    images[~scan_mask] = 0
    slice_mask = scan_mask[..., None].expand(B, N, D).clone()
    modality = scan_mask.long()
    return images, scan_mask, slice_mask, modality


@pytest.mark.parametrize("fusion, mode", [("max", "max"), ("mean", "mean"), ("random", "random"),
                                          ("mil_mean", "mean"), ("max", "set:mean"), ("max", "set:random")])
def test_case_pooling_of_scan_probabilities_matches_numpy(fusion, mode):
    from raddiag.config import preset
    from raddiag.models import build_model

    torch.manual_seed(0)
    model = build_model(preset("tiny", tiny_overrides(**{"model.fusion": fusion})), 5).eval()
    if mode.startswith("set:"):  # one scan-level training, evaluated with another pooling
        mode = mode[4:]
        model.set_pooling(mode)
    images, scan_mask, slice_mask, modality = _case_batch()
    with torch.no_grad():
        case_p = torch.sigmoid(model(images, scan_mask, slice_mask, modality)).double().numpy()
        # the scan-level model applied to each real scan alone
        per_scan = [[torch.sigmoid(model(images[b:b + 1, n:n + 1], scan_mask[b:b + 1, n:n + 1],
                                         slice_mask[b:b + 1, n:n + 1], modality[b:b + 1, n:n + 1]))[0].double().numpy()
                     for n in range(images.shape[1]) if scan_mask[b, n]] for b in range(images.shape[0])]
    for b, probs in enumerate(per_scan):
        probs = np.stack(probs)                              # [real scans, C]
        if mode == "max":
            np.testing.assert_allclose(case_p[b], probs.max(0), rtol=1e-5, atol=1e-6)
        elif mode == "mean":
            np.testing.assert_allclose(case_p[b], probs.mean(0), rtol=1e-5, atol=1e-6)
        else:  # one of the case's own scans, the whole probability vector
            dist = np.abs(probs - case_p[b]).max(1)
            assert dist.min() < 1e-5
    if mode == "random":  # deterministic at evaluation
        with torch.no_grad():
            again = torch.sigmoid(model(images, scan_mask, slice_mask, modality)).double().numpy()
        np.testing.assert_array_equal(case_p, again)


def test_scan_dataset_yields_every_scan_with_its_case_labels(tmp_path):
    from raddiag.config import preset
    from raddiag.data.dataset import CaseDataset, ScanDataset
    from raddiag.data.store import PreparedData

    data = make_tiny_data(tmp_path / "d", n_cases=12)
    cfg = preset("tiny", tiny_overrides())
    cases = CaseDataset(data, "train", PreparedData(data).label_space("disorder"), cfg.data)
    picked = [0, 2, 3]
    scans = ScanDataset(cases, picked)
    expect = [(cases.records[i]["id"], j) for i in picked for j in range(len(cases.records[i]["scans"]))]
    assert len(scans) == len(expect)
    for n, (cid, j) in enumerate(expect):
        item = scans[n]
        assert item["case_id"] == cid and len(item["scans"]) == 1
        i = [r["id"] for r in cases.records].index(cid)
        assert torch.equal(item["labels"], torch.from_numpy(cases.targets[i]))
        assert torch.equal(item["scans"][0]["image"], cases.scan_item(cases.records[i], j, None)["image"])
    rows = [i for i in picked for _ in cases.records[i]["scans"]]
    np.testing.assert_array_equal(scans.targets, cases.targets[rows])


def test_set_pooling_refuses_the_fusion_module():
    from raddiag.config import preset
    from raddiag.models import build_model

    model = build_model(preset("tiny", tiny_overrides()), 3)
    with pytest.raises(ValueError, match="pooling model"):
        model.set_pooling("max")

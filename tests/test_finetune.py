"""Fine-tuning: stratified subsets, what is kept from the pre-trained run, and --scratch."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from raddiag.transfer.finetune import stratified_subset
from test_training_data import make_tiny_data, tiny_overrides


def test_stratified_subset_is_seeded_sized_and_keeps_every_class():
    rng = np.random.default_rng(0)
    n, C = 1000, 30
    freq = 0.5 / (1 + np.arange(C))              # long-tailed
    y = rng.random((n, C)) < freq
    y[:, 29] = False
    y[[3, 700], 29] = True                        # a class with two cases
    for f in (0.01, 0.1, 0.3):
        idx = stratified_subset(y, f, seed=1)
        assert np.array_equal(idx, stratified_subset(y, f, seed=1))
        assert not np.array_equal(idx, stratified_subset(y, f, seed=2))
        assert len(np.unique(idx)) == len(idx) and np.all(np.diff(idx) > 0)
        assert f * n * 0.8 <= len(idx) <= f * n + C + 2           # about F, plus at most one per class
        assert y[idx].any(0)[y.any(0)].all()                        # no class with cases is lost
    assert np.array_equal(stratified_subset(y, 1.0), np.arange(n))
    with pytest.raises(ValueError, match="fraction"):
        stratified_subset(y, 0.0)
    # stratified: a common class keeps roughly its share
    idx = stratified_subset(y, 0.3, seed=0)
    assert abs(y[idx, 0].mean() - y[:, 0].mean()) < 0.05


def _single_image_data(root, n_cases=24):
    """The tiny data with every case cut down to its first scan (single-image target)."""
    from raddiag.data.store import PreparedData, prepare_cases

    cases = PreparedData(make_tiny_data(root / "multi", n_cases=n_cases, seed=3)).cases()
    for c in cases:
        c.scans = c.scans[:1]
    prepare_cases(cases, root / "single", size=32, depth=4, workers=1)
    return root / "single"


@pytest.mark.slow
def test_finetune_keeps_encoder_drops_fusion_and_scratch_does_not(tmp_path):
    from raddiag.cli import main
    from raddiag.config import preset
    from raddiag.models import load_model
    from raddiag.training import train

    data = make_tiny_data(tmp_path / "pre", n_cases=24)
    train(data, tmp_path / "pre_run", preset("tiny", tiny_overrides(**{"train.epochs": 1})), progress=False)
    pre, _, _ = load_model(tmp_path / "pre_run")
    target = _single_image_data(tmp_path)

    # lr=0: whatever fine-tuning keeps stays bit-identical, so we can see what was inherited
    rc = main(["finetune", str(tmp_path / "pre_run"), "--data", str(target), "--fraction", "0.3",
               "--out", str(tmp_path / "ft"), "--epochs", "1", "--set", "train.lr=0", "--no-progress"])
    assert rc == 0
    ft, cfg, labels = load_model(tmp_path / "ft")
    assert cfg.model.fusion == "mean" and ft.fusion is None           # single-image data: fusion dropped
    # parameters (BatchNorm running statistics still move at lr=0)
    pre_sd, ft_sd = dict(pre.named_parameters()), dict(ft.named_parameters())
    enc = [k for k in ft_sd if k.startswith("encoder.")]
    assert enc and all(torch.equal(pre_sd[k], ft_sd[k]) for k in enc)  # visual encoder inherited
    info = json.loads((tmp_path / "ft" / "finetune.json").read_text())
    assert info["kept"] == ["encoder"] and info["fraction"] == 0.3 and not info["scratch"]
    assert info["train_cases"] < info["train_cases_total"]
    assert labels.thresholds is not None

    rc = main(["finetune", str(tmp_path / "pre_run"), "--data", str(target), "--fraction", "0.3",
               "--out", str(tmp_path / "scratch"), "--epochs", "1", "--set", "train.lr=0", "--scratch",
               "--no-progress"])
    assert rc == 0
    sc, _, _ = load_model(tmp_path / "scratch")
    sc_sd = dict(sc.named_parameters())
    assert not all(torch.equal(pre_sd[k], sc_sd[k]) for k in enc)   # random init, not the pre-trained encoder
    assert json.loads((tmp_path / "scratch" / "finetune.json").read_text())["kept"] == []


@pytest.mark.slow
def test_finetune_multi_scan_keeps_fusion(tmp_path):
    from raddiag.config import preset
    from raddiag.models import load_model
    from raddiag.training import train
    from raddiag.transfer.finetune import finetune

    data = make_tiny_data(tmp_path / "pre", n_cases=24)
    train(data, tmp_path / "pre_run", preset("tiny", tiny_overrides(**{"train.epochs": 1})), progress=False)
    pre, _, _ = load_model(tmp_path / "pre_run")
    target = make_tiny_data(tmp_path / "target", n_cases=24, seed=9)
    res = finetune(tmp_path / "pre_run", target, tmp_path / "ft", 1.0, epochs=1, overrides=["train.lr=0"],
                   progress=False)
    assert res.epochs_run == 1
    ft, cfg, _ = load_model(tmp_path / "ft")
    assert cfg.model.fusion == "transformer"
    pre_sd, ft_sd = dict(pre.named_parameters()), dict(ft.named_parameters())
    fus = [k for k in ft_sd if k.startswith("fusion.")]
    assert fus and all(torch.equal(pre_sd[k], ft_sd[k]) for k in fus)
    with pytest.raises(ValueError, match="fraction"):
        finetune(tmp_path / "pre_run", target, tmp_path / "bad", 1.5)
    with pytest.raises(ValueError, match="only with --scratch"):   # a pre-trained ResNet file: baselines only
        finetune(tmp_path / "pre_run", target, tmp_path / "bad", 1.0, pretrained=tmp_path / "r50.pth")

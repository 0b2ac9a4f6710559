"""The trainer: schedule, sampler, checkpoints, augmentation, and that a tiny model learns."""
from __future__ import annotations

import csv
import random

import numpy as np
import pytest
import torch

from raddiag.config import preset
from raddiag.training.augment import build_scan_transform
from raddiag.training.checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from raddiag.training.sampler import RepeatFactorSampler, ResumableSampler, repeat_factors
from raddiag.training.optim import lr_factor
from test_training_data import make_tiny_data, tiny_overrides


# -- schedule ---------------------------------------------------------------------------
def test_lr_warmup_then_cosine():
    f = [lr_factor(s, 10, 100) for s in range(100)]
    assert f[0] == pytest.approx(0.1) and f[9] == pytest.approx(1.0)
    assert all(a < b for a, b in zip(f[:10], f[1:10]))            # linear warm-up
    assert all(a >= b for a, b in zip(f[10:], f[11:]))            # then non-increasing
    assert f[55] == pytest.approx(0.5, abs=0.02)                   # cosine midpoint
    assert lr_factor(100, 10, 100) == pytest.approx(0.0, abs=1e-12)
    assert lr_factor(0, 0, 10) == pytest.approx(1.0)               # no warm-up


# -- sampler -------------------------------------------------------------------------------
def test_sampler_is_seeded_resumable_and_shards():
    data = list(range(23))
    s = ResumableSampler(data, seed=3)
    s.set_epoch(0)
    e0 = list(s)
    assert sorted(e0) == data
    s.set_epoch(1)
    e1 = list(s)
    assert e1 != e0 and sorted(e1) == data
    s.set_epoch(0)
    assert list(s) == e0                                           # a function of (seed, epoch)
    s.set_start(8)
    assert list(s) == e0[8:] and len(s) == 15                      # skip consumed indices
    s.set_epoch(2)
    assert len(list(s)) == 23                                      # a new epoch starts at 0
    shards = [ResumableSampler(data, num_replicas=2, rank=r, seed=3) for r in (0, 1)]
    for sh in shards:
        sh.set_epoch(0)
    a, b = list(shards[0]), list(shards[1])
    assert len(a) == len(b) == 12 and set(a) | set(b) == set(data)


def test_repeat_factors_worked_example():
    # class A in 1 of 10 cases (f = 0.1), class B in 5 of 10 (f = 0.5); t = 0.4:
    # r_A = sqrt(0.4 / 0.1) = 2, r_B = max(1, sqrt(0.8)) = 1; a case takes its rarest class's factor
    y = np.zeros((10, 2), int)
    y[0] = [1, 1]
    y[1:5, 1] = 1
    r = repeat_factors(y, 0.4)
    assert r.tolist() == [2.0, 1, 1, 1, 1, 1, 1, 1, 1, 1]
    assert repeat_factors(y, 0.0).tolist() == [1.0] * 10


def test_repeat_factor_sampler_draws_rare_cases_more_with_a_fixed_epoch_length():
    factors = np.array([1.0, 2.5, 1.5, 1.0, 3.0])          # sum 9
    s = RepeatFactorSampler(list(range(5)), factors, seed=1)
    counts = []
    for epoch in range(400):
        s.set_epoch(epoch)
        order = list(s)
        assert len(order) == len(s) == 9                   # same length every epoch (schedule, DDP)
        c = np.bincount(order, minlength=5)
        assert (c >= np.floor(factors)).all() and (c <= np.ceil(factors)).all()
        counts.append(c)
    assert np.abs(np.mean(counts, 0) - factors).max() < 0.06     # r_i copies per epoch on average
    s.set_epoch(3)
    e3 = list(s)
    s.set_epoch(3)
    assert list(s) == e3                                   # a function of (seed, epoch)
    s.set_start(4)
    assert list(s) == e3[4:] and len(s) == 5
    ranks = [RepeatFactorSampler(list(range(5)), factors, num_replicas=2, rank=r, seed=1) for r in (0, 1)]
    for r in ranks:
        r.set_epoch(3)
    a, b = list(ranks[0]), list(ranks[1])
    assert len(a) == len(b) == 5                           # padded to the world size
    assert sorted(a + b[:4]) == sorted(e3)                 # the same epoch, split between ranks


def test_training_with_repeat_factor_sampling_repeats_rare_cases(tmp_path):
    from raddiag.data.dataset import CaseDataset
    from raddiag.data.store import PreparedData
    from raddiag.training import train

    data = make_tiny_data(tmp_path / "data", n_cases=24)
    cfg = preset("tiny", tiny_overrides(**{"train.epochs": 1, "train.repeat_factor": 1.0}))
    train_ds = CaseDataset(data, "train", PreparedData(data).label_space(), cfg.data)
    y = train_ds.targets > 0
    rarest = np.where(y, y.mean(0)[None, :], 1.0).min(1)    # each case's rarest label frequency
    expected = round(sum(max(1.0, (1.0 / f) ** 0.5) for f in rarest))
    result = train(data, tmp_path / "run", cfg, progress=False)
    assert expected > len(train_ds) and result.steps == -(-expected // cfg.train.batch_size)
    with pytest.raises(ValueError, match="repeat_factor"):
        preset("tiny", ["train.repeat_factor=2"])


# -- checkpoints ----------------------------------------------------------------------------
def test_checkpoint_roundtrip_restores_rng_and_is_weights_only(tmp_path):
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    state = rng_state()
    expected = (random.random(), np.random.rand(), torch.rand(1).item())
    path = tmp_path / "ck" / "last.pt"
    save_checkpoint(path, {"rng": state, "w": torch.arange(4.0), "epoch": 7, "best": float("-inf")})
    assert [p.name for p in path.parent.iterdir()] == ["last.pt"]   # no temp file left behind
    loaded = load_checkpoint(path)                                  # torch.load(weights_only=True)
    assert loaded["epoch"] == 7 and torch.equal(loaded["w"], torch.arange(4.0))
    random.random(), np.random.rand(), torch.rand(1)
    set_rng_state(loaded["rng"])
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected


def test_load_checkpoint_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        load_checkpoint(tmp_path / "nope.pt")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="bad.pt"):
        load_checkpoint(bad)


# -- augmentation --------------------------------------------------------------------------
def _item(is3d=True, depth=6, size=32, key=2):
    g = torch.Generator().manual_seed(0)
    img = torch.rand(1, depth if is3d else 1, size, size, generator=g) * 0.5 + 0.25
    return {"image": img, "is_3d": is3d, "key_slice": key if is3d else -1, "modality": "CT"}


def test_augment_per_sample_seeded_and_sane():
    cfg = preset("tiny", ["train.aug_prob=1.0", "data.size=32"])
    t = build_scan_transform(cfg.train, cfg.data)
    for is3d in (True, False):
        item = _item(is3d)
        a = t(item, np.random.default_rng([0, 0, 1]))
        b = t(item, np.random.default_rng([0, 0, 1]))
        c = t(item, np.random.default_rng([0, 0, 2]))
        assert torch.equal(a["image"], b["image"])                  # same seed, same result
        assert not torch.equal(a["image"], c["image"])              # another sample, another draw
        assert not torch.equal(a["image"], item["image"])           # p=1: it did something
        assert a["image"].shape == item["image"].shape and a["image"].dtype == torch.float32
        assert float(a["image"].min()) >= 0.0 and float(a["image"].max()) <= 1.0
        assert type(a["image"]) is torch.Tensor                     # no MetaTensor leaks into collate


def test_augment_probability_zero_is_identity_and_off_is_none():
    cfg = preset("tiny", ["train.aug_prob=0.0", "train.key_slice_swap=0.0"])
    assert build_scan_transform(cfg.train, cfg.data) is None
    cfg = preset("tiny", ["train.aug_prob=0.0", "train.key_slice_swap=1.0"])
    t = build_scan_transform(cfg.train, cfg.data)
    item = _item(True, key=3)
    out = t(item, np.random.default_rng(0))
    assert out["is_3d"] is False and out["key_slice"] == 0
    assert torch.equal(out["image"], item["image"][:, 3:4])        # the key slice itself
    noakey = t(_item(True, key=-1), np.random.default_rng(0))
    assert noakey["is_3d"] is True                                  # no key slice: nothing to swap
    with pytest.raises(ValueError, match="key_slice_swap"):
        build_scan_transform(preset("tiny", ["train.key_slice_swap=1.5"]).train)


def test_key_slice_swap_rate():
    cfg = preset("tiny", ["train.aug_prob=0.0", "train.key_slice_swap=0.3"])
    t = build_scan_transform(cfg.train, cfg.data)
    item = _item(True, depth=4, size=8)
    swapped = sum(not t(item, np.random.default_rng([5, i]))["is_3d"] for i in range(2000))
    assert 0.26 < swapped / 2000 < 0.34


def test_augmentation_rate_per_transform():
    cfg = preset("tiny", ["train.aug_prob=0.15"])
    t = build_scan_transform(cfg.train, cfg.data)
    item = _item(False, size=16)
    changed = sum(not torch.equal(t(item, np.random.default_rng([9, i]))["image"], item["image"])
                  for i in range(400))
    # four transforms at 0.15 each: P(at least one) = 1 - 0.85^4 = 0.478 ("about half", paper C)
    assert 0.38 < changed / 400 < 0.58


# -- training end to end ---------------------------------------------------------------------
@pytest.mark.slow
def test_tiny_model_learns_and_run_folder_is_complete(tmp_path):
    from raddiag.models import load_model
    from raddiag.run import RunFolder
    from raddiag.training import train

    data = make_tiny_data(tmp_path / "data", n_cases=48)
    cfg = preset("tiny", tiny_overrides(**{"train.epochs": 4, "train.aug_prob": 0.15}))
    result = train(data, tmp_path / "run", cfg, progress=False)
    hist = result.history
    assert len(hist) == 4 and result.epochs_run == 4 and result.steps == 4 * 8
    assert hist[-1]["train_loss"] < 0.85 * hist[0]["train_loss"]
    assert result.best_val_auc > 0.75
    assert result.best_val_auc == max(h["val_auc"] for h in hist)

    run = RunFolder(tmp_path / "run").check()
    assert (run.checkpoints / "last.pt").exists() and any(run.tensorboard.iterdir())
    rows = list(csv.DictReader(run.metrics_csv.open()))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3, 4]
    model, cfg2, labels = load_model(run.root)
    assert cfg2.data.size == 32 and labels.thresholds is not None and len(labels.thresholds) == len(labels)
    assert all(0.0 <= t <= 1.0 for t in labels.thresholds)

    # the saved best weights reproduce the best validation AUC
    from raddiag.data.dataset import CaseDataset
    from raddiag.training import validate
    from raddiag.training.metrics import macro_auc

    val = CaseDataset(data, "val", labels, cfg2.data)
    assert macro_auc(*validate(model, val, cfg2)) == pytest.approx(result.best_val_auc, abs=1e-6)

    with pytest.raises(ValueError, match="--resume"):
        train(data, tmp_path / "run", cfg, progress=False)


def test_train_rejects_bad_input(tmp_path):
    from raddiag.training import train

    cfg = preset("tiny", tiny_overrides())
    with pytest.raises(FileNotFoundError, match="meta.json"):
        train(tmp_path / "nodata", tmp_path / "run", cfg, progress=False)
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        train(tmp_path / "nodata", tmp_path / "run", cfg, resume=True, progress=False)
    with pytest.raises(ValueError, match="amp"):
        data = make_tiny_data(tmp_path / "data", n_cases=8)
        train(data, tmp_path / "run2", preset("tiny", tiny_overrides(**{"train.amp": "fp8"})), progress=False)


@pytest.mark.slow
def test_knowledge_head_bf16_accumulation_and_max_steps_resume(tmp_path):
    from safetensors.torch import save_file

    from raddiag.models import load_model
    from raddiag.training import train
    from raddiag.training.checkpoint import load_checkpoint

    data = make_tiny_data(tmp_path / "data", n_cases=24)        # 16 training cases
    emb = torch.nn.functional.normalize(torch.randn(3, 8), dim=-1)
    save_file({"embeddings": emb}, str(tmp_path / "emb.safetensors"))
    cfg = preset("tiny", tiny_overrides(**{"model.head": "knowledge", "model.text_dim": 8, "train.amp": "bf16",
                                           "train.grad_accum": 2, "train.epochs": 2, "train.key_slice_loss": 0.01}))
    first = train(data, tmp_path / "run", cfg, label_embeddings=tmp_path / "emb.safetensors", progress=False,
                  max_steps=1)
    # 4 batches an epoch, 2 per optimiser step: stopped after 1 step, mid-epoch, state saved
    assert first.steps == 1 and first.epochs_run == 0
    ck = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")
    assert ck["batches_done"] == 2 and ck["step"] == 1
    done = train(data, tmp_path / "run", cfg, resume=True, progress=False)
    assert done.steps == 4 and done.epochs_run == 2 and np.isfinite([h["train_loss"] for h in done.history]).all()
    model, cfg2, labels = load_model(tmp_path / "run")
    assert cfg2.model.head == "knowledge" and cfg2.train.amp == "bf16"
    assert torch.allclose(model.head.label_embeddings, emb)     # stored once, with the run

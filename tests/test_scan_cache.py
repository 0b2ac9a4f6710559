"""The loaded-scan cache (``raddiag.data.scan_cache``): it keeps scans within its budget, gives the
very batches a dataset without it gives, and nothing that reads a cached scan writes into it."""
from __future__ import annotations

from collections import Counter

import pytest
import torch

from raddiag.config import preset
from raddiag.data.dataset import CaseDataset, collate_cases
from raddiag.data.scan_cache import ScanCache
from raddiag.data.store import PreparedData
from raddiag.training.augment import build_scan_transform
from test_training_data import make_tiny_data, tiny_overrides


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_tiny_data(tmp_path_factory.mktemp("scan_cache") / "data", n_cases=24)


def test_keeps_scans_until_its_budget_is_spent_and_loads_each_kept_scan_once():
    calls = Counter()

    def load(k):
        calls[k] += 1
        return torch.full((1, 1, 2, 2), float(k)), k          # 16 bytes a scan

    cache = ScanCache(max_bytes=3 * 16 + 15)
    for _ in range(3):
        for k in range(5):
            image, key = cache.get(k, lambda k=k: load(k))
            assert key == k and torch.equal(image, torch.full((1, 1, 2, 2), float(k)))
    assert len(cache) == 3 and cache.nbytes == 48
    assert calls == {0: 1, 1: 1, 2: 1, 3: 3, 4: 3}            # beyond the budget: loaded every time
    empty = ScanCache(0)
    empty.get(0, lambda: load(0))
    assert len(empty) == 0 and empty.nbytes == 0


def _datasets(data, cfg, cache):
    labels = PreparedData(data).label_space(cfg.data.granularity)
    transform = build_scan_transform(cfg.train, cfg.data)
    return [CaseDataset(data, "train", labels, cfg.data, train=True, scan_transform=transform, seed=3, cache=c)
            for c in (cache, None)]


@pytest.mark.parametrize("style", ["raddiag", "release"])
def test_the_same_batches_as_without_it_and_cached_scans_are_never_written(data, style):
    """Every transform fires (and half the 3D scans become their key slice), in both augmentation
    styles; the run's 32 px x 4 slices are resized and resampled from the store's 64 x 8, so the
    cache holds what loading computed. The second epoch reads every scan from the cache."""
    cfg = preset("tiny", tiny_overrides(**{"train.aug_prob": 1.0, "train.key_slice_swap": 0.5,
                                           "train.aug_style": style, "data.max_scans": 4}))
    cache = ScanCache(1 << 30)
    cached, plain = _datasets(data, cfg, cache)
    for epoch in range(2):
        cached.set_epoch(epoch)
        plain.set_epoch(epoch)
        for start in range(0, len(plain), 4):
            idx = range(start, min(start + 4, len(plain)))
            a = collate_cases([cached[i] for i in idx], cfg.data.depth)
            b = collate_cases([plain[i] for i in idx], cfg.data.depth)
            for k in ("images", "scan_mask", "slice_mask", "modality", "key_slice", "is_3d", "labels"):
                assert torch.equal(a[k], b[k]), (epoch, start, k)
    n_scans = sum(len(r["scans"]) for r in plain.records)
    assert len(cache) == n_scans
    for rec in plain.records:                                   # each kept scan as a fresh load gives it
        for s in rec["scans"]:
            st = s["store"]
            image, key = cache._items[(plain.data.root, st["start"], st["n"], cfg.data.size, cfg.data.depth)]
            fresh, fresh_key = plain._loaded(s, plain.data.scan_array(s))
            assert image.shape == (1, st["n"] if st["n"] <= cfg.data.depth else cfg.data.depth,
                                   cfg.data.size, cfg.data.size)
            assert torch.equal(image, fresh) and key == fresh_key


def test_a_training_run_is_the_same_with_and_without_it(tmp_path, data):
    """Weights and validation history bit for bit: the trainer's cache (train and val together)
    changes where scans come from, nothing else."""
    from safetensors.torch import load_file

    from raddiag.training import train

    runs = {}
    for mb in (1024, 0):
        over = tiny_overrides(**{"train.epochs": 2, "train.aug_prob": 0.5, "train.key_slice_swap": 0.3,
                                 "train.deterministic": "true", "train.cache_mb": mb})
        res = train(data, tmp_path / f"run{mb}", preset("tiny", over), progress=False)
        runs[mb] = res, load_file(str(tmp_path / f"run{mb}" / "model.safetensors"))
    (with_cache, w1), (without, w0) = runs[1024], runs[0]
    assert w1.keys() == w0.keys() and all(torch.equal(w1[k], w0[k]) for k in w1)
    def numbers(res):                                           # every figure but the epoch's seconds
        return [{k: v for k, v in h.items() if k != "seconds"} for h in res.history]

    assert numbers(with_cache) == numbers(without) and len(without.history) == 2


def test_cache_mb_must_not_be_negative():
    with pytest.raises(ValueError, match="train.cache_mb"):
        preset("tiny", ["train.cache_mb=-1"])

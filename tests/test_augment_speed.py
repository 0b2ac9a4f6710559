"""The faster data path of issue 29 changes no result: the separable smoothing and the elastic
transform built on it equal MONAI's, the augmentation chain without MONAI's metadata equals the
chain with it, and batches loaded ahead in a thread are the batches loaded in turn."""
from __future__ import annotations

import copy
import os
import threading
from unittest import mock

import numpy as np
import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st
from monai.networks.layers import GaussianFilter
from monai.networks.layers.convutils import gaussian_1d
from monai.transforms import Rand3DElastic

from raddiag.config import preset
from raddiag.training.aug_kernels import FastRand3DElastic, gaussian_kernel, smooth_separable
from raddiag.training.augment import ScanAugment, reseed
from raddiag.training.prefetch import Prefetcher
from test_training_data import make_tiny_data, tiny_overrides


@settings(max_examples=12, deadline=None)
@given(shape=st.tuples(st.integers(1, 3), st.integers(1, 9), st.integers(1, 40), st.integers(1, 12)),
       sigma=st.floats(0.05, 7.0), seed=st.integers(0, 2**16))
def test_separable_smoothing_is_monais_gaussian_filter(shape, sigma, seed):
    field = torch.rand(shape, generator=torch.Generator().manual_seed(seed)) * 2 - 1
    want = GaussianFilter(3, sigma, 3.0)(field[None])[0]
    torch.testing.assert_close(smooth_separable(field, sigma), want, atol=1e-6, rtol=1e-5)


@settings(max_examples=60, deadline=None)
@given(sigma=st.floats(0.01, 12.0), truncated=st.floats(0.1, 5.0))
@example(sigma=1.9, truncated=5.0)     # the tail's product rounds differently in float32 (CI, once)
def test_the_gaussian_kernel_is_monais(sigma, truncated):
    """The same length and values as MONAI's ``gaussian_1d(approx="erf")`` (float32), over random
    sigmas and truncations, the shortest kernel (one pixel) included."""
    want = gaussian_1d(torch.tensor(sigma), truncated=truncated, approx="erf")
    torch.testing.assert_close(torch.from_numpy(gaussian_kernel(sigma, truncated)), want, atol=2e-7, rtol=1e-6)


@settings(max_examples=8, deadline=None)
@given(seed=st.integers(0, 2**31 - 2), release=st.booleans())
def test_fast_elastic_is_monais_with_the_same_draws(seed, release):
    """Both parameter sets the augmentation uses: raddiag's 3D elastic (a [1, d, H, W] scan) and the
    release's (slices as channels over (H, W, 1), scale jitter, border padding)."""
    kw = (dict(sigma_range=(2.5, 3.5), magnitude_range=(5, 10), rotate_range=(0, 0, 0),
               scale_range=(0.1, 0.1, 0.1), padding_mode="border") if release
          else dict(sigma_range=(4.0, 6.0), magnitude_range=(8, 16), padding_mode="zeros"))
    x = torch.rand((6, 24, 20, 1) if release else (1, 5, 24, 20), generator=torch.Generator().manual_seed(seed))
    fast, monai = FastRand3DElastic(prob=1.0, **kw), Rand3DElastic(prob=1.0, **kw)
    fast.set_random_state(seed)
    monai.set_random_state(seed)
    got, want = fast(x), monai(x)
    assert not torch.allclose(torch.as_tensor(want), x, atol=1e-3)      # it deformed the scan
    torch.testing.assert_close(torch.as_tensor(got), torch.as_tensor(want), atol=2e-5, rtol=1e-5)


@settings(max_examples=10, deadline=None)
@given(seeds=st.lists(st.integers(0, 2**32 - 1), min_size=2, max_size=4), depth=st.integers(1, 4))
def test_reseeding_draws_what_monais_set_random_state_draws(seeds, depth):
    """``reseed`` (the random states MONAI made, seeded again) against ``set_random_state`` (new
    ones) on a copy of each of the release chain's MONAI transforms, over a sequence of seeds: the
    same outputs, bit for bit."""
    for t in ScanAugment(1.0, 0.0, 32, "release").release:
        shape = (depth, 24, 20, 1)
        ref = copy.deepcopy(t)
        for k, seed in enumerate(seeds):
            x = torch.rand(shape, generator=torch.Generator().manual_seed(seed % 1000 + k))
            reseed(t, (np.int32, np.uint32, int)[k % 3](seed % 2**31))   # numpy ints as MONAI takes them
            ref.set_random_state(seed=int(seed % 2**31))
            got, want = torch.as_tensor(t(x)), torch.as_tensor(ref(x))
            assert torch.equal(got, want), (type(t).__name__, k, seed)


def _monai_reference(aug: ScanAugment) -> ScanAugment:
    """``aug`` as it was before issue 29's second round: MONAI's own Rand3DElastic (the caller
    keeps MONAI's metadata tracked)."""
    ref = copy.deepcopy(aug)
    ref.release[1].__class__ = Rand3DElastic
    return ref


@pytest.mark.parametrize("depth", [1, 5])
def test_the_release_augmentation_gives_what_the_monai_chain_gave(depth):
    """Every transform firing (prob 1), several seeds: the release's chain as now (fast elastic, no
    MONAI metadata) against MONAI's transforms called as before."""
    aug = ScanAugment(1.0, 0.0, 32, "release")
    ref = _monai_reference(aug)
    for seed in range(4):
        img = torch.rand(1, depth, 32, 32, generator=torch.Generator().manual_seed(seed))
        item = {"image": img, "is_3d": depth > 1, "key_slice": -1, "modality": "CT"}
        got = aug(item, np.random.default_rng(seed))["image"]
        rng = np.random.default_rng(seed)
        rng.random()                                               # the key-slice swap's draw
        s = int(rng.integers(0, 2**31 - 1))
        with mock.patch("raddiag.training.augment.reseed", lambda t, seed: t.set_random_state(seed=seed)):
            want = ref._chain(img, rng.random(4) < 1.0, s, rng)  # MetaTensors tracked, MONAI's elastic and seeding
        assert got.shape == img.shape and not torch.allclose(got, img, atol=1e-3)
        torch.testing.assert_close(got, torch.as_tensor(want).float(), atol=2e-5, rtol=1e-5)


def test_the_augmentation_leaves_monais_metadata_switch_as_it_was():
    from monai.data import get_track_meta

    assert get_track_meta()
    ScanAugment(1.0, 0.0, 16)({"image": torch.rand(1, 3, 16, 16), "is_3d": True, "key_slice": -1,
                               "modality": "CT"}, np.random.default_rng(0))
    assert get_track_meta()


def test_prefetcher_yields_in_order_raises_the_sources_error_and_stops_on_close():
    assert list(Prefetcher(range(7), depth=2)) == list(range(7))

    def broken():
        yield 1
        raise ValueError("case7.npy: not a scan")

    it = Prefetcher(broken())
    assert next(it) == 1
    with pytest.raises(ValueError, match="case7.npy: not a scan"):
        next(it)

    produced = []

    def endless():
        while True:
            produced.append(len(produced))
            yield produced[-1]

    it = Prefetcher(endless(), depth=1)
    assert next(it) == 0
    it.close()
    assert not it._thread.is_alive() and len(produced) <= 4      # stopped, at most a few items ahead
    assert not any(t.name == "raddiag-prefetch" for t in threading.enumerate())


def test_training_gives_the_same_weights_wherever_loading_runs(tmp_path):
    """Loading between steps, ahead in a thread, or in a loader process (whose next epoch opens
    before the last one validates, TrainLoop.open_ahead): the same weights after the 2nd epoch. The
    step on 1 thread in all three (a loader process leaves the step the other cores; with 1
    thread a core is free, so the thread loads ahead: training.prefetch.loading_plan)."""
    from raddiag.run import LAST_CHECKPOINT
    from raddiag.training import train
    from raddiag.training.checkpoint import load_checkpoint
    from raddiag.training.prefetch import step_threads

    data = make_tiny_data(tmp_path / "data", n_cases=24)
    weights = []
    for name, prefetch, workers in (("between", 0, 0), ("thread", 2, 0), ("process", 1, 1)):
        cfg = preset("tiny", tiny_overrides(**{"train.epochs": 2, "train.aug_prob": 0.5, "train.key_slice_swap": 0.3,
                                               "train.prefetch": prefetch, "train.num_workers": workers,
                                               "train.seed": 3}))
        with step_threads(1):
            run = train(data, tmp_path / f"run-{name}", cfg, progress=False).run
        weights.append(load_checkpoint(run.checkpoints / LAST_CHECKPOINT)["model"])   # after epoch 2
    for other in weights[1:]:
        assert weights[0].keys() == other.keys()
        for k in weights[0]:
            assert torch.equal(weights[0][k], other[k]), k


def test_the_kernel_cache_is_widened_unless_the_user_set_it(monkeypatch):
    from raddiag.training.kernel_cache import KERNEL_CACHE, widen_kernel_cache

    monkeypatch.delenv("ONEDNN_PRIMITIVE_CACHE_CAPACITY", raising=False)
    widen_kernel_cache()
    assert os.environ["ONEDNN_PRIMITIVE_CACHE_CAPACITY"] == str(KERNEL_CACHE) and KERNEL_CACHE > 1024
    monkeypatch.setenv("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "512")
    widen_kernel_cache()
    assert os.environ["ONEDNN_PRIMITIVE_CACHE_CAPACITY"] == "512"

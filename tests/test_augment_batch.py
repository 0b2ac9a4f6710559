"""The trainer's datasets draw each scan's augmentation when it is loaded and ``collate_cases``
applies the batch's plans together (the warps of a shape in one ``grid_sample``; issue 29: loading a
demo-recipe batch between steps 3.5 -> 3.0 ms). The batch must be the one the scans augmented one
by one give, bit for bit, and no loaded scan may be written into (the scan cache keeps them)."""
from __future__ import annotations

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from raddiag.data.dataset import AUGMENT, collate_cases
from raddiag.training.augment import ScanAugment

scans = st.lists(st.tuples(st.integers(1, 6), st.booleans()), min_size=1, max_size=4)   # (slices, is 3D)


def _cases(rng: np.random.Generator, layout: list[list[tuple[int, bool]]], size: int) -> list[list[dict]]:
    out = []
    for case in layout:
        items = []
        for d, three_d in case:
            d = d if three_d else 1
            items.append({"image": torch.from_numpy(rng.random((1, d, size, size), dtype=np.float32)),
                          "is_3d": three_d and d > 1, "key_slice": int(rng.integers(-1, d)) if d > 1 else -1,
                          "modality": "CT", "modality_id": 1})
        out.append(items)
    return out


def _batch(cases: list[list[dict]], depth: int) -> torch.Tensor:
    samples = [{"scans": c, "labels": torch.zeros(2), "case_id": f"c{i}", "anatomy": None} for i, c in enumerate(cases)]
    return collate_cases(samples, depth=depth)["images"].clone()


@settings(max_examples=40, deadline=None)
@given(layout=st.lists(scans, min_size=1, max_size=4), prob=st.sampled_from([0.15, 0.5, 1.0]),
       swap=st.sampled_from([0.0, 0.5]), size=st.sampled_from([16, 32]), seed=st.integers(0, 2**32 - 1))
def test_the_batch_applied_in_collate_is_the_scans_augmented_one_by_one(layout, prob, swap, size, seed):
    rng = np.random.default_rng(seed)
    cases = _cases(rng, layout, size)
    kept = [[it["image"].clone() for it in c] for c in cases]
    aug = ScanAugment(prob, swap, size)
    draws = [[np.random.default_rng([seed, i, j]) for j in range(len(c))] for i, c in enumerate(cases)]
    one_by_one = [[aug(it, r) for it, r in zip(c, rs)] for c, rs in zip(cases, draws)]
    draws = [[np.random.default_rng([seed, i, j]) for j in range(len(c))] for i, c in enumerate(cases)]
    drawn = [[aug.draw(it, r) for it, r in zip(c, rs)] for c, rs in zip(cases, draws)]
    assert all(AUGMENT not in it for c in one_by_one for it in c)
    assert torch.equal(_batch(drawn, 6), _batch(one_by_one, 6))
    # the loaded scans (the cache's) are as they were
    assert all(torch.equal(it["image"], k) for c, ks in zip(cases, kept) for it, k in zip(c, ks))
    if prob == 1.0:
        assert all(AUGMENT in it for c in drawn for it in c)        # every scan's plan was applied there


def test_a_scan_deeper_than_the_batch_is_augmented_whole_before_it_is_cut():
    """The contrast reads the scan's range and a warp every slice: a scan cut to the batch's depth is
    augmented as drawn, whole, then cut, as one by one."""
    rng = np.random.default_rng(1)
    item = {"image": torch.from_numpy(rng.random((1, 6, 16, 16), dtype=np.float32)), "is_3d": True,
            "key_slice": -1, "modality": "CT", "modality_id": 1}
    aug = ScanAugment(1.0, 0.0, 16)
    drawn = aug.draw(item, np.random.default_rng(5))
    whole = aug(item, np.random.default_rng(5))
    assert torch.equal(_batch([[drawn]], 4), _batch([[whole]], 4))

"""Reused batch memory (raddiag.data.batch_buffers): a batch never shows another batch's values, and
a batch someone still holds is never written over."""
from __future__ import annotations

import os
import signal
import threading
from unittest import mock

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from raddiag.data import dataset
from raddiag.data.batch_buffers import BufferPool
from raddiag.data.dataset import collate_cases


def _sample(rng: np.random.Generator, n_scans: int, max_depth: int, size: int) -> dict:
    scans = []
    for _ in range(n_scans):
        d = int(rng.integers(1, max_depth + 1))
        scans.append({"image": torch.from_numpy(rng.random((1, d, size, size), dtype=np.float32) + 0.5),
                      "is_3d": d > 1, "key_slice": int(rng.integers(-1, d)), "modality_id": int(rng.integers(1, 5))})
    return {"scans": scans, "labels": torch.zeros(3), "case_id": "c", "anatomy": None}


def _expected_images(samples: list[dict], depth: int) -> np.ndarray:
    """The contract, built with no reuse: every real slice in place, zero everywhere else."""
    n = max(len(s["scans"]) for s in samples)
    h = samples[0]["scans"][0]["image"].shape[-1]
    out = np.zeros((len(samples), n, 1, depth, h, h), dtype=np.float32)
    for b, s in enumerate(samples):
        for k, sc in enumerate(s["scans"]):
            d = min(sc["image"].shape[1], depth)
            out[b, k, 0, :d] = sc["image"][0, :d].numpy()
    return out


def _expected_fields(samples: list[dict], depth: int) -> dict:
    """The per-scan fields of the contract, one scan at a time: padding scans masked out with
    modality 0 and key slice -1, a key slice past the kept slices -1."""
    n = max(len(s["scans"]) for s in samples)
    out = {"scan_mask": np.zeros((len(samples), n), bool), "slice_mask": np.zeros((len(samples), n, depth), bool),
           "modality": np.zeros((len(samples), n), np.int64), "key_slice": np.full((len(samples), n), -1, np.int64),
           "is_3d": np.zeros((len(samples), n), bool)}
    for b, s in enumerate(samples):
        for k, sc in enumerate(s["scans"]):
            d = min(sc["image"].shape[1], depth)
            out["scan_mask"][b, k] = True
            for z in range(d):
                out["slice_mask"][b, k, z] = True
            out["modality"][b, k] = sc["modality_id"]
            if 0 <= sc["key_slice"] < d:
                out["key_slice"][b, k] = sc["key_slice"]
            out["is_3d"][b, k] = sc["is_3d"]
    return out


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), batches=st.lists(
    st.tuples(st.lists(st.integers(1, 4), min_size=1, max_size=4), st.integers(1, 6), st.sampled_from([4, 8])),
    min_size=2, max_size=6))
def test_collated_images_are_exact_in_reused_memory(seed, batches):
    """Batches of random shapes collated one after another into memory left full of NaN by the last
    user: each batch is the padded contract exactly (stale values would show as NaN or mismatch), and
    so is every per-scan field (masks, modality, key slice, 3D flag)."""
    pool = BufferPool(keep=2)
    with mock.patch.object(dataset, "_IMAGES", pool):
        _collate_in_turn(pool, seed, batches)


def _collate_in_turn(pool: BufferPool, seed: int, batches: list) -> None:
    for shape in [(4096,), (512,)]:
        pool.take(shape).fill(np.nan)   # dropped at once: free, and dirty
    rng = np.random.default_rng(seed)
    for scans_per_case, depth, size in batches:
        samples = [_sample(rng, n, depth + 2, size) for n in scans_per_case]
        batch = collate_cases(samples, depth=depth)
        got = batch["images"].numpy()
        np.testing.assert_array_equal(got, _expected_images(samples, depth))
        for key, want in _expected_fields(samples, depth).items():
            np.testing.assert_array_equal(batch[key].numpy(), want, err_msg=key)
        del batch
        got.fill(np.nan)                # the next batch may get this memory back: dirty it
        del got


def test_a_held_batch_is_never_written_over():
    rng = np.random.default_rng(0)
    samples = [_sample(rng, 2, 3, 4) for _ in range(3)]
    kept = collate_cases(samples, depth=3)
    kept_copy = kept["images"].clone()
    view = kept["images"][1:]                  # a view alone keeps the memory too
    del kept
    for _ in range(4):
        collate_cases([_sample(rng, 2, 3, 4) for _ in range(3)], depth=3)
    assert torch.equal(view, kept_copy[1:])


def test_a_released_buffer_is_reused_and_a_held_one_is_not():
    pool = BufferPool(keep=2)
    first = torch.from_numpy(pool.take((2, 3, 4)))
    second = pool.take((2, 3, 4))
    assert not np.shares_memory(first.numpy(), second)
    ptr = first.data_ptr()
    del first, second
    again = pool.take((4, 3, 2))        # same size, another shape: the memory comes back
    assert again.ctypes.data in {ptr, pool._buffers[1].ctypes.data}
    assert len(pool._buffers) == 2
    bigger = pool.take((100,))         # none large enough is free: a new one replaces a free one
    assert bigger.shape == (100,) and len(pool._buffers) == 2


def test_the_pool_keeps_no_more_than_its_byte_budget():
    pool = BufferPool(keep=3, max_bytes=1000 * 4)
    for n in (600, 600, 300):       # each dropped at once: the second cannot be kept beside the first
        pool.take((n,))
    assert sum(b.nbytes for b in pool._buffers) <= 1000 * 4
    assert pool.take((5000,)).shape == (5000,)      # larger than the budget: given, never kept
    assert all(b.size < 5000 for b in pool._buffers)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_child_forked_while_another_thread_holds_the_lock_can_take():
    """A DataLoader forking its workers while a prefetching thread collates: the child inherits the
    lock as it was; without a fresh one its first take() waits forever (killed here after 5 s)."""
    pool = BufferPool()
    held, release = threading.Event(), threading.Event()

    def hold():
        with pool._lock:
            held.set()
            release.wait()

    t = threading.Thread(target=hold)
    t.start()
    held.wait()
    pid = os.fork()
    if pid == 0:                                   # the child: take, or be killed by the alarm
        signal.alarm(5)
        try:
            pool.take((4,))
        finally:
            os._exit(0)
    release.set()
    t.join()
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status), "the child hung on the pool's lock"

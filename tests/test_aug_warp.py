"""raddiag's own augmentation (``aug_style: raddiag``) against MONAI on random inputs: the in-plane
warp equals MONAI's ``Affine``, its elastic ``Resample`` and the two composed; the contrast equals
MONAI's ``AdjustContrast``; every slice of a scan
takes the same warp; the noise's spread is drawn as MONAI's ``RandGaussianNoise`` draws it."""
from __future__ import annotations

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from monai.transforms import AdjustContrast, Affine, AffineGrid, Resample
from monai.transforms.utils import create_grid
from scipy import stats

from raddiag.training.aug_kernels import adjust_contrast, in_plane_grid, in_plane_warp
from raddiag.training.augment import NOISE_STD, ScanAugment

shapes = st.tuples(st.integers(1, 4), st.integers(2, 40), st.integers(2, 40))
rotations = st.floats(-np.pi, np.pi)
scales = st.tuples(st.floats(0.5, 1.6), st.floats(0.5, 1.6))
shifts = st.tuples(st.floats(-8, 8), st.floats(-8, 8))


def _image(shape, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(shape, generator=g), torch.randn((2, *shape[1:]), generator=g) * 3


@settings(max_examples=40, deadline=None)
@given(shape=shapes, rotate=rotations, scale=scales, shift=shifts, seed=st.integers(0, 2**16))
def test_the_affine_is_monais(shape, rotate, scale, shift, seed):
    img, _ = _image(shape, seed)
    want = Affine(rotate_params=rotate, scale_params=scale, translate_params=shift, padding_mode="zeros",
                  mode="bilinear", image_only=True)(img)
    got = in_plane_warp(img, in_plane_grid(shape[1], shape[2], rotate, scale, shift))
    torch.testing.assert_close(got, torch.as_tensor(want), atol=2e-5, rtol=1e-5)


@settings(max_examples=40, deadline=None)
@given(shape=shapes, rotate=rotations, scale=scales, shift=shifts, seed=st.integers(0, 2**16),
       affine=st.booleans())
def test_the_elastic_displacement_then_the_affine_is_monais(shape, rotate, scale, shift, seed, affine):
    """MONAI's grid moved by the displacement, through MONAI's ``AffineGrid`` (``R @ T @ S``) when the
    affine fires too, resampled by MONAI: the same image as the one warp."""
    img, disp = _image(shape, seed)
    grid = torch.as_tensor(create_grid(shape[1:], backend="torch")).float()
    grid[:2] += disp
    if affine:
        grid = AffineGrid(rotate_params=rotate, scale_params=scale, translate_params=shift)(grid=grid)[0]
    want = Resample(mode="bilinear", padding_mode="zeros")(img, torch.as_tensor(grid))
    params = (rotate, scale, shift) if affine else ()
    got = in_plane_warp(img, in_plane_grid(shape[1], shape[2], *params, displacement=disp))
    torch.testing.assert_close(got, torch.as_tensor(want), atol=3e-5, rtol=1e-5)


@settings(max_examples=60, deadline=None)
@given(shape=shapes, gamma=st.floats(0.2, 4.0), low=st.floats(-1000, 1000), span=st.sampled_from([0.0, 1e-6, 1.0, 3000.0]),
       seed=st.integers(0, 2**16))
def test_the_contrast_is_monais(shape, gamma, low, span, seed):
    """Random images of any range (a flat one included), random gammas; the input is left as it was."""
    img = low + span * torch.rand(shape, generator=torch.Generator().manual_seed(seed))
    kept = img.clone()
    want = torch.as_tensor(AdjustContrast(gamma)(img))
    torch.testing.assert_close(adjust_contrast(img, gamma), want, atol=1e-5 * max(1.0, abs(low)), rtol=1e-5)
    assert torch.equal(img, kept)


def _warps_only(aug: ScanAugment, img: torch.Tensor, seed: int) -> torch.Tensor:
    return aug._chain(img, np.array([False, False, True, True]), 0, np.random.default_rng(seed))


@settings(max_examples=10, deadline=None)
@given(depth=st.integers(2, 6), seed=st.integers(0, 2**16))
def test_every_slice_takes_the_same_warp(depth, seed):
    aug = ScanAugment(1.0, 0.0, 32)
    slice_ = torch.rand(1, 1, 32, 32, generator=torch.Generator().manual_seed(seed))
    out = _warps_only(aug, slice_.repeat(1, depth, 1, 1), seed)
    assert not torch.allclose(out, slice_, atol=1e-3)                    # it warped
    assert all(torch.equal(out[0, 0], out[0, k]) for k in range(depth))  # every slice alike
    torch.testing.assert_close(out[:, :1], _warps_only(aug, slice_, seed))  # a 2D scan: the same warp


def test_the_noise_spread_is_drawn_uniformly_up_to_its_largest():
    """``(out - in)`` over a flat grey scan: zero-mean Gaussian noise whose standard deviation, over
    many draws, is uniform on [0, NOISE_STD] (MONAI's ``sample_std``)."""
    aug = ScanAugment(1.0, 0.0, 32)
    img = torch.full((1, 4, 32, 32), 0.5)
    noise_only = np.array([True, False, False, False])
    stds, means = [], []
    for seed in range(300):
        d = aug._chain(img, noise_only, 0, np.random.default_rng(seed)) - img
        stds.append(float(d.std()))
        means.append(float(d.mean()))
    assert stats.kstest(stds, stats.uniform(0, NOISE_STD).cdf).pvalue > 1e-3
    assert abs(np.mean(means)) < 1e-3 and max(stds) <= NOISE_STD * 1.05


def test_a_float64_displacement_gives_the_same_grid_in_float64():
    """The grid takes the displacement's precision (its matrix product mixed float32 and float64)."""
    disp = torch.randn(2, 9, 11, generator=torch.Generator().manual_seed(0)) * 2
    g32 = in_plane_grid(9, 11, 0.3, (1.1, 0.9), (1.0, -2.0), disp)
    g64 = in_plane_grid(9, 11, 0.3, (1.1, 0.9), (1.0, -2.0), disp.double())
    assert g64.dtype == torch.float64
    torch.testing.assert_close(g64, g32.double(), atol=1e-5, rtol=1e-5)

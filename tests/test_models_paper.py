"""The `paper` preset: parameter counts and intermediate shapes (Section 4.2.1, the release),
and one forward on a small input (a full 4 x 32 x 256 px case takes about a minute on CPU)."""
from __future__ import annotations

import pytest
import torch

from raddiag.config import preset
from raddiag.models import build_model
from raddiag.models.describe import describe_model

D_ = 2048


def _layer_params(d):  # attention 4(d^2 + d), FFN with d_ff = d: 2(d^2 + d), two norms 4d
    return 6 * d * d + 10 * d


@pytest.mark.slow
def test_paper_preset_counts_and_shapes():
    cfg = preset("paper")
    desc = describe_model(cfg, num_classes=5569, scans=4)
    p, s = desc["params"], desc["shapes"]
    # torchvision's ResNet-50 without fc is 23,508,032 with a 3-channel stem; ours takes 1 channel
    assert p["encoder.slice_backbone"] == 23_508_032 - 64 * 2 * 49
    assert p["encoder.slice_transformer"] == _layer_params(D_) + 2 * D_
    assert p["encoder"] == p["encoder.slice_backbone"] + p["encoder.slice_transformer"] + 34 * D_  # cls + pos(33)
    assert p["fusion"] == 2 * _layer_params(D_) + 2 * D_ + 16 * D_ + D_
    assert p["head"] == D_ * D_ + D_ + D_ * 5569 + 5569
    assert p["total"] == p["encoder"] + p["fusion"] + p["head"]
    assert s["slice layer4 map (per slice)"] == [2048, 8, 8]
    assert s["slice conv1 map (per slice)"] == [64, 128, 128]
    assert s["slice tokens per scan ([CLS] + D)"] == [33, 2048]
    assert s["fusion tokens ([CLS] + N)"] == [1, 5, 2048]
    assert s["logits [B, C]"] == [1, 5569]


@pytest.mark.slow
def test_paper_preset_small_forward():
    cfg = preset("paper")
    torch.manual_seed(0)
    model = build_model(cfg, 11).eval()
    images = torch.rand(1, 2, 1, 3, 64, 64)
    slice_mask = torch.tensor([[[True, True, True], [True, False, False]]])
    with torch.no_grad():
        out = model(images, torch.ones(1, 2, dtype=torch.bool), slice_mask, torch.tensor([[1, 3]]),
                    return_details=True)
    assert out.logits.shape == (1, 11) and torch.isfinite(out.logits).all()
    assert out.scan_embeddings.shape == (1, 2, 2048) and out.slice_attention.shape == (1, 2, 3)


def test_cli_describe(capsys):
    from raddiag.cli import main

    assert main(["describe", "--preset", "tiny", "--classes", "7", "--set", "model.encoder=vit"]) == 0
    out = capsys.readouterr().out
    assert "encoder=vit" in out and "logits [B, C]" in out and "1 x 7" in out

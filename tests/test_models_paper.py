"""The `paper` preset: `raddiag describe` numbers against the paper's text (Section 4.4, Table 1),
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


def _printed(out: str) -> dict[str, str]:
    """``name -> value`` of the lines ``raddiag describe`` prints (2+ spaces separate them)."""
    rows = {}
    for line in out.splitlines():
        parts = [x for x in line.strip().split("  ") if x]
        if line.startswith("  ") and len(parts) >= 2:
            rows[parts[0].strip()] = parts[-1].strip()
    return rows


@pytest.mark.slow
def test_describe_paper_prints_the_papers_numbers(capsys):
    from raddiag.cli import main

    assert main(["describe", "--preset", "paper", "--scans", "4"]) == 0
    out = capsys.readouterr().out
    r = _printed(out)
    n = lambda k: int(r[k].replace(",", ""))  # noqa: E731
    assert "preset paper: encoder=resnet_vit fusion=transformer head=knowledge classes=5569" in out
    # 4.4: "we select ResNet-50 and a transformer encoder"; "(H, W, D) ... 256 ... 32"
    assert r["ResNet depth"] == "50" and r["input size (H = W)"] == "256" and r["slices per 3D scan (D)"] == "32"
    # 4.4: "The features output by ResNet-50 have a shape of (2048, 8, 8)" (a stride-2 stem)
    assert r["slice layer4 map (per slice)"] == "2048 x 8 x 8" and r["slice conv1 map (per slice)"] == "64 x 128 x 128"
    # 4.4: "passed through a transformer encoder to obtain features with a shape of (33, 2048)"
    assert r["slice tokens per scan ([CLS] + D)"] == "33 x 2048"
    # Table 1: ResNet-50 + "6-layer ViT" (heads: not in the paper; 8 as the release's class default)
    assert r["slice transformer layers"] == "6" and r["slice transformer heads"] == "8"
    # 4.4: fusion "number of heads is set to 4, the number of layers is set to 2, ... dimension is 2048"
    assert (r["fusion layers"], r["fusion heads"], r["fusion width"]) == ("2", "4", "2048")
    assert r["fusion tokens ([CLS] + N)"] == "1 x 5 x 2048"
    # 4.4: "through interaction with the knowledge embedding ... a shape of class numbers"
    assert r["classifier head"] == "knowledge" and r["logits [B, C]"] == "1 x 5569"
    assert r["augmentation probability (each)"] == "0.15" and r["key-slice loss weight"] == "0.001"
    # parameters: torchvision's ResNet-50 without fc is 23,508,032 with a 3-channel stem; ours takes 1
    assert n("encoder.slice_backbone") == 23_508_032 - 64 * 2 * 49
    assert n("encoder.slice_transformer") == 6 * _layer_params(D_) + 2 * D_
    assert n("encoder") == n("encoder.slice_backbone") + n("encoder.slice_transformer") + 34 * D_  # cls + pos(33)
    assert n("fusion") == 2 * _layer_params(D_) + 2 * D_ + 16 * D_ + D_
    assert n("head") == 384 * D_ + D_              # projection of the 384-d label embeddings (no scalar bias: release)
    assert n("total") == n("encoder") + n("fusion") + n("head")


@pytest.mark.slow
def test_paper_preset_small_forward():
    cfg = preset("paper")
    torch.manual_seed(0)
    model = build_model(cfg, 11, torch.randn(11, cfg.model.text_dim)).eval()
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

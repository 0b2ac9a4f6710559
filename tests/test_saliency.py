"""Score-CAM: a tiny model trained a few steps to find a bright planted blob puts the map's mass
on the blob; overlays are written by `raddiag predict --saliency`; clear errors."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from raddiag.cli import main
from raddiag.config import preset
from raddiag.models import build_model
from raddiag.serving.saliency import choose_layer, score_cam
from raddiag.serving.sample import make_tiny_run

S = 64
YY, XX = np.mgrid[0:S, 0:S]


def _images(n: int, rng, lesion) -> tuple[torch.Tensor, list]:
    imgs, centres = [], []
    for i in range(n):
        img = 0.3 + 0.1 * rng.standard_normal((S, S))
        c = None
        if lesion[i]:
            c = tuple(rng.integers(10, S - 10, 2))
            img = img + 0.9 * np.exp(-((YY - c[0]) ** 2 + (XX - c[1]) ** 2) / (2 * 4.0 ** 2))
        imgs.append(np.clip(img, 0, 1))
        centres.append(c)
    return torch.tensor(np.array(imgs), dtype=torch.float32), centres


def _batch(x: torch.Tensor) -> dict:
    B = x.shape[0]
    return {"images": x[:, None, None, None], "scan_mask": torch.ones(B, 1, dtype=torch.bool),
            "slice_mask": torch.ones(B, 1, 1, dtype=torch.bool), "modality": torch.full((B, 1), 3),
            "key_slice": torch.zeros(B, 1, dtype=torch.long)}


@pytest.fixture(scope="module")
def lesion_model():
    return train_lesion_model()


def train_lesion_model():
    """Tiny resnet_vit trained to tell a blob (at a random place) from noise: class 1 = lesion."""
    cfg = preset("tiny", [f"data.size={S}", "data.depth=1"])
    torch.manual_seed(0)
    model = build_model(cfg, 2)
    opt = torch.optim.AdamW(model.parameters(), 2e-3)
    rng = np.random.default_rng(0)
    recent: list[float] = []
    for _ in range(150):               # until the last 5 losses average < 0.02 (about 40-60 steps)
        les = rng.random(16) < 0.5
        x, _ = _images(16, rng, les)
        b = _batch(x)
        y = torch.tensor(np.stack([~les, les], 1), dtype=torch.float32)
        logits = model(b["images"], b["scan_mask"], b["slice_mask"], b["modality"])
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        recent = (recent + [loss.item()])[-5:]
        if len(recent) == 5 and sum(recent) / 5 < 0.02:
            break
    # recalibrate BatchNorm statistics with the final weights (a short run leaves them lagging)
    for mod in model.modules():
        if isinstance(mod, torch.nn.modules.batchnorm._BatchNorm):
            mod.reset_running_stats()
            mod.momentum = None
    with torch.no_grad():
        for _ in range(8):
            x, _ = _images(16, rng, rng.random(16) < 0.5)
            b = _batch(x)
            model(b["images"], b["scan_mask"], b["slice_mask"], b["modality"])
    return model.eval(), cfg


@pytest.mark.slow
def test_map_mass_falls_on_the_planted_lesion(lesion_model):
    model, _ = lesion_model
    x, centres = _images(3, np.random.default_rng(1), [True] * 3)
    b = _batch(x)
    with torch.no_grad():
        p = torch.sigmoid(model(b["images"], b["scan_mask"], b["slice_mask"], b["modality"]))
    assert (p[:, 1] > 0.8).all(), f"the model did not learn the lesion: {p}"
    for i in range(3):
        (m,) = score_cam(model, _batch(x[i: i + 1]), class_index=1, scan=0, top_k=32)
        assert m.heatmap.shape == (S, S) and 0 <= m.heatmap.min() and m.heatmap.max() == pytest.approx(1.0)
        inside = (YY - centres[i][0]) ** 2 + (XX - centres[i][1]) ** 2 <= 6 ** 2
        assert m.heatmap[inside].mean() > 2 * m.heatmap[~inside].mean(), (i, m.heatmap[inside].mean(),
                                                                         m.heatmap[~inside].mean())


@pytest.mark.slow
def test_cli_writes_overlays(lesion_model, tmp_path):
    model, cfg = lesion_model
    make_tiny_run(tmp_path / "run", classes=["Normal", "Lesion"], size=S, depth=1, model=model)
    x, _ = _images(1, np.random.default_rng(2), [True])
    Image.fromarray((x[0].numpy() * 255).astype(np.uint8)).save(tmp_path / "cxr.png")
    out = tmp_path / "sal"
    rc = main(["predict", str(tmp_path / "run"), str(tmp_path / "cxr.png"), "--modality", "X-ray",
               "--saliency", str(out), "--saliency-class", "Lesion", "--saliency-top-k", "16"])
    assert rc == 0
    pngs = sorted(out.glob("*.png"))
    assert len(pngs) == 1 and "Lesion" in pngs[0].name
    with Image.open(pngs[0]) as im:
        assert im.mode == "RGB" and min(im.size) >= 256


def test_3d_scan_key_slice_and_every_slice(tmp_path):
    make_tiny_run(tmp_path / "run", size=32, depth=4)
    import raddiag

    pred = raddiag.load(tmp_path / "run")
    np.save(tmp_path / "vol.npy", np.random.default_rng(0).random((32, 32, 6)).astype(np.float32))
    res = pred.predict(str(tmp_path / "vol.npy"), modality="CT", saliency=True, saliency_top_k=8)
    assert [s["slice"] for s in res.saliency] == [2]                      # no key slice: the middle one
    assert res.saliency[0]["overlay"].startswith("data:image/png;base64,")
    assert res.saliency[0]["class"] == res.ranked[0].name
    res = pred.predict(str(tmp_path / "vol.npy"), modality="CT", saliency=tmp_path / "o", all_slices=True,
                       saliency_top_k=8, saliency_class="Fracture")
    assert [s["slice"] for s in res.saliency] == [0, 1, 2, 3]
    assert all(s["class"] == "Fracture" for s in res.saliency)
    with pytest.raises(ValueError, match="not among"):
        pred.predict(str(tmp_path / "vol.npy"), modality="CT", saliency=True, saliency_class="Nope")


def test_layer_choice_and_errors():
    assert choose_layer(256) == "layer4" and choose_layer(64) == "layer3" and choose_layer(32) == "layer2"
    with pytest.raises(ValueError, match="stage"):
        choose_layer(64, "layer9")
    cfg = preset("tiny", ["data.size=32", "data.depth=2", "model.encoder=resnet"])
    model = build_model(cfg, 2).eval()
    x, _ = _images(1, np.random.default_rng(0), [False])
    b = _batch(torch.nn.functional.interpolate(x[None], size=(32, 32))[0])
    b["images"] = torch.cat([b["images"], torch.zeros_like(b["images"])], 3)
    b["slice_mask"] = torch.tensor([[[True, False]]])
    with pytest.raises(ValueError, match="resnet_vit"):
        score_cam(model, b, 0, 0)

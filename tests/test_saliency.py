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
    assert [p.name for p in pngs] == ["cxr_Lesion.png"]       # short: the case, the class
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
    # every encoder has maps now: a ViT's are its output tokens, with no stage to choose
    cfg = preset("tiny", ["data.size=32", "data.depth=2", "model.encoder=vit", "model.patch_size=8"])
    model = build_model(cfg, 2).eval()
    x, _ = _images(1, np.random.default_rng(0), [False])
    b = _batch(torch.nn.functional.interpolate(x[None], size=(32, 32))[0])
    b["images"] = torch.cat([b["images"], torch.zeros_like(b["images"])], 3)
    b["slice_mask"] = torch.tensor([[[True, False]]])
    (m,) = score_cam(model, b, 0, 0, top_k=4)
    assert m.layer == "vit.tokens" and m.heatmap.shape == (32, 32)
    # the map's slice is its own: a view would keep the whole batch's memory alive with the map
    assert np.array_equal(m.image, b["images"][0, 0, 0, 0].numpy())
    assert not np.shares_memory(m.image, b["images"].numpy())
    with pytest.raises(ValueError, match="output tokens"):
        score_cam(model, b, 0, 0, layer="layer3")
    with pytest.raises(ValueError, match="scan 1 is not a scan"):
        score_cam(model, b, 0, 1)


# -- every encoder, 2D and 3D, from the command line -------------------------------------------
def _native_png(path, h: int = 300, w: int = 260) -> np.ndarray:
    """A grey PNG at its own resolution (larger than the model's input) spanning 0..255."""
    rng = np.random.default_rng(3)
    img = (np.linspace(0, 1, w)[None] * 0.5 + 0.5 * rng.random((h, w)))
    img = ((img - img.min()) / (img.max() - img.min()) * 255).round().astype(np.uint8)
    Image.fromarray(img).save(path)
    return img


@pytest.mark.parametrize("encoder", ["resnet", "vit", "resnet_vit"])
def test_predict_saliency_for_every_encoder_2d_and_3d(encoder, tmp_path, capsys):
    from matplotlib import colormaps

    run = make_tiny_run(tmp_path / "run", size=32, depth=4,
                        overrides=[f"model.encoder={encoder}", "model.patch_size=8"]).root
    img = _native_png(tmp_path / "us.png")
    vol = np.random.default_rng(4).random((300, 260, 6)).astype(np.float32)
    np.save(tmp_path / "ct.npy", vol)
    for case, modality, name, native in (("us.png", "Ultrasound", "us_", img.astype(np.float32) / 255),
                                         ("ct.npy", "CT", "ct_slice2_", vol[:, :, 3])):   # kept slices 0, 1, 3, 4
        out = tmp_path / f"sal-{modality}"
        rc = main(["predict", str(run), str(tmp_path / case), "--modality", modality, "--saliency", str(out),
                   "--saliency-top-k", "8", "--backend", "off"])
        printed = capsys.readouterr().out
        assert rc == 0 and "diagnosis" in printed and "  1  " in printed      # the prediction is printed
        (png,) = sorted(out.glob("*.png"))
        assert png.name.startswith(name) and f"saliency: {png}" in printed
        with Image.open(png) as im:
            fig = np.asarray(im.convert("RGB")).astype(int)
        top = fig.shape[0] - 300 - max(6, 260 // 60)            # caption strip above the panels
        plain = fig[top: top + 300, :260]
        expected = (native - native.min()) / (native.max() - native.min()) * 255
        assert np.abs(plain[..., 0] - expected).max() <= 1          # the input, at its own 300 x 260
        assert (plain[..., 0] == plain[..., 2]).all()               # grey
        x_bar = 2 * 260 + 2 * max(6, 260 // 60) + 2
        for row, value in ((top, 1.0), (top + 299, 0.0)):           # colour bar: 1 at the top, 0 below
            want = np.array(colormaps["jet"](value)[:3]) * 255
            assert np.abs(fig[row, x_bar] - want).max() <= 2, (row, fig[row, x_bar], want)
        overlay_panel = fig[top: top + 300, 260 + max(6, 260 // 60): 2 * 260 + max(6, 260 // 60)]
        assert (overlay_panel != plain).any()                       # the map is drawn over the second copy


def test_the_prediction_is_printed_when_the_maps_cannot_be_made(tmp_path, capsys):
    run = make_tiny_run(tmp_path / "run", size=32, depth=1).root
    _native_png(tmp_path / "x.png", 40, 40)
    (tmp_path / "sal").mkdir()
    (tmp_path / "sal" / "x_Fracture.png").write_bytes(b"taken")          # an existing figure: refused
    rc = main(["predict", str(run), str(tmp_path / "x.png"), "--modality", "X-ray", "--saliency",
               str(tmp_path / "sal"), "--saliency-class", "Fracture", "--saliency-top-k", "4"])
    out, err = capsys.readouterr()
    assert rc == 2 and "Case x: 1 scan(s) used: x.png (X-ray 2D)" in out and "Pleural effusion" in out
    assert "saliency: not made (" in out and "x_Fracture.png: exists already" in err
    assert (tmp_path / "sal" / "x_Fracture.png").read_bytes() == b"taken"


def test_the_caption_says_which_slice_of_those_the_model_saw():
    """A new user read "slice 4" of a 37-slice CT as the file's fifth slice; it is the model's."""
    from raddiag.serving.results import ScanInfo
    from raddiag.serving.saliency import SaliencyMap, saliency_caption

    m = SaliencyMap(scan=0, slice=4, class_index=1, class_name="Gout", layer="layer3", channels=8,
                    heatmap=np.zeros((4, 4)), image=np.zeros((4, 4)))
    ct = ScanInfo(id="ct0.nii.gz", paths=["ct0.nii.gz"], modality="CT", is_3d=True, slices=8, key_slice=-1)
    xr = ScanInfo(id="cxr.png", paths=["cxr.png"], modality="X-ray", is_3d=False, slices=1, key_slice=-1)
    assert saliency_caption("Gout", 0.4567, ct, m) == \
        "Gout (p = 0.457): ct0.nii.gz, slice 4 of the 8 the model saw; Score-CAM on layer3"
    assert saliency_caption("Gout", None, xr, m) == "Gout: cxr.png; Score-CAM on layer3"


def test_a_long_caption_wraps_inside_the_figure():
    """A 3D scan's caption on a small scan ran past the figure's edge ("Score-CAM on shar...")."""
    from PIL import ImageFont

    from raddiag.serving.saliency import _wrap, saliency_figure

    caption = ("Pleural effusion (p = 0.937): chest_ct_2019_followup.nii.gz, slice 4 of the 8 the model saw; "
               "Score-CAM on shared_stage.layer4")
    img = np.random.default_rng(0).random((32, 32)).astype(np.float32)
    short, long = saliency_figure(img, img, "Pleural effusion"), saliency_figure(img, img, caption)
    assert long.size[0] == short.size[0] and long.size[1] > short.size[1]    # more lines, same width
    font = ImageFont.load_default(size=12)
    lines = _wrap(caption, font, 300)
    assert " ".join(lines) == caption and len(lines) > 1
    assert all(font.getlength(line) <= 300 for line in lines)


def test_caption_font_draws_greek_letters_and_signs_of_class_names():
    """New user: "Löffler's pneumonitis (β/γ) — ≥2/3 lobes" was drawn with empty boxes (Pillow's
    default font has no such glyphs). Each character must be drawn as itself, not as the box an
    unassigned code point gets."""
    from PIL import ImageFont

    from raddiag.serving.saliency import caption_font

    def boxed(font, ch):
        return bytes(font.getmask(ch)) == bytes(font.getmask("\ue000"))      # U+E000: no glyph anywhere

    chars = "öβγ—≥é"
    assert not any(boxed(caption_font(14), ch) for ch in chars)
    assert all(boxed(ImageFont.load_default(size=14), ch) for ch in "βγ≥")   # the old font: the check can fail

"""The `paper` and `official` presets against the paper's text and the release; pre-trained
ResNet initialisation from a torchvision-layout file; key-slice training (swap and the
release's attention loss) checked against independent computations."""
from __future__ import annotations

import logging
import math

import numpy as np
import pytest
import torch

from raddiag.config import preset
from raddiag.models import build_model, key_slice_attention_loss
from raddiag.models.describe import architecture
from raddiag.models.pretrained import load_pretrained_backbone
from raddiag.training.augment import build_scan_transform
from test_training_data import make_tiny_data, tiny_overrides


# -- presets --------------------------------------------------------------------------------
def test_paper_preset_is_the_papers_model():
    a = architecture(preset("paper"))
    # 4.4: "the images are processed into shape of (H, W, D) ... both set to 256, and D ... 32"
    assert a["input size (H = W)"] == 256 and a["slices per 3D scan (D)"] == 32
    # Table 1 and 4.4: "we select ResNet-50 and a transformer encoder"; Table 1's row "ResNet-50 | 6-layer ViT"
    assert a["ResNet depth"] == 50 and a["slice transformer layers"] == 6
    assert a["width"] == 2048                      # 4.4: "features with a shape of (33, 2048)"
    # 4.4: "In the transformer encoder used for fusion, the number of heads is set to 4, the number of
    # layers is set to 2, and the output feature dimension is 2048"
    assert (a["fusion layers"], a["fusion heads"], a["fusion width"]) == (2, 4, 2048)
    # Table 2's final model is FM + KE: "interaction with the knowledge embedding"
    assert a["classifier head"] == "knowledge"
    # Supplementary C: "four augmentation strategies with 15% probability each"
    assert a["augmentation probability (each)"] == 0.15
    # 4.4: "randomly replace the 3D scan with its 2D key slice"; the release adds 0.001 x the KL
    assert 0 < a["key-slice swap rate"] < 1 and a["key-slice loss weight"] == 0.001
    assert preset("paper").data.max_scans == 4     # the release's early fusion: up to 4 scans


# Where the paper is silent, `paper` follows the authors' release (RP3D-Diag, src/Train): values read
# off its train.sh, Dataset/dataset.py and Model/*.py, written here from that reading.
def test_paper_follows_the_release_where_the_paper_is_silent():
    cfg = preset("paper")
    t, m, d = cfg.train, cfg.model, cfg.data
    assert t.weight_decay == 0.0                        # train.sh: --weight_decay 0.
    assert t.batch_size == 1                            # train.sh: BATCHSIZE=1
    assert t.case_mix == pytest.approx(1 - 0.7)         # train.sh: N_aug=2, Prob=0.7 (a partner 30 % of the time)
    assert d.max_scans == 4                             # train.sh: N_image=4 (per case of a mix)
    assert m.pretrained == "imagenet"                   # Model/modelRadNet.py: resnet50_2D(weights=... ImageNet)
    assert m.knowledge_bias is False                    # KE head: logits = x @ fcke(text).T, no scalar
    assert m.init == "release" and t.aug_style == "release"
    assert d.granularity == "disorder"                  # train.sh: LEVEL="articles" (disorder names)
    assert (t.lr, t.epochs, t.warmup_epochs / t.epochs) == (1e-5, 100, 0.05)   # LR=1e-5, 100 epochs, warmup_ratio 0.05
    assert t.key_slice_loss == 0.001                    # loss = loss_attn * 0.001 + loss_cls


def test_release_augmentation_parameters_and_in_plane_warp():
    cfg = preset("paper", ["train.key_slice_swap=0", "train.aug_prob=1"])
    t = build_scan_transform(cfg.train, cfg.data)
    affine, elastic, noise, contrast = t.release         # the release's Compose order
    g = affine.rand_affine_grid
    assert g.rotate_range[2] == pytest.approx(math.pi / 12) and g.shear_range[:2] == (0.2, 0.2)
    assert g.translate_range[:2] == (10, 10) and g.scale_range[:2] == (0.1, 0.1)
    assert (elastic.sigma_range, elastic.magnitude_range) == ((5, 7), (10, 20))
    assert (noise.std, contrast.gamma) == (0.07, (0.5, 1.5))

    class Same:                                          # noise and contrast off: the warps alone
        def set_random_state(self, seed):
            pass

        def __call__(self, x):
            return x

    small = build_scan_transform(preset("paper", ["data.size=32", "train.aug_prob=1"]).train,
                                 preset("paper", ["data.size=32"]).data)
    small.release = small.release[:2] + (Same(), Same())
    vol = torch.rand(1, 1, 32, 32).repeat(1, 5, 1, 1)    # five equal slices
    out = small({"image": vol, "is_3d": True, "key_slice": -1, "modality": "CT"}, np.random.default_rng(1))["image"]
    assert not torch.allclose(out, vol) and all(torch.equal(out[0, 0], out[0, k]) for k in range(5))


def test_release_init_draws_tokens_from_a_standard_normal_and_xavier_matrices():
    from raddiag.models.layers import Encoder

    own = build_model(preset("tiny", ["model.width=64"]), 3)
    rel = build_model(preset("tiny", ["model.width=64", "model.init=release"]), 3)
    assert own.encoder.pos_emb.std() < 0.05 and 0.85 < rel.encoder.pos_emb.std() < 1.15
    assert 0.85 < rel.fusion.mod_embed.std() < 1.15 and 0.7 < rel.fusion.cls_token.std() < 1.3
    for m in rel.modules():
        if isinstance(m, Encoder):
            for p in (p for p in m.parameters() if p.dim() > 1):
                bound = math.sqrt(6 / (p.shape[0] + p.shape[1]))
                assert p.abs().max() <= bound and p.abs().max() > 0.9 * bound
    torch.testing.assert_close(own.encoder.slice_backbone.conv1.weight.std(),
                               rel.encoder.slice_backbone.conv1.weight.std(), rtol=0.2, atol=0)   # ResNet: defaults
    emb = torch.randn(3, 384)
    head = build_model(preset("tiny", ["model.head=knowledge", "model.knowledge_bias=false"]), 3, emb).head
    assert head.bias is None and "head.bias" not in build_model(preset("paper", ["data.size=32", "data.depth=2",
        "model.resnet_depth=10", "model.width=32", "model.slice_layers=1", "model.slice_heads=1",
        "model.fusion_layers=1", "model.fusion_heads=1", "model.resnet_inplanes=[8, 16, 32, 64]"]), 3, emb).state_dict()


def test_official_preset_is_the_release():
    cfg = preset("official")
    m = cfg.model
    assert (m.slice_layers, m.slice_heads, m.fusion_layers, m.fusion_heads) == (1, 1, 2, 4)
    assert (m.layer_style, m.head, m.in_channels, m.resnet_depth, m.width) == ("official", "mlp", 3, 50, 2048)
    assert cfg.data.modality_scheme == "official" and m.mlp_ratio == 1.0


def test_tiny_and_small_keep_their_settings():
    for name in ("tiny", "small"):
        cfg = preset(name)
        assert cfg.model.head == "mlp" and cfg.model.slice_layers == 1 and cfg.model.pretrained is None
        assert cfg.train.key_slice_swap == 0.0 and cfg.train.key_slice_loss == 0.0


# -- a ResNet state dict in torchvision's layout ------------------------------------------
# torchvision.models.resnet: conv1 (7x7, 3 -> 64), bn1, layer1..4 of BasicBlock (conv1 3x3, bn1,
# conv2 3x3, bn2) or Bottleneck (conv1 1x1, bn1, conv2 3x3, bn2, conv3 1x1 to 4x planes, bn3),
# downsample.0 (1x1 conv) / downsample.1 (BN) where the stride or the width changes; fc.
BLOCKS = {18: [2, 2, 2, 2], 34: [3, 4, 6, 3], 50: [3, 4, 6, 3]}


def torchvision_resnet(depth: int, planes=(64, 128, 256, 512), seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    sd: dict[str, torch.Tensor] = {}

    def conv(k, o, i, s):
        sd[k + ".weight"] = torch.randn(o, i, s, s, generator=g) * math.sqrt(2.0 / (i * s * s))

    def bn(k, c):
        sd[k + ".weight"] = 1 + 0.1 * torch.randn(c, generator=g)
        sd[k + ".bias"] = 0.1 * torch.randn(c, generator=g)
        sd[k + ".running_mean"] = 0.1 * torch.randn(c, generator=g)
        sd[k + ".running_var"] = 0.5 + torch.rand(c, generator=g)
        sd[k + ".num_batches_tracked"] = torch.tensor(100)

    exp = 4 if depth >= 50 else 1
    conv("conv1", planes[0], 3, 7)
    bn("bn1", planes[0])
    cin = planes[0]
    for i, (p, n) in enumerate(zip(planes, BLOCKS[depth]), 1):
        for j in range(n):
            b = f"layer{i}.{j}"
            if exp == 4:
                conv(b + ".conv1", p, cin, 1), bn(b + ".bn1", p)
                conv(b + ".conv2", p, p, 3), bn(b + ".bn2", p)
                conv(b + ".conv3", 4 * p, p, 1), bn(b + ".bn3", 4 * p)
            else:
                conv(b + ".conv1", p, cin, 3), bn(b + ".bn1", p)
                conv(b + ".conv2", p, p, 3), bn(b + ".bn2", p)
            if j == 0 and (i > 1 or cin != p * exp):
                conv(b + ".downsample.0", p * exp, cin, 1), bn(b + ".downsample.1", p * exp)
            cin = p * exp
    sd["fc.weight"] = torch.randn(1000, cin, generator=g) * 0.01
    sd["fc.bias"] = torch.zeros(1000)
    return sd


def _resnet50_cfg(*extra):
    return preset("tiny", ["data.size=32", "data.depth=3", "model.resnet_depth=50",
                           "model.resnet_inplanes=[64, 128, 256, 512]", *extra])


def _batch():
    g = torch.Generator().manual_seed(1)
    return (torch.rand(1, 2, 1, 3, 32, 32, generator=g), torch.ones(1, 2, dtype=torch.bool),
            torch.tensor([[[True, True, True], [True, False, False]]]), torch.tensor([[1, 7]]))


def test_torchvision_layout_builder_matches_torchvision_resnet50():
    sd = torchvision_resnet(50)
    # torchvision's resnet50(): 320 state-dict entries, 25,557,032 parameters
    assert len(sd) == 320
    params = sum(v.numel() for k, v in sd.items() if not k.endswith(("running_mean", "running_var", "tracked")))
    assert params == 25_557_032


def test_pretrained_takes_every_backbone_weight_and_changes_the_output(tmp_path):
    sd = torchvision_resnet(50)
    path = tmp_path / "resnet50.pth"
    torch.save(sd, path)
    torch.manual_seed(0)
    model = build_model(_resnet50_cfg(), 5).eval()
    with torch.no_grad():
        before = model(*_batch())
    report = load_pretrained_backbone(model, path)
    with torch.no_grad():
        after = model(*_batch())
    own = model.encoder.slice_backbone.state_dict()
    assert len(own) == 318
    for k, v in own.items():
        if k == "conv1.weight":       # 1 input channel: the RGB filters summed (timm's adapt_input_conv)
            w = sd[k]
            assert v.shape == (64, 1, 7, 7)
            torch.testing.assert_close(v[:, 0], w[:, 0] + w[:, 1] + w[:, 2])
        else:
            assert torch.equal(v, sd[k]), k
    assert set(report.used) == set(own) and report.left == ["fc.bias", "fc.weight"]
    assert report.depth == 50 and "summing" in report.stem and str(path) in report.summary()
    assert not torch.allclose(before, after)


def test_pretrained_safetensors_three_channel_stem_and_prefixed_keys(tmp_path):
    from safetensors.torch import save_file

    sd = torchvision_resnet(50, seed=3)
    path = tmp_path / "model.safetensors"          # e.g. a timm file, here with a "backbone." prefix
    save_file({f"backbone.{k}": v for k, v in sd.items()}, str(path))
    model = build_model(_resnet50_cfg("model.in_channels=3"), 5)
    report = load_pretrained_backbone(model, path)
    assert torch.equal(model.encoder.slice_backbone.conv1.weight, sd["conv1.weight"]) and report.stem == ""
    assert report.left == ["backbone.fc.bias", "backbone.fc.weight"]


def test_pretrained_errors_name_the_file(tmp_path):
    model = build_model(_resnet50_cfg(), 5)
    r18 = tmp_path / "resnet18.pth"
    torch.save(torchvision_resnet(18), r18)
    with pytest.raises(ValueError, match=r"resnet18\.pth.*ResNet-18.*ResNet-50"):
        load_pretrained_backbone(model, r18)
    small = build_model(preset("tiny", ["model.resnet_depth=50"]), 5)     # planes 16/32/64/128
    r50 = tmp_path / "resnet50.pth"
    torch.save(torchvision_resnet(50), r50)
    with pytest.raises(ValueError, match=r"resnet50\.pth: shape mismatch"):
        load_pretrained_backbone(small, r50)
    junk = tmp_path / "other.pth"
    torch.save({"weight": torch.zeros(3)}, junk)
    with pytest.raises(ValueError, match=r"other\.pth: no ResNet stem"):
        load_pretrained_backbone(model, junk)
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        load_pretrained_backbone(model, tmp_path / "missing.pth")
    vit = build_model(preset("tiny", ["model.encoder=vit"]), 5)
    with pytest.raises(ValueError, match="resnet_vit"):
        load_pretrained_backbone(vit, r50)


# -- model.pretrained: imagenet (torchvision's file in the torch hub cache) ----------------------
@pytest.fixture
def hub(tmp_path, monkeypatch):
    """An empty torch hub cache of this test's own (torch.hub.get_dir() reads torch.hub._hub_dir)."""
    import torch.hub

    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path / "hub"))
    return tmp_path / "hub" / "checkpoints"


def test_imagenet_resolves_torchvisions_file_in_the_hub_cache(hub):
    hub.mkdir(parents=True)
    sd = torchvision_resnet(50, seed=7)
    torch.save(sd, hub / "resnet50-0676ba61.pth")        # torchvision's name for ResNet50_Weights.IMAGENET1K_V1
    model = build_model(_resnet50_cfg("model.pretrained=imagenet"), 5)
    report = load_pretrained_backbone(model, "imagenet")
    assert report.path == hub / "resnet50-0676ba61.pth" and report.depth == 50
    assert torch.equal(model.encoder.slice_backbone.layer3[2].conv2.weight, sd["layer3.2.conv2.weight"])


def test_imagenet_absent_offline_is_one_line_naming_file_url_and_folder(hub, tmp_path, capsys, monkeypatch):
    import torch.hub

    from raddiag.cli import main

    def no_network(*a, **k):
        raise AssertionError("downloaded without --download-weights")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    data = make_tiny_data(tmp_path / "data", n_cases=8)
    sets = [x for o in tiny_overrides(**{"model.resnet_depth": 50, "model.resnet_inplanes": "[64, 128, 256, 512]",
                                         "model.pretrained": "imagenet"}) for x in ("--set", o)]
    rc = main(["train", "--preset", "tiny", "--data", str(data), "--out", str(tmp_path / "run"), "--no-progress",
               "--max-steps", "1", *sets])
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert rc == 2 and len(err) == 1 and err[0].startswith("raddiag: error: "), err
    for needle in (str(hub / "resnet50-0676ba61.pth"), "https://download.pytorch.org/models/resnet50-0676ba61.pth",
                   f"into {hub}", "--set model.pretrained=none", "--download-weights"):
        assert needle in err[0], needle
    assert not (tmp_path / "run").exists()


def test_download_weights_fetches_into_the_hub_cache_with_the_hash_checked(hub, monkeypatch):
    import torch.hub

    from raddiag.models.pretrained import fetch_imagenet

    calls = []

    def fake_download(url, dst, hash_prefix=None, progress=True):   # stands in for the network
        calls.append((url, hash_prefix))
        torch.save(torchvision_resnet(50), dst)

    monkeypatch.setattr(torch.hub, "download_url_to_file", fake_download)
    path = fetch_imagenet(50, progress=False)
    assert path == hub / "resnet50-0676ba61.pth" and path.is_file()
    assert calls == [("https://download.pytorch.org/models/resnet50-0676ba61.pth", "0676ba61")]
    assert fetch_imagenet(50, progress=False) == path and len(calls) == 1      # found: not fetched again
    with pytest.raises(ValueError, match="ResNet-10.*--set model.pretrained=none"):
        fetch_imagenet(10)


@pytest.mark.slow
def test_train_with_pretrained_file_and_load_without_it(tmp_path, caplog):
    from raddiag.cli import main
    from raddiag.models import load_model

    data = make_tiny_data(tmp_path / "data", n_cases=8)
    planes = (8, 16, 32, 64)
    sd = torchvision_resnet(18, planes, seed=5)
    weights = tmp_path / "r18.pth"
    torch.save(sd, weights)
    sets = [x for o in tiny_overrides(**{"model.resnet_depth": 18}) for x in ("--set", o)]
    with caplog.at_level(logging.INFO, logger="raddiag"):
        assert main(["train", "--preset", "tiny", "--data", str(data), "--out", str(tmp_path / "run"),
                     "--pretrained", str(weights), "--max-steps", "1", "--no-progress", *sets]) == 0
    assert any("r18.pth: ResNet-18 weights" in r.getMessage() and "left 2: fc.bias, fc.weight" in r.getMessage()
               for r in caplog.records)
    weights.unlink()                                   # a training-time input only: resume and load without it
    assert main(["train", "--data", str(data), "--out", str(tmp_path / "run"), "--resume", "--max-steps", "2",
                 "--no-progress"]) == 0
    model, cfg, _ = load_model(tmp_path / "run")
    assert cfg.model.pretrained == str(weights)
    assert not torch.equal(model.encoder.slice_backbone.layer4[1].conv2.weight, sd["layer4.1.conv2.weight"])  # trained
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="raddiag"):
        main(["train", "--preset", "tiny", "--data", str(data), "--out", str(tmp_path / "run0"),
              "--max-steps", "1", "--no-progress", *sets])
    assert any("model.pretrained is not set" in r.getMessage() for r in caplog.records)


# -- key-slice attention loss ----------------------------------------------------------------
def _reference_loss(att, key, mask, eps=1e-5):
    """Plain-Python: per scan with a key slice, both KL directions over its real slices, averaged."""
    B, N, D = len(att), len(att[0]), len(att[0][0])
    sigma = D / 16
    total, count = 0.0, 0
    for b in range(B):
        for n in range(N):
            real = [d for d in range(D) if mask[b][n][d]]
            if key[b][n] < 0 or not real:
                continue
            s_a = sum(att[b][n][d] for d in real)
            gauss = {d: math.exp(-((d - key[b][n]) ** 2) / (2 * sigma * sigma)) for d in real}
            s_g = sum(gauss.values())
            p = {d: max(att[b][n][d] / s_a, eps) for d in real}
            q = {d: max(gauss[d] / s_g, eps) for d in real}
            kl_qp = sum(q[d] * math.log(q[d] / p[d]) for d in real)
            kl_pq = sum(p[d] * math.log(p[d] / q[d]) for d in real)
            total += (kl_qp + kl_pq) / 2
            count += 1
    return total / count


def test_key_slice_loss_matches_an_independent_loop():
    B, N, D = 2, 3, 32
    g = torch.Generator().manual_seed(0)
    mask = torch.zeros(B, N, D, dtype=torch.bool)
    mask[0, 0, :32] = True          # full depth, key near the top
    mask[0, 1, :20] = True          # padded depth
    mask[0, 2, :1] = True           # a 2D scan: contributes 0, counted in the mean (as released)
    mask[1, 0, :12] = True
    mask[1, 1, :25] = True          # no key slice: left out
    key = torch.tensor([[3, 17, 0], [11, -1, -1]])
    logits = torch.randn(B, N, D + 1, generator=g) * 2
    logits[..., 1:] = logits[..., 1:].masked_fill(~mask, -1e9)
    att = logits.softmax(-1)[..., 1:]          # [CLS] -> slices, rows sum < 1 (weight on [CLS] itself)
    got = key_slice_attention_loss(att, key, mask)
    want = _reference_loss(att.double().tolist(), key.tolist(), mask.tolist())
    assert got.item() == pytest.approx(want, rel=1e-4)
    # attention that IS the key-slice Gaussian costs (almost) nothing; a flat one costs more
    pos = torch.arange(D).float()
    gauss = torch.exp(-0.5 * ((pos - key[..., None].clamp(min=0)) / (D / 16)) ** 2) * mask
    assert key_slice_attention_loss(gauss, key, mask).item() < 1e-4
    assert key_slice_attention_loss(mask.float(), key, mask).item() > 0.1
    none = key_slice_attention_loss(att.requires_grad_(), torch.full((B, N), -1), mask)
    assert none.item() == 0.0 and none.requires_grad


# -- key-slice swap ------------------------------------------------------------------------------
def test_key_slice_swap_gives_the_prepared_key_slice_only_in_training(tmp_path):
    from raddiag.data.dataset import CaseDataset
    from raddiag.data.store import PreparedData

    data = PreparedData(make_tiny_data(tmp_path, n_cases=16))
    cfg = preset("tiny", tiny_overrides(**{"train.key_slice_swap": 1.0}))
    labels = data.label_space("disorder")
    t = build_scan_transform(cfg.train, cfg.data)
    train = CaseDataset(data, "train", labels, cfg.data, train=True, scan_transform=t, seed=3)
    evald = CaseDataset(data, "train", labels, cfg.data, train=False, scan_transform=t)
    checked = 0
    for i, rec in enumerate(train.records):
        scans3d = [s for s in rec["scans"] if s["is_3d"] and s["store"]["key"] >= 0]
        if not scans3d:
            continue
        s = scans3d[0]
        volume = np.asarray(data.scan_array(s), dtype=np.float32)        # the prepared [d, H, W]
        got = [sc for sc in train[i]["scans"] if sc["modality"] == s["modality"]][0]
        assert got["is_3d"] is False and got["key_slice"] == 0 and got["image"].shape[1] == 1
        np.testing.assert_array_equal(got["image"][0, 0].numpy(), volume[s["store"]["key"]])
        kept = [sc for sc in evald[i]["scans"] if sc["modality"] == s["modality"]][0]
        assert kept["is_3d"] is True and kept["image"].shape[1] == volume.shape[0]
        np.testing.assert_array_equal(kept["image"][0].numpy(), volume)
        checked += 1
    assert checked >= 3


def test_paper_swap_rate_is_applied_per_3d_scan():
    cfg = preset("paper", ["data.size=8", "train.aug_prob=0.0"])
    t = build_scan_transform(cfg.train, cfg.data)
    item = {"image": torch.rand(1, 4, 8, 8), "is_3d": True, "key_slice": 2, "modality": "CT"}
    swapped = sum(not t(item, np.random.default_rng([7, i]))["is_3d"] for i in range(3000))
    p = cfg.train.key_slice_swap
    assert abs(swapped / 3000 - p) < 4 * math.sqrt(p * (1 - p) / 3000)


# -- the knowledge head's text: a fine-tuned knowledge encoder ----------------------------------
PAPER_SMALL = {"data.size": 32, "data.depth": 4, "model.resnet_depth": 10, "model.resnet_inplanes": "[8, 16, 32, 64]",
               "model.width": 32, "model.slice_layers": 1, "model.slice_heads": 2, "model.fusion_heads": 2,
               "model.fusion_layers": 1, "model.pretrained": "none", "train.aug_prob": 0.0, "train.epochs": 1}


@pytest.fixture
def tuned_cache(tmp_path, monkeypatch):
    """A knowledge encoder fine-tuned (2 steps on a toy knowledge base) where `raddiag knowledge train`'s
    default run is cached, with the default step count set to 2 so that it counts as finished."""
    from test_knowledge import _toy_kb

    from raddiag.knowledge.defaults import DEFAULTS
    from raddiag.knowledge.train import cached_encoder_dir, train_knowledge_encoder

    monkeypatch.setenv("RADDIAG_CACHE", str(tmp_path / "cache"))
    monkeypatch.setitem(DEFAULTS, "steps", 2)
    enc = cached_encoder_dir()
    train_knowledge_encoder(enc, kb=_toy_kb(), steps=2, batch_size=6, holdout_fraction=0.0, progress=False,
                            evaluate=False, train_layers=1)
    return enc


def test_paper_run_embeds_labels_with_the_cached_fine_tuned_encoder(tuned_cache, tmp_path, caplog):
    import json

    from raddiag.cli import main
    from raddiag.knowledge.embed import embed_labels
    from raddiag.knowledge.encoder import TextEncoder
    from raddiag.run import RunFolder

    data = make_tiny_data(tmp_path / "data", n_cases=8)
    sets = [x for k, v in PAPER_SMALL.items() for x in ("--set", f"{k}={v}")]
    with caplog.at_level(logging.INFO, logger="raddiag"):
        assert main(["train", "--preset", "paper", "--data", str(data), "--out", str(tmp_path / "run"),
                     "--max-steps", "1", "--no-progress", *sets]) == 0
    said = [r.getMessage() for r in caplog.records if r.getMessage().startswith("label embeddings:")]
    assert len(said) == 1 and f"embedded by {tuned_cache} (fine-tuned by raddiag knowledge train: 2 steps" in said[0]
    run = RunFolder(tmp_path / "run")
    ref = json.loads(run.text_encoder_ref.read_text())
    assert ref["path"] == str(tuned_cache.resolve()) and ref["knowledge_training"]["steps"] == 2
    labels = run.load_labels()
    tuned = embed_labels(TextEncoder.load(tuned_cache), labels)
    torch.testing.assert_close(run.load_label_embeddings(), tuned)
    base = embed_labels(TextEncoder.load(None), labels)
    assert not torch.allclose(tuned, base, atol=1e-4)          # the fine-tuned text, not the base encoder's

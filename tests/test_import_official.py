"""Import of the released weights, checked against a reference forward written from
docs/official-checkpoint.md (not from our model code), on random weights with the released
key names at a reduced width (64; ResNet-50 with 4/8/16/16 planes, so 64 features)."""
from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F

from raddiag.models import load_model
from raddiag.models.official import import_official

W, INPL, BLOCKS, NCLS, D = 64, [4, 8, 16, 16], [3, 4, 6, 3], 7, 32


# -- a random checkpoint with the released names ----------------------------------------
def _bn(sd, p, c, g):
    sd[p + "weight"] = 1 + 0.1 * torch.randn(c, generator=g)
    sd[p + "bias"] = 0.1 * torch.randn(c, generator=g)
    sd[p + "running_mean"] = 0.1 * torch.randn(c, generator=g)
    sd[p + "running_var"] = 0.5 + torch.rand(c, generator=g)
    sd[p + "num_batches_tracked"] = torch.tensor(7)


def _conv(sd, k, cout, cin, ks, g):
    sd[k] = torch.randn(cout, cin, ks, ks, generator=g) * math.sqrt(2.0 / (cin * ks * ks))


def _lin(sd, p, dout, din, g):
    sd[p + "weight"] = torch.randn(dout, din, generator=g) / math.sqrt(din)
    sd[p + "bias"] = 0.1 * torch.randn(dout, generator=g)


def _transformer(sd, p, layers, g, W=W):
    for i in range(layers):
        q = f"{p}.transformer_encoder.encoder.layers.{i}."
        for j in range(4):
            _lin(sd, f"{q}self_attn.linears.{j}.", W, W, g)
        _lin(sd, f"{q}feed_forward.w_1.", W, W, g)
        _lin(sd, f"{q}feed_forward.w_2.", W, W, g)
        for j in range(2):
            sd[f"{q}sublayer.{j}.norm.a"] = 1 + 0.1 * torch.randn(W, generator=g)
            sd[f"{q}sublayer.{j}.norm.b"] = 0.1 * torch.randn(W, generator=g)
    sd[f"{p}.transformer_encoder.encoder.norm.a"] = 1 + 0.1 * torch.randn(W, generator=g)
    sd[f"{p}.transformer_encoder.encoder.norm.b"] = 0.1 * torch.randn(W, generator=g)
    # documented unused template copies (shapes deliberately odd: they must be ignored)
    sd[f"{p}.transformer_encoder.multi_headed_attention.linears.0.weight"] = torch.randn(3, 5, generator=g)
    sd[f"{p}.transformer_encoder.feed_forward.w_1.weight"] = torch.randn(2, generator=g)
    sd[f"{p}.transformer_encoder.encoder_layer.self_attn.linears.0.bias"] = torch.randn(9, generator=g)


def released_state(early: bool = True, seed: int = 0, inplanes=INPL, classes: int = NCLS) -> dict[str, torch.Tensor]:
    """Random weights in the release's key layout; the width is ``inplanes[3] * 4`` (the
    release: ``inplanes=[64, 128, 256, 512]``, 2048 wide, 5,569 classes)."""
    INPL, W = inplanes, inplanes[3] * 4
    g = torch.Generator().manual_seed(seed)
    sd: dict[str, torch.Tensor] = {}
    _conv(sd, "resnet2D.conv1.weight", INPL[0], 3, 7, g)
    _bn(sd, "resnet2D.bn1.", INPL[0], g)
    cin = INPL[0]
    for i, (planes, n) in enumerate(zip(INPL, BLOCKS), 1):
        for j in range(n):
            p = f"resnet2D.layer{i}.{j}."
            _conv(sd, p + "conv1.weight", planes, cin, 1, g)
            _bn(sd, p + "bn1.", planes, g)
            _conv(sd, p + "conv2.weight", planes, planes, 3, g)
            _bn(sd, p + "bn2.", planes, g)
            _conv(sd, p + "conv3.weight", planes * 4, planes, 1, g)
            _bn(sd, p + "bn3.", planes * 4, g)
            if j == 0:
                _conv(sd, p + "downsample.0.weight", planes * 4, cin, 1, g)
                _bn(sd, p + "downsample.1.", planes * 4, g)
            cin = planes * 4
    sd["resnet2D.fc.weight"] = torch.randn(1000, cin, generator=g)
    sd["resnet2D.fc.bias"] = torch.randn(1000, generator=g)
    sd["attention1D.cls_token"] = torch.randn(1, 1, W, generator=g)
    sd["attention1D.pos_emb"] = torch.randn(D + 1, W, generator=g)
    _transformer(sd, "attention1D", 1, g, W)
    if early:
        sd["vitFuse.mod_embed"] = torch.randn(16, W, generator=g)
        sd["vitFuse.cls_token"] = torch.randn(1, 1, W, generator=g)
        _transformer(sd, "vitFuse", 2, g, W)
    _lin(sd, "fc.0.", W, W, g)
    _lin(sd, "fc.2.", classes, W, g)
    return sd


# -- the reference forward, from the doc page -----------------------------------------------
def ref_resnet50(sd, x):
    def bn(x, p):
        return F.batch_norm(x, sd[p + "running_mean"], sd[p + "running_var"], sd[p + "weight"], sd[p + "bias"],
                            False, 0.0, 1e-5)

    r = "resnet2D."
    x = F.relu(bn(F.conv2d(x, sd[r + "conv1.weight"], stride=2, padding=3), r + "bn1."))
    x = F.max_pool2d(x, 3, 2, 1)
    for i, n in enumerate(BLOCKS, 1):
        for j in range(n):
            p = f"{r}layer{i}.{j}."
            s = 2 if (j == 0 and i > 1) else 1
            o = F.relu(bn(F.conv2d(x, sd[p + "conv1.weight"]), p + "bn1."))
            o = F.relu(bn(F.conv2d(o, sd[p + "conv2.weight"], stride=s, padding=1), p + "bn2."))
            o = bn(F.conv2d(o, sd[p + "conv3.weight"]), p + "bn3.")
            idt = bn(F.conv2d(x, sd[p + "downsample.0.weight"], stride=s), p + "downsample.1.") if j == 0 else x
            x = F.relu(o + idt)
    return x.mean((2, 3))


def ref_norm(x, a, b):
    return a * (x - x.mean(-1, keepdim=True)) / (x.std(-1, keepdim=True) + 1e-6) + b


def ref_encoder(sd, p, x, mask, heads):
    B, L, d = x.shape
    n = len({k for k in sd if k.startswith(p + "layers.") and k.endswith("feed_forward.w_1.weight")})
    lin = lambda k, t: t @ sd[k + ".weight"].T + sd[k + ".bias"]  # noqa: E731
    for i in range(n):
        q = f"{p}layers.{i}."
        qkv = [lin(f"{q}self_attn.linears.{j}", x).view(B, L, heads, d // heads).transpose(1, 2) for j in range(3)]
        s = qkv[0] @ qkv[1].transpose(-2, -1) / math.sqrt(d // heads)
        s = s.masked_fill(mask[:, None, None, :] == 0, -1e9)
        a = (s.softmax(-1) @ qkv[2]).transpose(1, 2).reshape(B, L, d)
        x = x + lin(f"{q}self_attn.linears.3", a)
        h = ref_norm(x, sd[f"{q}sublayer.1.norm.a"], sd[f"{q}sublayer.1.norm.b"])
        x = x + lin(f"{q}feed_forward.w_2", F.relu(lin(f"{q}feed_forward.w_1", h)))
    return ref_norm(x, sd[p + "norm.a"], sd[p + "norm.b"])


def ref_forward(sd, image, mods, marks, early=True):
    """image [B, N, 1, H, W, D] (their layout), mods [B, N], marks [B, N, D]."""
    B, N, _, H, Wd, Dd = image.shape
    x = image.permute(0, 1, 5, 2, 3, 4).reshape(B * N * Dd, 1, H, Wd).repeat(1, 3, 1, 1)
    f = ref_resnet50(sd, x).view(B * N, Dd, -1)
    cls = sd["attention1D.cls_token"].expand(B * N, -1, -1)
    t = torch.cat([cls, f], 1) + sd["attention1D.pos_emb"]
    m = torch.cat([torch.ones(B * N, 1), marks.reshape(B * N, Dd).float()], 1)
    v = ref_encoder(sd, "attention1D.transformer_encoder.encoder.", t, m, 1)[:, 0].view(B, N, -1)
    if early:
        v = v + sd["vitFuse.mod_embed"][mods]
        t = torch.cat([sd["vitFuse.cls_token"].expand(B, -1, -1), v], 1)
        m = torch.cat([torch.ones(B, 1), (mods != 0).float()], 1)
        v = ref_encoder(sd, "vitFuse.transformer_encoder.encoder.", t, m, 4)[:, 0]
    else:
        v = v[:, 0]
    h = F.gelu(v @ sd["fc.0.weight"].T + sd["fc.0.bias"])
    return h @ sd["fc.2.weight"].T + sd["fc.2.bias"]


def _batch(n_scans=(3, 1), size=32, seed=1):
    g = torch.Generator().manual_seed(seed)
    B, N = len(n_scans), max(n_scans)
    depths = [[5, 1, 32], [32]]
    images = torch.zeros(B, N, 1, D, size, size)
    slice_mask = torch.zeros(B, N, D, dtype=torch.bool)
    scan_mask = torch.zeros(B, N, dtype=torch.bool)
    mods = torch.zeros(B, N, dtype=torch.long)
    ids = [[1, 7, 4], [2]]
    for b, n in enumerate(n_scans):
        for k in range(n):
            d = depths[b][k]
            images[b, k, :, :d] = torch.rand(1, d, size, size, generator=g)
            slice_mask[b, k, :d] = True
            scan_mask[b, k] = True
            mods[b, k] = ids[b][k]
    return images, scan_mask, slice_mask, mods


def _labels(tmp_path, n=NCLS):
    p = tmp_path / "disorder_label_dict.json"
    p.write_text(json.dumps({("Normal" if i == 0 else f"disorder {i}"): i for i in range(n)}))
    return p


def _write_bin(sd, folder):
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(sd, folder / "pytorch_model.bin")
    return folder


@pytest.mark.parametrize("fmt", ["bin", "safetensors"])
def test_import_matches_reference_forward(tmp_path, fmt):
    sd = released_state(early=True)
    ck = tmp_path / "ckpt"
    if fmt == "bin":
        _write_bin(sd, ck)
    else:
        from safetensors.torch import save_file

        ck.mkdir()
        save_file({k: v.contiguous() for k, v in sd.items()}, str(ck / "model.safetensors"))
    import_official(ck, _labels(tmp_path), tmp_path / "run")
    model, cfg, labels = load_model(tmp_path / "run")
    assert cfg.model.layer_style == "official" and cfg.data.modality_scheme == "official"
    assert cfg.model.fusion == "transformer" and cfg.model.num_modalities == 16 and cfg.data.depth == 32
    assert labels.names[0] == "Normal" and len(labels) == NCLS
    images, scan_mask, slice_mask, mods = _batch()
    with torch.no_grad():
        ours = model(images, scan_mask, slice_mask, mods)
        ref = ref_forward(sd, images.permute(0, 1, 2, 4, 5, 3), mods, slice_mask.float())
    assert ours.shape == (2, NCLS)
    assert ref.abs().max() > 0.1  # a non-degenerate comparison
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-5)


def test_late_fusion_import(tmp_path):
    sd = released_state(early=False, seed=3)
    import_official(_write_bin(sd, tmp_path / "late"), _labels(tmp_path), tmp_path / "run")
    model, cfg, _ = load_model(tmp_path / "run")
    assert cfg.model.fusion == "max" and cfg.data.max_scans == 1 and model.fusion is None
    images, scan_mask, slice_mask, mods = _batch(n_scans=(1, 1))
    with torch.no_grad():
        ours = model(images, scan_mask, slice_mask, mods)
        ref = ref_forward(sd, images.permute(0, 1, 2, 4, 5, 3), mods, slice_mask.float(), early=False)
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-5)


def test_import_fails_loudly(tmp_path):
    labels = _labels(tmp_path)
    base = released_state()
    cases = {
        "missing": ({k: v for k, v in base.items() if k != "attention1D.transformer_encoder.encoder.norm.b"},
                    "missing keys"),
        "unexpected": ({**base, "vitFuse.extra_token": torch.zeros(3)}, "unexpected keys"),
        "shape": ({**base, "fc.0.bias": torch.zeros(W + 1)}, "shape mismatch for head.fc.0.bias"),
        "bn_missing": ({k: v for k, v in base.items() if k != "resnet2D.layer3.2.bn2.running_var"},
                       "missing keys"),
    }
    for name, (sd, msg) in cases.items():
        with pytest.raises(ValueError, match=msg):
            import_official(_write_bin(sd, tmp_path / name), labels, tmp_path / f"run_{name}")
        assert not (tmp_path / f"run_{name}" / "model.safetensors").exists()
    with pytest.raises(ValueError, match="labels but the checkpoint scores"):
        import_official(_write_bin(base, tmp_path / "ok"), _labels(tmp_path, NCLS + 1), tmp_path / "run_lbl")
    with pytest.raises(FileNotFoundError, match="no \\*.safetensors or pytorch_model.bin"):
        import_official(tmp_path / "labels_only", labels, tmp_path / "r") if (tmp_path / "labels_only").mkdir() \
            is None else None


def test_cli_import_official(tmp_path, capsys):
    from raddiag.cli import main

    ck = _write_bin(released_state(), tmp_path / "ck")
    rc = main(["import-official", str(ck), "--labels", str(_labels(tmp_path)), "--out", str(tmp_path / "run")])
    assert rc == 0 and (tmp_path / "run" / "model.safetensors").exists()
    rc = main(["import-official", str(tmp_path / "nope"), "--labels", str(_labels(tmp_path)),
               "--out", str(tmp_path / "run2")])
    assert rc == 2 and "does not exist" in capsys.readouterr().err


def test_a_file_that_is_not_a_weights_only_checkpoint_is_named_without_torchs_unsafe_advice(tmp_path):
    """New user: a text file given as the checkpoint passed on torch's 'Re-running torch.load with
    weights_only set to False will likely succeed' (which would run code from the file)."""
    from raddiag.models.official import read_checkpoint

    text = tmp_path / "notes.bin"
    text.write_text("hello\n")
    with pytest.raises(ValueError, match=r"notes.bin: not a PyTorch checkpoint \(neither a zip archive nor a pickle"):
        read_checkpoint(text)
    objects = tmp_path / "objects.bin"
    torch.save({"w": torch.zeros(2), "fn": math.sqrt}, objects)
    with pytest.raises(ValueError, match="holds objects other than tensors") as err:
        read_checkpoint(objects)
    assert "weights_only set to False" not in str(err.value)
    # red team: --resume passed the same advice on for a crafted last.pt
    from raddiag.training.checkpoint import load_checkpoint

    with pytest.raises(ValueError, match="objects.bin: unreadable checkpoint: .*holds objects other than") as err:
        load_checkpoint(objects)
    assert "weights_only" not in str(err.value)


def test_a_cut_short_or_misnamed_checkpoint_gets_its_own_reason(tmp_path):
    """Red team: a checkpoint cut to 100 bytes was said to hold 'objects other than tensors', and a
    safetensors file named .bin only 'a text or other file?'."""
    from safetensors.torch import save_file

    from raddiag.models.official import read_checkpoint

    whole = tmp_path / "whole.pt"
    torch.save({"w": torch.zeros(64)}, whole)
    cut = tmp_path / "cut.bin"
    cut.write_bytes(whole.read_bytes()[:100])
    with pytest.raises(ValueError, match="cut.bin: a damaged or cut-short PyTorch checkpoint"):
        read_checkpoint(cut)
    named = tmp_path / "model.bin"
    save_file({"w": torch.zeros(4)}, str(named))
    with pytest.raises(ValueError, match="model.bin: a safetensors file: give it the .safetensors suffix"):
        read_checkpoint(named)
    empty = tmp_path / "empty.bin"
    empty.write_bytes(b"")
    with pytest.raises(ValueError, match="empty.bin: an empty file"):
        read_checkpoint(empty)

"""Inference fast paths (raddiag.models.fastpath): each one against the plain model, and the
released layout against the reference forward written from docs/official-checkpoint.md."""
from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from raddiag.config import preset
from raddiag.models import build_model
from raddiag.models.encoders import make_resnet
from raddiag.models.fastpath import fold_batchnorm, fold_stem_channels, prepare_for_inference
from raddiag.models.official import load_official_state, map_official_keys, official_config
from test_import_official import _batch, ref_forward, released_state


def _random_bn_stats(net: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial running statistics and affine weights (fresh ones make BN the identity)."""
    g = torch.Generator().manual_seed(seed)
    for m in net.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            c = m.num_features
            m.running_mean.copy_(0.2 * torch.randn(c, generator=g))
            m.running_var.copy_(0.5 + torch.rand(c, generator=g))
            m.weight.data.copy_(1 + 0.2 * torch.randn(c, generator=g))
            m.bias.data.copy_(0.1 * torch.randn(c, generator=g))
    return net.eval()


@pytest.mark.parametrize("dims,depth", [(2, 50), (2, 18), (3, 10)])
def test_fold_batchnorm_matches_unfolded(dims, depth):
    net = _random_bn_stats(make_resnet(dims, depth, [4, 8, 16, 16], 2), seed=depth)
    x = torch.rand((3, 2) + (24,) * dims)
    folded = fold_batchnorm(copy.deepcopy(net))
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in folded.modules())
    with torch.no_grad():
        want, got = net(x), folded(x)
    assert want.abs().max() > 0.1
    # fp32 rounding of 50 layers summed in another order (oneDNN's kernels for the folded weights
    # differ from run to run on an AMX CPU: 2.5e-5 relative seen); a wrong fold is off by O(1)
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)


def test_fold_batchnorm_refuses_training_mode():
    with pytest.raises(ValueError, match="eval-mode"):
        fold_batchnorm(make_resnet(2, 10, [4, 8, 16, 16]).train())
    with pytest.raises(ValueError, match="eval-mode"):
        prepare_for_inference(build_model(preset("tiny"), 3).train())


def test_stem_fold_matches_repeated_grey_input():
    net = _random_bn_stats(make_resnet(2, 18, [4, 8, 16, 16], 3))
    x = torch.rand(2, 1, 32, 32)
    one = fold_stem_channels(copy.deepcopy(net), 3)
    assert one.conv1.weight.shape[1] == 1
    with torch.no_grad():
        torch.testing.assert_close(one(x), net(x.repeat(1, 3, 1, 1)), atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="expected 3"):
        fold_stem_channels(make_resnet(2, 18, [4, 8, 16, 16], 1), 3)


def _official_model(seed: int = 0):
    sd = released_state(early=True, seed=seed)
    state = map_official_keys(sd)
    model = build_model(official_config(state), sd["fc.2.weight"].shape[0])
    load_official_state(model, state)
    return model.eval(), sd


@pytest.fixture(scope="module")
def official():
    """The released layout at a reduced width, a batch (3D, short 3D, 2D and padded scans),
    the plain model's logits and the reference forward's (computed once: it runs every slot)."""
    model, sd = _official_model()
    images, scan_mask, slice_mask, mods = _batch(size=16)
    batch = {"images": images, "scan_mask": scan_mask, "slice_mask": slice_mask, "modality": mods}
    with torch.inference_mode():
        plain = model(**batch)
        ref = ref_forward(sd, images.permute(0, 1, 2, 4, 5, 3), mods, slice_mask.float())
    return model, batch, plain, ref


@pytest.mark.parametrize("backend", ["torch", "onnxruntime"])
def test_released_layout_twin_matches_model_and_reference(official, backend):
    """The twin's logits equal the plain model's and the reference forward's (all slots run,
    grey repeated, BatchNorm separate); the plain model is left untouched."""
    if backend == "onnxruntime":
        pytest.importorskip("onnxruntime")
    model, batch, plain, ref = official
    before = {k: v.clone() for k, v in model.state_dict().items()}
    fast = prepare_for_inference(model, backend)
    with torch.inference_mode():
        got = fast(**batch)
    assert ref.abs().max() > 0.1
    torch.testing.assert_close(got, plain, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(torch.sigmoid(got), torch.sigmoid(ref), atol=1e-5, rtol=0)
    # the plain model keeps its BatchNorms, 3-channel stem and weights; the twin shares the rest
    assert model.encoder.in_channels == 3 and model.encoder.slice_backbone.conv1.in_channels == 3
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert fast.head is model.head and fast.fusion is model.fusion
    assert fast.encoder.slice_transformer is model.encoder.slice_transformer


def test_compiled_twin_matches_eager():
    torch._dynamo.reset()
    model = _random_bn_stats(build_model(preset("tiny"), 3))
    batch = _tiny_batch(preset("tiny"))
    fast = prepare_for_inference(model, "compile")
    with torch.inference_mode():
        want = model(**batch)
        got = fast(**batch)
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)


def _tiny_batch(cfg, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    D, S = cfg.data.depth, cfg.data.size
    slice_mask = torch.zeros(2, 3, D, dtype=torch.bool)
    slice_mask[0, 0] = True          # a full 3D scan
    slice_mask[0, 1, :3] = True      # a short one
    slice_mask[:, 2, 0] = True       # 2D
    slice_mask[1, 0, 0] = True
    scan_mask = slice_mask.any(-1)
    scan_mask[1, 1] = False
    images = torch.rand(2, 3, 1, D, S, S, generator=g) * slice_mask[:, :, None, :, None, None]
    return {"images": images, "scan_mask": scan_mask, "slice_mask": slice_mask & scan_mask[..., None],
            "modality": torch.tensor([[1, 2, 3], [3, 0, 1]])}


@pytest.mark.parametrize("encoder", ["resnet_vit", "resnet", "vit"])
def test_tiny_presets_twin_matches_model(encoder):
    cfg = preset("tiny", [f"model.encoder={encoder}"])
    model = _random_bn_stats(build_model(cfg, 5))
    fast = prepare_for_inference(model, "torch")
    batch = _tiny_batch(cfg)
    with torch.inference_mode():
        torch.testing.assert_close(fast(**batch), model(**batch), atol=1e-5, rtol=1e-5)
    if encoder == "vit":
        assert fast is model


def test_predictor_forward_uses_the_twin(official):
    from raddiag.data.labels import LabelSpace
    from raddiag.serving.predict import Predictor

    model, batch, plain, _ = official
    labels = LabelSpace([f"c{i}" for i in range(model.num_classes)])
    for backend in ("off", "torch"):
        p = Predictor(model, model.cfg, labels, backend=backend)
        torch.testing.assert_close(p.forward(batch), plain, atol=1e-5, rtol=1e-5)
        assert (p.inference_model() is model) == (backend == "off")
    with pytest.raises(ValueError, match="unknown inference backend"):
        Predictor(model, model.cfg, labels, backend="tensorrt")


def test_cli_predict_backends_agree(tmp_path, capsys):
    import json

    from raddiag.cli import main
    from raddiag.serving.sample import make_tiny_run, sample_png

    make_tiny_run(tmp_path / "run")
    (tmp_path / "cxr.png").write_bytes(sample_png(48, seed=1))
    probs = {}
    for backend in ("off", "auto"):
        assert main(["predict", str(tmp_path / "run"), str(tmp_path / "cxr.png"), "--modality", "X-ray",
                     "--json", "--backend", backend]) == 0
        ranked = json.loads(capsys.readouterr().out)[0]["ranked"]
        probs[backend] = {f["name"]: f["probability"] for f in ranked}
    assert probs["off"].keys() == probs["auto"].keys()
    assert all(abs(probs["off"][k] - probs["auto"][k]) < 1e-5 for k in probs["off"])

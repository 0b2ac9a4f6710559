"""The training speed-ups of issue 29 change no result: the grey stem fold, the fused attention
kernel, the fused AdamW and the stage-wise activation checkpointing agree with the plain
computations they replace."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from raddiag.config import preset
from raddiag.models import build_model
from raddiag.models.encoders import (GreyStemConv2d, make_resnet, resnet_stages, stage_activation_bytes,
                                     stages_to_recompute)
from raddiag.models.layers import _OfficialAttention
from raddiag.training.optim import make_optimizer


def test_grey_stem_gives_the_repeated_input_output_and_weight_gradient():
    torch.manual_seed(0)
    plain = nn.Conv2d(3, 8, 7, stride=2, padding=3, bias=False)
    stem = GreyStemConv2d(3, 8, 7, stride=2, padding=3, bias=False)
    stem.weight.data.copy_(plain.weight.data)
    x = torch.rand(4, 1, 20, 20)
    want = plain(x.expand(-1, 3, -1, -1))
    got = stem(x)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    g = torch.randn_like(want)
    want.backward(g)
    got.backward(g)
    torch.testing.assert_close(stem.weight.grad, plain.weight.grad, atol=1e-4, rtol=1e-5)
    # each input channel of the stem gets the same gradient, as with a repeated input
    assert torch.equal(stem.weight.grad[:, 0], stem.weight.grad[:, 2])
    # a 3-channel input is convolved as a plain convolution would
    x3 = torch.rand(2, 3, 20, 20)
    torch.testing.assert_close(stem(x3), plain(x3))


def test_a_three_channel_backbone_takes_the_grey_slice_without_a_repeated_copy():
    net = make_resnet(2, 10, [4, 8, 16, 16], in_channels=3)
    assert isinstance(net.conv1, GreyStemConv2d) and tuple(net.conv1.weight.shape) == (4, 3, 7, 7)
    assert set(net.state_dict()) == set(make_resnet(2, 10, [4, 8, 16, 16], in_channels=1).state_dict())
    net.eval()
    x = torch.rand(2, 1, 32, 32)
    torch.testing.assert_close(net(x), net(x.expand(-1, 3, -1, -1)), atol=1e-5, rtol=1e-4)
    # a 1-channel backbone's stem is a plain convolution (the class only sets the layout)
    one = make_resnet(2, 10, [4, 8, 16, 16], in_channels=1)
    plain = nn.Conv2d(1, 4, 7, stride=2, padding=3, bias=False)
    plain.weight = one.conv1.weight
    assert torch.equal(one.conv1(x), plain(x))


def test_a_one_channel_backbone_is_initialised_as_monais_resnet_from_the_same_seed():
    """Its stem class draws nothing: a seeded model (and every run seeded before it) keeps its weights."""
    from monai.networks.nets import ResNet
    from monai.networks.nets.resnet import ResNetBlock

    torch.manual_seed(3)
    ours = make_resnet(2, 10, [4, 8, 16, 16], in_channels=1)
    after = torch.rand(1)
    torch.manual_seed(3)
    monai = ResNet(ResNetBlock, [1, 1, 1, 1], [4, 8, 16, 16], spatial_dims=2, n_input_channels=1,
                   conv1_t_size=7, conv1_t_stride=2, feed_forward=False, bias_downsample=False)
    assert torch.equal(after, torch.rand(1))
    a, b = ours.state_dict(), monai.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _is_channels_last(t: torch.Tensor) -> bool:
    # a 1-channel or 1x1 tensor is both; the layouts differ only where both flags differ
    return t.is_contiguous(memory_format=torch.channels_last) and not t.is_contiguous()


@pytest.mark.parametrize("training", [True, False])
def test_the_slice_backbone_runs_channels_last_with_the_nchw_values_and_gradients(training):
    """Grey slices have an ambiguous layout (1 channel), so the layout is set on the stem's output:
    every stage after it runs channels-last (in training too), with NCHW's values and gradients."""
    torch.manual_seed(0)
    enc = build_model(preset("tiny"), 5).encoder.train(training)
    layouts = []
    for stage in (enc.slice_backbone.layer1, enc.slice_backbone.layer4):
        stage.register_forward_hook(lambda m, i, o: layouts.append(_is_channels_last(o)))
    slices = torch.rand(6, 1, 64, 64)
    results = {}
    for cl in (True, False):
        enc.channels_last = cl
        enc.zero_grad(set_to_none=True)
        out = enc.slice_features(slices)
        out.square().sum().backward()
        results[cl] = out, [p.grad for p in enc.slice_backbone.parameters()]
    assert layouts == [True, True, False, False]
    torch.testing.assert_close(results[True][0], results[False][0], atol=1e-5, rtol=1e-4)
    for a, b in zip(results[True][1], results[False][1]):
        # sums in another order: float rounding, relative to the gradient's scale
        torch.testing.assert_close(a, b, atol=1e-4 * float(b.abs().max()), rtol=1e-3)


def test_fused_attention_matches_the_releases_explicit_softmax_with_padded_keys():
    torch.manual_seed(0)
    att = _OfficialAttention(16, 4)
    x = torch.randn(3, 5, 16)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0], [1, 0, 1, 0, 1]], dtype=torch.bool)
    fused, none = att(x, mask, need_attention=False)
    explicit, attn = att(x, mask, need_attention=True)
    assert none is None and attn.shape == (3, 5, 5)
    assert float(attn[1, :, 2:].detach().abs().max()) == 0.0      # padded keys weigh nothing
    torch.testing.assert_close(fused, explicit, atol=1e-5, rtol=1e-5)


def test_the_trainers_adamw_is_fused_and_steps_as_the_plain_loop_does():
    tc = preset("tiny").train
    torch.manual_seed(0)
    a = nn.Sequential(nn.Linear(6, 5), nn.LayerNorm(5), nn.Linear(5, 2))
    b = nn.Sequential(nn.Linear(6, 5), nn.LayerNorm(5), nn.Linear(5, 2))
    b.load_state_dict(a.state_dict())
    start = [p.detach().clone() for p in a.parameters()]
    fused = make_optimizer(a, tc)
    assert all(g["fused"] for g in fused.param_groups)
    decay = [p for p in b.parameters() if p.ndim > 1]
    rest = [p for p in b.parameters() if p.ndim <= 1]
    loop = torch.optim.AdamW([{"params": decay, "weight_decay": tc.weight_decay},
                              {"params": rest, "weight_decay": 0.0}], lr=tc.lr, foreach=False)
    x, y = torch.randn(8, 6), torch.randn(8, 2)
    for _ in range(3):
        for m, opt in ((a, fused), (b, loop)):
            F.mse_loss(m(x), y).backward()
            opt.step()
            opt.zero_grad()
    for p, q, p0 in zip(a.parameters(), b.parameters(), start):
        assert (p - p0).abs().max() > 1e-4          # it trained
        torch.testing.assert_close(p, q, atol=1e-6, rtol=1e-5)


def test_the_resnet_stages_in_turn_are_its_forward():
    torch.manual_seed(0)
    net = make_resnet(2, 10, [4, 8, 16, 16], in_channels=3)
    x = torch.rand(3, 1, 32, 32)
    for mode in (True, False):
        net.train(mode)
        y = x
        for stage in resnet_stages(net):
            y = stage(y)
        assert torch.equal(y, net(x))


def test_stage_activation_bytes_leaves_batchnorm_as_it_was_and_ranks_the_stages():
    net = make_resnet(2, 18, [8, 16, 32, 64]).train()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    per = stage_activation_bytes(resnet_stages(net), torch.rand(5, 1, 64, 64))
    assert all(torch.equal(v, before[k]) for k, v in net.state_dict().items())
    # stem + layer1 (32 x 32 maps) keep more than layer4 (2 x 2 maps, with the pooling)
    assert len(per) == 5 and per[0] + per[1] > per[4] > 0
    # the estimate from a 64 px probe is what a full-size probe measures at 128 and 160 px (to 1 % of
    # the total: BatchNorm's per-channel statistics do not scale with the area)
    for side in (128, 160):
        x = torch.rand(2, 1, side, side)
        full = torch.tensor(stage_activation_bytes(resnet_stages(net), x, probe_px=None), dtype=torch.float)
        est = torch.tensor(stage_activation_bytes(resnet_stages(net), x), dtype=torch.float)
        torch.testing.assert_close(est, full, rtol=0.02, atol=0.01 * float(full.sum()))


def test_stages_to_recompute_takes_the_leading_stages_until_the_rest_fits():
    per = [10, 40, 30, 20, 10]
    assert stages_to_recompute(per, 2, 1e9) == 0               # everything fits: no recomputation
    assert stages_to_recompute(per, 2, 2 * 100) == 1           # all but the stem's 10
    assert stages_to_recompute(per, 2, 2 * 60 - 1) == 3
    assert stages_to_recompute(per, 2, 2 * 10 - 1) == 5        # nothing fits: all recomputed


def _checkpointed_step(keep_mb, batch_size=7, calls=None):
    cfg = preset("tiny", ["model.grad_checkpoint=true", "model.slice_chunk=4", "data.size=32",
                          f"model.checkpoint_keep_mb={keep_mb}"])
    torch.manual_seed(0)
    model = build_model(cfg, 3).train()
    if calls is not None:
        for name in ("layer1", "layer2"):
            # a pre-hook: the recomputation stops once it has what backward needs, before a forward hook
            getattr(model.encoder.slice_backbone, name).register_forward_pre_hook(
                lambda m, i, name=name: calls.__setitem__(name, calls.get(name, 0) + 1))
    g = torch.Generator().manual_seed(0)
    images = torch.rand(1, 2, 1, 8, 32, 32, generator=g)
    slice_mask = torch.tensor([[[True] * 8, [True] * 3 + [False] * 5]])      # 11 real slices: 3 chunks
    logits = model(images, torch.ones(1, 2, dtype=torch.bool), slice_mask, torch.tensor([[1, 2]]))
    logits.square().sum().backward()
    grads = {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}
    return grads, {k: v.clone() for k, v in model.state_dict().items()}, model


def test_recomputing_some_stages_gives_the_gradients_and_statistics_of_recomputing_all():
    """Whichever stages are recomputed (all, the first two, none), one backward gives the same
    gradients and BatchNorm buffers; the recomputed stages run twice, the kept ones once."""
    _, _, model = _checkpointed_step(0)
    assert not model.encoder._stage_bytes                 # keep 0: nothing measured, all recomputed
    per = stage_activation_bytes(resnet_stages(model.encoder.slice_backbone), torch.rand(11, 1, 32, 32))
    two = (11 * sum(per[2:]) + 1) / 2**20                 # room for every stage but the first two
    runs = {}
    for keep in (0, two, 1e6):
        calls = {}
        runs[keep] = _checkpointed_step(keep, calls=calls)[:2]
        runs[keep] += (calls,)
    assert runs[0][2] == {"layer1": 6, "layer2": 6}       # 3 chunks, each stage once more in backward
    # (+1: the 2-slice run that measures each stage's activations, once per slice geometry)
    assert runs[two][2] == {"layer1": 6 + 1, "layer2": 3 + 1}
    assert runs[1e6][2] == {"layer1": 3 + 1, "layer2": 3 + 1}
    for keep in (two, 1e6):
        for a, b in ((runs[0][0], runs[keep][0]), (runs[0][1], runs[keep][1])):
            assert a.keys() == b.keys()
            for k in a:
                torch.testing.assert_close(a[k], b[k], atol=0, rtol=0, msg=k)


def test_loading_plan_gives_each_loader_process_a_core(monkeypatch):
    """On a CPU the step's threads leave a core to each loader process and no thread is added
    beside them; without processes a thread loads ahead only where the step leaves a core free;
    on a GPU the thread always may (training.prefetch)."""
    from raddiag.training import prefetch

    cpu, gpu = torch.device("cpu"), torch.device("cuda")
    monkeypatch.setattr(prefetch, "available_cores", lambda: 2)
    kept = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        assert prefetch.loading_plan(cpu, 1, 1) == (1, False)
        assert prefetch.loading_plan(cpu, 4, 1) == (1, False)     # never below one thread
        assert prefetch.loading_plan(cpu, 0, 1) == (2, False)     # no free core: load between steps
        assert prefetch.loading_plan(gpu, 0, 1) == (2, True)
        assert prefetch.loading_plan(gpu, 2, 1) == (2, False)
        torch.set_num_threads(1)
        assert prefetch.loading_plan(cpu, 0, 1) == (1, True)      # a core free: load ahead in a thread
        assert prefetch.loading_plan(cpu, 0, 0) == (1, False)
        with prefetch.step_threads(2):
            assert torch.get_num_threads() == 2
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(kept)


def test_the_start_summary_names_the_loader_processes_that_run(tmp_path):
    """The summary's device line tells the loader processes the train loader has and the
    threads the step gets beside them (``workers``: the loader's, not only the config's)."""
    from types import SimpleNamespace

    from raddiag.training import prefetch
    from raddiag.training.summary import start_summary
    from test_training_data import make_tiny_data

    from raddiag.data.store import PreparedData
    from raddiag.run import RunFolder

    data = PreparedData(make_tiny_data(tmp_path / "data", n_cases=12))
    cfg = preset("cpu", ["train.num_workers=1"])
    labels = data.label_space(cfg.data.granularity)
    model = torch.nn.Linear(2, 2)
    d = SimpleNamespace(device=torch.device("cpu"), world_size=1)
    kept = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(prefetch, "available_cores", lambda: 2)
            one = start_summary(data, RunFolder(tmp_path / "run"), cfg, labels, model, d, 3, 8, workers=1)
            none = start_summary(data, RunFolder(tmp_path / "run"), cfg, labels, model, d, 3, 8, workers=0)
    finally:
        torch.set_num_threads(kept)
    assert "device: cpu, 2 threads; 1 loader process(es), the step on 1 thread(s)" in one
    assert "device: cpu, 2 threads; loading between steps" in none

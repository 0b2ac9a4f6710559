"""The training speed-ups of issue 29 change no result: the grey stem fold, the fused attention
kernel and the fused AdamW agree with the plain computations they replace."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from raddiag.config import preset
from raddiag.models.encoders import GreyStemConv2d, make_resnet
from raddiag.models.layers import _OfficialAttention
from raddiag.training.trainer import make_optimizer


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
    assert not isinstance(make_resnet(2, 10, [4, 8, 16, 16], in_channels=1).conv1, GreyStemConv2d)
    net.eval()
    x = torch.rand(2, 1, 32, 32)
    torch.testing.assert_close(net(x), net(x.expand(-1, 3, -1, -1)), atol=1e-5, rtol=1e-4)


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

"""The training benchmarks' floor (benchmarks/step_measure.py, printed by train_speed.py): every
convolution of our step, forward and backward alone
(issue 29). The authors' side needs their code; this part needs only ours."""
from pathlib import Path

import torch

from raddiag.config import preset
from raddiag.models import build_model


def test_the_floor_times_each_convolution_once_and_leaves_the_model_as_it_was(monkeypatch):
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import train_speed as ts

    cfg = preset("tiny", ["model.encoder=resnet_vit", "model.grad_checkpoint=true", "data.size=32", "data.depth=4"])
    model = build_model(cfg, 5).train()
    g = ts.Geometry(scans=2, slices=3, size=32, depth=4, xrays=1, slots=3)
    ob, _ = ts.make_batch(g, 5, torch.device("cpu"))
    seen = []                     # the convolutions one plain forward runs, counted apart
    hooks = [m.register_forward_hook(lambda m, i, o: seen.append((m, tuple(i[0].shape))))
             for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    with torch.no_grad():
        model.encoder.grad_checkpoint = False
        model(**{k: ob[k] for k in model.input_keys})
        model.encoder.grad_checkpoint = True
    for h in hooks:
        h.remove()
    before = {k: v.clone() for k, v in model.state_dict().items()}

    calls = ts.conv_calls(model, ob)
    assert [(c.conv, c.shape) for c in calls] == seen and len(seen) > 4
    assert seen[0][1][0] == g.real_slices                  # the real slices only, once each
    assert not calls[0].input_grad and all(c.input_grad for c in calls[1:])
    assert ts.conv_seconds(calls, torch.device("cpu"), "none") > 0
    assert all(p.grad is None for p in model.parameters())
    assert model.training and model.encoder.grad_checkpoint
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)    # BatchNorm's statistics too

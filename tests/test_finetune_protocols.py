"""Transfer protocols: linear probe (frozen encoder), a lower learning rate for the pre-trained
encoder, and new label names embedded with the source run's own text encoder."""
from __future__ import annotations

import pytest
import torch

from test_training_data import make_tiny_data, tiny_overrides


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    """A tiny pre-trained run (fusion module, 1 epoch) and a multi-scan target dataset."""
    from raddiag.config import preset
    from raddiag.training import train

    root = tmp_path_factory.mktemp("ft")
    data = make_tiny_data(root / "pre", n_cases=24)
    train(data, root / "pre_run", preset("tiny", tiny_overrides(**{"train.epochs": 1})), progress=False)
    return root, make_tiny_data(root / "target", n_cases=24, seed=9)


@pytest.mark.slow
def test_linear_probe_freezes_encoder_and_fusion_and_trains_the_head(pretrained):
    from raddiag.config import RunConfig
    from raddiag.models import build_model, load_model
    from raddiag.transfer.finetune import finetune

    root, target = pretrained
    finetune(root / "pre_run", target, root / "probe", 1.0, epochs=2, linear_probe=True, progress=False)
    pre, _, _ = load_model(root / "pre_run")
    probe, cfg, labels = load_model(root / "probe")
    assert cfg.train.linear_probe
    pre_sd, probe_sd = pre.state_dict(), probe.state_dict()
    body = [k for k in probe_sd if not k.startswith("head.")]
    assert any(k.startswith("fusion.") for k in body) and any("running_mean" in k for k in body)
    for k in body:  # weights and BatchNorm statistics, bit for bit
        assert torch.equal(pre_sd[k], probe_sd[k]), k
    # the head moved away from its seeded initialisation (the trainer's: seed, then build)
    cfg0 = RunConfig.from_dict(cfg.to_dict())
    torch.manual_seed(cfg0.train.seed)
    init = build_model(cfg0, len(labels)).state_dict()
    assert any(not torch.equal(init[k], probe_sd[k]) for k in probe_sd if k.startswith("head."))


@pytest.mark.slow
def test_encoder_lr_scale_sets_the_optimiser_groups(pretrained):
    from raddiag.training.checkpoint import load_checkpoint
    from raddiag.transfer.finetune import finetune

    root, target = pretrained
    out = root / "scaled"
    finetune(root / "pre_run", target, out, 1.0, epochs=1, overrides=["train.lr=0.002"], encoder_lr_scale=0.1,
             max_steps=1, progress=False)
    groups = load_checkpoint(out / "checkpoints" / "last.pt")["optimizer"]["param_groups"]
    lrs = {g["name"]: g["initial_lr"] for g in groups}
    assert set(lrs) == {"encoder", "encoder_nd", "head", "head_nd"}
    assert lrs["head"] == pytest.approx(0.002) and lrs["head_nd"] == pytest.approx(0.002)
    assert lrs["encoder"] == pytest.approx(0.0002) and lrs["encoder_nd"] == pytest.approx(0.0002)


def test_param_groups_cover_each_trainable_parameter_once():
    from raddiag.config import preset
    from raddiag.models import build_model
    from raddiag.training.optim import param_groups

    model = build_model(preset("tiny", tiny_overrides()), 3)
    for scale in (1.0, 0.25):
        groups = param_groups(model, 0.05, 1e-3, scale)
        ids = [id(p) for g in groups for p in g["params"]]
        assert sorted(ids) == sorted(id(p) for p in model.parameters())
        head = {id(p) for p in model.head.parameters()}
        for g in groups:
            want = 1e-3 if scale == 1 or all(id(p) in head for p in g["params"]) else 2.5e-4
            assert g["lr"] == pytest.approx(want)
            assert g["weight_decay"] == (0.0 if g["name"].endswith("_nd") else 0.05)
    model.freeze_pretrained()
    groups = param_groups(model, 0.05, 1e-3, 0.25)
    assert {g["name"] for g in groups} == {"head", "head_nd"}
    model.train()
    assert model.head.training and not model.encoder.training and not model.fusion.training
    with pytest.raises(ValueError, match="encoder_lr_scale"):
        param_groups(model, 0.05, 1e-3, -1.0)


@pytest.mark.slow
def test_new_label_names_use_the_source_runs_text_encoder(tmp_path, monkeypatch):
    import raddiag.training.label_embeddings as label_embeddings
    from raddiag.config import preset
    from raddiag.run import RunFolder
    from raddiag.training import train
    from raddiag.transfer.finetune import finetune

    data = make_tiny_data(tmp_path / "pre", n_cases=16)
    src = RunFolder(tmp_path / "pre_run")
    train(data, src.root, preset("tiny", tiny_overrides(**{"train.epochs": 1, "model.head": "knowledge"})),
          label_embeddings=torch.randn(3, 384), progress=False)
    used = []

    def fake_resolve(labels, label_embeddings=None, knowledge_encoder=None):
        used.append(knowledge_encoder)
        return torch.randn(len(labels), 384)

    monkeypatch.setattr(label_embeddings, "resolve_label_embeddings", fake_resolve)
    # ICD-10 granularity: a label space the source run never saw; embeddings unrecorded -> clear error
    with pytest.raises(FileNotFoundError, match="does not record which text encoder"):
        finetune(src.root, data, tmp_path / "a", 1.0, epochs=1, granularity="icd10", progress=False)
    enc = tmp_path / "my_encoder"
    enc.mkdir()
    src.record_text_encoder(enc)
    finetune(src.root, data, tmp_path / "b", 1.0, epochs=1, granularity="icd10", max_steps=1, progress=False)
    assert used == [enc.resolve()]
    assert RunFolder(tmp_path / "b").text_encoder() == enc.resolve()   # and the new run records it
    enc.rmdir()
    with pytest.raises(FileNotFoundError, match="--knowledge-encoder"):
        finetune(src.root, data, tmp_path / "c", 1.0, epochs=1, granularity="icd10", progress=False)

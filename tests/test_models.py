"""The RadDiag model family: every encoder x fusion x head (x layer style) on a mixed 2D/3D
batch, masking, pooling semantics, knowledge head, key-slice loss, checkpointing, run folders."""
from __future__ import annotations

import itertools

import pytest
import torch

from raddiag.config import preset
from raddiag.data.labels import LabelSpace
from raddiag.models import (ModelOutput, build_model, key_slice_attention_loss, load_model, pool_scan_logits,
                            save_model)
from raddiag.run import RunFolder

C = 5
ENCODERS, FUSIONS, HEADS = ("resnet_vit", "resnet", "vit"), ("transformer", "max", "mean", "random"), \
    ("mlp", "knowledge")


def make_cfg(encoder="resnet_vit", fusion="transformer", head="mlp", style="standard", extra=()):
    return preset("tiny", [f"model.encoder={encoder}", f"model.fusion={fusion}", f"model.head={head}",
                           f"model.layer_style={style}", *extra])


def make_model(cfg, seed=0):
    torch.manual_seed(seed)
    emb = torch.randn(C, cfg.model.text_dim) if cfg.model.head == "knowledge" else None
    return build_model(cfg, C, emb)


def mixed_batch(seed=0, size=64, depth=8):
    """Case 0: a 3D scan (5 of 8 slices), a 2D scan, a full 3D scan. Case 1: one 2D scan."""
    g = torch.Generator().manual_seed(seed)
    B, N = 2, 3
    images = torch.zeros(B, N, 1, depth, size, size)
    slice_mask = torch.zeros(B, N, depth, dtype=torch.bool)
    slice_mask[0, 0, :5] = True
    slice_mask[0, 1, 0] = True
    slice_mask[0, 2, :] = True
    slice_mask[1, 0, 0] = True
    scan_mask = torch.tensor([[True, True, True], [True, False, False]])
    view = images.transpose(2, 3)                       # [B, N, D, 1, H, W] view
    view[slice_mask] = torch.rand(int(slice_mask.sum()), 1, size, size, generator=g)
    modality = torch.tensor([[1, 3, 2], [3, 0, 0]])
    key_slice = torch.tensor([[2, -1, 6], [-1, -1, -1]])
    return dict(images=images, scan_mask=scan_mask, slice_mask=slice_mask, modality=modality,
                key_slice=key_slice)


def with_garbage_padding(batch, seed=1):
    b = dict(batch)
    g = torch.Generator().manual_seed(seed)
    pad = ~(b["slice_mask"] & b["scan_mask"][..., None])
    images = b["images"].clone()
    images.transpose(2, 3)[pad] = torch.rand(int(pad.sum()), 1, *images.shape[-2:], generator=g) * 5
    b["images"] = images
    return b


def run(model, batch, details=False):
    return model(**{k: batch[k] for k in model.input_keys}, return_details=details)


@pytest.mark.parametrize("encoder,fusion,head,style",
                         [(e, f, h, s) for e, f, h in itertools.product(ENCODERS, FUSIONS, HEADS)
                          for s in ("standard", "official")
                          if s == "standard" or (f, h) in (("transformer", "mlp"), ("max", "knowledge"))])
def test_every_combination_forward_backward_and_masking(encoder, fusion, head, style):
    cfg = make_cfg(encoder, fusion, head, style)
    model = make_model(cfg)
    batch = mixed_batch()
    model.train()
    out = run(model, batch, details=True)
    assert isinstance(out, ModelOutput)
    assert out.logits.shape == (2, C) and torch.isfinite(out.logits).all()
    assert out.scan_embeddings.shape == (2, 3, cfg.model.width)
    assert out.case_embedding.shape == (2, cfg.model.width)
    assert torch.all(out.scan_embeddings[1, 1:] == 0)  # padded scans
    if fusion == "transformer":
        assert out.scan_logits is None
    else:
        assert out.scan_logits.shape == (2, 3, C)
    if encoder == "resnet_vit":
        assert out.slice_attention.shape == (2, 3, 8)
    loss = out.logits.square().mean() + (0 if out.slice_attention is None else out.slice_attention.sum())
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is None or torch.isfinite(g).all() for g in grads)
    assert sum(float(g.abs().sum()) for g in grads if g is not None) > 0
    # outputs do not depend on padded slices / padded scans
    model.eval()
    with torch.no_grad():
        a = run(model, batch, details=True)
        b = run(model, with_garbage_padding(batch), details=True)
    torch.testing.assert_close(a.logits, b.logits, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(a.scan_embeddings, b.scan_embeddings, atol=1e-5, rtol=1e-5)
    # and the model does read the real content
    c = dict(batch, images=batch["images"] * 0.5)
    with torch.no_grad():
        assert not torch.allclose(run(model, c), a.logits)


def test_case_output_independent_of_batch_neighbours():
    model = make_model(make_cfg()).eval()
    batch = mixed_batch()
    with torch.no_grad():
        both = run(model, batch)
        single = run(model, {k: v[1:2, :1] for k, v in batch.items()})
    torch.testing.assert_close(both[1:2], single, atol=1e-5, rtol=1e-5)


def test_slice_attention_is_over_real_slices():
    model = make_model(make_cfg()).eval()
    batch = mixed_batch()
    with torch.no_grad():
        att = run(model, batch, details=True).slice_attention
    real = batch["slice_mask"] & batch["scan_mask"][..., None]
    assert torch.all(att[~real] == 0)
    assert torch.all(att.sum(-1)[batch["scan_mask"]] <= 1 + 1e-6)
    assert torch.all(att[real] > 0)


def test_pooling_semantics():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(3, 4, 6, generator=g) * 3
    mask = torch.tensor([[1, 1, 0, 0], [1, 0, 0, 0], [1, 1, 1, 1]]).bool()
    z_pad = z.masked_fill(~mask[..., None], 100.0)  # padded rows must never win
    mx = pool_scan_logits(z_pad, mask, "max")
    for b in range(3):
        torch.testing.assert_close(mx[b], z[b, mask[b]].max(0).values)
        p = torch.sigmoid(z[b, mask[b]].double()).mean(0)
        torch.testing.assert_close(pool_scan_logits(z_pad, mask, "mean")[b].double(), torch.log(p / (1 - p)),
                                   atol=1e-5, rtol=1e-5)
    r1 = pool_scan_logits(z_pad, mask, "random", torch.Generator().manual_seed(5))
    r2 = pool_scan_logits(z_pad, mask, "random", torch.Generator().manual_seed(5))
    torch.testing.assert_close(r1, r2)
    for b in range(3):
        assert any(torch.equal(r1[b], z[b, k]) for k in range(4) if mask[b, k])
    with pytest.raises(ValueError, match="unknown pooling"):
        pool_scan_logits(z, mask, "median")


def test_random_pooling_deterministic_in_eval_random_in_train():
    model = make_model(make_cfg(fusion="random"))
    batch = mixed_batch()
    model.eval()
    with torch.no_grad():
        a, b = run(model, batch), run(model, batch)
    torch.testing.assert_close(a, b)
    model.train()
    torch.manual_seed(0)
    with torch.no_grad():
        picks = {tuple(run(model, batch, details=True).logits[0].tolist()) for _ in range(6)}
    assert len(picks) > 1  # case 0 has 3 scans: training picks vary


def test_knowledge_head_scores_new_label_names():
    cfg = make_cfg(head="knowledge")
    model = make_model(cfg).eval()
    batch = mixed_batch()
    with torch.no_grad():
        out = run(model, batch, details=True)
        w = model.head.proj(model.head.label_embeddings)
        torch.testing.assert_close(out.logits, out.case_embedding @ w.T + model.head.bias)
        new = torch.randn(9, cfg.model.text_dim)
        model.set_label_embeddings(new)
        assert model.num_classes == 9
        logits9 = run(model, batch)
        assert logits9.shape == (2, 9)
        torch.testing.assert_close(logits9, out.case_embedding @ model.head.proj(new).T + model.head.bias)
    with pytest.raises(ValueError, match="label embeddings"):
        model.set_label_embeddings(torch.randn(3, cfg.model.text_dim + 1))
    with pytest.raises(ValueError, match="needs label_embeddings"):
        build_model(cfg, C)
    with pytest.raises(ValueError, match="needs model.head=knowledge"):
        make_model(make_cfg()).set_label_embeddings(new)
    # the label embeddings are not trainable and not in the weights file
    assert "head.label_embeddings" not in model.state_dict()
    assert not any(p is model.head.label_embeddings for p in model.parameters())


def test_key_slice_attention_loss():
    D = 8
    mask = torch.zeros(2, 2, D, dtype=torch.bool)
    mask[:, 0, :6] = True
    mask[:, 1, 0] = True
    key = torch.tensor([[2, -1], [4, -1]])
    pos = torch.arange(D).float()
    centred = torch.exp(-0.5 * (pos - key[:, :1, None].float()) ** 2) * mask      # Gaussian at the key
    wrong = torch.exp(-0.5 * (pos - 5 + key[:, :1, None].float()) ** 2) * mask    # centred elsewhere
    flat = mask.float()
    norm = lambda a: a / a.sum(-1, keepdim=True).clamp(min=1e-9)  # noqa: E731
    lc, lf, lw = (key_slice_attention_loss(norm(a), key, mask, sigma=1.0) for a in (centred, flat, wrong))
    assert abs(float(lc)) < 1e-5 and 0 < lf < lw
    # attention that also puts weight on [CLS] (rows sum < 1) is renormalised over the slices
    torch.testing.assert_close(key_slice_attention_loss(0.5 * norm(centred), key, mask, sigma=1.0), lc,
                               atol=1e-5, rtol=0)
    none = key_slice_attention_loss(flat.requires_grad_(), torch.full((2, 2), -1), mask)
    assert float(none.detach()) == 0.0 and none.requires_grad
    # gradient reaches the model through the slice attention
    model = make_model(make_cfg())
    batch = mixed_batch()
    out = run(model, batch, details=True)
    loss = key_slice_attention_loss(out.slice_attention, batch["key_slice"], batch["slice_mask"])
    assert loss > 0
    loss.backward()
    assert model.encoder.cls_token.grad.abs().sum() > 0


def test_grad_checkpoint_and_chunking_give_same_gradients():
    batch = mixed_batch()
    grads = []
    for extra in ([], ["model.grad_checkpoint=true"]):
        model = make_model(make_cfg(extra=["model.slice_chunk=6", *extra]))
        model.train()
        run(model, batch).sum().backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None]))
    torch.testing.assert_close(grads[0], grads[1], atol=1e-5, rtol=1e-4)


def test_grad_checkpoint_leaves_batchnorm_statistics_as_without_it():
    """One optimiser step with and without activation checkpointing: identical parameters and
    BatchNorm buffers (the recomputation in backward must not update the running statistics)."""
    batch = mixed_batch(size=32)
    states = []
    for extra in ([], ["model.grad_checkpoint=true"]):
        model = make_model(make_cfg(extra=["model.slice_chunk=6", "data.size=32", *extra]))
        model.train()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
        run(model, batch).sum().backward()
        opt.step()
        states.append({k: v.clone() for k, v in model.state_dict().items()})
    assert states[0].keys() == states[1].keys()
    for k in states[0]:
        assert torch.equal(states[0][k], states[1][k]), k
    # 15 real slices in chunks of at most 6: three forward passes through every BatchNorm
    assert int(states[1]["encoder.slice_backbone.bn1.num_batches_tracked"]) == 3


def test_slice_backbone_hook_sees_real_slices_only():
    model = make_model(make_cfg(extra=["model.slice_chunk=4"])).eval()
    maps = []
    h = model.encoder.slice_backbone.layer4.register_forward_hook(lambda m, i, o: maps.append(o))
    batch = mixed_batch()
    with torch.no_grad():
        run(model, batch)
    h.remove()
    fm = torch.cat(maps)
    n_real = int((batch["slice_mask"] & batch["scan_mask"][..., None]).sum())
    assert fm.shape == (n_real, 128, 2, 2) and len(maps) == -(-n_real // 4)


def test_bad_inputs_are_clear_errors():
    model = make_model(make_cfg()).eval()
    batch = mixed_batch()
    with pytest.raises(ValueError, match="modality id 16"):
        run(model, dict(batch, modality=torch.full((2, 3), 16)))
    with pytest.raises(ValueError, match=r"\[B, N, C, D, H, W\]"):
        model(batch["images"][0], batch["scan_mask"], batch["slice_mask"], batch["modality"])
    with pytest.raises(ValueError, match="model.encoder"):
        build_model(make_cfg(encoder="swin"), C)
    with pytest.raises(ValueError, match="slice positions"):
        deep = mixed_batch(depth=12)
        run(model, deep)


@pytest.mark.parametrize("head", HEADS)
def test_save_and_load_run_folder(tmp_path, head):
    cfg = make_cfg(head=head, fusion="mean" if head == "knowledge" else "transformer")
    model = make_model(cfg).eval()
    labels = LabelSpace(names=["Normal"] + [f"d{i}" for i in range(1, C)])
    save_model(model, RunFolder(tmp_path / "run"), cfg=cfg, labels=labels)
    assert (tmp_path / "run" / "model.safetensors").read_bytes()[:8] != b"PK\x03\x04\x00\x00\x08\x08"
    assert (tmp_path / "run" / "label_embeddings.safetensors").exists() == (head == "knowledge")
    loaded, cfg2, labels2 = load_model(tmp_path / "run")
    assert cfg2 == cfg and labels2.names == labels.names and not loaded.training
    batch = mixed_batch()
    with torch.no_grad():
        torch.testing.assert_close(run(loaded, batch), run(model, batch))
    # weights that do not fit the config are a clear error
    cfg.override(["model.width=32", "model.slice_heads=2", "model.fusion_heads=2"])
    cfg.save(tmp_path / "run" / "config.yaml")
    with pytest.raises(ValueError, match="model.safetensors"):
        load_model(tmp_path / "run")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_model(tmp_path / "nope")


@pytest.mark.parametrize("encoder", ["resnet", "vit"])
def test_all_parameters_get_gradients_on_a_2d_only_batch(encoder):
    """DDP without find_unused_parameters needs every parameter in the graph."""
    model = make_model(make_cfg(encoder)).train()
    batch = {k: v[1:2, :1] for k, v in mixed_batch().items()}  # one 2D scan
    run(model, batch).sum().backward()
    assert [n for n, p in model.named_parameters() if p.grad is None] == []

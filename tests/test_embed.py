"""The model as a feature extractor: `Predictor.embed`, `raddiag embed`, the .npz it writes.
(The service's `POST /embed` is tested with the running server in test_serving.py.)"""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from raddiag.cli import main
from raddiag.serving.predict import CaseEmbedding, CaseError, Predictor
from raddiag.serving.sample import make_tiny_run, sample_png


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("embed")
    make_tiny_run(d / "run")
    rng = np.random.default_rng(0)
    for i in range(3):
        (d / f"x{i}.png").write_bytes(sample_png(40, seed=10 + i))
    np.save(d / "ct.npy", rng.random((30, 30, 7)).astype(np.float32))
    np.save(d / "ct2.npy", rng.random((28, 28, 3)).astype(np.float32))
    return d


@pytest.fixture(scope="module")
def pred(files):
    return Predictor.load(files / "run")


def test_details_keep_the_logits_and_the_head_reads_the_case_embedding(files):
    """return_details changes nothing in the logits, and the case embedding is what the head
    scores: head(case_embedding) gives the logits back."""
    from raddiag.models import load_model

    model, cfg, _ = load_model(files / "run")
    g = torch.Generator().manual_seed(0)
    B, N, D, S = 3, 2, cfg.data.depth, cfg.data.size
    images = torch.rand(B, N, 1, D, S, S, generator=g)
    scan_mask = torch.tensor([[True, True], [True, False], [True, True]])
    slice_mask = torch.zeros(B, N, D, dtype=torch.bool)
    slice_mask[:, :, :2] = True
    slice_mask[0, 0] = True
    modality = torch.tensor([[1, 3], [3, 0], [2, 1]])
    with torch.no_grad():
        plain = model(images, scan_mask, slice_mask, modality)
        out = model(images, scan_mask, slice_mask, modality, return_details=True)
        assert torch.equal(out.logits, plain)
        assert torch.allclose(model.head(out.case_embedding), plain, atol=1e-6)
    assert out.case_embedding.shape == (B, cfg.model.width)
    assert out.scan_embeddings.shape == (B, N, cfg.model.width)
    assert torch.all(out.scan_embeddings[1, 1] == 0)            # the padded scan
    assert not torch.allclose(out.case_embedding[0], out.case_embedding[1])


def test_same_case_same_embedding_across_calls_and_batches(files, pred):
    a = [str(files / "x0.png")]
    alone = pred.embed(a, modality="X-ray")
    again = pred.embed(a, modality="X-ray")
    assert np.array_equal(alone.case, again.case) and np.array_equal(alone.scans, again.scans)
    # batched with cases of other scan counts (3D and 2D, 1-2 scans): padding differs per batch
    others = [[str(files / "ct.npy"), str(files / "x1.png")], [str(files / "ct2.npy")]]
    mods = [["CT", "X-ray"], ["X-ray"], ["CT"]]
    for batch_size in (3, 2):
        mixed = pred.embed([others[0], a, others[1]], modality=mods, batch_size=batch_size)
        got = mixed[1]
        assert got.case_id == "x0" and got.scan_ids == ["x0.png"]
        # float32 rounding only: the kernels sum in an order that depends on the batch
        np.testing.assert_allclose(got.case, alone.case, rtol=0, atol=1e-5)
        np.testing.assert_allclose(got.scans, alone.scans, rtol=0, atol=1e-5)
        # ... while other cases are far apart (the comparison can fail)
        assert np.abs(mixed[0].case - alone.case).max() > 1e-2
    # one case per forward: bit for bit whatever surrounds it
    one_by_one = pred.embed([others[0], a, others[1]], modality=mods, batch_size=1)
    assert np.array_equal(one_by_one[1].case, alone.case) and np.array_equal(one_by_one[1].scans, alone.scans)


def test_embedding_is_the_models_and_scores_like_predict(files, pred):
    """Independent of the embed path: the head on the case embedding gives predict's probabilities."""
    case = [str(files / "ct.npy"), str(files / "x1.png")]
    emb = pred.embed(case, modality=["CT", "X-ray"])
    res = pred.predict(case, modality=["CT", "X-ray"], top=4)
    with torch.no_grad():
        probs = torch.sigmoid(pred.model.head(torch.from_numpy(emb.case)[None]))[0]
    for f in res.ranked:
        assert f.probability == pytest.approx(float(probs[pred.labels.index(f.name)]), abs=1e-5)


def test_shapes_ids_and_scans_left_out_by_the_caps(files, pred):
    # the run caps X-ray at 2 scans per case: the third is listed, unused, without an embedding
    case = [str(files / f"x{i}.png") for i in range(3)]
    emb = pred.embed(case, modality="X-ray")
    width = pred.cfg.model.width
    assert emb.case.shape == (width,) and emb.scans.shape == (2, width)
    assert emb.scan_ids == ["x0.png", "x1.png"]
    assert [s.used for s in emb.scan_infos] == [True, True, False]
    assert not np.allclose(emb.scans[0], emb.scans[1])
    d = json.loads(json.dumps(emb.to_dict()))
    assert d["width"] == width and len(d["case_embedding"]) == width
    assert [s["embedding"] is None for s in d["scans"]] == [False, False, True]
    assert np.array_equal(np.array(d["scans"][1]["embedding"], np.float32), emb.scans[1])


def test_cli_embed_writes_npz_with_ids_and_failures(files, tmp_path, capsys):
    (tmp_path / "ok").mkdir()
    (tmp_path / "ok" / "a.png").write_bytes(sample_png(40, seed=5))
    (tmp_path / "ok" / "b.png").write_bytes(sample_png(40, seed=6))
    out = tmp_path / "feats.npz"
    rc = main(["embed", str(files / "run"), str(tmp_path / "ok"), str(files / "x2.png"),
               str(tmp_path / "missing.png"), "--modality", "X-ray", "--out", str(out), "--batch-size", "2"])
    err = capsys.readouterr().err
    assert rc == 2 and "1 of 3 cases failed" in err and "missing.png" in err
    z = np.load(out)                                             # no pickle needed
    assert list(z["case_ids"]) == ["ok", "x2"] and z["case_embeddings"].shape == (2, 64)
    assert list(z["scan_ids"]) == ["a.png", "b.png", "x2.png"] and list(z["scan_case"]) == [0, 0, 1]
    assert z["scan_embeddings"].shape == (3, 64) and list(z["scan_modality"]) == ["X-ray"] * 3
    assert list(z["failed_ids"]) == ["missing"] and "no such file" in z["failed_errors"][0]
    # the rows are the case's embeddings as Predictor.embed gives them
    alone = Predictor.load(files / "run").embed(str(files / "x2.png"), modality="X-ray")
    np.testing.assert_allclose(z["case_embeddings"][1], alone.case, atol=1e-5)
    # an existing output is kept unless --overwrite
    rc = main(["embed", str(files / "run"), str(files / "x2.png"), "--modality", "X-ray", "--out", str(out)])
    assert rc == 2 and "--overwrite" in capsys.readouterr().err
    rc = main(["embed", str(files / "run"), str(files / "x2.png"), "--modality", "X-ray",
               "--out", str(tmp_path / "feats.txt")])
    assert rc == 2 and "must end in .npz" in capsys.readouterr().err

"""`raddiag export`: TorchScript and ONNX graphs of the visual encoder and the case model give
PyTorch's outputs (on a batch of another size and another mask pattern than the export example)."""
from __future__ import annotations

import json

import pytest
import torch

from raddiag.cli import main
from raddiag.models import load_model
from raddiag.serving.export import example_batch, export
from raddiag.serving.sample import make_tiny_run


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return make_tiny_run(tmp_path_factory.mktemp("export") / "run", overrides=["data.max_scans=3"]).root


def test_torchscript_matches_pytorch(run, tmp_path):
    paths = export(run, "torchscript", tmp_path)
    assert [p.name for p in paths] == ["visual_encoder.pt", "case_model.pt", "export.json"]
    model, cfg, _ = load_model(run)
    b = example_batch(cfg, 3, batch=4, seed=5)
    with torch.no_grad():
        want = model(b["images"], b["scan_mask"], b["slice_mask"], b["modality"])
        want_enc = model.encoder(b["images"], b["scan_mask"], b["slice_mask"])[0]
    got = torch.jit.load(str(tmp_path / "case_model.pt"))(b["images"], b["scan_mask"], b["slice_mask"], b["modality"])
    enc = torch.jit.load(str(tmp_path / "visual_encoder.pt"))(b["images"], b["scan_mask"], b["slice_mask"])
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(enc, want_enc, atol=1e-5, rtol=1e-4)
    meta = json.loads((tmp_path / "export.json").read_text())
    assert meta["input"] == {"scans": 3, "depth": 4, "size": 32, "window": None, "windows": {},
                             "modality_scheme": "raddiag"}


@pytest.mark.slow
def test_onnx_matches_pytorch(run, tmp_path):
    onnx = pytest.importorskip("onnx")
    rc = main(["export", str(run), "--format", "onnx", "--out", str(tmp_path)])
    assert rc == 0
    for name in ("visual_encoder", "case_model"):
        onnx.checker.check_model(onnx.load(str(tmp_path / f"{name}.onnx")))
    ort = pytest.importorskip("onnxruntime", reason="onnxruntime not installed: only onnx.checker was run")
    model, cfg, _ = load_model(run)
    b = example_batch(cfg, 3, batch=5, seed=7)
    with torch.no_grad():
        want = model(b["images"], b["scan_mask"], b["slice_mask"], b["modality"])
    sess = ort.InferenceSession(str(tmp_path / "case_model.onnx"), providers=["CPUExecutionProvider"])
    got = sess.run(None, {k: b[k].numpy() for k in ("images", "scan_mask", "slice_mask", "modality")})[0]
    torch.testing.assert_close(torch.from_numpy(got), want, atol=1e-4, rtol=1e-3)


def test_export_errors(run, tmp_path):
    with pytest.raises(ValueError, match="format"):
        export(run, "tflite", tmp_path)
    with pytest.raises(FileNotFoundError):
        export(tmp_path / "none", "onnx", tmp_path)


def test_an_export_that_fails_its_check_leaves_the_last_export_whole(run, tmp_path):
    """Red team: a graph that failed its comparison with PyTorch was left in --out (written before the
    check), beside the last export's export.json that vouched for the old graphs."""
    export(run, "torchscript", tmp_path)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    with pytest.raises(ValueError, match="differs from PyTorch"):
        export(run, "torchscript", tmp_path, scans=2, atol=-1.0)        # every graph fails the check
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before

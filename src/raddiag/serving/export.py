"""Export a run's model for other runtimes: ``raddiag export RUN --format onnx|torchscript``.

Two graphs are written:

- ``visual_encoder``: scans -> scan embeddings, inputs ``images [B, N, 1, D, H, W]``,
  ``scan_mask [B, N]``, ``slice_mask [B, N, D]``; output ``[B, N, width]``;
- ``case_model``: the whole model, inputs as above plus ``modality [B, N]``; output logits ``[B, C]``.

The batch dimension B is dynamic; N, D, H, W are fixed at export (N = ``--scans``, default the run's
``data.max_scans``; D, H, W from the run's ``data`` section): pad cases to N scans and D slices
with the masks, exactly as ``collate_cases`` does. Which scans / slices are real is read from
the masks at run time. ``export.json`` beside the files records the shapes, the class names and
the checks made: every export is compared with PyTorch's outputs on a random masked batch
(with onnxruntime for ONNX where it is installed; otherwise the ONNX graph is only checked
with ``onnx.checker``, and the file says so).
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Optional

import torch
from torch import nn

from raddiag.staging import write_json

FORMATS = ("onnx", "torchscript")


class CaseModel(nn.Module):
    def __init__(self, model) -> None:
        super().__init__()
        self.model = model

    def forward(self, images, scan_mask, slice_mask, modality):
        return self.model(images, scan_mask, slice_mask, modality)


class VisualEncoder(nn.Module):
    def __init__(self, model) -> None:
        super().__init__()
        self.encoder = model.encoder

    def forward(self, images, scan_mask, slice_mask):
        return self.encoder(images, scan_mask.bool(), slice_mask.bool())[0]


def example_batch(cfg, scans: int, batch: int = 2, seed: int = 0) -> dict:
    """A random batch of the run's geometry with a mix of 2D, short and full 3D scans and padding."""
    g = torch.Generator().manual_seed(seed)
    D, S = cfg.data.depth, cfg.data.size
    images = torch.rand(batch, scans, 1, D, S, S, generator=g)
    scan_mask = torch.zeros(batch, scans, dtype=torch.bool)
    slice_mask = torch.zeros(batch, scans, D, dtype=torch.bool)
    modality = torch.zeros(batch, scans, dtype=torch.long)
    for b in range(batch):
        n_real = max(1, scans - (b % scans))
        for n in range(n_real):
            d = 1 if (n + b) % 3 == 0 else (D if (n + b) % 3 == 1 else max(2, D // 2))
            scan_mask[b, n] = True
            slice_mask[b, n, :d] = True
            modality[b, n] = 1 + (n + b) % 3
    images = images * (slice_mask & scan_mask[..., None])[:, :, None, :, None, None]
    return {"images": images, "scan_mask": scan_mask, "slice_mask": slice_mask, "modality": modality}


def _inputs(kind: str, batch: dict) -> tuple:
    keys = ("images", "scan_mask", "slice_mask") + (("modality",) if kind == "case_model" else ())
    return tuple(batch[k] for k in keys), keys


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.detach().float() - torch.as_tensor(b).detach().float()).abs().max())


def export(run_dir, fmt: str = "onnx", out: Optional[str | Path] = None, scans: Optional[int] = None,
           atol: float = 1e-4) -> list[Path]:
    """Export the visual encoder and the case model of ``run_dir``; returns the written paths.
    Raises ValueError when an export does not reproduce PyTorch's outputs within ``atol``."""
    from raddiag.models import load_model
    from raddiag.run import resolve_run

    if fmt not in FORMATS:
        raise ValueError(f"unknown export format {fmt!r}; choose one of {FORMATS}")
    run = resolve_run(run_dir)
    model, cfg, labels = load_model(run, device="cpu")
    out = Path(out) if out else run.root / "export"
    from raddiag.staging import staged_files

    with staged_files(out, "export") as stage:       # a graph that fails its check leaves the last export whole
        names = _export_into(stage, model, cfg, labels, run_dir, fmt, scans, atol)
    return [out / n for n in names]


def _export_into(out: Path, model, cfg, labels, run_dir, fmt: str, scans: Optional[int], atol: float) -> list[str]:
    """The two graphs and ``export.json`` written into ``out``; their file names."""
    scans = scans or cfg.data.max_scans
    example, check = example_batch(cfg, scans, 2, seed=0), example_batch(cfg, scans, 3, seed=1)
    meta = {"format": fmt, "run": str(run_dir), "classes": list(labels.names),
            "input": {"scans": scans, "depth": cfg.data.depth, "size": cfg.data.size,
                      "window": cfg.data.window, "windows": cfg.data.windows, "modality_scheme": cfg.data.modality_scheme},
            "graphs": {}}
    written = []
    for kind, module in (("visual_encoder", VisualEncoder(model)), ("case_model", CaseModel(model))):
        module.eval()
        args, names = _inputs(kind, example)
        check_args, _ = _inputs(kind, check)
        with torch.no_grad():
            want = module(*check_args)
        if fmt == "torchscript":
            path = out / f"{kind}.pt"
            with torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore", torch.jit.TracerWarning)
                traced = torch.jit.trace(module, args, check_trace=False)
            traced.save(str(path))
            got = torch.jit.load(str(path))(*check_args)
            diff, checked = _max_diff(want, got), "torch.jit.load, outputs compared"
        else:
            path = out / f"{kind}.onnx"
            diff, checked = _export_onnx(module, args, names, path, check_args, want)
        if diff is not None and diff > atol:
            raise ValueError(f"{path}: exported {kind} differs from PyTorch by {diff:.2e} (> {atol})")
        meta["graphs"][kind] = {"file": path.name, "inputs": list(names), "max_abs_diff": diff, "check": checked}
        written.append(path)
    write_json(out / "export.json", meta)
    return [p.name for p in written] + ["export.json"]


def _export_onnx(module, args, names, path: Path, check_args, want):
    import onnx

    dyn = {n: {0: "batch"} for n in names}
    enc = getattr(module, "encoder", None) or getattr(getattr(module, "model", None), "encoder", None)
    if hasattr(enc, "slice_backbone"):
        # One backbone call over all real slices: the chunking's ceil-division of a traced shape
        # becomes ONNX's truncating Div (0 chunks). Same numbers, inference only.
        def unchunked(slices, enc=enc):
            if enc.in_channels != slices.shape[1]:
                slices = slices.expand(-1, enc.in_channels, -1, -1)
            return enc.slice_backbone(slices)

        enc.slice_features = unchunked
    fastpath = torch.backends.mha.get_fastpath_enabled()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # nn.MultiheadAttention's fused inference kernel has no ONNX form: export the plain ops
        torch.backends.mha.set_fastpath_enabled(False)
        # The TorchScript-based exporter: masked gathers/scatters are data-dependent, which the
        # dynamo exporter does not take without rewriting the model.
        try:
            torch.onnx.export(module, args, str(path), input_names=list(names), output_names=["output"],
                              dynamic_axes={**dyn, "output": {0: "batch"}}, opset_version=17, dynamo=False)
        finally:
            torch.backends.mha.set_fastpath_enabled(fastpath)
            if hasattr(enc, "slice_backbone"):
                del enc.slice_features
    onnx.checker.check_model(onnx.load(str(path)))
    try:
        import onnxruntime as ort
    except ImportError:
        return None, "onnx.checker only (onnxruntime is not installed: pip install onnxruntime)"
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feed = {n: a.numpy() for n, a in zip(names, check_args)}
    got = sess.run(None, feed)[0]
    return _max_diff(want, got), "onnx.checker + onnxruntime, outputs compared"

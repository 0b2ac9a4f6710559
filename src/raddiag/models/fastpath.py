"""Inference fast paths (issue 14): the same model and outputs (within float rounding), less time.

:func:`prepare_for_inference` returns an inference-only *twin* of an eval-mode RadDiag model.
The twin shares every weight with the model (transformers, fusion, head) except the ResNet
backbone of the visual encoder, which it rebuilds once:

- **BatchNorm folded into the convolution before it** (the running statistics, so eval only:
  ``w' = w * g / sqrt(v + eps)``, ``b' = (b - m) * g / sqrt(v + eps) + beta``; torch's
  ``fuse_conv_bn_eval`` does the arithmetic): one pass over each feature map instead of two.
- **The grey-to-3-channel repeat folded into the stem** (``in_channels=3``, the release's
  convention): ``conv(repeat(x, 3), w) == conv(x, w.sum(1))`` exactly up to float rounding,
  so the stem convolution is 3x cheaper and the repeated copy is never made.
- **Channels-last memory layout** (oneDNN's preferred convolution layout on CPU).
- ``backend="onnxruntime"`` (the default when onnxruntime is installed): the per-slice backbone
  of the ``resnet_vit`` encoder, folded as above, is exported in memory to ONNX and run by
  onnxruntime's CPU provider (its MLAS convolutions: 0.30x the authors' forward on a 3-CT case
  against 0.77x for the torch twin; ``benchmarks/model_speed.py`` prints each path).

Padded slice slots already cost nothing: the encoder gathers the real slices before the
backbone (``encoders._real_slices``). Measured and not the default: bf16 autocast (this CPU
has no bf16 units: slower, and probabilities move by up to ~4e-3), and ``torch.compile``
(``backend="compile"``: close to onnxruntime once compiled, but it compiles again for every
new slice count).

The model itself is left unchanged: training, saliency hooks and state dicts keep using it.
"""
from __future__ import annotations

import copy
import io
import warnings

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

BACKENDS = ("auto", "torch", "onnxruntime", "compile")
_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_BN = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def fold_batchnorm(module: nn.Module) -> nn.Module:
    """Fold every eval-mode BatchNorm into the convolution that feeds it, in place; returns
    ``module``. Pairs are found by the layouts MONAI's (and torchvision's) ResNets use: sibling
    attributes ``convK`` / ``bnK``, and a convolution directly followed by a BatchNorm in an
    ``nn.Sequential`` (the downsample branch, the encoders' stems). Folded BatchNorms become
    ``nn.Identity``."""
    if module.training:
        raise ValueError("fold_batchnorm needs an eval-mode module (it folds the running statistics)")
    for m in list(module.modules()):
        kids = m._modules
        pairs = [(c, "bn" + c[4:]) for c in kids if c.startswith("conv")]
        if isinstance(m, nn.Sequential):
            names = list(kids)
            pairs += list(zip(names, names[1:]))
        for c, b in pairs:
            conv, bn = kids.get(c), kids.get(b)
            if isinstance(conv, _CONV) and isinstance(bn, _BN) and bn.track_running_stats:
                kids[c], kids[b] = fuse_conv_bn_eval(conv, bn), nn.Identity()
    return module


def fold_stem_channels(backbone: nn.Module, channels: int) -> nn.Module:
    """Make a ResNet whose stem reads a grey slice repeated to ``channels`` channels read the
    grey slice itself (stem weights summed over input channels), in place; returns it."""
    c = backbone.conv1
    if c.in_channels != channels or c.groups != 1:
        raise ValueError(f"stem has {c.in_channels} input channels (groups {c.groups}), expected {channels}")
    stem = type(c)(1, c.out_channels, c.kernel_size, c.stride, c.padding, c.dilation, bias=c.bias is not None,
                   padding_mode=c.padding_mode)
    with torch.no_grad():
        stem.weight.copy_(c.weight.sum(1, keepdim=True))
        if c.bias is not None:
            stem.bias.copy_(c.bias)
    backbone.conv1 = stem
    return backbone


class OnnxRuntimeModule(nn.Module):
    """A ``[S, C, H, W] -> [S, F]`` image network run by onnxruntime (inference only).

    The network is exported in memory with dynamic S, H and W, and run on the CPU provider
    with ``torch.get_num_threads()`` intra-op threads (read when built)."""

    def __init__(self, net: nn.Module, in_channels: int) -> None:
        super().__init__()
        import onnxruntime as ort

        buf = io.BytesIO()
        example = torch.rand(2, in_channels, 64, 64)
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(net, (example,), buf, input_names=["x"], output_names=["y"],
                              dynamic_axes={"x": {0: "s", 2: "h", 3: "w"}, "y": {0: "s"}},
                              opset_version=17, dynamo=False)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = torch.get_num_threads()
        opts.inter_op_num_threads = 1
        self.session = ort.InferenceSession(buf.getvalue(), opts, providers=["CPUExecutionProvider"])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type != "cpu":
            raise ValueError(f"the onnxruntime backbone runs on the CPU; got a tensor on {x.device}")
        out = self.session.run(None, {"x": x.detach().float().contiguous().numpy()})[0]
        return torch.from_numpy(out)


class _ChannelsLast(nn.Module):
    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net.to(memory_format=torch.channels_last)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.contiguous(memory_format=torch.channels_last))


def _twin(module: nn.Module, **children: nn.Module) -> nn.Module:
    """A shallow copy of ``module`` sharing its children except the ones given."""
    twin = copy.copy(module)
    twin._modules = {**module._modules, **children}
    return twin


def _resolve(backend: str, device: torch.device) -> str:
    if backend not in BACKENDS:
        raise ValueError(f"unknown inference backend {backend!r}; choose one of {BACKENDS}")
    if backend == "onnxruntime" and device.type != "cpu":
        raise ValueError(f"the onnxruntime backend runs on the CPU; the model is on {device}")
    if backend == "auto":
        if device.type != "cpu":
            return "torch"
        try:
            import onnxruntime  # noqa: F401
        except ImportError:
            return "torch"
        return "onnxruntime"
    return backend


def fast_backbone(backbone: nn.Module, in_channels: int, backend: str = "torch") -> nn.Module:
    """A folded copy of a 2D ResNet backbone that reads ``[S, 1, H, W]`` grey slices."""
    net = fold_batchnorm(copy.deepcopy(backbone).eval())
    if in_channels != 1:
        fold_stem_channels(net, in_channels)
    backend = _resolve(backend, next(net.parameters()).device)
    if backend == "onnxruntime":
        return OnnxRuntimeModule(net, 1)
    if backend == "compile":
        import torch._inductor.config as inductor

        inductor.freezing = True   # constant-folds the weights into the graph (inference only)
        return torch.compile(_ChannelsLast(net), dynamic=False)
    return _ChannelsLast(net)


def prepare_for_inference(model: nn.Module, backend: str = "auto") -> nn.Module:
    """An inference-only twin of an eval-mode RadDiag ``model`` (see the module docstring).

    ``backend``: ``"auto"`` (onnxruntime for a CPU model when installed, else torch), ``"torch"``,
    ``"onnxruntime"`` or ``"compile"``. Call the twin under ``torch.inference_mode()``; it
    gives the model's logits within float rounding (tests/test_fastpath.py). Encoders other
    than ``resnet_vit`` get BatchNorm folding only; the ViT encoder is returned unchanged.
    """
    from .encoders import ResNetEncoder, ResNetViTEncoder

    if model.training:
        raise ValueError("prepare_for_inference needs an eval-mode model (BatchNorm folding uses the "
                         "running statistics); call model.eval() first")
    enc = model.encoder
    if isinstance(enc, ResNetViTEncoder):
        fast_enc = _twin(enc, slice_backbone=fast_backbone(enc.slice_backbone, enc.in_channels, backend))
        fast_enc.in_channels = 1
    elif isinstance(enc, ResNetEncoder):
        fast_enc = fold_batchnorm(copy.deepcopy(enc))
    else:
        return model
    return _twin(model, encoder=fast_enc)

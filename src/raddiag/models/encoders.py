"""Visual encoders: one scan -> one embedding (paper Section 4.2.1, Table 1).

All three take the batch layout ``images [B, N, C, D, H, W]``, ``scan_mask [B, N]``,
``slice_mask [B, N, D]`` and return ``(scan_embeddings [B, N, width], slice_attention)``
where padded scans get zero embeddings and ``slice_attention`` is ``[B, N, D]`` (the
[CLS] attention over slices of the last slice-transformer layer) or None.
A scan is treated as 3D when more than one of its slices is real; a 2D scan is slice 0.
Padded slices and scans never influence an output (gathered away or zeroed).

- :class:`ResNetViTEncoder` (``"resnet_vit"``, the paper's final choice): a 2D ResNet on
  every real slice, then a transformer over slice tokens with [CLS] and learnable
  position embeddings.
- :class:`ResNetEncoder` (``"resnet"``): a 2D ResNet stem for 2D scans and a 3D ResNet
  stem for 3D scans (depth average-pooled) bring scans to feature maps of one resolution;
  a shared 2D ResNet stage (layer3, layer4) gives the embedding.
- :class:`ViTEncoder` (``"vit"``): 2D patches and 3D cubes through two separate MLPs,
  two learnable position-embedding sets, a shared ViT with [CLS].
"""
from __future__ import annotations

from contextlib import contextmanager, nullcontext
from functools import partial
from typing import Optional

import torch
import torch.nn.functional as F
from monai.networks.nets import ResNet
from monai.networks.nets.resnet import ResNetBlock, ResNetBottleneck
from torch import nn
from torch.nn.utils import skip_init
from torch.utils.checkpoint import checkpoint

from raddiag.config import ModelConfig

from .layers import Encoder

RESNET_LAYERS = {
    10: (ResNetBlock, [1, 1, 1, 1]),
    18: (ResNetBlock, [2, 2, 2, 2]),
    34: (ResNetBlock, [3, 4, 6, 3]),
    50: (ResNetBottleneck, [3, 4, 6, 3]),
    101: (ResNetBottleneck, [3, 4, 23, 3]),
}


class GreyStemConv2d(nn.Conv2d):
    """The stem of a backbone with ``in_channels`` > 1 that is fed grey slices (the release repeats
    the slice to 3 channels): a 1-channel input is convolved with the weight summed over its input
    channels, ``conv(repeat(x, 3), w) == conv(x, w.sum(1))`` up to float rounding, so the stem does a
    third of the work and the repeated copy is never made. The sum is taken in ``forward``: the
    weight's gradient is the summed weight's gradient for every input channel, as with the repeated
    input. The weight keeps its ``[out, in_channels, k, k]`` shape (state dicts are unchanged); an
    input with ``in_channels`` channels is convolved as usual. The inference twin
    (:func:`raddiag.models.fastpath.fold_stem_channels`) stores the sum once instead.

    With ``channels_last_output`` (set by the slice encoder for each call) the output is made
    channels-last, and the rest of the backbone runs in that layout: oneDNN follows its input's
    layout (or its weight's), and a grey input's is ambiguous (with one channel its channels-last
    strides are its contiguous ones), so making the slices channels-last changes nothing."""

    channels_last_output = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] == 1 and self.in_channels > 1 and self.groups == 1:
            y = self._conv_forward(x, self.weight.sum(1, keepdim=True), self.bias)
        else:
            y = super().forward(x)
        return y.contiguous(memory_format=torch.channels_last) if self.channels_last_output else y


def make_resnet(spatial_dims: int, depth: int, inplanes: list[int], in_channels: int = 1) -> ResNet:
    """A MONAI ResNet laid out like torchvision's (7x7 stride-2 stem, 3x3 stride-2 max-pool,
    no bias in the downsample conv) returning globally pooled features (no fc). A 2D one with
    ``in_channels`` > 1 takes grey slices too; its stem sets the backbone's layout (:class:`GreyStemConv2d`)."""
    if depth not in RESNET_LAYERS:
        raise ValueError(f"unsupported ResNet depth {depth}; choose one of {sorted(RESNET_LAYERS)}")
    block, layers = RESNET_LAYERS[depth]
    net = ResNet(block, layers, list(inplanes), spatial_dims=spatial_dims, n_input_channels=in_channels,
                 conv1_t_size=7, conv1_t_stride=2, feed_forward=False, bias_downsample=False)
    if spatial_dims == 2:
        c = net.conv1
        # A 1-channel stem is built without a random draw (skip_init; its weight is MONAI's), so a
        # seeded model is initialised as before it had this class; a 3-channel one always drew.
        make = partial(skip_init, GreyStemConv2d) if in_channels == 1 else GreyStemConv2d
        stem = make(c.in_channels, c.out_channels, c.kernel_size, c.stride, c.padding, c.dilation,
                    c.groups, c.bias is not None)
        stem.weight, stem.bias = c.weight, c.bias
        net.conv1 = stem
    return net


def resnet_features(depth: int, inplanes: list[int]) -> int:
    return inplanes[3] * RESNET_LAYERS[depth][0].expansion


class _Tail(nn.Module):
    """A MONAI ResNet's forward after layer4: global pooling, flatten, the fc when it has one."""

    def __init__(self, net: ResNet) -> None:
        super().__init__()
        self.avgpool, self.fc = net.avgpool, net.fc

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.avgpool(x).view(x.shape[0], -1)
        return x if self.fc is None else self.fc(x)


def resnet_stages(net: ResNet) -> list[nn.Module]:
    """``net.forward`` as five stages applied in turn (stem, layer1, layer2, layer3, layer4 with the
    pooling): the units of which :class:`ResNetViTEncoder` recomputes the leading ones in backward
    and keeps the rest. (The pooling goes with layer4: kept alone it would hold layer4's output for
    nothing worth recomputing.) Built on each call from ``net``'s own modules (no new weights,
    hooks on ``layerN`` still fire)."""
    stem = [net.conv1, net.bn1, net.act] + ([] if net.no_max_pool else [net.maxpool])
    return [nn.Sequential(*stem), net.layer1, net.layer2, net.layer3, nn.Sequential(net.layer4, _Tail(net))]


def _real_slices(images, scan_mask, slice_mask):
    """``[S, C, H, W]`` of the real slices of real scans, in ``(b, n, d)`` row-major order."""
    real = slice_mask & scan_mask[..., None]
    return images.transpose(2, 3)[real], real


def stage_activation_bytes(stages: list[nn.Module], x: torch.Tensor, probe_px: Optional[int] = 64) -> list[int]:
    """Bytes each stage keeps for backward per slice of ``x``'s geometry (dtype and autocast as the
    caller's): measured on 2 zero slices of at most ``probe_px`` px a side (None: ``x``'s size) and
    scaled by the ratio of pixels (every map of a stage scales with the input's area; exact where
    the sides divide by the backbone's stride, 32). BatchNorm statistics are left as they were; the
    weights a layer saves are not counted, and a tensor saved twice counts once. The small probe:
    a full-size one at 256 px left ~0.5 GiB more resident at the step's peak (freed, not returned)."""
    h, w = x.shape[-2:]
    ph, pw = (h, w) if probe_px is None else (min(h, probe_px), min(w, probe_px))
    params = {p.untyped_storage().data_ptr() for st in stages for p in st.parameters()}
    x = x.new_zeros(2, *x.shape[1:-2], ph, pw)
    out = []
    for st in stages:
        seen: dict[int, int] = {}

        def pack(t: torch.Tensor) -> torch.Tensor:
            ptr = t.untyped_storage().data_ptr()
            if ptr not in params:
                seen[ptr] = t.untyped_storage().nbytes()
            return t

        with torch.enable_grad(), _frozen_norm_statistics(st), torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            y = st(x.requires_grad_(x.is_floating_point()))
        out.append(int(sum(seen.values()) / 2 * (h * w) / (ph * pw)))
        x = y.detach()
    return out


def stages_to_recompute(per_slice: list[int], slices: int, keep_bytes: float) -> int:
    """How many leading stages to recompute in backward so that the activations of the rest, for
    ``slices`` slices, fit in ``keep_bytes``. Leading first: the early stages keep the most memory
    per unit of compute (ResNet-50 at 128 px: the stem and layer1 hold 46 % of the activations for
    18 % of the forward's FLOPs, layer3 and layer4 21 % for 57 %)."""
    k = 0
    while k < len(per_slice) and slices * sum(per_slice[k:]) > keep_bytes:
        k += 1
    return k


@contextmanager
def _frozen_norm_statistics(module: nn.Module):
    """Batch normalisation that leaves its running statistics as they are: the context of a
    checkpointed chunk's recomputation in backward, which would otherwise count every training
    batch twice. Momentum 0 makes the update ``1 * running + 0 * batch`` (exactly the old
    value, and the same tensors saved for backward as in the first pass, which checkpointing
    checks); the batch counter is put back afterwards."""
    norms = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    kept = [(m.momentum, m.num_batches_tracked.clone()) for m in norms]
    for m in norms:
        m.momentum = 0.0
    try:
        yield
    finally:
        for m, (momentum, count) in zip(norms, kept):
            m.momentum = momentum
            m.num_batches_tracked.copy_(count)


def _touch_unused(out: torch.Tensor, modules) -> torch.Tensor:
    """In training, give the parameters of a branch this batch did not use a zero-valued path to
    the output, so DistributedDataParallel (without find_unused_parameters) sees them used."""
    if not torch.is_grad_enabled():
        return out
    zero = sum((p.sum() * 0.0 for m in modules for p in m.parameters()), out.new_zeros(()))
    return out + zero


class ResNetViTEncoder(nn.Module):
    """2D ResNet per slice + slice transformer ([CLS], learnable positions, slice mask).

    ``slice_backbone`` is the per-slice 2D MONAI ResNet. For saliency (Score-CAM), a
    forward hook on ``slice_backbone.layer4`` receives the feature maps ``[s, C, h, w]``
    of the real slices only (``slice_mask & scan_mask[..., None]``, in the row-major
    order of ``(b, n, d)``), once per chunk of at most ``slice_chunk`` slices:
    concatenate the chunks in call order. With ``in_channels=3`` the backbone sees the grey
    slice as if repeated to 3 channels (the release's convention; folded into the stem,
    :class:`GreyStemConv2d`).
    """

    def __init__(self, mc: ModelConfig, depth: int) -> None:
        super().__init__()
        self.in_channels = mc.in_channels
        self.slice_chunk = max(1, mc.slice_chunk)
        self.grad_checkpoint = mc.grad_checkpoint
        self.checkpoint_keep = mc.checkpoint_keep_mb * 2**20     # bytes of activations not recomputed
        self._stage_bytes: dict[tuple, list[int]] = {}          # per slice geometry: stage_activation_bytes
        self.slice_backbone = make_resnet(2, mc.resnet_depth, mc.resnet_inplanes, mc.in_channels)
        feat = resnet_features(mc.resnet_depth, mc.resnet_inplanes)
        self.slice_proj = nn.Identity() if feat == mc.width else nn.Linear(feat, mc.width)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, mc.width))
        self.pos_emb = nn.Parameter(torch.randn(depth + 1, mc.width) * 0.02)
        self.slice_transformer = Encoder(mc.width, mc.slice_layers, mc.slice_heads, mc.layer_style,
                                         mc.mlp_ratio, mc.dropout)
        nn.init.normal_(self.cls_token, std=0.02)

    # The backbone runs channels-last (oneDNN's preferred convolution layout on CPU, and what bf16
    # kernels want on CPU and GPU), in training too. Until 2026-12-07 only the 1-channel slices
    # were made channels-last, a layout-ambiguous no-op, so the backbone ran NCHW; set on the
    # stem's output (GreyStemConv2d) it runs channels-last: a training step x0.93 at the paper's
    # 2 x 8 x 256 px (benchmarks/model_speed.py --train), x0.8-0.9 for `official` at 128 px in
    # fp32 and bf16, x0.83 for `tiny` (the x1.41 measured once was for an older layout).
    channels_last = True
    channels_last_training = True

    def slice_features(self, slices: torch.Tensor) -> torch.Tensor:
        """Pooled backbone features ``[S, F]`` of ``[S, 1, H, W]`` slices, in chunks (a grey slice
        enters a 3-channel backbone as it is: :class:`GreyStemConv2d`)."""
        cl = self.channels_last and (self.channels_last_training or not self.training)
        if cl:
            slices = slices.contiguous(memory_format=torch.channels_last)
        stem = getattr(self.slice_backbone, "conv1", None)     # not in an inference twin's backbone
        if isinstance(stem, GreyStemConv2d):
            stem.channels_last_output = cl
        n_chunks = -(-slices.shape[0] // self.slice_chunk)
        # equal-sized chunks: no 1-slice tail chunk (BatchNorm in training needs > 1 value)
        chunks = torch.tensor_split(slices, n_chunks)
        if not (self.grad_checkpoint and self.training and torch.is_grad_enabled()):
            return torch.cat([self.slice_backbone(chunk) for chunk in chunks])
        stages = resnet_stages(self.slice_backbone)
        k = len(stages) if self.checkpoint_keep <= 0 else stages_to_recompute(
            self._activation_bytes(stages, slices), slices.shape[0], self.checkpoint_keep)
        return torch.cat([self._checkpointed(stages, chunk, k) for chunk in chunks])

    @staticmethod
    def _checkpointed(stages: list[nn.Module], x: torch.Tensor, k: int) -> torch.Tensor:
        """``x`` through ``stages``, the first ``k`` as one checkpointed segment: backward keeps only
        the chunk's input for them and recomputes them once, one chunk at a time (the same values and
        gradients); the later stages keep their activations. (One segment, not one checkpoint per
        stage: the inputs of the stages would be kept for every slice, 1.1 GiB on the paper's 128
        slices at 256 px.)"""
        if k:
            head = nn.Sequential(*stages[:k])
            # the recomputation in backward must not update BatchNorm's running statistics again
            recompute = partial(_frozen_norm_statistics, head)
            x = checkpoint(head, x, use_reentrant=False, context_fn=lambda: (nullcontext(), recompute()))
        for stage in stages[k:]:
            x = stage(x)
        return x

    def _activation_bytes(self, stages: list[nn.Module], slices: torch.Tensor) -> list[int]:
        """:func:`stage_activation_bytes` for this slice geometry, measured once per geometry."""
        dev = slices.device.type
        key = (tuple(slices.shape[1:]), slices.dtype, dev, torch.is_autocast_enabled(dev),
               torch.get_autocast_dtype(dev))
        if key not in self._stage_bytes:
            self._stage_bytes[key] = stage_activation_bytes(stages, slices)
        return self._stage_bytes[key]

    def forward(self, images, scan_mask, slice_mask, need_attention: bool = False):
        B, N, C, D, H, W = images.shape
        if D + 1 > self.pos_emb.shape[0]:
            raise ValueError(f"{D} slices per scan but the model has {self.pos_emb.shape[0] - 1} slice positions")
        slices, real = _real_slices(images, scan_mask, slice_mask)
        feats = self.slice_proj(self.slice_features(slices))                   # [S, width]
        m_slice = real[scan_mask]                                              # [M, D]
        tokens = feats.new_zeros(m_slice.shape[0], D, feats.shape[-1])
        tokens[m_slice] = feats                                                # scatter back
        x = torch.cat([self.cls_token.expand(tokens.shape[0], -1, -1), tokens], 1) + self.pos_emb[: D + 1]
        mask = torch.cat([m_slice.new_ones(m_slice.shape[0], 1), m_slice], 1)
        x = self.slice_transformer(x, mask, need_attention=need_attention)
        out = x.new_zeros(B, N, x.shape[-1])
        out[scan_mask] = x[:, 0]
        attn = None
        if need_attention:
            a = self.slice_transformer.last_attention[:, 0, 1:]                  # CLS -> slices [M, D]
            attn = a.new_zeros(B, N, D)
            attn[scan_mask] = a
        return out, attn


class ResNetEncoder(nn.Module):
    """Separate 2D / 3D ResNet "normalisation" stems (conv1..layer2) and a shared 2D ResNet
    stage (layer3, layer4, global average pool). The 3D stem's output is average-pooled over
    its (real) depth positions so both paths give maps of the same resolution (stride 8)."""

    def __init__(self, mc: ModelConfig, depth: int) -> None:
        super().__init__()
        inpl = mc.resnet_inplanes

        def stem(dims, d):
            r = make_resnet(dims, d, inpl, mc.in_channels)
            return nn.Sequential(r.conv1, r.bn1, r.act, r.maxpool, r.layer1, r.layer2)

        self.in_channels = mc.in_channels
        self.stem2d = stem(2, mc.stem2d_depth)
        self.stem3d = stem(3, mc.stem3d_depth)
        shared = make_resnet(2, mc.shared_depth, inpl)
        shared_in = inpl[1] * RESNET_LAYERS[mc.shared_depth][0].expansion

        def adapter(d):
            c = inpl[1] * RESNET_LAYERS[d][0].expansion
            return nn.Identity() if c == shared_in else nn.Conv2d(c, shared_in, 1, bias=False)

        self.adapt2d, self.adapt3d = adapter(mc.stem2d_depth), adapter(mc.stem3d_depth)
        self.shared = nn.Sequential(shared.layer3, shared.layer4, nn.AdaptiveAvgPool2d(1), nn.Flatten(1))
        feat = resnet_features(mc.shared_depth, inpl)
        self.proj = nn.Identity() if feat == mc.width else nn.Linear(feat, mc.width)

    def forward(self, images, scan_mask, slice_mask, need_attention: bool = False):
        B, N, C, D, H, W = images.shape
        if self.in_channels != C:
            images = images.expand(-1, -1, self.in_channels, -1, -1, -1)
        real = slice_mask & scan_mask[..., None]
        is3d = real.sum(-1) > 1
        m2, m3 = scan_mask & ~is3d, is3d
        maps = []
        if m2.any():
            maps.append((m2, self.adapt2d(self.stem2d(images[m2][:, :, 0]))))
        if m3.any():
            vol = images[m3] * real[m3][:, None, :, None, None].to(images.dtype)   # zero padded slices
            f = self.stem3d(vol)                                                   # [M3, c, d', h, w]
            keep = F.adaptive_max_pool1d(real[m3].float()[:, None], f.shape[2])[:, 0]  # real depth positions
            f = (f * keep[:, None, :, None, None]).sum(2) / keep.sum(1).clamp(min=1)[:, None, None, None]
            maps.append((m3, self.adapt3d(f)))
        out = None
        for m, fm in maps:
            emb = self.proj(self.shared(fm))
            if out is None:
                out = emb.new_zeros(B, N, emb.shape[-1])
            out[m] = emb
        if self.training:
            unused = ([] if m2.any() else [self.stem2d, self.adapt2d]) + ([] if m3.any() else [self.stem3d, self.adapt3d])
            out = _touch_unused(out, unused)
        return out, None


def _mlp(d_in: int, width: int, layers: int) -> nn.Sequential:
    mods: list[nn.Module] = [nn.Linear(d_in, width)]
    for _ in range(max(1, layers) - 1):
        mods += [nn.GELU(), nn.Linear(width, width)]
    return nn.Sequential(*mods)


class ViTEncoder(nn.Module):
    """2D patches (p x p) and 3D cubes (pd x p x p) projected by two separate MLPs, two sets
    of learnable position embeddings, one shared ViT with [CLS]. Cubes whose slices are all
    padding are masked out."""

    def __init__(self, mc: ModelConfig, depth: int, size: int) -> None:
        super().__init__()
        p, pd = mc.patch_size, mc.patch_depth
        if size % p or depth % pd:
            raise ValueError(f"ViT: size {size} must divide by patch_size {p} and depth {depth} by patch_depth {pd}")
        self.p, self.pd, self.in_channels = p, pd, mc.in_channels
        g = (size // p) ** 2
        c = mc.in_channels
        self.mlp2d = _mlp(c * p * p, mc.width, mc.vit_mlp_layers)
        self.mlp3d = _mlp(c * pd * p * p, mc.width, mc.vit_mlp_layers)
        self.pos2d = nn.Parameter(torch.randn(g, mc.width) * 0.02)
        self.pos3d = nn.Parameter(torch.randn((depth // pd) * g, mc.width) * 0.02)
        self.cls_token = nn.Parameter(torch.randn(1, 1, mc.width) * 0.02)
        self.vit = Encoder(mc.width, mc.vit_layers, mc.vit_heads, mc.layer_style, mc.mlp_ratio, mc.dropout)

    def _run(self, tokens, mask):
        x = torch.cat([self.cls_token.expand(tokens.shape[0], -1, -1), tokens], 1)
        mask = torch.cat([mask.new_ones(mask.shape[0], 1), mask], 1)
        return self.vit(x, mask)[:, 0]

    def forward(self, images, scan_mask, slice_mask, need_attention: bool = False):
        B, N, C, D, H, W = images.shape
        p, pd = self.p, self.pd
        if H % p or W % p or D % pd:
            raise ValueError(f"ViT: input {D}x{H}x{W} does not divide into {pd}x{p}x{p} cubes")
        if (H // p) * (W // p) != self.pos2d.shape[0]:
            raise ValueError(f"ViT: input {H}x{W} does not match the model's {self.pos2d.shape[0]} patch positions")
        if self.in_channels != C:
            images = images.expand(-1, -1, self.in_channels, -1, -1, -1)
        C = self.in_channels
        real = slice_mask & scan_mask[..., None]
        is3d = real.sum(-1) > 1
        m2, m3 = scan_mask & ~is3d, is3d
        out = None
        results = []
        if m2.any():
            x = images[m2][:, :, 0]                                               # [M, C, H, W]
            x = x.unfold(2, p, p).unfold(3, p, p)                                 # [M, C, h, w, p, p]
            x = x.permute(0, 2, 3, 1, 4, 5).reshape(x.shape[0], -1, C * p * p)
            tok = self.mlp2d(x) + self.pos2d[: x.shape[1]]
            results.append((m2, self._run(tok, tok.new_ones(tok.shape[:2], dtype=torch.bool))))
        if m3.any():
            r = real[m3]
            x = images[m3] * r[:, None, :, None, None].to(images.dtype)
            M = x.shape[0]
            x = x.reshape(M, C, D // pd, pd, H // p, p, W // p, p).permute(0, 2, 4, 6, 1, 3, 5, 7)
            x = x.reshape(M, -1, C * pd * p * p)
            cube_real = r.view(M, D // pd, pd).any(-1)                            # [M, D/pd]
            mask = cube_real[:, :, None].expand(-1, -1, (H // p) * (W // p)).reshape(M, -1)
            tok = self.mlp3d(x) + self.pos3d[: x.shape[1]]
            results.append((m3, self._run(tok, mask)))
        for m, emb in results:
            if out is None:
                out = emb.new_zeros(B, N, emb.shape[-1])
            out[m] = emb
        if self.training:
            unused = ([] if m2.any() else [self.mlp2d]) + ([] if m3.any() else [self.mlp3d])
            out = _touch_unused(out, unused)
            if not m2.any():
                out = out + self.pos2d.sum() * 0.0
            if not m3.any():
                out = out + self.pos3d.sum() * 0.0
        return out, None

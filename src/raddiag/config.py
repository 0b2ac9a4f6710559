"""Typed configuration: data, model and training settings, named presets,
YAML round-trip and ``key=value`` overrides.

One :class:`RunConfig` travels with every run folder, so that inference never
depends on remembering how a model was trained.
"""
from __future__ import annotations

import dataclasses
import math
import re
import reprlib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import yaml

# A decimal number in exponent form that YAML 1.1 leaves as a string ("2e-3", "1E5").
_FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


@dataclass
class DataConfig:
    """Input geometry and case assembly."""

    size: int = 256                      # every slice resized to size x size (bilinear)
    depth: int = 32                      # 3D scans resampled uniformly to at most `depth` slices
    window: Optional[list[float]] = None  # optional intensity window [lo, hi] before min-max scaling
    # per-scan windows by "MODALITY" or "MODALITY/ANATOMY": a name (lung, mediastinum, soft_tissue,
    # abdomen, liver, bone, brain) or "LEVEL,WIDTH" in HU; wins over `window` (raddiag.data.intensity).
    # Training sets both from the prepared dataset (its meta.json), so prediction windows alike.
    windows: dict[str, str] = field(default_factory=dict)
    # how a windowed scan is scaled to [0, 1]: "fixed" (the window's ends are 0 and 1) or "minmax" (over
    # the scan's values left after the clip: data prepared, and runs trained, before 2026-12-07)
    window_scaling: str = "fixed"
    # [size, depth] of the prepared store the run trained from (set by training from its meta.json):
    # prediction reads a scan at that geometry, rounds it to the store's float16 and resizes it as
    # training read the store (raddiag.data.preprocess.store_to_input). None: read at size x depth
    # directly (runs from before 2026-12-07, imported checkpoints).
    stored_geometry: Optional[list[int]] = None
    # Scan caps (README "Scan caps"): at most `max_scans` scans of a case are fed to the model, at
    # most modality_caps[m] of modality m (default_modality_cap for a modality not listed); random
    # per epoch in training, the first in case order at evaluation and prediction. Set per modality
    # with `--max-scans Ultrasound=8` (train, finetune) or `--set data.modality_caps.Ultrasound=8`.
    max_scans: int = 4                   # scans per case fed to the model
    # per-modality caps within one case (the released loader: CT/MRI 3, X-ray 2, others 1)
    modality_caps: dict[str, int] = field(
        default_factory=lambda: {"CT": 3, "MRI": 3, "X-ray": 2}
    )
    default_modality_cap: int = 1
    # "multilabel": any number of classes per case (sigmoid, binary cross-entropy, per-class
    # thresholds); "multiclass": exactly one class per case (softmax, cross-entropy, argmax)
    task: str = "multilabel"
    modality_scheme: str = "raddiag"      # "raddiag": one id per modality; "official": the release's table
    granularity: str = "disorder"         # "disorder" or "icd10"


@dataclass
class ModelConfig:
    """The RadDiag family (paper Section 4.2.1, Table 1)."""

    encoder: str = "resnet_vit"          # "resnet_vit" (mixing) | "resnet" (2D/3D stems + shared) | "vit"
    width: int = 2048                    # scan / case embedding dimension d
    # ResNet-ViT mixing: a 2D ResNet per slice, then a slice transformer with [CLS]
    resnet_depth: int = 50               # 10, 18, 34, 50 (MONAI ResNet)
    resnet_inplanes: list[int] = field(default_factory=lambda: [64, 128, 256, 512])
    slice_layers: int = 1
    slice_heads: int = 1
    # ResNet-based: separate 2D / 3D normalisation stems, then a shared ResNet stage
    stem2d_depth: int = 18
    stem3d_depth: int = 18
    shared_depth: int = 34
    # ViT-based: 2D patches and 3D cubes through separate MLPs, a shared ViT
    patch_size: int = 16
    patch_depth: int = 4                 # cube depth for 3D scans
    vit_layers: int = 6
    vit_heads: int = 8
    vit_mlp_layers: int = 2              # 2 or 4 layers in the patch projection MLPs
    # case-level fusion
    fusion: str = "transformer"          # "transformer" | "max" | "mean" | "random" | "mil_max" | ... (fusion.py)
    fusion_layers: int = 2
    fusion_heads: int = 4
    num_modalities: int = 16             # rows of the modality embedding table (0 = padding)
    # classifier
    head: str = "mlp"                    # "mlp" (Linear, GELU, Linear) | "knowledge"
    text_dim: int = 384                  # label-embedding dimension for the knowledge head
    knowledge_bias: bool = True          # a class-agnostic scalar logit bias in the knowledge head (release: none)
    init: str = "standard"               # "standard" | "release": randn [CLS]/positions/modalities, Xavier transformers
    # numerics
    layer_style: str = "standard"        # "standard" | "official" (the release's LayerNorm/attention)
    dropout: float = 0.0
    grad_checkpoint: bool = False        # activation checkpointing over slice chunks (resnet_vit's backbone)
    # with grad_checkpoint: activations (MiB) the slice backbone may keep for backward; its stages are
    # recomputed from the first (the most memory per FLOP) until the others' fit (0: recompute all)
    checkpoint_keep_mb: float = 0.0
    slice_chunk: int = 64                # slices per ResNet chunk (memory bound)
    # added by the models capability (issue 3)
    in_channels: int = 1                 # 3: grey repeated to 3 channels (the release's convention)
    mlp_ratio: float = 1.0               # transformer FFN width / model width (release: d_ff = d_model)
    random_seed: int = 0                 # seed of the deterministic eval-time pick of fusion="random"
    # the per-slice ResNet's start: "imagenet" (torchvision's ImageNet file in the torch hub cache), a local
    # torchvision/timm ResNet state dict (.pth/.bin/.safetensors), or none; read once when training starts
    # (raddiag.models.pretrained), never when a run folder loads
    pretrained: Optional[str] = None


@dataclass
class TrainConfig:
    """Optimisation (paper Section 11.1 and 4.4)."""

    epochs: int = 100
    warmup_epochs: float = 5.0
    lr: float = 1e-5
    weight_decay: float = 0.05
    batch_size: int = 4
    grad_accum: int = 1
    clip_norm: float = 1.0
    amp: str = "none"                    # "none" | "bf16"
    seed: int = 0
    deterministic: bool = False
    aug_prob: float = 0.15               # each of noise, contrast, affine, elastic
    aug_style: str = "raddiag"           # "raddiag" | "release": the release's parameters, in-plane (training.augment)
    key_slice_swap: float = 0.0          # probability a 3D scan is replaced by its key slice
    key_slice_loss: float = 0.0          # weight of the key-slice attention KL term (release: 0.001)
    case_mix: float = 0.0                # probability a training case is joined by a case of another anatomy,
                                         # labels united (the release's early-fusion training; data.case_mix)
    repeat_factor: float = 0.0           # repeat-factor sampling threshold t (LVIS): rare classes' cases repeat
                                         # sqrt(t / f_c) times per epoch (0 = off; training.sampler)
    checkpoint_every: int = 0            # also checkpoint every K optimiser steps (0 = per epoch only)
    early_stop: int = 0                  # epochs without val improvement before stopping (0 = off)
    num_workers: int = 0
    prefetch: int = 1                    # batches a background thread loads ahead, without loader processes,
                                         # where the step leaves a core free (0: none; training.prefetch)
    cache_mb: int = 1024                 # loaded scans kept in memory from one epoch to the next, train and
                                         # val together, each loader process its share (0: none; data.scan_cache)
    eval_batch_size: int = 8
    # transfer (raddiag finetune): the pre-trained encoder + fusion vs the new classification layer
    encoder_lr_scale: float = 1.0        # their learning rate = lr x this (the head keeps lr)
    linear_probe: bool = False           # freeze them (weights and normalisation statistics): only the head trains


@dataclass
class RunConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    preset: str = "paper"

    # -- serialisation -------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "RunConfig":
        return _from_dict(cls, d).validate()

    def save(self, path: str | Path) -> None:
        Path(path).write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))

    @classmethod
    def load(cls, path: str | Path) -> "RunConfig":
        """A saved config; a missing, non-UTF-8, malformed or ill-typed file raises an error naming it."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: config file does not exist")
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except (yaml.YAMLError, UnicodeDecodeError) as exc:
            problem = " ".join(str(exc).split())
            raise ValueError(f"{path}: not a readable YAML config ({type(exc).__name__}: {problem})") from None
        if not isinstance(data, dict):
            raise ValueError(f"{path}: expected a mapping of sections (data, model, train...), "
                             f"got a {type(data).__name__}")
        data.pop("run_id", None)        # a run folder's stamp (raddiag.run), not a setting
        if isinstance(data.get("data"), dict) and "window_scaling" not in data["data"]:
            data["data"]["window_scaling"] = "minmax"      # saved before the setting: scaled as then
        try:
            return cls.from_dict(data)
        except (TypeError, ValueError, KeyError, AttributeError) as exc:
            raise ValueError(f"{path}: {exc}") from None

    def override(self, items: list[str] | None) -> "RunConfig":
        """Apply ``section.key=value`` overrides (YAML-parsed values); returns self."""
        for item in items or []:
            key, sep, raw = item.partition("=")
            if not sep:
                raise ValueError(f"override {item!r} is not of the form key=value")
            parts = key.strip().split(".")
            if self._set_mapping_entry(parts, raw, item):
                continue
            obj: Any = self
            for p in parts[:-1]:
                if not hasattr(obj, p):
                    raise ValueError(f"override {item!r}: unknown section {p!r}")
                obj = getattr(obj, p)
            name = parts[-1]
            if not dataclasses.is_dataclass(obj) or name not in {f.name for f in dataclasses.fields(obj)}:
                raise ValueError(f"override {item!r}: unknown setting {key!r}")
            hint = typing.get_type_hints(type(obj))[name]
            if dataclasses.is_dataclass(hint):
                raise ValueError(f"override {item!r}: {key!r} is a section; set one of its keys, e.g. "
                                 f"{key}.{dataclasses.fields(hint)[0].name}=...")
            setattr(obj, name, _coerce(yaml.safe_load(raw), hint, key))
        self.validate()
        return self

    def _set_mapping_entry(self, parts: list[str], raw: str, item: str) -> bool:
        """``section.mapping.KEY=value`` (e.g. ``data.modality_caps.Ultrasound=8``): one entry of a
        mapping setting; True when ``parts`` name one."""
        if len(parts) != 3 or not hasattr(self, parts[0]):
            return False
        section = getattr(self, parts[0])
        if not dataclasses.is_dataclass(section) or parts[1] not in {f.name for f in dataclasses.fields(section)}:
            return False
        hint = typing.get_type_hints(type(section))[parts[1]]
        if typing.get_origin(hint) is not dict:
            raise ValueError(f"override {item!r}: {parts[0]}.{parts[1]} is not a mapping")
        value = _coerce(yaml.safe_load(raw), typing.get_args(hint)[1], ".".join(parts))
        getattr(section, parts[1])[parts[2]] = value
        return True

    def validate(self) -> "RunConfig":
        """Refuse values that cannot work (checked after overrides and on load), before any work."""
        from raddiag.data.intensity import check_windows, parse_window

        if self.model.pretrained in ("none", ""):      # --set model.pretrained=none: random weights
            self.model.pretrained = None
        check_geometry(self.data.size, self.data.depth)
        if self.data.stored_geometry is not None:
            g = self.data.stored_geometry
            if not (isinstance(g, (list, tuple)) and len(g) == 2):
                raise ValueError(f"data.stored_geometry must be [size, depth] or null, got {g!r}")
            try:
                check_geometry(*g)
            except ValueError as exc:
                raise ValueError(f"data.stored_geometry {list(g)}: {exc}") from None
        if self.data.window is not None:
            parse_window(self.data.window)
        check_windows(self.data.windows)
        check_scan_caps(self.data)
        if self.data.task not in TASKS:
            raise ValueError(f"data.task must be one of {list(TASKS)}, got {self.data.task!r}")
        t = self.train
        if not (math.isfinite(t.lr) and t.lr >= 0):       # 0 freezes every weight (tests use it)
            raise ValueError(f"train.lr must be a finite number >= 0, got {t.lr}")
        for key, value, allowed in (("model.init", self.model.init, ("standard", "release")),
                                    ("data.window_scaling", self.data.window_scaling, ("fixed", "minmax")),
                                    ("train.aug_style", t.aug_style, ("raddiag", "release"))):
            if value not in allowed:
                raise ValueError(f"{key}={value!r}; choose one of {list(allowed)}")
        if not (math.isfinite(t.case_mix) and 0 <= t.case_mix <= 1):
            raise ValueError(f"train.case_mix must be a probability from 0 (off) to 1, got {t.case_mix}")
        if not (math.isfinite(t.repeat_factor) and 0 <= t.repeat_factor <= 1):
            raise ValueError(f"train.repeat_factor must be from 0 (off) to 1, got {t.repeat_factor}")
        for name in ("epochs", "batch_size", "grad_accum", "eval_batch_size"):
            if getattr(t, name) < 1:
                raise ValueError(f"train.{name} must be >= 1, got {getattr(t, name)}")
        if not t.cache_mb >= 0:
            raise ValueError(f"train.cache_mb must be >= 0 (0: no cache), got {t.cache_mb}")
        return self


MAX_SIZE, MAX_DEPTH = 2048, 1024
TASKS = ("multilabel", "multiclass")     # data.task (raddiag.task)


def scan_cap_overrides(items: list[str] | None) -> list[str]:
    """``--max-scans`` values as ``--set`` overrides: ``N`` (scans a case), ``MODALITY=N`` (scans of
    that modality a case; DICOM codes too: ``US=8``), ``other=N`` (every modality not listed)."""
    out = []
    for item in items or []:
        name, sep, n = item.rpartition("=")
        if not n.strip().isdigit():
            raise ValueError(f"--max-scans {item!r}: expected N or MODALITY=N (e.g. 6, Ultrasound=8, other=2)")
        if not sep:
            out.append(f"data.max_scans={n}")
        elif name.strip().lower() == "other":
            out.append(f"data.default_modality_cap={n}")
        else:
            out.append(f"data.modality_caps.{name.strip()}={n}")
    return out


def check_scan_caps(dc: DataConfig) -> None:
    """Caps are counts >= 1 and every capped modality is one raddiag knows, under its canonical
    name (``US`` becomes ``Ultrasound``): a misspelt key would be silently never applied."""
    from raddiag.data.case import canonical_modality

    if dc.max_scans < 1 or dc.default_modality_cap < 1:
        raise ValueError(f"data.max_scans and data.default_modality_cap must be >= 1, got "
                         f"{dc.max_scans} and {dc.default_modality_cap}")
    caps = {}
    for name, n in dc.modality_caps.items():
        canonical = canonical_modality(name, source="data.modality_caps")
        if n < 1:
            raise ValueError(f"data.modality_caps.{name} must be >= 1, got {n}")
        caps[canonical] = n
    dc.modality_caps = caps


def check_geometry(size: int, depth: int) -> None:
    """The prepared geometry: slices of ``size`` x ``size`` px (8..MAX_SIZE), at most ``depth``
    slices (1..MAX_DEPTH). A bound on the output, as the readers' limits bound the input."""
    if not (isinstance(size, int) and 8 <= size <= MAX_SIZE):
        raise ValueError(f"size must be an integer from 8 to {MAX_SIZE} px, got {size!r}")
    if not (isinstance(depth, int) and 1 <= depth <= MAX_DEPTH):
        raise ValueError(f"depth must be an integer from 1 to {MAX_DEPTH} slices, got {depth!r}")


def _from_dict(cls, d: dict[str, Any]):
    hints = typing.get_type_hints(cls)
    kwargs = {}
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(d) - names
    if unknown:
        raise ValueError(f"unknown {cls.__name__} settings: {sorted(unknown)}")
    for k, v in d.items():
        hint = hints[k]
        if dataclasses.is_dataclass(hint):
            kwargs[k] = _from_dict(hint, v or {})
        else:
            kwargs[k] = _coerce(v, hint, k)
    return cls(**kwargs)


def _shown(value: Any) -> str:
    """``repr(value)`` cut short: a config.yaml of 500 bytes can hold a billion list items by YAML
    aliases (``&a [*b, *b, ...]``), and a message that printed them whole hung the command."""
    r = reprlib.Repr()
    r.maxlevel, r.maxlist, r.maxdict, r.maxstring, r.maxother = 2, 4, 4, 120, 120
    return r.repr(value)


def _coerce(value: Any, hint: Any, key: str) -> Any:
    """Check a parsed value against a field's type; ints widen to floats, nothing else is guessed."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin is typing.Union:
        if value is None and type(None) in args:
            return None
        hint = next(a for a in args if a is not type(None))
        origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"setting {key!r} expects a list, got {_shown(value)}")
        return [_coerce(v, args[0], key) for v in value] if args else list(value)
    if origin is dict:
        if not isinstance(value, dict):
            raise ValueError(f"setting {key!r} expects a mapping, got {_shown(value)}")
        return {str(k): _coerce(v, args[1], key) for k, v in value.items()}
    if hint is bool:
        if not isinstance(value, bool):
            raise ValueError(f"setting {key!r} expects true/false, got {_shown(value)}")
        return value
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint is float and isinstance(value, str) and _FLOAT.fullmatch(value.strip()):
        return float(value)   # YAML 1.1 reads "2e-3" (no dot) as a string
    if hint in (int, float, str) and not isinstance(value, hint) or isinstance(value, bool) and hint is not bool:
        raise ValueError(f"setting {key!r} expects {hint.__name__}, got {_shown(value)}")
    return value


# -- presets ------------------------------------------------------------------
# Key-slice swap rate of `paper`: Section 4.4 says only "randomly replace the 3D scan with its 2D
# key slice" and the release's loaders give no rate; the paper lists the swap beside its image
# augmentations, which run at 15 % each (Supplementary C), so the swap uses that rate too.
PAPER_KEY_SLICE_SWAP = 0.15
RELEASE_KEY_SLICE_LOSS = 0.001   # the release adds 0.001 x the attention KL to the BCE
RELEASE_CASE_MIX = 0.3           # the release's train.sh: n_aug 2, prob 0.7 -> a partner case 30 % of the time
# Activations the checkpointed presets' slice backbone keeps for backward (model.checkpoint_keep_mb): 512 MiB
# holds layer2-4 of 32 slices at 128 px (2 x 16-slice CT), so only the stem and layer1 are recomputed
# (an `official` step 0.55-0.65x the time of recomputing all, interleaved); at 256 px x 128 slices (the
# paper's 4 scans) no stage fits and all are recomputed, as before (README "Training speed and memory").
CHECKPOINT_KEEP_MB = 512.0


def _paper() -> RunConfig:
    """The paper's chosen model (Table 1, Table 2's FM + KE row, Section 4.4): ResNet-50 per slice
    (stride-2 stem: 2048 x 8 x 8 maps at 256 px) from ImageNet, a 6-layer slice transformer with
    [CLS] (8 heads: the paper gives none; the release's slice-transformer class defaults to 6 layers
    and 8 heads), 2-layer 4-head fusion of width 2048, the knowledge-guided head, augmentation at
    15 % per transform, key-slice swap and the key-slice attention loss. Where the paper is silent
    it follows the release (docs/fidelity.md): no weight decay, no scalar logit bias, its
    initialisation and augmentation parameters, case mixing at 30 %, one case per batch."""
    # Activation checkpointing over 8-slice chunks: one training step on a 4-scan x 32-slice x
    # 256 px case peaks at 4.2 GiB RSS on CPU (benchmarks/train_memory.py); outputs are unchanged.
    return RunConfig(
        model=ModelConfig(slice_layers=6, slice_heads=8, head="knowledge", grad_checkpoint=True, slice_chunk=8,
                          checkpoint_keep_mb=CHECKPOINT_KEEP_MB, pretrained="imagenet", knowledge_bias=False,
                          init="release"),
        # batch 1: the release's; the paper's "4 to 32 ... to avoid out-of-memory" meets its own 46 GB at
        # batch 1 on an 80 GB card (4.4), so this model trained one case at a time
        train=TrainConfig(aug_prob=0.15, aug_style="release", key_slice_swap=PAPER_KEY_SLICE_SWAP,
                          key_slice_loss=RELEASE_KEY_SLICE_LOSS, weight_decay=0.0, batch_size=1,
                          case_mix=RELEASE_CASE_MIX),
        preset="paper",
    )


def _official() -> RunConfig:
    """The authors' released early-fusion model (docs/official-checkpoint.md): the same ResNet-50
    and fusion, but a 1-layer 1-head slice transformer in the release's layer style, the MLP head,
    the grey slice repeated to 3 channels, the release's modality ids. `import-official` starts
    from this preset."""
    return RunConfig(
        data=DataConfig(modality_scheme="official"),
        model=ModelConfig(slice_layers=1, slice_heads=1, layer_style="official", head="mlp", in_channels=3,
                          grad_checkpoint=True, slice_chunk=8, checkpoint_keep_mb=CHECKPOINT_KEEP_MB),
        train=TrainConfig(key_slice_loss=RELEASE_KEY_SLICE_LOSS),
        preset="official",
    )


def _small() -> RunConfig:
    return RunConfig(
        data=DataConfig(size=128, depth=16),
        model=ModelConfig(resnet_depth=18, width=256, fusion_heads=4, slice_heads=4,
                          stem2d_depth=18, stem3d_depth=18, shared_depth=18,
                          patch_size=16, vit_layers=4, vit_heads=4),
        train=TrainConfig(epochs=30, warmup_epochs=2, lr=3e-4, batch_size=8),
        preset="small",
    )


def _tiny() -> RunConfig:
    return RunConfig(
        data=DataConfig(size=64, depth=8),
        model=ModelConfig(resnet_depth=10, resnet_inplanes=[16, 32, 64, 128], width=64,
                          slice_heads=2, fusion_heads=2, stem2d_depth=10, stem3d_depth=10,
                          shared_depth=10, patch_size=16, patch_depth=2, vit_layers=2,
                          vit_heads=2),
        train=TrainConfig(epochs=12, warmup_epochs=1, lr=1e-3, batch_size=8),
        preset="tiny",
    )


# -- recipes: presets for a job, training settings included (README "Which preset for which job") --
# Caps for cases with several images of one modality: an ultrasound study or a mammography exam
# (4 standard views) keeps up to 4 images, instead of the release's 1 for every modality but CT,
# MRI (3) and X-ray (2). The paper's presets keep the release's caps.
MULTI_IMAGE_CAPS = {"CT": 3, "MRI": 3, "X-ray": 2, "Ultrasound": 4, "Mammography": 4}


def _learns_disease(cfg: RunConfig) -> RunConfig:
    """What the ``cpu`` and ``gpu`` recipes add to a geometry (``_cpu`` says why): the multi-image
    scan caps, the ResNet-based encoder, the fusion module, the knowledge-guided head,
    repeat-factor sampling (t = 0.05) and key-slice swap (0.3)."""
    cfg.data.modality_caps = dict(MULTI_IMAGE_CAPS)
    cfg.model.encoder, cfg.model.fusion, cfg.model.head = "resnet", "transformer", "knowledge"
    cfg.train.repeat_factor, cfg.train.key_slice_swap = 0.05, 0.3
    return cfg


def _cpu() -> RunConfig:
    """The demo's recipe, for a CPU: the ``tiny`` geometry (64 px, 8 slices) with the ResNet-based
    encoder, the fusion module and the knowledge-guided head, 8 epochs, repeat-factor sampling and
    key-slice swap. Why these (README "What `make demo` does", scripts/demo_diagnosis.py): with the
    ResNet-ViT mixing encoder the tiny model ranked disorders near chance inside one anatomy; the
    ResNet-based encoder (paper Table 1) learns them. Tail classes (5-9 training cases) were then
    ranked *below* chance inside their anatomy: their weights, tied by the knowledge head to a
    frequent sibling's, were pushed away from that sibling's many negative cases and from their own
    cases with them. Repeat-factor sampling (LVIS, t = 0.05) shows the rare classes' cases 2-4 times
    an epoch; key-slice swap (paper 4.4) shows the finding's slice as a 2D scan."""
    cfg = _learns_disease(_tiny())
    cfg.train.epochs = 8
    # No loader process: loading (0.4-0.6 ms a case) runs between steps and the step keeps every core.
    # A loader process takes a core from the step (training.prefetch.loading_plan): on 2 cores
    # 146 cases/s against 172-191 without it (benchmarks/train_overhead.py --recipes demo, README
    # issue 29); it paid while loading a case cost 1.5 ms.
    cfg.preset = "cpu"
    return cfg


def _gpu() -> RunConfig:
    """The ``cpu`` recipe at the ``small`` geometry, for a real data set of hundreds to a few thousand
    cases on one GPU: 128 px, 16 slices, ResNet-18 stems and shared stage, width 256, 30 epochs at
    lr 3e-4 with augmentation at 15 % per transform, stopping after 8 epochs without a better
    validation AUC."""
    cfg = _learns_disease(_small())
    cfg.train.aug_prob = 0.15
    cfg.train.early_stop = 8
    cfg.preset = "gpu"
    return cfg


PRESETS = {"paper": _paper, "official": _official, "small": _small, "tiny": _tiny, "cpu": _cpu, "gpu": _gpu}
# what each preset is for (`raddiag describe --preset`, `raddiag train --help`)
PRESET_JOBS = {
    "cpu": "a CPU try-out, or a small set on a laptop (the demo's recipe; minutes)",
    "gpu": "a real set of hundreds to a few thousand cases on one GPU",
    "paper": "the paper's model, trained on GPUs (ResNet-50 + slice transformer, 256 px, 32 slices)",
    "official": "the authors' released checkpoint's architecture (import-official starts from it)",
    "small": "a 128 px development model (ResNet-ViT mixing encoder, MLP head)",
    "tiny": "a 64 px development model for tests (ResNet-ViT mixing encoder, MLP head)",
}


def preset(name: str, overrides: list[str] | None = None) -> RunConfig:
    """A fresh :class:`RunConfig` for a named preset, with overrides applied."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
    return PRESETS[name]().override(overrides)

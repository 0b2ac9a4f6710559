"""raddiag.models: the RadDiag model family (paper Section 4.2.1, Table 1).

- :func:`build_model` / :class:`RadDiag` / :class:`ModelOutput`: encoder per scan
  (``resnet_vit`` | ``resnet`` | ``vit``), fusion (``transformer``; the paper's
  scan-level pooling baselines ``max`` | ``mean`` | ``random``; their end-to-end MIL variants
  ``mil_max`` | ``mil_mean`` | ``mil_random``), head (``mlp`` | ``knowledge``); presets in :mod:`raddiag.config`.
- :func:`key_slice_attention_loss`: the optional auxiliary loss term for the trainer.
- :func:`save_model` / :func:`load_model`: run-folder persistence (safetensors, no pickle).
- :func:`import_official`: the authors' released weights into a run folder.
- :func:`load_pretrained_backbone`: a local torchvision/timm ResNet file into the per-slice ResNet.
"""
from raddiag._lazy import lazy_exports

_EXPORTS = {
    "pool_scan_logits": ".fusion", "trains_on_scans": ".fusion", "load_model": ".io", "save_model": ".io", "ModelOutput": ".raddiag",
    "RadDiag": ".raddiag", "build_model": ".raddiag", "key_slice_attention_loss": ".raddiag",
    "stand_in_label_embeddings": ".raddiag",
    "import_official": ".official", "load_pretrained_backbone": ".pretrained",
}
__getattr__ = lazy_exports(__name__, _EXPORTS)
__all__ = list(_EXPORTS)

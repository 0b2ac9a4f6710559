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
  train_cases.json               {"case_ids": [...], "scans": [...]}: the cases trained on and their
                                 scans' files (optional; evaluate
                                 warns of evaluated cases among them, raddiag.evaluation.data_checks)
  metrics.csv, tensorboard/      training curves
  checkpoints/last.pt            full training state for --resume (weights_only-loadable)
```
Loading never unpickles: weights are safetensors, the rest JSON / YAML. :func:`resolve_run` is
the one place a path given as a run is read, and also takes the authors' released checkpoint.

The parts that must belong together (``config.yaml``, ``label_space.json``, ``model.safetensors``
and ``label_embeddings.safetensors``) carry one *run id* (a ``run_id`` key; the safetensors
files in their metadata), given when a run starts (training, ``save_model`` with a config and a
label space) and kept by every later write (resume, new thresholds). :meth:`RunFolder.check`
refuses a folder whose parts carry different ids, naming them: old weights beside a new label
list would otherwise print other diseases' names with the old probabilities. A folder whose
parts carry no id at all (written before ids, or by hand) is taken as it is.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from raddiag.config import RunConfig
from raddiag.data.labels import LabelSpace


LAST_CHECKPOINT = "last.pt"          # checkpoints/last.pt: the state --resume continues from
RUN_ID = "run_id"                    # the key of the run id in each part (module doc)
_KEEP = object()                     # save_*: keep the folder's run id
_UNREADABLE = object()               # a part whose id cannot be read: its own loader names the problem


def new_run_id() -> str:
    import uuid

    return uuid.uuid4().hex


@dataclass
class RunFolder:
    root: Path
    # a replacing run trains in a hidden folder beside its target and is swapped in whole at the end
    # (raddiag.staging): ``final`` is that target, the folder a user should be shown
    final: Optional["RunFolder"] = field(default=None, compare=False, repr=False)

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
    train_cases = property(lambda self: self.root / "train_cases.json")

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
        """Raise a clear error when this is not a usable run folder: a part missing, or parts
        of different runs (module doc)."""
        if not self.root.is_dir():
            raise FileNotFoundError(f"{self.root}: run folder does not exist")
        for p in (self.config, self.labels, self.weights):
            if not p.exists():
                raise FileNotFoundError(f"{self.root}: not a complete run folder ({p.name} is missing)")
        self.check_parts()
        return self

    def part_ids(self) -> dict:
        """The run id of each part present (None: the part carries none); label embeddings only
        where the config's head reads them (a file left from an earlier knowledge-head run is not
        a part of an MLP-head run)."""
        parts = [self.config, self.labels, self.weights]
        if self.label_embeddings.exists() and _head(self.config) in ("knowledge", None):
            parts.append(self.label_embeddings)
        return {p.name: _part_id(p) for p in parts if p.exists()}

    def run_id(self) -> Optional[str]:
        """The folder's run id: the first part's that carries one (None: no part does)."""
        return next((i for i in self.part_ids().values() if isinstance(i, str)), None)

    def fingerprint(self) -> str:
        """SHA-256 over the files that set a prediction (config, label space with its thresholds,
        weights, label embeddings): equal only for the same run at the same point."""
        import hashlib

        from raddiag.models.release import file_sha256     # a layer above this module

        h = hashlib.sha256()
        for p in (self.config, self.labels, self.weights, self.label_embeddings):
            if p.exists():
                h.update(f"{p.name} {file_sha256(p)}\n".encode())
        return h.hexdigest()

    def check_parts(self) -> None:
        """Refuse parts of different runs, naming which part carries which id."""
        ids = self.part_ids()
        if any(i is _UNREADABLE for i in ids.values()) or len(set(ids.values())) < 2:
            return
        groups: dict = {}
        for name, i in ids.items():
            groups.setdefault(i, []).append(name)
        said = "; ".join(f"{' and '.join(names)} " + (f"of run {i[:12]}" if i else "carry no run id")
                         for i, names in groups.items())
        raise ValueError(f"{self.root}: its files do not belong together ({said}): a run replaced or "
                         "interrupted half-way, or files copied in; train the run again or restore the folder")

    def claim_for_training(self, resume: bool, overwrite: bool) -> bool:
        """Refuse to train over an existing run unless asked: ``resume`` needs its checkpoint;
        ``overwrite`` starts afresh. True when a run here is to be replaced: the new one is then
        trained beside it and swapped in whole when it completes (:mod:`raddiag.staging`), so a
        failure or a kill leaves the old run as it was."""
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
            return False
        held = [p.name for p in (last, self.weights) if p.exists()]
        if held and not overwrite:
            raise ValueError(f"{self.root}: already holds a training run ({', '.join(held)}); pass --resume to "
                             "continue it, --overwrite to train afresh over it, or choose another --out")
        return bool(held)

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

    def trained_cases(self) -> Optional[dict]:
        """``{"ids": set, "scans": set or None}`` of the cases the run trained on (``train_cases.json``:
        their ids and their scans' files, :func:`raddiag.data.store.scan_file`), or None when it
        does not record them; an unreadable file raises an error naming it."""
        import json

        if not self.train_cases.is_file():
            return None
        try:
            record = json.loads(self.train_cases.read_text(encoding="utf-8"))
            ids, scans = record["case_ids"], record.get("scans")
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"{self.train_cases}: not a readable record of training cases "
                             f"({type(exc).__name__}: {exc})") from None
        if not isinstance(ids, list) or not isinstance(scans, (list, type(None))):
            raise ValueError(f"{self.train_cases}: 'case_ids' (and 'scans') must be lists")
        return {"ids": {str(i) for i in ids}, "scans": None if scans is None else {str(f) for f in scans}}

    def load_config(self) -> RunConfig:
        return RunConfig.load(self.config)

    def load_labels(self) -> LabelSpace:
        return LabelSpace.load(self.labels)

    def save_config(self, cfg: RunConfig, run_id=_KEEP) -> None:
        """``config.yaml`` with the run id (``_KEEP``: the folder's), written whole or not at all."""
        import yaml

        data = cfg.to_dict()
        run_id = self.run_id() if run_id is _KEEP else run_id
        text = yaml.safe_dump({RUN_ID: run_id, **data} if run_id else data, sort_keys=False)
        _write_atomic(self.config, text.encode())

    def save_labels(self, labels: LabelSpace, run_id=_KEEP) -> None:
        """``label_space.json`` with the run id (``_KEEP``: the folder's), written whole or not at all."""
        import json

        run_id = self.run_id() if run_id is _KEEP else run_id
        data = {RUN_ID: run_id, **labels.to_dict()} if run_id else labels.to_dict()
        _write_atomic(self.labels, json.dumps(data, indent=1).encode())

    def save_weights(self, model, run_id=_KEEP) -> None:
        """``model.safetensors`` from ``model``'s state (metadata: format, preset, run id; ``_KEEP``:
        the folder's run id), written whole or not at all."""
        from safetensors.torch import save

        run_id = self.run_id() if run_id is _KEEP else run_id
        state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
        meta = {"format": "pt", "preset": model.cfg.preset, **({RUN_ID: run_id} if run_id else {})}
        _write_atomic(self.weights, save(state, metadata=meta))

    def load_label_embeddings(self):
        """The stored label embeddings tensor, or None when the run has none."""
        if not self.label_embeddings.exists():
            return None
        tensors = read_safetensors(self.label_embeddings)
        if "embeddings" not in tensors:
            raise ValueError(f"{self.label_embeddings}: has no tensor 'embeddings' (has {sorted(tensors)[:5]})")
        return tensors["embeddings"]

    def save_label_embeddings(self, emb, run_id=_KEEP) -> None:
        from safetensors.torch import save

        run_id = self.run_id() if run_id is _KEEP else run_id
        blob = save({"embeddings": emb.detach().float().contiguous().cpu()},
                    metadata={RUN_ID: run_id} if run_id else None)
        _write_atomic(self.label_embeddings, blob)

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


def _head(config: Path) -> Optional[str]:
    """``model.head`` of a config file (None: unreadable)."""
    import yaml

    try:
        return str(yaml.safe_load(config.read_text(encoding="utf-8"))["model"]["head"])
    except Exception:  # noqa: BLE001 - its loader names the problem
        return None


def _part_id(path: Path):
    """The run id ``path`` carries (None: none), or ``_UNREADABLE``."""
    try:
        if path.suffix == ".safetensors":
            from safetensors import safe_open

            with safe_open(str(path), framework="numpy") as f:
                value = (f.metadata() or {}).get(RUN_ID)
        elif path.suffix == ".json":
            import json

            value = json.loads(path.read_text(encoding="utf-8-sig")).get(RUN_ID)
        else:
            import yaml

            value = yaml.safe_load(path.read_text(encoding="utf-8")).get(RUN_ID)
    except Exception:  # noqa: BLE001 - unreadable (or not a mapping): the part's loader names the problem
        return _UNREADABLE
    return value if isinstance(value, str) or value is None else str(value)


def _write_atomic(path: Path, data: bytes) -> None:
    from raddiag.staging import atomic_write

    atomic_write(path, lambda f: f.write(data))

"""The run folder: everything inference needs, in plain files.

```
RUN/
  config.yaml                    RunConfig (preset, data geometry, model, training)
  label_space.json               LabelSpace (names, codes, counts, groups, val thresholds)
  label_embeddings.safetensors   {"embeddings": [C, text_dim]} for the knowledge head (optional)
  model.safetensors              weights of the best checkpoint
  metrics.csv, tensorboard/      training curves
  checkpoints/last.pt            full training state for --resume (weights_only-loadable)
```
Loading never unpickles: weights are safetensors, the rest JSON / YAML.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from raddiag.config import RunConfig
from raddiag.data.labels import LabelSpace


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

    def create(self) -> "RunFolder":
        self.root.mkdir(parents=True, exist_ok=True)
        return self

    def check(self) -> "RunFolder":
        """Raise a clear error when this is not a usable run folder."""
        if not self.root.is_dir():
            raise FileNotFoundError(f"{self.root}: run folder does not exist")
        for p in (self.config, self.labels, self.weights):
            if not p.exists():
                raise FileNotFoundError(f"{self.root}: not a complete run folder ({p.name} is missing)")
        return self

    def load_config(self) -> RunConfig:
        return RunConfig.load(self.config)

    def load_labels(self) -> LabelSpace:
        return LabelSpace.load(self.labels)

    def load_label_embeddings(self):
        """The stored label embeddings tensor, or None when the run has none."""
        if not self.label_embeddings.exists():
            return None
        from safetensors.torch import load_file

        return load_file(str(self.label_embeddings))["embeddings"]

    def save_label_embeddings(self, emb) -> None:
        from safetensors.torch import save_file

        save_file({"embeddings": emb.detach().float().contiguous().cpu()}, str(self.label_embeddings))

"""Defaults of knowledge-encoder training, in a module light enough for the CLI to import."""

DEFAULTS = dict(steps=200, batch_size=24, lr=1e-4, temperature=0.05, holdout_fraction=0.1, train_layers=3,
                hard_negatives=0.0)

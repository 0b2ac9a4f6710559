"""Each class's AUC inside each anatomy of a demo's (or ``raddiag evaluate``'s) output folder.

    python scripts/within_anatomy_classes.py demo-out

prints, per anatomy, ``class(test positives/training cases): AUC`` for the classes with a positive
among that anatomy's test cases, ranked against the other test cases of the same anatomy (the
classes behind the summary's within-anatomy figure, ``raddiag.demo.within_anatomy``).
"""
import sys
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score

from raddiag.run import RunFolder


def main(out: str) -> None:
    d = np.load(Path(out) / "predictions.npz", allow_pickle=True)
    labels = RunFolder(Path(out) / "run").load_labels()
    scores, y, anatomy = d["scores"], d["labels"], d["anatomy"]
    for name in sorted(set(anatomy)):
        m = anatomy == name
        cells = [f"{labels.names[c]}({int(y[m, c].sum())}/{labels.counts[c]}): "
                 f"{100 * roc_auc_score(y[m, c], scores[m, c]):.0f}"
                 for c in range(y.shape[1]) if 0 < y[m, c].sum() < m.sum()]
        print(f"{name} ({m.sum()} cases): " + ", ".join(cells))


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "demo-out")

"""Case mixing (``train.case_mix``): the release's early-fusion training joins a training case
with a case of another anatomy and trains on the union of their labels.

The release's rule (its ``RadNet_Dataset_earlyAna`` loader with ``n_image 4, n_aug 2, prob 0.7``:
the ``_4_2_0.7_`` in the released checkpoint's name), as raddiag applies it:

- with probability ``case_mix`` (release: 1 - 0.7 = 0.3) a training case gets a partner;
- the partner's anatomy is drawn among the *other* anatomies of the training cases, weighted by
  the release's table (:data:`RELEASE_ANATOMY_WEIGHTS`; a name the table lacks weighs as its
  ``Unknown``, a case without an anatomy is ``Unknown``), then the partner uniformly among that
  anatomy's training cases;
- each case brings its own scans, chosen under the usual caps (``data.max_scans``, the
  per-modality caps), so a mixed case holds up to twice ``max_scans`` scans, the partner's after
  the case's own; modality ids count within each case, as the release counts within each entry;
- the labels are the union of both cases' (one rule with prepared cases: ``Normal`` only when
  neither has a disorder).

Training only: evaluation and prediction read cases as they are (the paper, Section 4.4: "no
... random mix-up strategies are activated" at inference). Every draw comes from a generator
seeded by ``(seed, epoch, case)``, so a run is reproducible and resumes exactly.
"""
from __future__ import annotations

import logging
from collections import defaultdict
from typing import Optional

import numpy as np
import torch
from torch.utils.data import Dataset

log = logging.getLogger(__name__)

# The release's partner-anatomy weights (RP3D-DiagDS anatomy names).
RELEASE_ANATOMY_WEIGHTS = {"Spine": 6, "Breast": 1, "Head and Neck": 2, "Abdomen and Pelvis": 2, "Lower Limb": 3,
                           "Chest": 3, "Upper Limb": 5, "Unknown": 3, "Mixed": 4}
UNKNOWN = "Unknown"
_STREAM = 0x6D6978          # a generator stream apart from the case's own scan choice and augmentation


def anatomy_name(record: dict) -> str:
    return record.get("anatomy") or UNKNOWN


class CaseMix(Dataset):
    """A training case dataset (a ``CaseDataset`` or a subset of one: anything with ``parent`` /
    ``indices``, or the dataset itself) whose samples are mixed with probability ``prob``.
    Exposes what the trainer's loaders need (``cfg``, ``labels``, ``targets``, ``set_epoch``)."""

    def __init__(self, cases, prob: float, seed: int = 0):
        if not 0.0 <= prob <= 1.0:
            raise ValueError(f"train.case_mix={prob} must be a probability in [0, 1]")
        self.cases = cases
        self.parent = getattr(cases, "parent", cases)
        self.indices = [int(i) for i in getattr(cases, "indices", range(len(cases)))]
        self.cfg, self.labels = cases.cfg, cases.labels
        self.prob, self.seed = float(prob), int(seed)
        self.by_anatomy: dict[str, list[int]] = defaultdict(list)
        for i in self.indices:
            self.by_anatomy[anatomy_name(self.parent.records[i])].append(i)
        if prob > 0 and len(self.by_anatomy) < 2:
            log.warning("train.case_mix=%g mixes nothing: every training case has the anatomy %r (a partner "
                        "must be of another anatomy)", prob, next(iter(self.by_anatomy), None))

    @property
    def targets(self) -> np.ndarray:
        return self.cases.targets

    def set_epoch(self, epoch: int) -> None:
        self.cases.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.indices)

    def partner(self, i: int, rng: np.random.Generator) -> Optional[int]:
        """The parent index of a partner for parent case ``i``: another anatomy (release weights),
        then a case of it; None when the training cases have no other anatomy."""
        own = anatomy_name(self.parent.records[i])
        others = [a for a in self.by_anatomy if a != own]
        if not others:
            return None
        w = np.array([RELEASE_ANATOMY_WEIGHTS.get(a, RELEASE_ANATOMY_WEIGHTS[UNKNOWN]) for a in others], float)
        pool = self.by_anatomy[others[rng.choice(len(others), p=w / w.sum())]]
        return pool[int(rng.integers(len(pool)))]

    def __getitem__(self, n: int) -> dict:
        sample = self.cases[n]
        i = self.indices[n]
        rng = np.random.default_rng([self.seed, self.parent.epoch, i, _STREAM])
        if rng.random() >= self.prob or (j := self.partner(i, rng)) is None:
            return sample
        p = self.parent
        a, b = p.records[i], p.records[j]
        other = p.case_sample(j, b, p.targets[j], rng=rng)     # the partner's own scan choice, from this draw
        union = {"labels": [*(a.get("labels") or []), *(b.get("labels") or [])],
                 "icd10": [*(a.get("icd10") or []), *(b.get("icd10") or [])]}
        target = p.labels.encode(p.labels.case_labels(union), strict=False)
        return {"scans": sample["scans"] + other["scans"], "labels": torch.from_numpy(target),
                "case_id": f"{sample['case_id']}+{other['case_id']}", "anatomy": sample["anatomy"]}


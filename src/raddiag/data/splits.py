"""Leak-free, seeded patient-level splits (train / val / test = 7:1:2 as in the paper)."""
from __future__ import annotations

import random
from typing import Sequence

from raddiag.data.case import SPLITS, Case


def assign_splits(cases: Sequence[Case], ratios: Sequence[float] = (0.7, 0.1, 0.2), seed: int = 0) -> None:
    """Fill ``case.split`` where it is None, by patient (``case.patient`` or the case id).

    Deterministic given the seed, independent of case order; every case of a patient lands in the same split. Cases that already have a split keep it;
    a patient whose cases already carry a split gives that split to its unassigned cases.
    """
    if len(ratios) != 3 or abs(sum(ratios) - 1) > 1e-6:
        raise ValueError(f"split ratios must be three numbers summing to 1, got {ratios}")
    fixed: dict[str, str] = {}
    for c in cases:
        if c.split is not None:
            key = c.patient or c.id
            if fixed.setdefault(key, c.split) != c.split:
                raise ValueError(f"patient {key!r} has cases in both {fixed[key]!r} and {c.split!r} splits")
    # Unassigned patients: sorted (order-independent), shuffled with the seed, cut at exact ratios.
    patients = sorted({c.patient or c.id for c in cases if c.split is None} - set(fixed))
    random.Random(seed).shuffle(patients)
    n = len(patients)
    n_train = round(ratios[0] * n)
    n_val = round(ratios[1] * n)
    for i, key in enumerate(patients):
        fixed[key] = SPLITS[0] if i < n_train else SPLITS[1] if i < n_train + n_val else SPLITS[2]
    for c in cases:
        if c.split is None:
            c.split = fixed[c.patient or c.id]

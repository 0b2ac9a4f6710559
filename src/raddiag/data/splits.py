"""Leak-free, seeded patient-level splits (train / val / test = 7:1:2 as in the paper)."""
from __future__ import annotations

import os
import random
import warnings
from collections import Counter, defaultdict
from typing import Sequence

from raddiag.data.case import SPLITS, Case
from raddiag.data.errors import InputWarning, examples
from raddiag.data.labels import case_classes


def assign_splits(cases: Sequence[Case], ratios: Sequence[float] = (0.7, 0.1, 0.2), seed: int = 0,
                  by_label: bool = False) -> None:
    """Fill ``case.split`` where it is None, by patient (``case.patient`` or the case id).

    Deterministic given the seed, independent of case order; every case of a patient lands in the same split. Cases that already have a split keep it;
    a patient whose cases already carry a split gives that split to its unassigned cases.
    ``by_label``: stratified by label (:func:`stratified_patients`) instead of cut at random.
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
    if by_label:
        fixed.update(stratified_patients(cases, patients, fixed, ratios))
    n = len(patients)
    n_train = round(ratios[0] * n)
    n_val = round(ratios[1] * n)
    for i, key in enumerate(p for p in patients if p not in fixed):
        fixed[key] = SPLITS[0] if i < n_train else SPLITS[1] if i < n_train + n_val else SPLITS[2]
    for c in cases:
        if c.split is None:
            c.split = fixed[c.patient or c.id]


def stratified_patients(cases: Sequence[Case], patients: Sequence[str], fixed: dict[str, str],
                        ratios: Sequence[float]) -> dict[str, str]:
    """A split for each of ``patients`` (in their seeded order), stratified by label: the iterative
    stratification of Sechidis et al. (2011) over patients. The patients of the rarest labels go
    first, each to a split that has no patient of its rarest label yet when that label has three
    patients or more (so a rare class has a validation case to choose its threshold on and a test
    case to be scored on), else to the split that wants that label most (``ratio x its patients``,
    less those placed), then the split that wants the most patients. ``fixed`` patients count
    where they are. A patient of one label always serves that label; with several, its rarest."""
    labels: dict[str, set] = defaultdict(set)
    for c in cases:
        labels[c.patient or c.id].update(c.labels or ["Normal"])
    total = Counter(label for ls in labels.values() for label in ls)
    have = {s: Counter() for s in SPLITS}
    size = {s: r * len(labels) for s, r in zip(SPLITS, ratios)}
    share = dict(zip(SPLITS, ratios))
    out = {}

    def place(key: str, split: str) -> None:
        have[split].update(labels[key])
        size[split] -= 1
        out[key] = split

    def rank(split: str, label: str) -> tuple:
        uncovered = total[label] >= 3 and have[split][label] == 0
        return uncovered, share[split] * total[label] - have[split][label], size[split]

    for key, split in fixed.items():
        place(key, split)
    open_splits = [s for s in SPLITS if share[s] > 0]          # a split of ratio 0 takes no patient
    for key in sorted(patients, key=lambda p: min(total[label] for label in labels[p])):   # stable: seeded order
        rarest = min(labels[key], key=lambda label: (total[label], label))
        place(key, max(open_splits, key=lambda s: rank(s, rarest)))
    placed = {k: v for k, v in out.items() if k not in fixed}
    _warn_drift(placed, ratios)
    return placed


def _warn_drift(placed: dict[str, str], ratios: Sequence[float], tolerance: float = 0.05) -> None:
    """Warn when the stratified split's shares of patients are off the ratios by more than
    ``tolerance``: every class of 3 patients or more takes one in each split, and many small
    classes take more than the ratios give val and test."""
    n = len(placed)
    got = [sum(v == s for v in placed.values()) / n for s in SPLITS] if n else list(ratios)
    if any(abs(g - r) > tolerance for g, r in zip(got, ratios)):
        warnings.warn(f"the split by label gives train / val / test {' / '.join(f'{g:.2f}' for g in got)} of "
                      f"the {n} patients it placed, asked {' / '.join(f'{r:g}' for r in ratios)}: each class of 3 "
                      "patients or more has one in every split, and its many small classes take more than the "
                      "ratios give", InputWarning, stacklevel=3)


def coverage_note(cases: Sequence[Case]) -> str:
    """The classes (disorders) of two cases or more that the split left without a case in ``val``
    or in ``test``, or ``""``. A split by patient cuts at random: on a long-tailed set a rare class
    can land in train whole, and then nothing chooses its threshold or scores it on test."""
    counts: dict[str, Counter] = defaultdict(Counter)
    for c in cases:
        for label in set(case_classes(c)):     # as the label space counts it ("Normal; X" is abnormal)
            counts[label][c.split] += 1
    parts = []
    for split, why in (("val", "its F1 / MCC / ACC threshold falls back to 0.5"), ("test", "no test figure")):
        missing = sorted(n for n, k in counts.items() if sum(k.values()) >= 2 and not k[split])
        if missing:
            shown = [f"{n!r} ({', '.join(f'{s} {k}' for s, k in sorted(counts[n].items()) if k)})" for n in missing]
            parts.append(f"{len(missing)} without a {split} case ({why}): {examples(shown)}")
    if not parts:
        return ""
    return ("split coverage: " + "; ".join(parts) + ". Give such cases a split (a 'split' column in a manifest, "
            "or train / val / test folders), or prepare with --split-by label (each class of 3 patients or more in "
            "every split).")


def untrained_note(cases: Sequence[Case]) -> str:
    """The classes (disorders) whose every case is outside ``train``, or ``""``: training never
    learns them, whether they have one case or many (:func:`coverage_note` names classes of two
    cases or more without a val or test case). Cases none of which is in ``train`` (a set to
    evaluate on): ``""``."""
    if not any(c.split == "train" for c in cases):
        return ""
    counts: dict[str, Counter] = defaultdict(Counter)
    for c in cases:
        for label in set(case_classes(c)):     # as the label space counts it ("Normal; X" is abnormal)
            counts[label][c.split] += 1
    missing = sorted(n for n, k in counts.items() if not k["train"])
    if not missing:
        return ""
    shown = [f"{n!r} ({', '.join(f'{s} {k}' for s, k in sorted(counts[n].items()) if k)})" for n in missing]
    return (f"split coverage: {len(missing)} class(es) without a train case (never learned): "
            f"{examples(shown, shown=10)}. Give one of their cases the split 'train' in the manifest, or leave "
            "them out.")


def one_class_note(cases: Sequence[Case]) -> str:
    """``""``, or a note that every case carries the same one class: nothing to tell apart (a new
    user's `--limit 300` took the first 300 cases of a source sorted by class, all Normal)."""
    kinds = {frozenset(case_classes(c)) for c in cases}     # a case's classes as the label space has them
    if len(cases) < 2 or len(kinds) > 1 or not next(iter(kinds)):   # (codes only: no disorder class)
        return ""
    name = " + ".join(sorted(next(iter(kinds))))
    return (f"one class: all {len(cases)} cases are {name!r}, so there is nothing for a classifier to tell "
            "apart (with --limit, the first cases of a source sorted by class may all be one class)")


def shared_files_note(cases: Sequence[Case]) -> str:
    """Scan files that more than one case lists, or ``""``; in cases of different splits, one
    image would be trained on and tested on. A file is known by its real path: reached through a
    link (a case folder's ``prior -> ../P1``) it is the same file."""
    where: dict[str, list[Case]] = defaultdict(list)
    for c in cases:
        for path in {os.path.realpath(p) for s in c.scans for p in s.paths}:
            where[path].append(c)
    shared = {p: cs for p, cs in where.items() if len(cs) > 1}
    if not shared:
        return ""
    across = [p for p, cs in shared.items() if len({c.split for c in cs}) > 1]
    shown = [f"{p} ({', '.join(f'{c.id!r} {c.split}' for c in cs[:3])}{f' and {len(cs) - 3} more' if len(cs) > 3 else ''})"
             for p, cs in sorted(shared.items(), key=lambda x: (x[0] not in across, x[0]))]
    return (f"{len(shared)} scan file(s) belong to more than one case, {len(across)} of them across splits "
            f"(trained on and tested on): {examples(shown)}")

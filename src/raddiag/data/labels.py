"""Label spaces: class names, ICD-10-CM codes, training counts, head / medium / tail.

``Normal`` is always class 0 and always head. Groups follow the paper: head has
at least ``head_min`` (100) training cases, medium at least ``medium_min`` (30),
tail fewer. A label space without training counts may carry fixed groups instead
(``fixed_groups``, with ``group_note`` saying where they come from): the authors' release
evaluates its label order in fixed head / medium / tail ranges (:func:`release_groups`).
Thresholds chosen on the validation split travel with the label space.
"""
from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Optional, Sequence

import numpy as np

from raddiag.data.case import NORMAL, Case

GROUPS = ("head", "medium", "tail")
GRANULARITIES = ("disorder", "icd10")
DEFAULT_THRESHOLD = 0.5    # a class without a stored threshold (none chosen on validation)
# The release's evaluation (its src/Eval/eval.py, compute_metrics) cuts its label order, sorted by
# descending training frequency, at fixed indices: head [:a], medium [a:b], tail [b:].
RELEASE_GROUP_CUTS = {"disorder": (85, 555), "icd10": (165, 395)}


def release_groups(n: int, granularity: str = "disorder") -> tuple[list[str], str]:
    """Head / medium / tail of the release's ``n`` classes by their index, and a note saying so."""
    a, b = RELEASE_GROUP_CUTS[granularity]
    groups = ["head" if i < a else "medium" if i < b else "tail" for i in range(n)]
    note = (f"the release's fixed ranges of its label order ({granularity} level: head = classes 0-{a - 1}, "
            f"medium = {a}-{b - 1}, tail = {b}+), as its own evaluation groups them")
    return groups, note


def stored_thresholds(thr, fallback) -> list[Optional[float]]:
    """``thr [C]`` as a label space stores them: ``None`` where ``fallback`` (no chosen threshold),
    which :meth:`LabelSpace.threshold_values` reads back as the fallback, counted as one."""
    return [None if fb else float(t) for t, fb in zip(np.asarray(thr, dtype=np.float64), fallback)]


def check_thresholds(values, names: Sequence[str], where: str = "thresholds") -> list[Optional[float]]:
    """Per-class decision thresholds as floats, ``None`` where a class has none; a ValueError
    naming ``where`` and the class for a wrong count or a value that is not a finite number
    (a NaN threshold puts no case above it: every F1 would be 0 without a word)."""
    values = list(values)
    if len(values) != len(names):
        raise ValueError(f"{where}: {len(values)} thresholds for {len(names)} classes")
    out = []
    for name, t in zip(names, values):
        if t is not None:
            ok = isinstance(t, (int, float, np.integer, np.floating)) and not isinstance(t, (bool, np.bool_))
            try:
                t = float(t) if ok else t
            except OverflowError:                # an integer beyond float's range
                ok = False
            if not ok or not np.isfinite(t):
                raise ValueError(f"{where}: the threshold of class {name!r} must be a finite number, got {t!r}")
        out.append(t)
    return out


def _count(name: str, value) -> int:
    """A class's training-case count: an integer >= 0, else a ValueError naming the class."""
    try:
        c = int(value)
        ok = c == value and c >= 0 and not isinstance(value, (bool, np.bool_))
    except (TypeError, ValueError, OverflowError):
        ok = False
    if not ok:
        raise ValueError(f"label space: the count of class {name!r} must be an integer >= 0, got {value!r}")
    return c


def _group_cuts(head_min, medium_min) -> tuple[int, int]:
    """``head_min`` and ``medium_min`` as integers with 1 <= medium_min <= head_min (else a group
    could never hold a class), or a ValueError saying which is wrong."""
    for key, v in (("head_min", head_min), ("medium_min", medium_min)):
        if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)) or v < 1:
            raise ValueError(f"label space: {key} must be an integer >= 1 (training cases), got {v!r}")
    if medium_min > head_min:
        raise ValueError(f"label space: medium_min ({medium_min}) is above head_min ({head_min}): no class could "
                         "be medium")
    return int(head_min), int(medium_min)


def _json_kind(v) -> str:
    """What a JSON value is, in words: "a list", "an object", "a number", ..."""
    kinds = ((bool, "a boolean"), (dict, "an object"), (list, "a list"), (str, "a string"), ((int, float), "a number"))
    return next((w for t, w in kinds if isinstance(v, t)), "null")


def _classes_of(d) -> list[dict]:
    """The ``classes`` of a label space dict, its shape checked: ValueError saying what was expected."""
    if not isinstance(d, dict) or "classes" not in d:
        got = _json_kind(d) if not isinstance(d, dict) else "an object without 'classes'"
        raise ValueError(f"label space: expected a JSON object with 'classes', got {got}")
    classes = d["classes"]
    if not isinstance(classes, list):
        raise ValueError(f"label space: 'classes' must be a list of objects with a 'name', got {_json_kind(classes)}")
    for i, c in enumerate(classes):
        if not isinstance(c, dict) or "name" not in c:
            raise ValueError(f"label space: class {i} is {c!r}, not an object with a 'name'")
    return classes


@dataclass
class LabelSpace:
    names: list[str]
    codes: list[Optional[str]] = field(default_factory=list)   # ICD-10-CM 3-char per class, None if unknown
    counts: list[int] = field(default_factory=list)            # training-split case counts
    granularity: str = "disorder"                              # "disorder" | "icd10"
    head_min: int = 100
    medium_min: int = 30
    thresholds: Optional[list[Optional[float]]] = None         # per-class, from validation (None: 0.5)
    descriptions: list[Optional[str]] = field(default_factory=list)
    fixed_groups: Optional[list[str]] = None                   # groups not from counts (release_groups)
    group_note: Optional[str] = None                           # where fixed_groups come from

    def __post_init__(self) -> None:
        n = len(self.names)
        if len(set(self.names)) != n:
            dup = [k for k, v in Counter(self.names).items() if v > 1]
            raise ValueError(f"label space has duplicate class names: {dup[:5]}")
        for x in self.names:
            if not isinstance(x, str) or not x.strip():
                raise ValueError(f"label space: class name {x!r} must be a non-empty string")
        self.codes = list(self.codes) or [None] * n
        self.counts = [_count(name, c) for name, c in zip(self.names, self.counts)] or [0] * n
        self.descriptions = list(self.descriptions) or [None] * n
        for name, seq in (("codes", self.codes), ("counts", self.counts), ("descriptions", self.descriptions)):
            if len(seq) != n:
                raise ValueError(f"label space: {len(seq)} {name} for {n} classes")
        if self.thresholds is not None:
            self.thresholds = check_thresholds(self.thresholds, self.names, "label space")
        if self.granularity not in GRANULARITIES:
            raise ValueError(f"label space: granularity must be one of {GRANULARITIES}, got {self.granularity!r}")
        self.head_min, self.medium_min = _group_cuts(self.head_min, self.medium_min)
        if self.fixed_groups is not None:
            self._check_fixed_groups()
        self._index = {name: i for i, name in enumerate(self.names)}

    def _check_fixed_groups(self) -> None:
        """Each class's fixed group is one of GROUPS: a class without one would leave every group
        silently (None was once taken for "no bad group found")."""
        self.fixed_groups = list(self.fixed_groups)
        if len(self.fixed_groups) != len(self.names):
            raise ValueError(f"label space: {len(self.fixed_groups)} fixed groups for {len(self.names)} classes")
        for name, g in zip(self.names, self.fixed_groups):
            if g not in GROUPS:
                raise ValueError(f"label space: 'group_rule' is 'fixed', so class {name!r} needs a 'group', one of "
                                 f"{GROUPS}; got {g!r}")

    # -- lookups ---------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.names)

    def index(self, name: str) -> int:
        try:
            return self._index[name]
        except KeyError:
            raise KeyError(f"label {name!r} is not in the label space ({len(self)} classes)") from None

    def __contains__(self, name: str) -> bool:
        return name in self._index

    def case_labels(self, case: Case | dict) -> list[str]:
        """The names of this granularity that a case (or a case record) carries (:func:`case_classes`)."""
        return case_classes(case, self.granularity)

    def threshold_values(self) -> tuple[np.ndarray, np.ndarray]:
        """Thresholds ``[C]`` (``DEFAULT_THRESHOLD`` for a class without one) and the mask of
        those classes."""
        t = self.thresholds or [None] * len(self)
        missing = np.array([v is None for v in t], dtype=bool)
        return np.array([DEFAULT_THRESHOLD if v is None else v for v in t], dtype=np.float64), missing

    def encode(self, labels: Sequence[str], strict: bool = True) -> np.ndarray:
        """Multi-hot vector; unknown labels raise (or are dropped with ``strict=False``)."""
        y = np.zeros(len(self), dtype=np.float32)
        for name in labels:
            if name in self._index:
                y[self._index[name]] = 1.0
            elif strict:
                self.index(name)
        return y

    @property
    def has_groups(self) -> bool:
        """Whether head / medium / tail mean anything: fixed groups, or some training counts."""
        return self.fixed_groups is not None or any(self.counts)

    @property
    def groups(self) -> np.ndarray:
        """Array of 'head' / 'medium' / 'tail' per class: the fixed groups when given, else by
        training counts (Normal always head)."""
        if self.fixed_groups is not None:
            return np.array(self.fixed_groups, dtype=object)
        c = np.asarray(self.counts)
        g = np.where(c >= self.head_min, "head", np.where(c >= self.medium_min, "medium", "tail"))
        if NORMAL in self._index:
            g[self._index[NORMAL]] = "head"
        return g.astype(object)

    def group_mask(self, group: str) -> np.ndarray:
        if group == "all":
            return np.ones(len(self), dtype=bool)
        if group == "normal":
            m = np.zeros(len(self), dtype=bool)
            if NORMAL in self._index:
                m[self._index[NORMAL]] = True
            return m
        if group == "abnormal":
            return ~self.group_mask("normal")
        if group not in GROUPS:
            raise ValueError(f"unknown class group {group!r}")
        return self.groups == group

    # -- construction ------------------------------------------------------------
    @classmethod
    def from_cases(
        cls,
        cases: Iterable[Case],
        granularity: str = "disorder",
        count_split: str = "train",
        head_min: int = 100,
        medium_min: int = 30,
    ) -> "LabelSpace":
        """Classes seen in ``cases``; counts from ``count_split``; ordered Normal first, then
        by descending training frequency (then name), as in the release."""
        if granularity not in GRANULARITIES:
            raise ValueError(f"granularity must be one of {GRANULARITIES}, got {granularity!r}")
        cases = list(cases)
        probe = cls(names=[], granularity=granularity)
        seen: set[str] = {NORMAL}
        counts: Counter[str] = Counter()
        code_of: dict[str, Counter] = {}
        for case in cases:
            labels = probe.case_labels(case)
            seen.update(labels)
            if case.split == count_split:
                counts.update(set(labels))
            if granularity == "disorder":
                # A disorder's code: the ICD-10-CM category it co-occurs with most often
                # (exact when a case has one disorder, which is the common case).
                for name in labels:
                    code_of.setdefault(name, Counter()).update(case.icd10)
        names = [NORMAL] + sorted(seen - {NORMAL}, key=lambda n: (-counts[n], n))
        if granularity == "icd10":
            codes = [None if n == NORMAL else n for n in names]
        else:
            codes = [code_of[n].most_common(1)[0][0] if code_of.get(n) else None for n in names]
        return cls(names=names, codes=codes, counts=[counts[n] for n in names],
                   granularity=granularity, head_min=head_min, medium_min=medium_min)

    @classmethod
    def from_release(cls, path: str | Path, counts: Optional[dict[str, int]] = None) -> "LabelSpace":
        """The release's ``disorder_label_dict.json`` (name -> index, Normal = 0). Groups: by
        ``counts`` (training cases per name, e.g. from the release's training file) when given,
        else the release's fixed ranges of its label order (:func:`release_groups`)."""
        from raddiag.jsonl import read_json

        path = Path(path)
        mapping = read_json(path)
        if not isinstance(mapping, dict):
            raise ValueError(f"{path}: expected a JSON object of name -> index")
        names = [None] * len(mapping)
        for name, idx in mapping.items():
            if not isinstance(idx, int) or not 0 <= idx < len(mapping) or names[idx] is not None:
                raise ValueError(f"{path}: index {idx!r} of {name!r} is out of range or repeated")
            names[idx] = name
        if counts is not None:
            return cls(names=names, granularity="disorder", counts=[int(counts.get(n, 0)) for n in names])
        groups, note = release_groups(len(names), "disorder")
        return cls(names=names, granularity="disorder", fixed_groups=groups, group_note=note)

    # -- persistence -------------------------------------------------------------
    def to_dict(self) -> dict:
        return {
            "granularity": self.granularity,
            "head_min": self.head_min,
            "medium_min": self.medium_min,
            **({"group_rule": "fixed", "group_note": self.group_note} if self.fixed_groups is not None else {}),
            "classes": [
                {"name": n, "code": c, "count": k, "group": g, "description": d,
                 **({"threshold": t} if self.thresholds is not None else {})}
                for n, c, k, g, d, t in zip(
                    self.names, self.codes, self.counts, self.groups, self.descriptions,
                    self.thresholds or [None] * len(self))
            ],
        }

    @classmethod
    def from_dict(cls, d: dict) -> "LabelSpace":
        classes = _classes_of(d)
        # a class without a threshold uses DEFAULT_THRESHOLD (threshold_values); none at all: None
        thr = [c.get("threshold") for c in classes] if any("threshold" in c for c in classes) else None
        return cls(
            names=[c["name"] for c in classes],
            codes=[c.get("code") for c in classes],
            counts=[c.get("count", 0) for c in classes],
            descriptions=[c.get("description") for c in classes],
            granularity=d.get("granularity", "disorder"),
            head_min=d.get("head_min", 100),
            medium_min=d.get("medium_min", 30),
            thresholds=thr,
            # "group_rule": "fixed": each class's saved "group" is its group (else groups follow the counts)
            fixed_groups=[c.get("group") for c in classes] if d.get("group_rule") == "fixed" else None,
            group_note=d.get("group_note"),
        )

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=1))

    @classmethod
    def load(cls, path: str | Path) -> "LabelSpace":
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"{path}: label space file does not exist")
        try:
            return cls.from_dict(json.loads(path.read_text(encoding="utf-8-sig")))   # -sig: a BOM is skipped
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}: not a readable label space: not JSON ({exc})") from None
        except RecursionError:
            raise ValueError(f"{path}: not a readable label space: not JSON here (nested too deeply for "
                             "the parser)") from None
        except ValueError as exc:                                        # UTF-8, shape or field errors
            reason = str(exc).removeprefix("label space: ")
            raise ValueError(f"{path}: not a readable label space: {reason}") from None
        except (TypeError, KeyError, AttributeError) as exc:   # pragma: no cover - _classes_of checks the shape
            raise ValueError(f"{path}: not a readable label space ({type(exc).__name__}: {exc})") from None


def case_classes(case: Case | dict, granularity: str = "disorder") -> list[str]:
    """The names of ``granularity`` ("disorder" or "icd10") that a case (or a case record) carries.

    A case with neither a disorder nor a code is ``Normal``; ``Normal`` beside another label is
    dropped (the case is abnormal). An abnormal case that lacks names of this granularity
    (disorders without ICD-10-CM codes, say) carries no class at all: it is not normal."""
    get = case.get if isinstance(case, dict) else lambda k: getattr(case, k)
    disorders = [x for x in get("labels") or [] if x != NORMAL]
    codes = [x for x in get("icd10") or [] if x != NORMAL]
    if not disorders and not codes:
        return [NORMAL]
    return codes if granularity == "icd10" else disorders

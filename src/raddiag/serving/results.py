"""What a prediction returns: ranked :class:`Finding` s in a :class:`CaseResult`, the model's
features in a :class:`CaseEmbedding`, a :class:`CaseError` for a case of several that could not
be read, and :class:`PendingCase`, a case not read yet (the unit of batched prediction)."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Callable, Optional, Union

import numpy as np

from raddiag.data.errors import collect_input_warnings, one_line
from raddiag.data.labels import DEFAULT_THRESHOLD


NAME_WIDTH = 60    # a class name longer than this is shortened in the printed table (JSON keeps it whole)


def _scan_name(s: "ScanInfo") -> str:
    return one_line(s.id, 40)


def _cell(name: str) -> str:
    """A class name for one cell of the printed table: one line, at most NAME_WIDTH characters."""
    return one_line(name, NAME_WIDTH)


@dataclass
class Finding:
    name: str
    code: Optional[str]
    probability: float
    threshold: Optional[float]       # None: a multiclass run (the most probable class is the prediction)
    above_threshold: bool            # the class is predicted (multiclass: the most probable one)
    default_threshold: bool = False  # the threshold is the default 0.5, none chosen on validation


@dataclass
class ScanInfo:
    """One scan of a case as the model saw it (``used=False``: left out by the run's scan caps, or,
    with ``error``, unreadable and skipped as ``data prepare`` skips it)."""

    id: str
    paths: list[str]
    modality: str
    is_3d: bool
    slices: int
    key_slice: int
    used: bool = True
    error: Optional[str] = None            # why the scan could not be read (then skipped, not used)


@dataclass
class CaseResult:
    case_id: str
    ranked: list[Finding]
    scans: list[ScanInfo] = field(default_factory=list)
    thresholds: str = "validation"          # "validation", the default 0.5, or which classes take it
    saliency: list[dict] = field(default_factory=list)   # filled by predict(..., saliency=...)
    positive: list[str] = field(default_factory=list)    # every class at or above its threshold (not only the top)
    saliency_error: Optional[str] = None   # why the saliency maps asked for could not be made
    warnings: list[str] = field(default_factory=list)    # input warnings of its reads, each naming the file

    @property
    def top(self) -> Optional[Finding]:
        return self.ranked[0] if self.ranked else None

    def to_dict(self) -> dict:
        return {
            "case_id": self.case_id,
            "thresholds": self.thresholds,
            "positive": list(self.positive),
            "ranked": [asdict(f) for f in self.ranked],
            "scans": [asdict(s) for s in self.scans],
            "warnings": list(self.warnings),
            **({"saliency": self.saliency} if self.saliency else {}),
            **({"saliency_error": self.saliency_error} if self.saliency_error else {}),
        }

    def __str__(self) -> str:
        used = [s for s in self.scans if s.used]
        left = [s for s in self.scans if not s.used and s.error is None]
        bad = [s for s in self.scans if s.error is not None]
        head = (f"Case {one_line(self.case_id)}: {len(used)} scan(s) used: "
                f"{', '.join(_scan_name(s) + ' (' + s.modality + (' 3D' if s.is_3d else ' 2D') + ')' for s in used)}; "
                + (f"{len(left)} left out by the run's scan caps (README 'Scan caps'): "
                   f"{', '.join(_scan_name(s) for s in left[:5])}{', ...' if len(left) > 5 else ''}; " if left else "")
                + (f"{len(bad)} unreadable, skipped: "
                   f"{'; '.join(one_line(s.error, 200) for s in bad[:5])}{'; ...' if len(bad) > 5 else ''}; " if bad else "")
                + f"thresholds: {self.thresholds}")
        names = [_cell(f.name) for f in self.ranked]
        w = max([len("diagnosis")] + [len(n) for n in names])
        lines = [head, f"  {'#':>3}  {'diagnosis':<{w}}  {'ICD-10':<7} {'prob':>6}  {'thr':>5}  positive"]
        for i, (f, name) in enumerate(zip(self.ranked, names), 1):
            d = _digits(f.probability, f.threshold)
            thr = "    -" if f.threshold is None else f"{f.threshold:5.{d}f}"
            mark = "*" if f.default_threshold and "(*)" in self.thresholds else " "   # the default, a few classes
            lines.append(f"  {i:>3}  {name:<{w}}  {(f.code or '-'):<7} {f.probability:6.{d}f}  "
                         f"{thr}{mark} {'yes' if f.above_threshold else 'no'}")
        return "\n".join(lines)

    __repr__ = __str__


def _digits(p: float, threshold: Optional[float]) -> int:
    """Decimals that tell a probability from its threshold (3, or up to 7 where they round alike:
    "0.349  0.349  no" read as a contradiction)."""
    d = 3
    while threshold is not None and p != threshold and d < 7 and f"{p:.{d}f}" == f"{threshold:.{d}f}":
        d += 1
    return d


@dataclass
class CaseError:
    """A case of a several-case prediction that could not be predicted (the others still are):
    ``error`` names the file and the reason."""

    case_id: str
    error: str
    warnings: list[str] = field(default_factory=list)    # those said before it failed (skipped files...)

    def to_dict(self) -> dict:
        return {"case_id": self.case_id, "error": self.error, "warnings": list(self.warnings)}

    def __str__(self) -> str:
        return f"Case {one_line(self.case_id)}: error: {one_line(self.error)}"

    __repr__ = __str__


@dataclass
class CaseEmbedding:
    """The model's features of one case: ``case`` ``[width]`` (the fusion module's [CLS] output,
    the vector the head reads; pooling models: the mean of the scan embeddings) and ``scans``
    ``[n_used, width]``, one row per used scan in the order of ``scan_ids``."""

    case_id: str
    case: np.ndarray
    scans: np.ndarray
    scan_infos: list[ScanInfo] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)    # the input warnings of its reads, as CaseResult's

    @property
    def scan_ids(self) -> list[str]:
        return [i.id for i in self.scan_infos if i.used]

    def to_dict(self) -> dict:
        rows = iter(self.scans.tolist())
        return {"case_id": self.case_id, "width": int(self.case.shape[0]), "case_embedding": self.case.tolist(),
                "scans": [{**asdict(i), "embedding": next(rows) if i.used else None} for i in self.scan_infos],
                "warnings": list(self.warnings)}

    def __str__(self) -> str:
        bad = [s.id for s in self.scan_infos if s.error is not None]
        return (f"Case {self.case_id}: case embedding [{self.case.shape[0]}], "
                f"{len(self.scans)} scan embedding(s) ({', '.join(self.scan_ids)})"
                + (f"; {len(bad)} unreadable, skipped ({', '.join(bad)})" if bad else ""))

    __repr__ = __str__


Prepared = tuple[dict, list[ScanInfo], list[int]]      # Predictor.prepare's output


@dataclass
class PendingCase:
    """A case not read yet: its id and how to read it into :meth:`Predictor.prepare`'s output."""

    case_id: str
    read: Callable[[], Prepared]

    def prepare(self) -> Union[Prepared, CaseError]:
        """The prepared case, or a :class:`CaseError` naming the file and the reason, with the input
        warnings of the reads before it failed (a skip said while finding the scans)."""
        with collect_input_warnings() as said:
            try:
                return self.read()
            except (ValueError, OSError) as exc:        # one bad case must not cost the others
                return CaseError(self.case_id, " ".join(str(exc).split()), [str(w) for w in said])


def threshold_source(default: list, which: str = "") -> str:
    """What a prediction's thresholds are: chosen on validation, the default for the classes
    without one (``default[j]``: no validation positive to choose it on, no thresholds stored, or
    a class new to the run), named with their count, or the default for all."""
    n, k = len(default), sum(default)
    if k == 0:
        return "validation"
    if k == n:
        return f"default {DEFAULT_THRESHOLD} (none chosen on validation)"
    return (f"validation; default {DEFAULT_THRESHOLD} (*) for {k} of {n} classes: {which}classes without a "
            "validation positive to choose one on")

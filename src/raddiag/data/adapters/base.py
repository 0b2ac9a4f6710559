"""What every source adapter returns, and small helpers they share."""
from __future__ import annotations

import ast
import difflib
import random
import re
import unicodedata
import warnings
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Sequence

from raddiag.data.case import NORMAL, Case


@dataclass
class AdapterResult:
    cases: list[Case]
    skipped: list[dict] = field(default_factory=list)   # {case, file, reason}: passed to prepare_cases
    notes: list[str] = field(default_factory=list)      # facts the user should read (printed in the summary)
    warnings: list[dict] = field(default_factory=list)  # {case, file, warning}: input warnings of finding scans

    def counts(self) -> dict:
        """Case / scan / label counts (what the tests and the summary check)."""
        splits = Counter(c.split or "unassigned" for c in self.cases)
        labels = Counter(l for c in self.cases for l in (c.labels or ["Normal"]))
        icd = Counter(l for c in self.cases for l in (c.icd10 or ["Normal"]))
        return {"cases": len(self.cases), "scans": sum(len(c.scans) for c in self.cases),
                "splits": dict(splits), "labels": dict(labels), "icd10": dict(icd)}


def parse_list(value: Any, what: str = "field") -> list:
    """A list field that may be a real list, a Python list literal in a string ("['CT']"),
    a plain string (one item) or None. Parsed with ``ast.literal_eval`` only, never ``eval``."""
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        return list(value)
    if isinstance(value, str):
        s = value.strip()
        if s.startswith(("[", "(")):
            try:
                out = ast.literal_eval(s)
            except (ValueError, SyntaxError) as exc:
                raise ValueError(f"{what}: {value!r} is not a list literal ({exc})") from None
            if not isinstance(out, (list, tuple)):
                raise ValueError(f"{what}: {value!r} is not a list")
            return list(out)
        return [s] if s else []
    return [value]


def carve_val(cases: Sequence[Case], fraction: float = 0.125, seed: int = 0, from_split: str = "train") -> int:
    """Move a seeded ``fraction`` of the patients of ``from_split`` to ``val`` (whole patients,
    so no patient is in two splits). The default 1/8 keeps train:val = 7:1 as in the paper.
    Only patients with a scan are drawn (a case without one is skipped by ``prepare``); a positive
    fraction moves at least one patient when two or more are there, so a small source still
    validates. Returns the number of patients moved."""
    if not 0 <= fraction < 1:
        raise ValueError(f"--val-fraction must be from 0 to below 1, got {fraction}")
    patients = sorted({c.patient or c.id for c in cases if c.split == from_split and c.scans})
    random.Random(seed).shuffle(patients)
    n = round(fraction * len(patients))
    n = max(n, 1) if fraction > 0 and len(patients) >= 2 else n
    chosen = set(patients[:n])
    for c in cases:
        if c.split == from_split and (c.patient or c.id) in chosen:
            c.split = "val"
    return len(chosen)


def map_label(value: str, table: dict[str, tuple[str, str | None]], source: str) -> tuple[str, str | None]:
    """(disorder name, ICD-10-CM code) of a source label; an unmapped value raises ValueError
    naming the value and the file: labels are never dropped silently."""
    key = value.strip()
    for k in (key, key.lower()):
        if k in table:
            return table[k]
    raise ValueError(f"{source}: label {value!r} has no mapping to a disorder name and ICD-10-CM code "
                     f"(known: {', '.join(sorted(table))})")


def _clean(label: str) -> str:
    """A label in NFC with its whitespace collapsed (what a person typing it meant)."""
    return " ".join(unicodedata.normalize("NFC", label).split())


SPELLINGS = "letter case, spaces or Unicode form"


def label_key(label: str) -> str:
    """What two spellings of one label share: NFC, whitespace collapsed, letter case folded."""
    return _clean(label).lower()


def loose_key(label: str) -> str:
    """:func:`label_key` without marks on letters and without a possessive "'s": what
    "Kienböck disease", "Kienbock disease" and "Kienbock's disease" share. Labels that share only
    this are pointed out, never merged (:func:`_alike_text`): marks tell words apart in many
    languages (Vietnamese "Sởi" measles, "Sỏi" stones; Japanese "ぜんそく" asthma, "せんそく")."""
    text = unicodedata.normalize("NFKD", _clean(label))
    text = "".join(ch for ch in text if not unicodedata.combining(ch)).casefold()
    return unicodedata.normalize("NFC", _POSSESSIVE.sub("", text))


_POSSESSIVE = re.compile(r"(?<=\w)['\u2019\u02bc]s\b")


def similar_names(name: str, names: Sequence[str]) -> tuple[list[str], bool]:
    """The ``names`` that ``name`` matches in another spelling, and whether by letter case alone
    (:func:`label_key`: the same class); else those it matches by accents or a possessive "'s"
    (:func:`loose_key`: only to be pointed to, never taken)."""
    same = [n for n in names if label_key(n) == label_key(name)]
    return (same, True) if same else ([n for n in names if loose_key(n) == loose_key(name)], False)


def _alike_text(cases: Sequence[Case]) -> str:
    """Labels that differ only in marks on letters or a possessive "'s" (:func:`loose_key`), or
    ``""``: read as classes of their own, said with their case counts (a new user's three spellings
    of Kienböck disease made three classes without a word)."""
    from raddiag.data.errors import examples

    ids = _cases_of(cases)
    groups: dict[str, list[str]] = {}
    for k in ids:
        groups.setdefault(loose_key(k), []).append(k)
    alike = [g for g in groups.values() if len(g) > 1]
    if not alike:
        return ""
    shown = ["; ".join(f"{k!r} ({len(ids[k])} case(s))" for k in sorted(g, key=lambda k: -len(ids[k]))) for g in alike]
    return (f"{len(alike)} group(s) of labels differ only in accents or a possessive 's, and are read as classes of "
            f"their own: {examples(shown)}; if they name one disorder, spell them alike in the manifest")


def merge_label_spellings(cases: Sequence[Case]) -> dict[str, list[str]]:
    """Make one class of a disorder label spelled differently across cases (letter case,
    surrounding or repeated whitespace, Unicode NFC / NFD); different words are never merged (nor
    accents: :func:`_alike_text` points them out).
    The canonical spelling is the most frequent cleaned one (ties: the first seen; ``Normal``
    is always ``Normal``). Relabels ``cases`` in place; returns ``{canonical: [other spellings]}``."""
    seen: dict[str, Counter] = {}                  # key -> Counter of cleaned spellings, in first-seen order
    raw: dict[str, dict[str, None]] = {}
    for c in cases:
        for label in c.labels:
            key = label_key(label)
            seen.setdefault(key, Counter())[_clean(label)] += 1
            raw.setdefault(key, {})[label] = None
    canon = {k: NORMAL if k == NORMAL.lower() else max(v, key=v.__getitem__) for k, v in seen.items()}
    for c in cases:
        c.labels = list(dict.fromkeys(canon[label_key(x)] for x in c.labels))
    return {canon[k]: [s for s in v if s != canon[k]] for k, v in raw.items() if list(v) != [canon[k]]}


def merge_normal_names(cases: Sequence[Case]) -> dict[str, int]:
    """Relabel the labels that name a normal study ("No finding", "Healthy", "No acute abnormality":
    :func:`raddiag.knowledge.negation.parse`) as ``Normal``, in place; returns ``{label: cases}``.
    A manifest's "No finding" became a disorder class that zeroshot and ``predict --classes`` then
    read as Normal."""
    from raddiag.knowledge.negation import parse

    # each distinct label parsed once; "normal" in another letter case is a spelling of Normal
    # (merge_label_spellings says so)
    distinct = {x for c in cases for x in c.labels}
    normal = {x for x in distinct if label_key(x) != NORMAL.lower() and parse(x).normal}
    found: Counter = Counter()
    for c in cases:
        hits = [x for x in c.labels if x in normal]
        if hits:
            found.update(hits)
            c.labels = list(dict.fromkeys(NORMAL if x in normal else x for x in c.labels))
    return dict(found)


def spellings_text(merged: dict[str, list[str]]) -> str:
    """"N label(s) ...: 'a ', 'A' -> 'A'; ..." (5 labels shown) for the one warning."""
    parts = [f"{', '.join(map(repr, v))} -> {k!r}" for k, v in merged.items()]
    more = f"; and {len(parts) - 5} more" if len(parts) > 5 else ""
    return (f"{len(parts)} label(s) spelled more than one way ({SPELLINGS}), "
            f"each made one class: " + "; ".join(parts[:5]) + more)


def settle_labels(cases: Sequence[Case], source) -> None:
    """Make one class of each label spelled several ways (:func:`merge_label_spellings`) and
    warn, naming ``source``, of that and of cases labelled both ``Normal`` and a disorder (read
    as abnormal); read ICD-10 codes as their categories, with what looks wrong in them
    (:func:`raddiag.data.icd10.settle_icd10`). Every route from a source to cases calls this:
    ``load_source``, ``read_manifest``."""
    from raddiag.data.errors import InputWarning

    normal = merge_normal_names(cases)
    if normal:
        warnings.warn(f"{source}: label(s) meaning a normal study read as {NORMAL!r}, as zeroshot and predict "
                      f"--classes read them: " + ", ".join(f"{k!r} x{v}" for k, v in normal.items()),
                      InputWarning, stacklevel=3)
    merged = merge_label_spellings(cases)
    if merged:
        warnings.warn(f"{source}: {spellings_text(merged)}", InputWarning, stacklevel=3)
    both = [c.id for c in cases if NORMAL in c.labels and len(c.labels) > 1]
    if both:
        eg = ", ".join(map(repr, both[:3]))
        warnings.warn(f"{source}: {len(both)} case(s) are labelled Normal and a disorder (e.g. {eg}): read as "
                      "abnormal, with the disorder(s) only", InputWarning, stacklevel=3)
    for text in (_joined_labels_text(cases, source), _alike_text(cases), _typos_text(cases)):
        if text:
            warnings.warn(f"{source}: {text}", InputWarning, stacklevel=3)
    if any(c.icd10 for c in cases):
        from raddiag.data.icd10 import settle_icd10

        settle_icd10(cases, source)


def _cases_of(cases: Sequence[Case]) -> dict[str, list[str]]:
    """label -> the ids of the cases carrying it (a case without labels: ``Normal``)."""
    out: dict[str, list[str]] = {}
    for c in cases:
        for label in c.labels or [NORMAL]:
            out.setdefault(label, []).append(c.id)
    return out


_JOINS = re.compile(r"\s*([,|/+;])\s*")      # what a spreadsheet's cell may hold between two labels


def _joined_labels_text(cases: Sequence[Case], source) -> str:
    """The labels holding a separator (``,`` ``|`` ``/`` ``+`` ``;``) between parts that are all
    labels of their own in ``cases`` (a cell "Pneumothorax, Rib fracture" or "Pneumonia | Effusion"
    meant as two labels; a new user's "|" made 3 classes of 2 labels without a word), or ``""``.
    Only said: a real disorder name may hold a comma (ICD-10 titles do) or a slash."""
    from raddiag.data.errors import examples
    from raddiag.data.manifest_csv import LIST_SEP, is_csv

    ids = _cases_of(cases)
    keys = {label_key(k) for k in ids}
    joined, seps = [], set()
    for k in ids:
        pieces = _JOINS.split(k)
        parts = [p for p in pieces[::2] if p.strip()]
        if len(parts) > 1 and all(label_key(p) in keys for p in parts):
            joined.append(k)
            seps.update(pieces[1::2])
    if not joined:
        return ""
    shown = [f"{k!r} ({len(ids[k])} case(s): {examples([str(i) for i in ids[k]], shown=3)})" for k in joined]
    how = (f"separate them with {LIST_SEP!r} in the cell (README 'A CSV manifest')" if is_csv(source)
           else "give them as separate items of the case's 'labels' list")
    what = "commas" if seps == {","} else " or ".join(map(repr, sorted(seps)))
    return (f"{len(joined)} label(s) hold {what} between names that are labels of their own here, and are read as "
            f"one class each: {examples(shown)}; if they are several labels, {how}")


TYPO_CUTOFF = 0.9       # difflib ratio of a one-case label to a label of several cases: "Pneumothrax" 0.96


def _slips(key: str) -> set[str]:
    """``key`` and ``key`` less each one of its characters: two labels one slip apart (a letter
    left out, added, changed, or two swapped) share one of these."""
    return {key, *(key[:i] + key[i + 1:] for i in range(len(key)))}


def _typo_of(label: str, near: dict[str, set[str]]) -> str | None:
    """The label of several cases that ``label`` looks like a typo of, or None: one slip apart
    (``near``: :func:`_slips` -> those labels), close as a whole (:data:`TYPO_CUTOFF`, by difflib,
    or two letters swapped: "Pnuemonia" scores 0.89), the words they differ in close too and of 4
    letters or more ("Hepatitis B" / "Hepatitis C", "Type 1 ..." / "Type 2 ..." are different
    names), and not words of ICD-10-CM's titles (uvula / vulva, Symptomatic / Asymptomatic are
    different names) unless one is the other's plural ("Hip fractures" for "Hip fracture")."""
    from raddiag.data.icd10 import title_words, words

    key = label_key(label)
    keys = {label_key(k): k for s in _slips(key) for k in near.get(s, ())}
    ratio = {k: difflib.SequenceMatcher(None, key, k).ratio() for k in keys}
    match = max(keys, key=lambda k: (ratio[k], k), default=None)
    if match is None:
        return None
    a, b = key.split(), match.split()
    x, y = " ".join(w for w in a if w not in b), " ".join(w for w in b if w not in a)
    if _plural(x, y):
        return keys[match]
    similar = ratio[match] >= TYPO_CUTOFF or _swapped(x, y)
    close = min(len(x), len(y)) >= 4 and difflib.SequenceMatcher(None, x, y).ratio() >= 0.75
    real = all(w in title_words() for w in words(x))
    return keys[match] if similar and close and not real else None


def _plural(x: str, y: str) -> bool:
    """One word the other's plural (an 's' or 'es' more), of 4 letters or more."""
    short, long = sorted((x, y), key=len)
    return len(short) >= 4 and " " not in short and long in (short + "s", short + "es")


def _swapped(x: str, y: str) -> bool:
    """``x`` is ``y`` with two neighbouring letters swapped."""
    diff = [i for i, (p, q) in enumerate(zip(x, y)) if p != q]
    return len(x) == len(y) and len(diff) == 2 and diff[1] == diff[0] + 1 and x[diff[0]] == y[diff[1]] \
        and x[diff[1]] == y[diff[0]]


def _typos_text(cases: Sequence[Case]) -> str:
    """The labels of one case written nearly as a label of two cases or more (a typo read as a
    class of its own), or ``""``. Only said: labels are never changed."""
    from raddiag.data.errors import examples

    ids = _cases_of(cases)
    near: dict[str, set[str]] = {}
    for k in (k for k, v in ids.items() if len(v) >= 2):
        for s in _slips(label_key(k)):
            near.setdefault(s, set()).add(k)
    found = [(k, v[0], _typo_of(k, near)) for k, v in ids.items() if len(v) == 1]
    shown = [f"{k!r} (case {cid}) for {m!r} ({len(ids[m])} cases)" for k, cid, m in found if m]
    if not shown:
        return ""
    return (f"{len(shown)} label(s) of one case look like a typo of a label of several cases, and are read as "
            f"classes of their own: {examples(shown)}; if they are typos, correct them in the manifest")

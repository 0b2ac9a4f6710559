"""ICD-10-CM labels of cases: the 3-character categories the ``icd10`` label space is made of
(paper Section 3: 5,568 disorders mapped to 930 categories), read from what users write.

:func:`category` reads a code as its category ("J12.0" -> "J12"); :func:`settle_icd10` does that
for every case of a source and says, naming the source, what it changed and what looks wrong: a
code given finer than a category, one that is not ICD-10-CM, a disorder given different categories
in different cases, and a case whose codes leave out the category its disorder has elsewhere.
"""
from __future__ import annotations

import re
import unicodedata
import warnings
from collections import Counter, defaultdict
from functools import lru_cache
from typing import Sequence

from raddiag.data.case import NORMAL, Case
from raddiag.data.errors import InputWarning, examples


@lru_cache(maxsize=1)
def title_words() -> frozenset:
    """Every word of ICD-10-CM's titles, lower case, without the punctuation around it (about
    10,000; 2 s to build, once): a word that names something in the classification. Label typos
    (``raddiag.data.adapters.base``) and "non-" compounds (``raddiag.knowledge.negation``) read it."""
    import simple_icd_10_cm as cm

    return frozenset(w for c in cm.get_all_codes(with_dots=False) for w in words(cm.get_description(c)))


def words(text: str) -> list[str]:
    """``text``'s words as :func:`title_words` holds them: NFC, lower case, punctuation around
    each word dropped ("IIIa," -> "iiia")."""
    low = unicodedata.normalize("NFC", str(text)).lower()
    return [w for w in (t.strip(",.;:()[]'\"") for t in low.split()) if w]


def category(code: str) -> str:
    """3-character ICD-10-CM category of a code ("J12.0" -> "J12"); ValueError if the whole code is
    not an ICD-10-CM category or a code within one (an ICD-9 code, a chapter range "S00-T88", or
    "J12XYZ" would otherwise pass on their first 3 characters)."""
    import simple_icd_10_cm as cm

    c = code.strip().upper() if isinstance(code, str) else ""
    if not c or not cm.is_valid_item(c) or not (cm.is_category(c) or cm.is_subcategory(c)):
        raise ValueError(f"{code!r} is not an ICD-10-CM code (a 3-character category, or a code within one)")
    return c.replace(".", "")[:3]


def settle_icd10(cases: Sequence[Case], source) -> None:
    """Each case's ``icd10`` as categories, in place, with a warning naming ``source`` for each kind
    of change or doubt (see the module's text). Any spelling of Normal is Normal; a text of several
    codes (``"J12; J18"``) is read as those codes; an empty code is dropped; a code that is not
    ICD-10-CM is kept as written (a user's own coding); every other is read as its category. A code
    that is not text is refused, naming the case."""
    finer, unknown, joined, empty = [], Counter(), [], []
    for c in cases:
        settled = []
        for code in _split(c, joined, empty):
            if code.strip().lower() == NORMAL.lower():
                cat = NORMAL
            else:
                try:
                    cat = category(code)
                except ValueError:
                    unknown[code] += 1
                    cat = code
                if cat != code:
                    finer.append((c.id, code, cat))
            if cat not in settled:
                settled.append(cat)
        c.icd10 = settled
    _warn(source, _joined_text(joined), _empty_text(empty), _finer_text(finer), _unknown_text(unknown),
          _conflicts_text(cases), _missing_text(cases))


def _split(c: Case, joined: list, empty: list) -> list[str]:
    """Case ``c``'s codes, each text of several codes split (noted in ``joined``), empty ones left
    out (noted in ``empty``)."""
    out = []
    for code in c.icd10:
        if not isinstance(code, str):
            raise ValueError(f"case {c.id!r}: ICD-10 code {code!r} is not text")
        parts = [p for p in re.split(r"[;,\s]+", code.strip()) if p]
        if not parts:
            empty.append(c.id)
        elif len(parts) > 1:
            joined.append(f"{code!r} -> {', '.join(parts)}")
        out += parts
    return out


def _joined_text(joined: list) -> str:
    if not joined:
        return ""
    return f"{len(joined)} ICD-10 text(s) held several codes, read as each: {examples(sorted(set(joined)), len(joined))}"


def _empty_text(empty: list) -> str:
    if not empty:
        return ""
    return f"{len(empty)} empty ICD-10 code(s) left out, in case(s) {examples([repr(i) for i in empty], len(empty))}"


def _warn(source, *texts: str) -> None:
    for text in texts:
        if text:
            warnings.warn(f"{source}: {text}", InputWarning, stacklevel=4)



def _finer_text(finer: list) -> str:
    if not finer:
        return ""
    pairs = sorted({f"{code!r} -> {cat}" for _, code, cat in finer})
    return (f"{len(finer)} ICD-10 code(s) in {len({i for i, _, _ in finer})} case(s) read as their 3-character "
            f"category, the icd10 label space's unit (a finer code, or another spelling): "
            f"{examples(pairs)}")


def _unknown_text(unknown: Counter) -> str:
    if not unknown:
        return ""
    shown = [f"{code!r} x{n}" for code, n in unknown.most_common()]
    return (f"{len(unknown)} icd10 label(s) are not ICD-10-CM codes, kept as written (each its own class): "
            f"{examples(shown)}")


def _pairs(cases: Sequence[Case]) -> dict[str, Counter]:
    """Disorder -> its categories' counts, from the cases that pair them unambiguously (one
    disorder, one category)."""
    pairs: dict[str, Counter] = defaultdict(Counter)
    for c in cases:
        disorders = [x for x in c.labels if x != NORMAL]
        codes = [x for x in c.icd10 if x != NORMAL]
        if len(disorders) == 1 and len(codes) == 1:
            pairs[disorders[0]][codes[0]] += 1
    return pairs


def _conflicts_text(cases: Sequence[Case]) -> str:
    split = {d: n for d, n in _pairs(cases).items() if len(n) > 1}
    if not split:
        return ""
    shown = [f"{d!r}: " + ", ".join(f"{code} x{k}" for code, k in n.most_common()) for d, n in sorted(split.items())]
    return (f"{len(split)} disorder(s) are given different ICD-10 categories in different cases, so the icd10 "
            f"label space counts them as different classes: {examples(shown)}")


def _missing_text(cases: Sequence[Case]) -> str:
    """Cases with codes whose codes leave out the one category a disorder of theirs has everywhere else."""
    usual = {d: next(iter(n)) for d, n in _pairs(cases).items() if len(n) == 1}
    missing = []
    for c in cases:
        if not c.icd10:
            continue
        for d in c.labels:
            if d in usual and usual[d] not in c.icd10:
                missing.append(f"{c.id!r} ({d!r}, {usual[d]} elsewhere)")
    if not missing:
        return ""
    return (f"{len(missing)} case(s) have ICD-10 codes that leave out the category one of their disorders "
            f"has in every other case, so the icd10 label space misses it there: {examples(missing)}")

"""Negated class names: "Non-COVID-19", "No finding", "pneumothorax negative".

Sentence encoders are nearly blind to negation: "Non-COVID-19" lands next to "COVID-19".
So a negated name is never linked to, or scored as, the class it negates. This module
says what a name means; three places use it:

- zero-shot class mapping (:func:`raddiag.transfer.zeroshot.suggest_mapping`): a name that
  means a normal study ("No finding", "No acute abnormality", "Healthy") is linked to
  ``Normal``; any other negated name is left unmapped, with the reason in the results;
  a mapping file that links a name to the class it negates is an error;
- ``predict --classes`` and the knowledge head's text mode (zero-shot ``text``): "Non-X"
  is scored as ``1 - p(X)`` (X's text is embedded, the probability complemented), and a
  normal-meaning name as the ``Normal`` text.

Recognised forms (case-insensitive, ``_`` read as a space): ``non-X`` / ``non X`` /
``NonX``, ``no X``, ``not X``, ``without X``, ``no evidence of X``, ``absence of X``,
``free of X``, ``negative for X``, ``X negative`` / ``X-negative`` /
``X (negative)``, ``X absent``, ``X excluded``, ``X ruled out``, ``X not detected``,
and ``abnormal`` (negates ``Normal``). Disease names that merely begin with "non-"
("non-Hodgkin lymphoma", "non-small cell lung cancer", "NSTEMI" spelt out, ...) are
listed in :data:`NON_COMPOUNDS`, or are words of ICD-10-CM's titles ("Non-follicular lymphoma"), or
qualify the words after them ("Non-obstructive hydrocephalus", "Non-COVID pneumonia": a kind of
hydrocephalus, of pneumonia), and are not negations (:func:`_non_compound`); the last is a guess,
and where it decides, :func:`compound_note` says so and how to write the absence ("No pleural
effusion"). "Non-" before one word ("Non-COVID-19", "NonCOVID", "non covid 19") denies it.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

from raddiag.data.case import NORMAL

# "non-" + these words names a disease of its own, not the absence of one.
NON_COMPOUNDS = (
    "hodgkin", "small cell", "small-cell", "st ", "st-", "alcoholic", "cardiogenic", "traumatic",
    "ossifying", "specific", "union", "displaced", "ketotic", "tuberculous", "functioning",
    "seminomatous", "ischemic", "ischaemic", "hemorrhagic", "haemorrhagic", "compaction",
    "epileptic", "enhancing", "calcified", "invasive", "accidental", "rheumatic", "syndromic",
)
# after "no" / "without": what a normal study lacks
_NORMAL_NOUNS = {"finding", "findings", "abnormality", "abnormalities", "disease", "diseases", "pathology",
                 "pathologies", "lesion", "lesions", "disorder", "disorders", "process"}
_NORMAL_ADJ = {"acute", "significant", "abnormal", "active", "evident", "obvious", "radiographic",
               "imaging", "other", "relevant", "focal", "cardiopulmonary", "intracranial"}
_NORMAL_NAMES = {NORMAL.lower(), "healthy", "normal study", "normal case", "normal scan", "normal exam",
                 "normal examination", "normal image"}
# not "absent X": "absent kidney", "absent pulmonary valve syndrome" are diagnoses
_PREFIX = re.compile(r"^(?:no|not|without|absence of|free of|negative for|clear of)\s+"
                     r"(?:evidence of\s+|signs? of\s+)?(?P<x>.+)$", re.I)
_NON = re.compile(r"^non[-\s]+(?P<x>.+)$", re.I)
_NON_CAMEL = re.compile(r"^Non(?P<x>[A-Z].*)$")          # "NonCOVID" (folder-style names)
_SUFFIX = re.compile(r"^(?P<x>.+?)[\s:-]*\(?\s*(?:negative|neg|absent|excluded|ruled out|not detected|"
                     r"not present)\s*\)?$", re.I)


@dataclass(frozen=True)
class ClassName:
    """What a class name means: ``negates`` is the class it denies ("COVID-19" for
    "Non-COVID-19"), ``normal`` whether it names a normal study."""

    name: str
    negates: Optional[str] = None
    normal: bool = False


def _clean(name: str) -> str:
    return " ".join(str(name).replace("_", " ").split()).strip(" .;,")


def _means_normal(subject: str) -> bool:
    words = subject.lower().split()
    while words and words[0] in _NORMAL_ADJ:
        words = words[1:]
    return len(words) == 1 and words[0] in _NORMAL_NOUNS


def parse(name: str) -> ClassName:
    """The meaning of one class name (see the module docstring for the forms)."""
    text = _clean(name)
    low = text.lower()
    if low in _NORMAL_NAMES:
        return ClassName(name, normal=True)
    if low in {"abnormal", "abnormality", "abnormal study", "abnormal case"}:
        return ClassName(name, negates=NORMAL)
    m = _NON.match(text) or _NON_CAMEL.match(text)
    if m and not _non_compound(m.group("x")):
        return ClassName(name, negates=m.group("x").strip())
    m = _PREFIX.match(text) or _SUFFIX.match(text)
    if m and m.group("x").strip():
        subject = m.group("x").strip()
        if _means_normal(subject):
            return ClassName(name, normal=True)
        return ClassName(name, negates=subject)
    return ClassName(name)




def _non_compound(x: str) -> bool:
    """Whether "non-" + ``x`` names a disease of its own rather than the absence of ``x``: a listed
    compound (:data:`NON_COMPOUNDS`), a "non-" word of ICD-10-CM's titles ("Non-follicular lymphoma",
    "Non-pressure chronic ulcer": a red team found 490 titles read as negations), or a word that
    qualifies a disease named after it ("Non-obstructive hydrocephalus", "Non-COVID pneumonia",
    "Non-Langerhans cell histiocytosis": a red team found the last two scored as 1 - p(the disease
    they name); a guess, said by :func:`compound_note`). A lone word ("Non-COVID-19",
    "Non-cancerous", "non covid 19") stays a negation. Capitalisation is not read: the same class in
    two spellings is one class."""
    return _non_reading(x) != "negation"


def _non_reading(x: str) -> str:
    """How "non-" + ``x`` is read: ``listed``, ``icd10`` (a "non-" word of its titles), ``modifier``
    (the guess: a word of three letters or more follows the first) or ``negation``."""
    from raddiag.data.icd10 import title_words, words

    if x.lower().startswith(NON_COMPOUNDS):
        return "listed"
    ws = words(x)
    first = (ws or [""])[0]
    if f"non-{first}" in title_words() or f"non{first}" in title_words():
        return "icd10"
    if any(w.isalpha() and len(w) >= 3 for w in ws[1:]):
        return "modifier"
    return "negation"


def compound_note(name: str) -> Optional[str]:
    """For a "Non-<word> <disease>" name read as a disease of its own by the guess alone, how it
    was read and how to write the absence instead; else None. The same words name a disease
    ("Non-communicating hydrocephalus") or deny one ("Non-pleural effusion"), in any
    capitalisation: a new user's "Non-Pleural effusion" was scored as p(Pleural effusion), 0.919 on
    an effusion image, without a word."""
    text = _clean(name)
    m = _NON.match(text) or _NON_CAMEL.match(text)
    x = m.group("x").strip() if m else ""
    if not m or _non_reading(x) != "modifier":
        return None
    return (f"{name!r} is read as a disease of its own ('non-' qualifying the words after it), not as the absence of "
            f"{x!r}; for the absence write 'No {x}'")


def _key(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


def contradicts(a: str, b: str) -> bool:
    """True when one name negates the other ("Non-COVID-19" and "COVID-19" / "COVID"), or
    one names a normal study and the other a negated normal ("Abnormal")."""
    for x, y in ((a, b), (b, a)):
        neg = parse(x).negates
        if neg is None:
            continue
        kn, ky = _key(neg), _key(y)
        if kn == ky or (min(len(kn), len(ky)) >= 4 and (kn.startswith(ky) or ky.startswith(kn))):
            return True
        if neg == NORMAL and parse(y).normal:
            return True
    return False


def scoring_texts(names: Sequence[str], texts: Optional[Sequence[str]] = None) -> tuple[list[str], np.ndarray]:
    """For scoring class names through label embeddings: the text to embed for each name
    (``texts[i]`` when nothing is negated, default the name) and a boolean mask of the
    classes whose probability is the complement: "Non-X" embeds X and scores ``1 - p(X)``;
    a normal-meaning name ("No finding") embeds ``Normal``."""
    out = list(texts) if texts is not None else [str(n) for n in names]
    flip = np.zeros(len(out), dtype=bool)
    for i, n in enumerate(names):
        p = parse(n)
        if p.negates is not None:
            out[i], flip[i] = p.negates, True
        elif p.normal:
            out[i] = NORMAL
    return out, flip


def complement(probs, flip: np.ndarray):
    """``probs`` ``[N, C]`` with the flagged columns replaced by ``1 - p`` (a copy)."""
    probs = np.array(probs, dtype=np.float64)
    probs[:, flip] = 1.0 - probs[:, flip]
    return probs

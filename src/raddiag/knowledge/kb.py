"""The knowledge base: ICD-10-CM (``simple-icd-10-cm``) plus user-supplied terms.

A :class:`Concept` is one term with its synonyms, descriptions and place in a
hierarchy. :func:`icd10cm_kb` builds one concept per ICD-10-CM code (chapters and
blocks are kept as the ``chapter`` / ``block`` of each code, not as concepts);
:meth:`KnowledgeBase.merge_jsonl` adds a user's own knowledge.

User knowledge: JSON Lines, one object per line (blank lines and lines starting
with ``#`` are skipped)::

    {"term": "glioma",                                 # required, non-empty string
     "synonyms": ["glial tumour", "glial neoplasm"],   # optional list of strings
     "definitions": ["A primary brain tumour arising from glial cells."],
     "features": ["T2 hyperintense infiltrative mass"],  # radiographic features
     "icd10": "C71",          # optional: the term IS this code -> merged into it
     "parent": "C71"}         # optional: the term is a finer kind of this code or term

With ``icd10`` the term and its texts are added to that code's concept (the term
becomes a synonym). With ``parent`` (and no ``icd10``) the term becomes a new
concept under the parent. With neither it is a stand-alone concept; a later line
with the same term adds to it. This is what one exports from Radiopaedia articles
(term, synonyms, definition, radiographic features) or from UMLS (concept name,
atoms as synonyms, definitions).

Supplement: ICD-10-CM files ``COVID-19`` as U07.1 under the category "Emergency
use of U07", whose name says nothing about the disease. :data:`SUPPLEMENT` adds the
usual names of COVID-19 (and U07 itself if an edition lacks it).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Iterable, Iterator, Optional

#: Documented additions to the installed ICD-10-CM edition.
SUPPLEMENT: list[dict] = [
    {"icd10": "U07.1", "term": "COVID-19",
     "synonyms": ["COVID-19", "SARS-CoV-2 infection", "coronavirus disease 2019", "COVID-19 pneumonia"],
     "definitions": ["An infectious respiratory disease caused by the SARS-CoV-2 coronavirus."]},
    {"icd10": "U07", "term": "Emergency use of U07",
     "synonyms": ["COVID-19", "SARS-CoV-2 infection", "coronavirus disease 2019"]},
]

USER_KEYS = {"term", "synonyms", "definitions", "features", "icd10", "parent"}


@dataclass
class Concept:
    id: str                                  # ICD-10-CM code ("J93.0") or the user term
    name: str                                # description / preferred name
    synonyms: list[str] = field(default_factory=list)
    definitions: list[str] = field(default_factory=list)   # definitions, radiographic features, clinical notes
    parent: Optional[str] = None             # concept id
    children: list[str] = field(default_factory=list)
    chapter: Optional[str] = None            # e.g. "10" (ICD-10-CM chapter number)
    block: Optional[str] = None              # e.g. "J90-J94"
    source: str = "icd10cm"                  # "icd10cm" | "supplement" | a user file name

    @property
    def category(self) -> Optional[str]:
        """The 3-character ICD-10-CM category this code belongs to (None for user terms)."""
        return self.id.split(".")[0][:3] if _looks_like_code(self.id) else None


def _looks_like_code(s: str) -> bool:
    s = s.replace(".", "")
    return 3 <= len(s) <= 7 and s[0].isalpha() and s[1:3].isalnum() and s[1].isdigit()


class KnowledgeBase:
    """Concepts by id, with lookups used by training, embedding and mapping."""

    def __init__(self, concepts: Iterable[Concept] = ()) -> None:
        self.concepts: dict[str, Concept] = {}
        self._by_name: dict[str, str] = {}
        self.chapters: dict[str, str] = {}   # chapter / block id -> description
        self.counts: dict[str, dict[str, int]] = {}   # source -> records / synonyms / concepts / ...
        self.version = 0          # changes with every add / merge (caches of derived indexes key on it)
        for c in concepts:
            self.add(c)

    # -- access -------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.concepts)

    def __contains__(self, cid: str) -> bool:
        return cid in self.concepts

    def __getitem__(self, cid: str) -> Concept:
        try:
            return self.concepts[cid]
        except KeyError:
            raise KeyError(f"{cid!r} is not in the knowledge base") from None

    def __iter__(self) -> Iterator[Concept]:
        return iter(self.concepts.values())

    def get(self, cid: str) -> Optional[Concept]:
        return self.concepts.get(cid)

    def find(self, term: str) -> Optional[Concept]:
        """A concept by id (code, with or without the dot) or by exact name / synonym (any case)."""
        if term in self.concepts:
            return self.concepts[term]
        code = _dotted(term)
        if code in self.concepts:
            return self.concepts[code]
        cid = self._by_name.get(term.strip().lower())
        return self.concepts.get(cid) if cid else None

    def add(self, c: Concept) -> Concept:
        self.version += 1
        self.concepts[c.id] = c
        for t in (c.name, *c.synonyms):
            self._by_name.setdefault(t.strip().lower(), c.id)
        if c.parent and c.parent in self.concepts and c.id not in self.concepts[c.parent].children:
            self.concepts[c.parent].children.append(c.id)
        return c

    def categories(self) -> list[Concept]:
        """The 3-character ICD-10-CM categories (the paper's ICD granularity)."""
        return [c for c in self if c.source != "user" and _looks_like_code(c.id) and "." not in c.id
                and len(c.id) == 3]

    def siblings(self, cid: str) -> list[str]:
        c = self[cid]
        if c.parent and c.parent in self.concepts:
            return [s for s in self.concepts[c.parent].children if s != cid]
        if c.block:  # a category's siblings are the other categories of its block
            return [o.id for o in self.categories() if o.block == c.block and o.id != cid]
        return []

    def descendants(self, cid: str) -> list[str]:
        out, stack = [], list(self[cid].children)
        while stack:
            x = stack.pop()
            out.append(x)
            stack.extend(self.concepts[x].children if x in self.concepts else [])
        return out

    def texts(self, cid: str) -> list[str]:
        """Name plus synonyms (deduplicated, order kept)."""
        c = self[cid]
        return list(dict.fromkeys([c.name, *c.synonyms]))

    # -- merging user knowledge --------------------------------------------------------
    def merge_records(self, records: Iterable[dict], source: str = "user", nearest: bool = False) -> int:
        """Merge user records (already parsed and validated); returns how many. With ``nearest``
        (the built-in sources) a code finer than the knowledge base holds ("N20.0" in a
        3-character base) goes to its nearest ancestor that is there, and a code with none is
        counted as ``unknown_code``, not added; without it such a code becomes a new concept."""
        n = 0
        self.version += 1
        count = self.counts.setdefault(source, {"records": 0, "synonyms": 0, "concepts": 0})
        for rec in records:
            term = rec["term"].strip()
            syn = [s.strip() for s in rec.get("synonyms", []) if s.strip()]
            defs = [s.strip() for s in (*rec.get("definitions", []), *rec.get("features", [])) if s.strip()]
            code = rec.get("icd10")
            if code:
                target = self.find(code)
                if target is None and nearest:
                    target = self._nearest(code)
                    if target is None:
                        count["unknown_code"] = count.get("unknown_code", 0) + 1
                        continue
                if target is None:
                    # An edition may lack a code (U07 in older ones): add it as a new concept.
                    cid = _dotted(code)
                    parent = cid.split(".")[0] if "." in cid else None
                    target = self.add(Concept(id=cid, name=term, parent=parent if parent in self else None,
                                              source=source))
                    count["concepts"] += 1
                known = {t.lower() for t in (target.name, *target.synonyms)}
                extra = [t for t in dict.fromkeys((term, *syn)) if t.lower() not in known]
                target.synonyms.extend(extra)
                count["synonyms"] += len(extra)
                target.definitions.extend(d for d in defs if d not in target.definitions)
                for t in extra:
                    self._by_name.setdefault(t.lower(), target.id)
            else:
                existing = self.concepts.get(term)
                if existing is not None:
                    existing.synonyms.extend(s for s in syn if s not in existing.synonyms)
                    existing.definitions.extend(d for d in defs if d not in existing.definitions)
                    count["records"] += 1
                    continue
                parent = None
                if rec.get("parent"):
                    p = self.find(rec["parent"])
                    if p is None:
                        raise ValueError(f"{source}: parent {rec['parent']!r} of {term!r} is neither an "
                                         "ICD-10-CM code nor a term defined earlier")
                    parent = p.id
                pc = self.concepts.get(parent) if parent else None
                self.add(Concept(id=term, name=term, synonyms=syn, definitions=defs, parent=parent,
                                 chapter=pc.chapter if pc else None, block=pc.block if pc else None,
                                 source="user"))
                count["concepts"] += 1
            count["records"] += 1
            n += 1
        return n

    def _nearest(self, code: str) -> Optional[Concept]:
        c = _dotted(code).replace(".", "")
        for k in range(len(c) - 1, 2, -1):
            found = self.concepts.get(_dotted(c[:k]))
            if found is not None:
                return found
        return None

    def source_counts(self) -> dict[str, dict[str, int]]:
        """Per knowledge source: ``records`` merged, ``synonyms`` (new texts), ``concepts`` (new),
        and source-specific counts (``unknown_code``, the index's ``see`` / ``see_also`` ...)."""
        return {k: dict(v) for k, v in self.counts.items()}

    def merge_jsonl(self, path: str | Path) -> int:
        """Merge a user JSON Lines file (schema in the module docstring); returns records merged."""
        return self.merge_records(read_jsonl(path), source=str(path))


def read_jsonl(path: str | Path) -> list[dict]:
    """Parse and validate a user knowledge file; errors name the file and the line."""
    path = Path(path)
    from raddiag.jsonl import iter_jsonl

    out = []
    for where, rec in iter_jsonl(path, "knowledge file"):
        unknown = set(rec) - USER_KEYS
        if unknown:
            raise ValueError(f"{where}: unknown field(s) {sorted(unknown)}; allowed: {sorted(USER_KEYS)}")
        if not isinstance(rec.get("term"), str) or not rec["term"].strip():
            raise ValueError(f"{where}: 'term' must be a non-empty string")
        for key in ("synonyms", "definitions", "features"):
            v = rec.get(key, [])
            if isinstance(v, str):
                v = rec[key] = [v]
            if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
                raise ValueError(f"{where}: '{key}' must be a list of strings")
        for key in ("icd10", "parent"):
            v = rec.get(key)
            if v is not None and (not isinstance(v, str) or not v.strip()):
                raise ValueError(f"{where}: '{key}' must be a non-empty string when given")
        if rec.get("icd10") and not _looks_like_code(rec["icd10"]):
            raise ValueError(f"{where}: 'icd10' {rec['icd10']!r} does not look like an ICD-10-CM code")
        out.append(rec)
    return out


def _dotted(code: str) -> str:
    c = code.strip().upper().replace(".", "")
    return c if len(c) <= 3 else f"{c[:3]}.{c[3:]}"


@lru_cache(maxsize=4)
def _icd_concepts(max_code_len: int) -> tuple[tuple[Concept, ...], tuple[tuple[str, str], ...]]:
    import simple_icd_10_cm as cm

    concepts = []
    chapters: dict[str, str] = {}
    for code in cm.get_all_codes(True):
        if cm.is_chapter_or_block(code):
            chapters[code] = cm.get_description(code)
            if not cm.is_category(code):   # a few blocks are also categories (B10, C50, C7A)
                continue
        if len(code.replace(".", "")) > max_code_len:
            continue
        anc = cm.get_ancestors(code)           # nearest first: ..., block(s), chapter
        chapter = anc[-1] if anc else None
        block = next((a for a in anc if cm.is_block(a) and a != code), None)
        parent = cm.get_parent(code)
        if parent == code or (parent and cm.is_chapter_or_block(parent) and not cm.is_category(parent)):
            parent = None
        synonyms = list(dict.fromkeys([*cm.get_inclusion_term(code), *cm.get_includes(code)]))
        children = [k for k in cm.get_children(code) if len(k.replace(".", "")) <= max_code_len and k != code]
        concepts.append(Concept(id=code, name=cm.get_description(code), synonyms=synonyms,
                                parent=parent, children=children, chapter=chapter, block=block))
    return tuple(concepts), tuple(chapters.items())


def icd10cm_kb(max_code_len: int = 5, supplement: bool = True) -> KnowledgeBase:
    """One concept per ICD-10-CM code of at most ``max_code_len`` characters (3 = categories
    only; the default 5 keeps e.g. ``J93.11`` and drops the 6-7 character extensions)."""
    concepts, chapters = _icd_concepts(max_code_len)
    # copies: the cached concepts must not be changed by a user merge
    kb = KnowledgeBase(Concept(**{**c.__dict__, "synonyms": list(c.synonyms),
                                  "definitions": list(c.definitions), "children": list(c.children)})
                       for c in concepts)
    kb.chapters = dict(chapters)
    kb.counts["icd10cm"] = {"records": len(concepts), "synonyms": sum(len(c.synonyms) for c in concepts),
                            "concepts": len(concepts)}
    if supplement:
        kb.merge_records(SUPPLEMENT, source="supplement")
    return kb


#: The built-in synonym sources :func:`build_kb` merges by default (see raddiag.knowledge.sources).
DEFAULT_SOURCES = ("gem", "radiology")
#: Every built-in source: "hpo" is opt-in (on the held-out radiology names it moved
#: ``knowledge map`` by -1 to 0 names per split; see the README).
BUILT_IN_SOURCES = ("gem", "radiology", "hpo")


@lru_cache(maxsize=8)
def _source_records(kind: str, arg: str = "") -> tuple[tuple[dict, ...], tuple[tuple[str, int], ...]]:
    from raddiag.knowledge import sources

    if kind == "gem":
        records, stats = sources.gem_records()
    elif kind == "hpo":
        records, stats = sources.hpo_records()
    elif kind == "radiology":
        records, stats = sources.radiology_records()
    elif kind == "index":
        records, stats = sources.index_records(Path(arg))
    else:
        raise ValueError(f"unknown knowledge source {kind!r} (built in: {', '.join(BUILT_IN_SOURCES)})")
    return tuple(records), tuple(stats.items())


def build_kb(extra: Iterable[str | Path] = (), max_code_len: int = 5, index: Iterable[str | Path] = (),
             sources: Optional[Iterable[str]] = None, datasets: Iterable[str | Path] = ()) -> KnowledgeBase:
    """ICD-10-CM (with the supplement), the built-in synonym ``sources`` (default
    :data:`DEFAULT_SOURCES`; ``()`` for none), ICD-10-CM Alphabetic Index files (``index``), the
    vocabulary of label spaces (``datasets``: label_space.json or a folder holding one) and the
    user's JSON Lines files (``extra``), in that order. ``kb.source_counts()`` says what each gave."""
    kb = icd10cm_kb(max_code_len)
    for kind in DEFAULT_SOURCES if sources is None else tuple(sources):
        try:
            records, stats = _source_records(kind)
        except ModuleNotFoundError as exc:   # an optional package: said in the counts, not silent
            kb.counts[kind] = {"records": 0, "synonyms": 0, "concepts": 0, "unavailable": 1}
            import logging

            logging.getLogger(__name__).warning("knowledge source %s unavailable: %s", kind, exc)
            continue
        kb.merge_records(records, source=kind, nearest=True)
        kb.counts[kind].update(dict(stats))
    for path in index:
        records, stats = _source_records("index", str(Path(path).resolve()))
        name = f"index:{Path(path).name}"
        kb.merge_records(records, source=name, nearest=True)
        kb.counts[name].update(dict(stats))
    for path in datasets:
        from raddiag.knowledge.sources import dataset_records

        records, stats = dataset_records(path)
        name = f"dataset:{path}"
        kb.merge_records(records, source=name, nearest=True)
        kb.counts[name].update(stats)
    for path in extra:
        kb.merge_jsonl(path)
    return kb

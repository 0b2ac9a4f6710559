"""Suggest ICD-10-CM categories for free-text disorder names (a person confirms them).

Each 3-character category is represented by its name and inclusion terms (and any
synonyms merged from other sources), embedded once and cached on disk
(``$RADDIAG_CACHE`` or ``~/.cache/raddiag``, keyed by the encoder's identity and the
texts). A name that means a normal study ("No acute abnormality") or negates a class
("Non-COVID-19") gets no category (:func:`no_code_reason`; an encoder places "Non-X" next to
"X"). A name's score for a category is the sum of four named steps of :class:`CodeIndex`:

1. ``dense``: the best cosine between any of the category's texts and the name read three ways
   (:func:`query_variants`: as written, in ICD-10-CM's words, "kidney stone" -> "kidney
   calculus", and a tumour as "<behaviour> neoplasm of <site>", "hepatocellular carcinoma" ->
   "malignant neoplasm of liver"). The texts of the category's direct subdivisions count too,
   ``CHILD_DISCOUNT`` lower: ICD-10-CM keeps most inclusion terms there (J86 is "Pyothorax";
   "Empyema (chest) (lung) (pleura)" is under J86.9, "Volvulus" under K56.2);
2. ``LEXICAL_WEIGHT`` x ``lexical``: the IDF-weighted share of the name's words met among the words
   of the category and all its sub-codes (words cut to 6 letters, so "meningioma" meets
   "meninges"; a word also meets its ICD-10-CM equivalent and a compound word its roots, see
   :mod:`raddiag.knowledge.terms`; a tumour word asks for its behaviour, "malignant neoplasm";
   an acronym that spells a category's text, "ARDS", counts fully; a tumour is filed by its site, so
   its cell-type words weigh as parts). It reaches sub-codes too
   many to embed quickly ("pituitary adenoma" -> D35.2 "Benign neoplasm of pituitary gland");
3. ``EXACT_BONUS`` x ``exact_hits``: the name *is* one of the category's texts (its own or a
   sub-code's, any source, the Alphabetic Index included), words in any order, any spelling,
   parenthesised modifiers aside;
4. minus ``PRIOR_PENALTY`` x ``unlikely_for``: categories an imaging finding is rarely filed
   under (:data:`UNLIKELY`: Z factors and encounters, injuries, external causes, pregnancy, perinatal,
   carcinoma in situ, manifestation codes, sequelae) unless the name asks for them.

benchmarks/knowledge_map.py measures it on held-out radiology names.
"""
from __future__ import annotations

import hashlib
import json
import math
import re
from collections import Counter
from pathlib import Path
from typing import Container, Optional

import torch

from raddiag.data.case import NORMAL
from raddiag.knowledge import negation
from raddiag.knowledge.encoder import TextEncoder
from raddiag.knowledge.kb import KnowledgeBase
from raddiag.knowledge.terms import (BY_SITE, ELSEWHERE, MORPHOLOGY, SITE_OF, WORD, Group, americanise,
                                     behaviour, exact_key, exact_keys, filed_by_morphology, icd_wording,
                                     index_words, neoplasm_phrase, prefixes, stem, stems, word_groups, words)

LEXICAL_WEIGHT = 1.0
_MORPHOLOGY_STEMS = frozenset(stem(w) for w in MORPHOLOGY)
_BY_SITE_STEMS = frozenset(stem(w) for w in BY_SITE)
#: A direct subdivision's text counts this much less than the category's own in ``dense``.
#: Measured on the benchmark's dev names and the synthetic disorders only (0.1-0.2 alike there;
#: none is better than own texts alone at 0, which puts "Diverticulitis" under a Meckel's code).
CHILD_DISCOUNT = 0.15
#: An exact hit of a category's (or sub-code's) name or synonym, words in any order, adds this.
EXACT_BONUS = 1.0
#: Subtracted from categories a radiology finding is rarely filed under, unless the name asks for them.
PRIOR_PENALTY = 0.3
#: A compound word's root or ending ("nephro-" kidney) weighs this much of a word of the name ...
PART_WEIGHT = 0.3
#: ... unless ICD-10-CM itself uses the word in this many categories ("pneumonia" needs no "lung").
PLAIN_WORD_DF = 3
#: Kinds of category that a disorder seen on imaging is rarely filed under: how to recognise the
#: category (its chapter, or words of its name), and the word stems of a name that ask for it.
UNLIKELY: dict[str, tuple[set[str], Optional[re.Pattern], set[str]]] = {
    "factors and encounters (Z)": ({"21"}, None, {"histor", "screen", "encoun", "status", "contac", "exposu",
                                                 "presen", "examin", "absenc", "aftercare", "fittin",
                                                 "carrie", "transp", "artifi", "prophy", "follow"}),
    "injuries, poisoning, complications of care (S-T)": (
        {"19"}, None, {"fractu", "disloc", "sublux", "sprain", "strain", "tear", "tears", "torn", "ruptur",
                       "injury", "injuri", "injure", "trauma", "contus", "concus", "lacera", "avulsi", "crush",
                       "amputa", "punctu", "wound", "bite", "bites", "burn", "burns", "frostb", "flail",
                       "whipla", "foreig", "poison", "toxic", "toxici", "overdo", "hemato", "emboli",
                       "compli", "prosth", "implan", "graft", "device", "loosen", "postop", "iatrog",
                       "reject", "shunt", "abuse", "shaken", "barotr", "drowni"}),
    "external causes (V-Y)": ({"20"}, None, {"accide", "injury", "assaul", "fall", "poison"}),
    "pregnancy (O)": ({"15"}, None, {"pregna", "gestat", "obstet", "placen", "ectopi", "aborti", "labor",
                                    "labour", "delive", "puerpe", "postpa", "eclamp", "preecl", "amniot",
                                    "hydati", "molar"}),
    "perinatal (P)": ({"16"}, None, {"neonat", "newbor", "perina", "fetal", "fetus", "birth", "preter",
                                    "premat", "infant"}),
    "carcinoma in situ": (set(), re.compile(r"\bin situ\b"), {"situ"}),
    "manifestation (in diseases classified elsewhere)": (set(), ELSEWHERE, set()),
    "sequelae": (set(), re.compile(r"^sequelae\b"), {"sequel", "late", "old"}),
}


def code_behaviour(code: str) -> str:
    """A neoplasm category's behaviour by its place in ICD-10-CM: "secondary malignant" (C77-C79,
    C7B), "malignant" (other C), "in situ" (D00-D09), "benign" (D10-D36, D3A), "uncertain"
    (D37-D48), else ""."""
    if code[0] == "C":
        return "secondary malignant" if code in ("C77", "C78", "C79", "C7B") else "malignant"
    if code[0] != "D" or not code[1:3].isdigit():
        return "benign" if code == "D3A" else ""
    n = int(code[1:3])
    return "in situ" if n <= 9 else "benign" if n <= 36 else "uncertain" if n <= 48 else ""


def _behaviour_words(name: str, by_morphology: frozenset) -> list[Group]:
    """ICD-10-CM files tumours as neoplasms by behaviour: a malignant tumour word asks for
    "malignant neoplasm" (so "carcinoma" is not read as "carcinoma in situ"), another "-oma"
    word for "benign neoplasm"; none for a tumour it files by morphology ("hemangioma")."""
    kind = behaviour(name)
    if not kind or filed_by_morphology(name, by_morphology):
        return []
    return [_group(kind.split()[-1]), _group("neoplasm")]


def _group(word: str) -> Group:
    return Group(frozenset([stem(word)]))


def _acronym(text: str) -> str:
    return "".join(w[0] for w in WORD.findall(text.lower()) if w not in {"of", "and", "the", "in"})


def query_groups(name: str, by_morphology: frozenset = frozenset()) -> list[Group]:
    """The name's words as groups of matching stems (:func:`raddiag.knowledge.terms.word_groups`)
    plus the neoplasm behaviour its tumour words imply."""
    groups = word_groups(name)
    if behaviour(name):
        # a tumour is filed by its site: its cell type, and a tumour word filed by site, weigh as parts
        minor = _MORPHOLOGY_STEMS | (_BY_SITE_STEMS if neoplasm_phrase(name, by_morphology) else frozenset())
        groups = [Group(g.stems, g.part, minor=bool(g.stems & minor)) for g in groups]
        groups += [Group(frozenset(stem(x) for x in SITE_OF[w].split()), minor=True)
                   for w in dict.fromkeys(words(name)) if w in SITE_OF]
    return groups + _behaviour_words(name, by_morphology)


def query_variants(name: str, by_morphology: frozenset = frozenset(),
                   vocabulary: Optional[Container] = None) -> tuple[str, str, str]:
    """What the embedding reads for a name: the name, the name in ICD-10-CM's words, and a tumour
    name as "<behaviour> neoplasm of <site>" (else the second again; see
    :func:`raddiag.knowledge.terms.neoplasm_phrase`)."""
    icd = icd_wording(name)
    return americanise(name), icd, neoplasm_phrase(name, by_morphology, vocabulary) or icd


class CodeIndex:
    """The category side of :func:`suggest_codes`: texts, their embeddings, a lexical index."""

    def __init__(self, kb: KnowledgeBase, encoder: TextEncoder, use_cache: bool = True,
                 progress: bool = False) -> None:
        self.kb = kb
        self.encoder = encoder
        cats = kb.categories()
        self.codes = [c.id for c in cats]
        self.names = [c.name for c in cats]
        self.texts: list[str] = []
        self.owner: list[int] = []
        self.is_child: list[bool] = []                 # the text is a direct subdivision's
        self.word_df: Counter = Counter()              # whole words: in how many categories
        self.by_stem: dict[str, list[int]] = {}        # a stem -> the categories it meets (inverted index)
        self.by_acronym: dict[str, set[int]] = {}
        self.exact: dict[str, set[int]] = {}
        for i, c in enumerate(cats):
            own = list(dict.fromkeys([c.name, *c.synonyms]))
            child = [t for t in dict.fromkeys(t for k in c.children if k in kb for t in kb.texts(k))
                     if t not in own]
            self.texts += own + child
            self.owner += [i] * (len(own) + len(child))
            self.is_child += [False] * len(own) + [True] * len(child)
            sub = [t for d in kb.descendants(c.id) for t in kb.texts(d)]
            cat_words = {w for t in own + sub for w in index_words(t)}
            self.word_df.update(cat_words)
            for p in {p for w in cat_words for p in prefixes(w)}:
                self.by_stem.setdefault(p, []).append(i)
            for t in own + sub:
                self.by_acronym.setdefault(_acronym(t), set()).add(i)
                for key in exact_keys(t):
                    self.exact.setdefault(key, set()).add(i)
        n = len(cats)
        self.idf = {w: math.log((n + 1) / (len(ids) + 0.5)) for w, ids in self.by_stem.items()}
        self.default_idf = math.log(n + 1)
        self.unlikely = {kind: torch.tensor([c.chapter in chapters or bool(pat and pat.search(c.name.lower()))
                                             for c in cats])
                         for kind, (chapters, pat, _) in UNLIKELY.items()}
        self.behaviour = [code_behaviour(c) for c in self.codes]
        self.morphology = frozenset(w for c in cats for w in words(c.name) if w.endswith("oma"))
        self.emb = self._embeddings(use_cache, progress)
        self.owner_t = torch.tensor(self.owner)
        self.discount = CHILD_DISCOUNT * torch.tensor(self.is_child, dtype=torch.float32)

    def _embeddings(self, use_cache: bool, progress: bool) -> torch.Tensor:
        from raddiag.knowledge.train import cache_dir

        key = hashlib.sha1(json.dumps([self.encoder.identity, self.texts]).encode()).hexdigest()[:20]
        path = cache_dir() / "code-index" / f"{key}.safetensors"
        if use_cache and path.is_file():
            from safetensors.torch import load_file

            return load_file(str(path))["embeddings"]
        emb = self.encoder.encode(self.texts, batch_size=128, progress=progress)
        if use_cache:
            try:
                from safetensors.torch import save_file

                path.parent.mkdir(parents=True, exist_ok=True)
                save_file({"embeddings": emb.contiguous()}, str(path.with_suffix(".tmp")))
                path.with_suffix(".tmp").replace(path)
            except OSError:  # a read-only cache is not an error
                pass
        return emb

    # -- the score's parts, each [len(names), categories] -------------------------------------
    def dense(self, names: list[str]) -> torch.Tensor:
        """Per category, the best cosine between the name (read three ways, whichever is
        closest) and any of the category's texts, a direct subdivision's ``CHILD_DISCOUNT`` lower."""
        variants = [v for vs in zip(*(query_variants(n, self.morphology, self.word_df) for n in names)) for v in vs]
        unique = {v: i for i, v in enumerate(dict.fromkeys(variants))}   # most names read alike two ways
        q = self.encoder.encode(list(unique))[[unique[v] for v in variants]]
        sims = (q @ self.emb.T).view(len(variants) // len(names), len(names), -1).amax(0) - self.discount
        out = torch.full((len(names), len(self.codes)), -1.0)
        return out.scatter_reduce(1, self.owner_t.expand(len(names), -1), sims, reduce="amax")

    def lexical(self, name: str) -> torch.Tensor:
        """Per category, the IDF-weighted share of the name's word groups that meet a word of
        the category or of any of its sub-codes; an acronym that spells a text counts fully."""
        groups = [g for g in query_groups(name, self.morphology) if self.word_df.get(g.part, 0) < PLAIN_WORD_DF]
        weight = [max(self.idf.get(w, self.default_idf) for w in g.stems)
                  * (PART_WEIGHT if g.part or g.minor else 1.0) for g in groups]
        total = sum(weight)
        out = torch.zeros(len(self.codes))
        for g, wt in zip(groups, weight):
            met = set().union(*(self.by_stem.get(s, ()) for s in g.stems))
            out[list(met)] += wt / total
        acro = re.sub(r"[^a-z]", "", name.lower())
        if len(acro) >= 3 and name.strip().isupper():
            out[list(self.by_acronym.get(acro, ()))] = 1.0
        return out

    def exact_hits(self, name: str) -> torch.Tensor:
        """1 for each category with a name or synonym (its own or a sub-code's) that is the query's
        words in any order and spelling, else 0."""
        out = torch.zeros(len(self.codes))
        for i in self.exact.get(exact_key(name), ()):
            out[i] = 1.0
        return out

    def unlikely_for(self, name: str) -> torch.Tensor:
        """1 for each category of a kind in :data:`UNLIKELY` that the name does not ask for, and for
        each neoplasm category whose behaviour (malignant, secondary, benign) is not the one the
        name's tumour word implies ("adenoma" is not C74 "Malignant neoplasm of adrenal gland")."""
        asked = set(stems(name))
        out = torch.zeros(len(self.codes))
        for kind, (_, _, allow) in UNLIKELY.items():
            if not asked & allow:
                out = torch.maximum(out, self.unlikely[kind].float())
        if (kind := behaviour(name)):
            other = {"malignant", "secondary malignant", "benign"} - {kind}
            out = torch.maximum(out, torch.tensor([b in other for b in self.behaviour]).float())
        return out

    def scores(self, names: list[str], lexical_weight: Optional[float] = None,
               exact_bonus: Optional[float] = None, prior_penalty: Optional[float] = None) -> torch.Tensor:
        """dense + lexical_weight * lexical + exact_bonus * exact - prior_penalty * unlikely
        (weights default to :data:`LEXICAL_WEIGHT`, :data:`EXACT_BONUS`, :data:`PRIOR_PENALTY`)."""
        lexical_weight = LEXICAL_WEIGHT if lexical_weight is None else lexical_weight
        exact_bonus = EXACT_BONUS if exact_bonus is None else exact_bonus
        prior_penalty = PRIOR_PENALTY if prior_penalty is None else prior_penalty
        per_code = self.dense(names)
        if lexical_weight:
            per_code = per_code + lexical_weight * torch.stack([self.lexical(n) for n in names])
        if exact_bonus:
            per_code = per_code + exact_bonus * torch.stack([self.exact_hits(n) for n in names])
        if prior_penalty:
            per_code = per_code - prior_penalty * torch.stack([self.unlikely_for(n) for n in names])
        return per_code


_INDEX_CACHE: dict[tuple, CodeIndex] = {}


def check_names(names: list[str], warn: bool = True) -> None:
    """Refuse no names, or a name that is not text or is empty / only spaces, naming which; with
    ``warn``, warn of a name with no Latin letter (the knowledge base is English, so its suggestions
    mean little)."""
    import unicodedata
    import warnings

    from raddiag.data.errors import InputWarning, one_line

    if not names:
        raise ValueError("no disorder names to map")
    for i, n in enumerate(names, 1):
        if not isinstance(n, str) or not n.strip():
            raise ValueError(f"disorder name {i} of {len(names)} is empty (or only spaces): {n!r}")
        if warn and not any(ch.isalpha() and "LATIN" in unicodedata.name(ch, "") for ch in n):
            warnings.warn(InputWarning(f"disorder name {i} of {len(names)} ({one_line(n, 40)}) has no Latin "
                                       "letter: ICD-10-CM and the encoder read English, so its suggestions "
                                       "mean little (translate it first)"), stacklevel=2)


def no_code_reason(name: str) -> Optional[str]:
    """Why a name gets no ICD-10-CM code, else None: it means a normal study ("No finding"), or
    negates a class ("Non-COVID-19"; :mod:`raddiag.knowledge.negation`), whose codes an encoder
    would suggest, since it places "Non-X" next to "X"."""
    meaning = negation.parse(name)
    if meaning.normal:
        return "a normal study: no ICD-10-CM code (label it Normal)"
    if meaning.negates is None:
        return None
    other = "" if meaning.negates == NORMAL else ", or Normal"
    return (f"negates {meaning.negates!r}: no ICD-10-CM code (a case without {meaning.negates} is "
            f"labelled by what it has{other})")


def suggest_codes(names: list[str], top: int = 5, encoder: Optional[TextEncoder] = None,
                  kb: Optional[KnowledgeBase] = None, lexical_weight: Optional[float] = None,
                  progress: bool = False) -> list[list[tuple[str, str, float]]]:
    """For each name, the ``top`` nearest 3-character ICD-10-CM categories as
    ``(code, description, score)``, best first; none for a name meaning a normal study or
    negating a class (:func:`no_code_reason` says why)."""
    if isinstance(names, str):
        names = [names]
    check_names(names)
    if top < 1:
        raise ValueError(f"top must be >= 1, got {top}")
    coded = list(dict.fromkeys(n for n in names if no_code_reason(n) is None))
    found = dict(zip(coded, _nearest_codes(coded, top, encoder, kb, lexical_weight, progress))) if coded else {}
    return [found.get(n, []) for n in names]


def _nearest_codes(names: list[str], top: int, encoder: Optional[TextEncoder], kb: Optional[KnowledgeBase],
                   lexical_weight: Optional[float], progress: bool) -> list[list[tuple[str, str, float]]]:
    """:func:`suggest_codes` for names that are neither normal nor negated."""
    if encoder is None:
        encoder = TextEncoder.load()
    if kb is None:
        from raddiag.knowledge.kb import build_kb

        kb = build_kb()
    key = (id(kb), kb.version, encoder.identity)
    index = _INDEX_CACHE.get(key)
    if index is None:
        index = _INDEX_CACHE[key] = CodeIndex(kb, encoder, progress=progress)
    s = index.scores(names, lexical_weight)
    k = min(top, s.shape[1])
    val, idx = s.topk(k, dim=1)
    return [[(index.codes[j], index.names[j], round(float(v), 4)) for v, j in zip(vr, ir)]
            for vr, ir in zip(val.tolist(), idx.tolist())]


def best_cached_encoder() -> Optional[Path]:
    """The fine-tuned knowledge encoder in the cache (``cache_dir()``, where ``raddiag demo``
    and ``knowledge train`` runs land) with the highest held-out recall@1 after training; None
    when there is none."""
    from raddiag.knowledge.encoder import META_FILE
    from raddiag.knowledge.train import METRICS_FILE, cache_dir

    best, best_key = None, None
    root = cache_dir()
    for d in sorted(root.iterdir()) if root.is_dir() else ():
        m = d / METRICS_FILE
        if not (m.is_file() and (d / META_FILE).is_file() and (d / "config.json").is_file()):
            continue
        try:
            after = json.loads(m.read_text()).get("after") or {}
            key = (float(after.get("recall@1", float("nan"))), int(json.loads(m.read_text()).get("steps", 0)))
        except (ValueError, TypeError, OSError):
            continue        # a run being written, or not ours: not a candidate
        if math.isnan(key[0]):
            continue
        if best_key is None or key > best_key:
            best, best_key = d, key
    return best


def resolve_encoder(spec: Optional[str] = "best") -> tuple[TextEncoder, str]:
    """``(encoder, what it is)`` for ``spec``: a folder, ``"base"`` (all-MiniLM-L6-v2) or
    ``"best"``/None (the best fine-tuned encoder in the cache, else the base)."""
    if spec not in (None, "best", "base"):
        return TextEncoder.load(spec), f"{spec} (given)"
    if spec != "base":
        found = best_cached_encoder()
        if found is not None:
            return TextEncoder.load(found), f"{found} (fine-tuned, best held-out recall@1 in the cache)"
    return TextEncoder.load(None), "all-MiniLM-L6-v2 (base; no fine-tuned encoder in the cache)" \
        if spec != "base" else "all-MiniLM-L6-v2 (base)"

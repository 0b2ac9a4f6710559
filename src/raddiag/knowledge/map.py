"""Suggest ICD-10-CM categories for free-text disorder names (a person confirms them).

Each 3-character category is represented by its name and inclusion terms (and any
synonyms merged from user knowledge), embedded once and cached on disk
(``$RADDIAG_CACHE`` or ``~/.cache/raddiag``, keyed by the encoder's identity and the
texts). A name's score for a category is

    max cosine(name, category texts) + LEXICAL_WEIGHT * lexical(name, category subtree)

where ``lexical`` is the IDF-weighted share of the name's words found among the words of
the category and all its sub-codes (words cut to 6 letters, so "meningioma" meets
"meninges"), a word ending in "-oma" also asks for "neoplasm", and an acronym that spells a category's name ("ARDS") counts as a full
match. The lexical part reaches sub-codes that are too many to embed quickly
("pituitary adenoma" -> D35.2 "Benign neoplasm of pituitary gland" -> D35); on the
README names of ../shared/data it moves the suggested code into the top 5 for names
that embeddings alone miss. A name that *is* one of a category's texts (its own or a
sub-code's; any source, the Alphabetic Index included), words in any order and British or
American spelling, adds :data:`EXACT_BONUS`. benchmarks/knowledge_map.py measures it on
held-out radiology names.
"""
from __future__ import annotations

import hashlib
import json
import math
import re
from collections import Counter
from pathlib import Path
from typing import Optional

import torch

from raddiag.knowledge.encoder import TextEncoder
from raddiag.knowledge.kb import KnowledgeBase

LEXICAL_WEIGHT = 1.0
STEM = 6
STOP = {"of", "and", "the", "in", "with", "without", "due", "to", "other", "unspecified", "not",
        "elsewhere", "classified", "or", "by", "for", "nos", "a", "an", "as", "on", "disease",
        "diseases", "disorder", "disorders", "condition"}
NOT_TUMOURS = {"coma", "glaucoma", "trachoma", "diploma", "stoma", "aroma", "soma", "hematoma", "haematoma",
               "granuloma", "scotoma", "xanthoma", "atheroma", "lymphangioma"}
#: Tumour words whose behaviour the Alphabetic Index gives as malignant ("Carcinoma - see also
#: Neoplasm, by site, malignant"; ICD-O behaviour /3); other "-oma" words are benign (/0) there.
MALIGNANT = ("carcinoma", "sarcoma", "cancer", "malignant", "lymphoma", "melanoma", "myeloma",
             "mesothelioma", "glioma", "blastoma", "seminoma", "germinoma", "astrocytoma", "ependymoma",
             "leukemia", "leukaemia", "metastasis", "metastases", "metastatic")
BENIGN_BLASTOMAS = ("osteoblastoma", "chondroblastoma", "lipoblastoma")
_WORD = re.compile(r"[a-z0-9]+")


#: British -> American spelling, as ICD-10-CM writes it ("haemorrhage", "oedema", "tumour", "goitre").
_SPELLING = [(re.compile(r"(?<=[a-z])ae"), "e"),                    # haem-, paed-, ischaem- (not aero-)
             (re.compile(r"oe(?=[a-z])(?!s\b)"), "e"),                # oedema, oesophag-, coeliac, diarrhoea
             (re.compile(r"(?<=[a-z]{2})our\b"), "or"),               # tumour, behaviour (not four)
             (re.compile(r"(?<=[a-z]{2})([b-df-hj-np-tv-z])re\b"), r"\1er")]   # goitre, fibre (not pre)
#: An exact hit of a category's (or sub-code's) name or synonym, words in any order, adds this.
EXACT_BONUS = 1.0


def americanise(text: str) -> str:
    out = text.lower()
    for pat, rep in _SPELLING:
        out = pat.sub(rep, out)
    return out


def _stems(text: str) -> list[str]:
    return [w[:STEM] for w in _WORD.findall(americanise(text)) if w not in STOP and len(w) > 1]


def _exact_key(text: str) -> str:
    """Whole words (not stems: "nephrolithiasis" must not meet "nephrosis"), any order, any spelling."""
    return " ".join(sorted({w for w in _WORD.findall(americanise(text)) if w not in STOP and len(w) > 1}))


def _behaviour_words(name: str) -> list[str]:
    """ICD-10-CM files tumours as neoplasms by behaviour: a malignant tumour word asks for
    "malignant neoplasm" (so "carcinoma" is not read as "carcinoma in situ"), another "-oma"
    word for "benign neoplasm"."""
    words = _WORD.findall(americanise(name))
    if any(any(m in w for m in MALIGNANT) and w not in BENIGN_BLASTOMAS for w in words):
        return ["malign", "neopla"]
    if any(w.endswith("oma") and w not in NOT_TUMOURS for w in words):
        return ["benign", "neopla"]
    return []


def _acronym(text: str) -> str:
    return "".join(w[0] for w in _WORD.findall(text.lower()) if w not in {"of", "and", "the", "in"})


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
        self.words: list[set[str]] = []
        self.acronyms: list[set[str]] = []
        self.exact: dict[str, set[int]] = {}
        for i, c in enumerate(cats):
            own = list(dict.fromkeys([c.name, *c.synonyms]))
            self.texts += own
            self.owner += [i] * len(own)
            sub = [t for d in kb.descendants(c.id) for t in kb.texts(d)]
            self.words.append({w for t in own + sub for w in _stems(t)})
            self.acronyms.append({_acronym(t) for t in own + sub})
            for t in own + sub:
                if (key := _exact_key(t)):
                    self.exact.setdefault(key, set()).add(i)
        df = Counter(w for ws in self.words for w in ws)
        n = len(cats)
        self.idf = {w: math.log((n + 1) / (k + 0.5)) for w, k in df.items()}
        self.default_idf = math.log(n + 1)
        self.emb = self._embeddings(use_cache, progress)
        self.owner_t = torch.tensor(self.owner)

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

    def lexical(self, name: str) -> torch.Tensor:
        q = _stems(name)
        q += _behaviour_words(name)
        out = torch.zeros(len(self.codes))
        total = sum(self.idf.get(w, self.default_idf) for w in q)
        acro = re.sub(r"[^a-z]", "", name.lower())
        for i, (ws, acs) in enumerate(zip(self.words, self.acronyms)):
            if total:
                out[i] = sum(self.idf.get(w, self.default_idf) for w in q if w in ws) / total
            if len(acro) >= 3 and name.strip().isupper() and acro in acs:
                out[i] = 1.0
        return out

    def exact_hits(self, name: str) -> torch.Tensor:
        """1 for each category with a name or synonym (its own or a sub-code's) that is the query's
        words in any order and spelling, else 0."""
        out = torch.zeros(len(self.codes))
        for i in self.exact.get(_exact_key(name), ()):
            out[i] = 1.0
        return out

    def scores(self, names: list[str], lexical_weight: float = LEXICAL_WEIGHT,
               exact_bonus: float = EXACT_BONUS) -> torch.Tensor:
        q = self.encoder.encode([americanise(n) for n in names])
        sims = q @ self.emb.T                                         # [n, texts]
        per_code = torch.full((len(names), len(self.codes)), -1.0)
        per_code = per_code.scatter_reduce(1, self.owner_t.expand(len(names), -1), sims, reduce="amax")
        if lexical_weight:
            per_code = per_code + lexical_weight * torch.stack([self.lexical(n) for n in names])
        if exact_bonus:
            per_code = per_code + exact_bonus * torch.stack([self.exact_hits(n) for n in names])
        return per_code


_INDEX_CACHE: dict[tuple, CodeIndex] = {}


def suggest_codes(names: list[str], top: int = 5, encoder: Optional[TextEncoder] = None,
                  kb: Optional[KnowledgeBase] = None, lexical_weight: float = LEXICAL_WEIGHT,
                  progress: bool = False) -> list[list[tuple[str, str, float]]]:
    """For each name, the ``top`` nearest 3-character ICD-10-CM categories as
    ``(code, description, score)``, best first."""
    if isinstance(names, str):
        names = [names]
    if not names or any(not isinstance(n, str) or not n.strip() for n in names):
        raise ValueError("suggest_codes needs non-empty names")
    if top < 1:
        raise ValueError(f"top must be >= 1, got {top}")
    if encoder is None:
        encoder = TextEncoder.load()
    if kb is None:
        from raddiag.knowledge.kb import build_kb

        kb = build_kb()
    key = (id(kb), kb.version, encoder.identity)
    index = _INDEX_CACHE.get(key)
    if index is None:
        index = _INDEX_CACHE[key] = CodeIndex(kb, encoder, progress=progress)
    s = index.scores(list(names), lexical_weight)
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

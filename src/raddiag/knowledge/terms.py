"""Words of disorder names as :mod:`raddiag.knowledge.map` compares them.

A radiologist and ICD-10-CM often name one thing in different words: "kidney stone" is
"calculus of kidney", "urolithiasis" a "urinary calculus", "disc herniation" a "disc
displacement", "metastases" a "secondary malignant neoplasm". Three general tables bridge
this (general medical vocabulary, no disorder names):

- :data:`EQUIVALENTS`: words that mean the same, the first one being the word ICD-10-CM uses.
- :data:`ROOTS`: Greek and Latin word roots with the plain word ICD-10-CM uses for them
  ("nephro-" kidney, "chondro-" cartilage), so a compound word meets the category named in plain
  words ("retinoblastoma" -> retina, "osteochondroma" -> bone, cartilage).
- :data:`SUFFIXES`: endings that name a process ("-lithiasis" calculus, "-megaly" enlargement).

:func:`word_groups` turns a text into groups of alternatives, one group per word (the word and
its ICD-10-CM equivalent) plus one per root or ending it contains; :func:`icd_wording` rewrites a
name in ICD-10-CM's words and :func:`neoplasm_phrase` a tumour name as ICD-10-CM files it
("<behaviour> neoplasm of <site>"), both for the embedding. British spellings are read as
American first (:func:`americanise`), as ICD-10-CM writes them. Tumour behaviour words
(:data:`MALIGNANT`, :func:`behaviour`) live here too.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Container, Optional

#: Words cut to this many letters meet their relatives ("meningioma" meets "meninges").
STEM = 6
STOP = {"of", "and", "the", "in", "with", "without", "due", "to", "other", "unspecified", "not",
        "elsewhere", "classified", "or", "by", "for", "nos", "a", "an", "as", "on", "disease",
        "diseases", "disorder", "disorders", "condition"}
WORD = re.compile(r"[a-z0-9]+")

#: British -> American spelling, as ICD-10-CM writes it ("haemorrhage", "oedema", "tumour", "goitre").
_SPELLING = [(re.compile(r"(?<=[a-z])ae"), "e"),                    # haem-, paed-, ischaem- (not aero-)
             (re.compile(r"oe(?=[a-z])(?!s\b)"), "e"),                # oedema, oesophag-, coeliac, diarrhoea
             (re.compile(r"(?<=[a-z]{2})our\b"), "or"),               # tumour, behaviour (not four)
             (re.compile(r"(?<=[a-z]{2})([b-df-hj-np-tv-z])re\b"), r"\1er")]   # goitre, fibre (not pre)

#: Same-meaning words; the first is ICD-10-CM's. A word may appear in one group only.
EQUIVALENTS: list[tuple[str, ...]] = [
    ("calculus", "calculi", "stone", "stones", "lithiasis"),
    ("hemorrhage", "bleed", "bleeding", "haemorrhage", "hemorrhagic"),
    ("displacement", "herniation", "herniated", "prolapse", "prolapsed", "protrusion", "extrusion"),
    ("spondylolisthesis", "listhesis", "anterolisthesis", "retrolisthesis"),
    ("secondary", "metastasis", "metastases", "metastatic", "deposits", "carcinomatosis"),
    ("infarction", "infarct", "infarcts"),
    ("nonruptured", "unruptured"),
    ("rupture", "ruptured", "perforation", "perforated", "tear"),
    ("kidney", "renal", "nephric"),
    ("liver", "hepatic"),
    ("lung", "pulmonary"),
    ("cerebral", "brain", "intracranial"),
    ("heart", "cardiac"),
    ("stomach", "gastric"),
    ("gallbladder", "cholecystic"),
    ("ureter", "ureteric", "ureteral"),
    ("bladder", "vesical"),
    ("esophagus", "esophageal"),
    ("uterus", "uterine"),
    ("ovary", "ovarian"),
    ("testis", "testicular", "testes"),
    ("spleen", "splenic"),
    ("pancreas", "pancreatic"),
    ("bone", "osseous", "bony"),
    ("leiomyoma", "fibroid", "fibroids"),
    ("disc", "disk", "discs", "disks"),
    ("hiatal", "hiatus"),
    ("neoplasm", "tumor", "tumors", "neoplasms"),
    ("fracture", "fractures", "fractured", "break"),
    ("cyst", "cysts", "cystic"),
    ("enlargement", "enlarged"),
    ("dilation", "dilatation", "dilated", "ectasia"),
    ("occlusion", "occluded", "blockage"),
    ("obstruction", "obstructed", "obstructive"),
    ("inflammation", "inflamed", "inflammatory"),
]
_CANON = {w: g[0] for g in EQUIVALENTS for w in g}

#: Word roots (at a word's start or after another root) and ICD-10-CM's plain word for them.
ROOTS: dict[str, str] = {
    "nephro": "kidney", "nephr": "kidney", "hepato": "liver", "hepat": "liver",
    "cholangio": "bile duct", "cholecyst": "gallbladder", "chole": "gallbladder", "uro": "urinary",
    "osteo": "bone", "oste": "bone",
    "chondro": "cartilage", "chondr": "cartilage", "retino": "retina", "pneumo": "lung",
    "encephalo": "brain", "encephal": "brain", "cardio": "heart", "gastro": "stomach", "gastr": "stomach",
    "entero": "intestine", "spondylo": "vertebra", "spondyl": "vertebra", "cranio": "skull",
    "meningo": "meninges", "mening": "meninges", "thyro": "thyroid", "hystero": "uterus",
    "oophor": "ovary", "orchi": "testis", "pancreat": "pancreas", "spleno": "spleen",
    "arthro": "joint", "arthr": "joint", "adeno": "gland", "aden": "gland", "neuro": "nerve",
    "angio": "vessel", "lipo": "lipoma",
    "cysto": "bladder", "pyelo": "kidney", "colo": "colon", "procto": "rectum",
    "broncho": "bronchus", "bronch": "bronchus", "laryngo": "larynx", "tracheo": "trachea",
    "rhabdomyo": "muscle", "leiomyo": "smooth muscle", "fibro": "fibrous", "hemangio": "hemangioma",
}
#: Endings that name a process, with ICD-10-CM's word for it.
SUFFIXES: dict[str, str] = {
    "lithiasis": "calculus", "lith": "calculus",
    "megaly": "enlargement", "ectasis": "dilation", "ectasia": "dilation", "malacia": "softening",
    "listhesis": "displacement", "rrhage": "hemorrhage", "cele": "hernia", "stenosis": "stenosis",
}
NOT_TUMOURS = {"coma", "glaucoma", "trachoma", "diploma", "stoma", "aroma", "soma", "hematoma", "haematoma",
               "granuloma", "scotoma", "xanthoma", "atheroma", "lymphangioma"}
#: Tumour words whose behaviour the Alphabetic Index gives as malignant ("Carcinoma - see also
#: Neoplasm, by site, malignant"; ICD-O behaviour /3); other "-oma" words are benign (/0) there.
MALIGNANT = ("carcinoma", "sarcoma", "cancer", "malignant", "lymphoma", "melanoma", "myeloma",
             "mesothelioma", "glioma", "blastoma", "seminoma", "germinoma", "astrocytoma", "ependymoma",
             "leukemia", "leukaemia", "metastasis", "metastases", "metastatic")
SECONDARY = ("metastasis", "metastases", "metastatic", "carcinomatosis")   # carcinomatosis of a site: spread to it
BENIGN_BLASTOMAS = ("osteoblastoma", "chondroblastoma", "lipoblastoma")
#: Words that name a tumour's cell type or grade, not its site: ICD-10-CM files a tumour by site, so
#: in a tumour name these name no site and weigh as a part ("squamous cell carcinoma of a bronchus" is C34,
#: not C44 "... of skin", whose texts say "squamous cell carcinoma").
MORPHOLOGY = {"squamous", "cell", "cells", "small", "large", "clear", "papillary", "follicular", "anaplastic",
              "ductal", "lobular", "mucinous", "serous", "signet", "ring", "transitional", "giant", "round",
              "spindle", "germ", "embryonal", "invasive", "differentiated", "poorly", "well", "basal", "oat",
              "high", "low", "grade"}
#: Parts of a limb or an organ, and the limb or organ ICD-10-CM files a tumour of them under (C40 / C49
#: "... of lower limb", D15 / C38 "... of heart"): for tumour names only (a fracture is filed by the bone).
SITE_OF: dict[str, str] = {
    **dict.fromkeys(("femur", "femoral", "tibia", "tibial", "fibula", "fibular", "thigh", "knee", "leg", "calf",
                     "ankle", "foot", "feet", "toe", "toes", "popliteal"), "lower limb"),
    **dict.fromkeys(("humerus", "humeral", "radius", "radial", "ulna", "ulnar", "forearm", "arm", "elbow",
                     "wrist", "hand", "hands", "finger", "fingers", "scapula", "scapular"), "upper limb"),
    **dict.fromkeys(("atrium", "atrial", "atria", "ventricle", "ventricular", "myocardium", "myocardial",
                     "endocardium", "endocardial", "valve", "valvular"), "heart"),
}
_ROOT_RE = re.compile("^(?:" + "|".join(sorted(ROOTS, key=len, reverse=True)) + ")")
_SUFFIX_RE = re.compile("(?:" + "|".join(sorted(SUFFIXES, key=len, reverse=True)) + ")$")


def americanise(text: str) -> str:
    out = text.lower()
    for pat, rep in _SPELLING:
        out = pat.sub(rep, out)
    return out


def words(text: str) -> list[str]:
    """Lower-case, American-spelled words without stop words and single letters."""
    return [w for w in WORD.findall(americanise(text)) if w not in STOP and len(w) > 1]


def stems(text: str) -> list[str]:
    return [w[:STEM] for w in words(text)]


#: A longer word must share all but this many of its last letters ("spondylolisthesis" does not
#: meet "spondylosis", "meningioma" still meets "meninges").
LOOSE_END = 4


def stem(word: str) -> str:
    """What of ``word`` a category word must start with to meet it: its first :data:`STEM`
    letters, more for a long word (all but :data:`LOOSE_END`)."""
    return word[:max(STEM, len(word) - LOOSE_END)]


def prefixes(word: str) -> set[str]:
    """Every :func:`stem` a query word could have that ``word`` meets."""
    return {word[:k] for k in range(min(STEM, len(word)), len(word) + 1)}


#: A manifestation code's text ("Pneumonia in diseases classified elsewhere").
ELSEWHERE = re.compile(r"classified elsewhere")
_MODIFIER = re.compile(r"\s*(?:\([^()]*\)|\[[^\[\]]*\])")


def exact_key(text: str) -> str:
    """Whole words (not stems: "nephrolithiasis" must not meet "nephrosis"), any order, any spelling;
    none for a manifestation text ("Pneumonia in diseases classified elsewhere" is not "pneumonia")."""
    if ELSEWHERE.search(text.lower()):
        return ""
    return " ".join(sorted({w for w in WORD.findall(americanise(text)) if w not in STOP and len(w) > 1}))


def exact_keys(text: str) -> set[str]:
    """The text's :func:`exact_key`, and the same without its parenthesised words: ICD-10-CM's
    nonessential modifiers ("Pericardial effusion (noninflammatory)" is also "pericardial effusion")
    and the bracketed other wordings of ICD-9-CM names ("Pneumococcal septicemia [Streptococcus
    pneumoniae septicemia]")."""
    return {k for k in (exact_key(text), exact_key(_MODIFIER.sub("", text))) if k}


def canonical(word: str) -> str:
    """ICD-10-CM's word for ``word`` (itself when the tables have none)."""
    return _CANON.get(word, word)


def parts(word: str) -> list[str]:
    """The plain words a compound's roots and ending stand for ("urolithiasis" -> urinary,
    calculus); none for a word that is not such a compound or is a plain word itself."""
    if word in _CANON or len(word) < 7:
        return []
    out = []
    root = _ROOT_RE.match(word)
    if root:
        out.append(ROOTS[root.group(0)])
        rest = word[root.end():].lstrip("o")
        nxt = _ROOT_RE.match(rest)
        if nxt and len(rest) > len(nxt.group(0)) + 1:
            out.append(ROOTS[nxt.group(0)])
    suffix = _SUFFIX_RE.search(word)
    if suffix and suffix.start() >= 3:
        out.append(SUFFIXES[suffix.group(0)])
    return list(dict.fromkeys(out))


@dataclass
class Group:
    """One word of a name as the lexical score looks for it: the ``stems`` that count as meeting it
    (the word's and its ICD-10-CM equivalent's); ``part`` names the compound word when the group
    stands for one of its roots or its ending."""
    stems: frozenset
    part: str = ""
    minor: bool = False     # weighs as a part though it is a word (a tumour's cell type, its limb or organ)


def word_groups(text: str) -> list[Group]:
    """One :class:`Group` per word of ``text``, then one per root or ending of its compound words."""
    groups, extra = [], []
    for w in words(text):
        groups.append(Group(frozenset({stem(w), stem(canonical(w))})))
        extra += [Group(frozenset(stem(x) for x in words(part)), part=w) for part in parts(w) if words(part)]
    return groups + extra


def index_words(text: str) -> set[str]:
    """What a category text offers to :func:`word_groups`: its words, their ICD-10-CM equivalents
    and the plain words of its compound words' parts (whole words; stems are cut from these)."""
    out = set()
    for w in words(text):
        out |= {w, canonical(w)}
        for part in parts(w):
            out |= set(words(part))
    return out


def _plain(word: str) -> str:
    """ICD-10-CM's word for ``word``, or the plain words of a compound with both a root and an
    ending ("urolithiasis" -> "urinary calculus", "splenomegaly" -> "spleen enlargement")."""
    if word in _CANON:
        return _CANON[word]
    ps = parts(word)
    return " ".join(ps) if len(ps) > 1 and ps[-1] in SUFFIXES.values() else word


def icd_wording(name: str) -> str:
    """``name`` in ICD-10-CM's words ("kidney stone" -> "kidney calculus", "urolithiasis" ->
    "urinary calculus"); the embedding reads both this and the name."""
    return WORD.sub(lambda m: _plain(m.group(0)), americanise(name))


def _tumour_word(word: str) -> str:
    """"malignant", "benign" or "" for one word."""
    if any(m in word for m in MALIGNANT) and word not in BENIGN_BLASTOMAS:
        return "malignant"
    return "benign" if word.endswith("oma") and word not in NOT_TUMOURS else ""


def behaviour(name: str) -> str:
    """How ICD-10-CM files a tumour name: "secondary malignant" (a metastasis word), "malignant",
    "benign" (another "-oma" word) or "" (no tumour word)."""
    ws = WORD.findall(americanise(name))
    kinds = {_tumour_word(w) for w in ws}
    if any(w in SECONDARY for w in ws):
        return "secondary malignant"
    return "malignant" if "malignant" in kinds else "benign" if "benign" in kinds else ""


#: Tumour words the Alphabetic Index sends to the neoplasm table by site ("Carcinoma - see also
#: Neoplasm, by site, malignant"), even where a category name uses them ("Merkel cell carcinoma").
BY_SITE = {"carcinoma", "adenocarcinoma", "sarcoma", "cancer", "malignant", "tumor", "neoplasm"}


def filed_by_morphology(name: str, by_morphology: frozenset) -> bool:
    """Whether a tumour word of ``name`` is one of ``by_morphology`` (words ICD-10-CM names
    categories by, whatever the site: "lipoma", "hemangioma", "melanoma"), :data:`BY_SITE` aside."""
    return any(_tumour_word(w) and w in by_morphology and w not in BY_SITE for w in words(name))


def neoplasm_phrase(name: str, by_morphology: frozenset = frozenset(),
                    vocabulary: Optional[Container] = None) -> str:
    """A tumour name as ICD-10-CM words it: "<behaviour> neoplasm of <site>", the site from the
    other words and the roots of compound words ("hepatocellular carcinoma" -> "malignant
    neoplasm of liver"), only words in ``vocabulary`` when given (an eponym names no site);
    "" for a name without a tumour word or a site, or one :func:`filed_by_morphology`."""
    kind = behaviour(name)
    if not kind or filed_by_morphology(name, by_morphology):
        return ""
    site = []
    for w in words(name):
        roots = [p for p in parts(w) if p not in SUFFIXES.values()]
        if _tumour_word(w) or w in SECONDARY:
            site += roots
        elif w in SITE_OF:
            site.append(SITE_OF[w])
        elif w not in MORPHOLOGY and w not in ("malignant", "benign", "primary", "neoplasm", "tumor"):
            site += roots or [canonical(w)]
    site = [w for w in site if vocabulary is None or all(x in vocabulary for x in w.split())]
    return f"{kind} neoplasm of {' '.join(dict.fromkeys(site))}" if site else ""

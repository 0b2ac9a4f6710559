"""Rule-based article filtering (offline, no LLM).

A title is a disorder when, in this order:

1. it is an *exclusion* — names a sign, an imaging technique or view, a measurement, a
   classification / scoring system, anatomy or a normal variant (see :data:`EXCLUDE`) — -> no,
   unless step 2 matches it exactly;
2. its normalised form equals an ICD-10-CM description or inclusion term (also the part of a
   description before its first comma: "Pneumonia, unspecified organism" -> "pneumonia") -> yes;
3. it contains a disease word or suffix (:data:`DISEASE_WORDS`, :data:`DISEASE_SUFFIXES`:
   fracture, carcinoma, syndrome, -itis, -oma, ...) -> yes;
4. otherwise -> no.

Normalisation: lower case, British -> American spelling (tumour, haemorrhage, oedema, ...),
punctuation to spaces, possessives dropped ("Crohn's" -> "crohn"). Each decision carries
its reason. These rules trade recall for precision; the LLM mode is the better filter.
"""
from __future__ import annotations

import re
from functools import lru_cache
from typing import Optional

_BRITISH = [("tumour", "tumor"), ("haemorrhag", "hemorrhag"), ("haema", "hema"), ("haemo", "hemo"),
            ("oedema", "edema"), ("oesophag", "esophag"), ("anaemia", "anemia"), ("aemia", "emia"),
            ("paediatric", "pediatric"), ("foetal", "fetal"), ("leukaemia", "leukemia"),
            ("ischaemi", "ischemi"), ("oestr", "estr"), ("orthopaedic", "orthopedic"),
            ("coeliac", "celiac"), ("diarrhoea", "diarrhea"), ("fibre", "fiber"), ("centre", "center")]

DISEASE_SUFFIXES = ("itis", "oma", "omas", "osis", "oses", "pathy", "pathies", "emia", "plasia", "trophy",
                    "ectasis", "ectasia", "cele", "rrhage", "rrhagia", "iasis", "megaly", "lithiasis",
                    "malacia", "penia", "cytosis", "sclerosis", "stenosis", "plegia", "ectomy syndrome")
DISEASE_WORDS = {
    "fracture", "fractures", "carcinoma", "cancer", "syndrome", "disease", "tumor", "tumors", "neoplasm",
    "cyst", "cysts", "aneurysm", "dislocation", "subluxation", "tear", "rupture", "stenosis", "occlusion",
    "infarct", "infarction", "hemorrhage", "hematoma", "malformation", "atresia", "agenesis", "hernia",
    "abscess", "dysplasia", "infection", "injury", "injuries", "thrombosis", "embolism", "embolus",
    "effusion", "pneumothorax", "obstruction", "torsion", "anomaly", "anomalies", "deficiency",
    "metastasis", "metastases", "lymphoma", "leukemia", "sarcoma", "palsy", "disorder", "fistula",
    "dissection", "contusion", "laceration", "atrophy", "stone", "stones", "calculus", "polyp", "polyps",
    "edema", "volvulus", "intussusception", "ischemia", "degeneration", "aplasia", "hypoplasia",
    "duplication", "ectopic", "perforation", "pneumonia", "tuberculosis", "collapse", "herniation",
    "necrosis", "avulsion", "rickets", "gout", "sepsis", "insufficiency", "failure", "dystrophy",
    "cirrhosis", "coarctation", "diverticulum", "diverticula", "prolapse", "ileus", "spondylolisthesis",
    "scoliosis", "kyphosis", "lesion", "lesions", "mass", "nodule", "nodules", "calcinosis", "adenoma",
    "hyperplasia", "hypertrophy", "dilatation", "regurgitation", "entrapment", "impingement",
    "aspiration", "pneumoperitoneum", "pneumomediastinum", "empyema", "bronchiectasis", "emphysema",
    "hydrocephalus", "hydronephrosis", "ascites", "cholestasis", "covid", "covid 19", "varices",
}
# Words that make a title *not* a disorder: signs, techniques, anatomy, measurements, systems.
EXCLUDE = {
    "sign", "signs", "radiograph", "radiography", "radiographs", "view", "views", "projection",
    "protocol", "protocols", "sequence", "sequences", "technique", "techniques", "imaging",
    "artifact", "artifacts", "artefact", "artefacts", "unit", "units", "scale", "classification",
    "classifications", "criteria", "score", "scoring", "grading", "grade", "staging", "system",
    "anatomy", "normal", "variant", "variants", "approach", "checklist", "differential", "index",
    "ratio", "line", "lines", "angle", "position", "positioning", "window", "mnemonic", "measurement",
    "measurements", "method", "appearance", "appearances", "pattern", "patterns", "contrast", "dose",
    "physics", "ultrasound", "ct", "mri", "pet", "x ray", "examination", "study", "procedure",
    "curriculum", "overview", "terminology", "nomenclature", "history", "quiz", "reporting", "template",
    "lexicon", "rads", "landmark", "landmarks", "space", "spaces", "zone", "zones", "segment", "segments",
    "phenomenon", "effect", "weighted", "agent", "agents", "device", "devices", "catheter", "tube",
    "placement", "scanner", "field", "hounsfield", "fat", "ligament", "muscle", "artery", "vein",
    "nerve", "bone", "bones", "joint", "gland", "lobe", "lobes", "ossification", "centres", "centers",
}
# Anatomy words only exclude when no disease word is present ("Anterior cruciate ligament" vs
# "Anterior cruciate ligament tear"); the technique/sign words exclude always.
ANATOMY_WORDS = {"ligament", "muscle", "artery", "vein", "nerve", "bone", "bones", "joint", "gland",
                 "lobe", "lobes", "fat", "space", "spaces", "zone", "zones", "segment", "segments", "anatomy",
                 "ossification", "centres", "centers", "normal", "variant", "variants", "ultrasound", "ct",
                 "mri", "pet", "x ray", "contrast"}


def normalise(text: str) -> str:
    s = text.lower()
    for br, am in _BRITISH:
        s = s.replace(br, am)
    s = re.sub(r"'s\b", "", s)
    s = re.sub(r"[^a-z0-9]+", " ", s)
    return " ".join(s.split())


@lru_cache(maxsize=1)
def icd_terms() -> dict[str, str]:
    """Normalised ICD-10-CM description / inclusion term -> code (the knowledge base's table)."""
    from raddiag.knowledge.kb import icd10cm_kb

    terms: dict[str, str] = {}
    for c in icd10cm_kb(max_code_len=5):
        if not c.category:
            continue
        for t in (c.name, *c.synonyms):
            for v in (t, t.split(",")[0]):
                n = normalise(v)
                if n and len(n) > 3 and n not in EXCLUDE:
                    terms.setdefault(n, c.id)
    return terms


def _has(words: list[str], text: str, vocab: set[str]) -> Optional[str]:
    for w in vocab:
        if " " in w:
            if re.search(rf"\b{re.escape(w)}\b", text):
                return w
        elif w in words:
            return w
    return None


def classify_title(title: str, terms: Optional[dict[str, str]] = None) -> tuple[bool, str]:
    """(is_disorder, reason) for one article title by the rules above."""
    terms = icd_terms() if terms is None else terms
    n = normalise(title)
    words = n.split()
    if not words:
        return False, "empty title"
    if n in terms:
        return True, f"ICD-10-CM term ({terms[n]})"
    disease = _has(words, n, DISEASE_WORDS)
    suffix = next((w for w in words for s in DISEASE_SUFFIXES if w.endswith(s) and len(w) > len(s) + 2), None)
    hard = _has(words, n, EXCLUDE - ANATOMY_WORDS)
    if hard:
        return False, f"excluded: {hard!r} names a sign / technique / measurement"
    if disease or suffix:
        return True, f"disease word {disease!r}" if disease else f"disease suffix in {suffix!r}"
    soft = _has(words, n, ANATOMY_WORDS)
    if soft:
        return False, f"excluded: {soft!r} names anatomy / a normal variant / a modality"
    return False, "no rule matched"

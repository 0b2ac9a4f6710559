"""Step 3: map each accepted disorder to an ICD-10-CM 3-character category.

Suggestions come from ``raddiag.knowledge.map.suggest_codes`` (the ``knowledge map``
engine). ``map/mapping.csv`` holds, per disorder, the suggestions, the chosen ``code``
(top-1 by default), ``ambiguous`` (top score low, or the top two categories close) and
``confirmed``. A person edits ``code`` (any ICD-10-CM code; its 3-character category is
used; blank = no code) and sets ``confirmed`` to yes; re-running keeps their rows and
only suggests codes for disorders not yet in the file.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable, Optional, Sequence

from raddiag.curation.filter import accepted_disorders
from raddiag.csvfile import read_csv, write_csv
from raddiag.curation.work import Work, parse_yes_no
from raddiag.data.icd10 import category

log = logging.getLogger("raddiag.curation")
MAP_FIELDS = ["disorder", "cases", "code", "description", "score", "ambiguous", "confirmed", "suggestions"]
Suggest = Callable[[Sequence[str], int], list]


def description(code: str) -> str:
    import simple_icd_10_cm as cm

    try:
        return cm.get_description(code)
    except ValueError:
        from raddiag.knowledge.kb import icd10cm_kb

        c = icd10cm_kb(max_code_len=3).get(code)
        return c.name if c else ""


def knowledge_suggest(names: Sequence[str], top: int = 5) -> list:
    """``raddiag.knowledge.map.suggest_codes`` (imported lazily)."""
    try:
        from raddiag.knowledge.map import suggest_codes
    except ModuleNotFoundError as exc:
        if exc.name != "raddiag.knowledge.map":
            raise
        raise ValueError("raddiag.knowledge.map is not available in this installation; "
                         "use --suggester lexical") from None
    return suggest_codes(list(names), top=top, progress=True)   # the first call embeds the index


def lexical_suggest(names: Sequence[str], top: int = 5) -> list:
    """Offline fallback without a text encoder: token overlap (Jaccard) of the normalised
    disorder name with ICD-10-CM descriptions and inclusion terms; score in [0, 1]."""
    from raddiag.curation.rules import icd_terms, normalise

    stop = {"unspecified", "other", "nos", "of", "and", "the", "in", "with", "without", "not", "elsewhere",
            "classified", "specified", "site", "type", "or", "to", "due"}
    terms = icd_terms()
    index: dict[str, list[tuple[str, frozenset]]] = {}
    for t, code in terms.items():
        toks = frozenset(t.split()) - stop
        if not toks:
            continue
        for tok in toks:
            index.setdefault(tok, []).append((code, toks))
    out = []
    for name in names:
        q = frozenset(normalise(name).split()) - stop
        best: dict[str, float] = {}
        for tok in q:
            for code, toks in index.get(tok, ()):
                s = len(q & toks) / len(q | toks)
                cat = code.split(".")[0][:3]
                if s > best.get(cat, 0.0):
                    best[cat] = s
        ranked = sorted(best.items(), key=lambda kv: (-kv[1], kv[0]))[:top]
        out.append([(c, description(c), float(s)) for c, s in ranked])
    return out


SUGGESTERS = {"knowledge": knowledge_suggest, "lexical": lexical_suggest}


def _suggestion_rows(names: list[str], counts: dict[str, int], suggest: Suggest, top: int,
                     min_score: float, margin: float) -> list[dict]:
    rows = []
    for name, sugg in zip(names, suggest(names, top)):
        # 3-character level: merge suggestions of the same category, keep the best score
        cats: dict[str, float] = {}
        for code, _desc, score in sugg:
            try:
                c = category(code)
            except ValueError:
                continue
            cats[c] = max(cats.get(c, float("-inf")), float(score))
        ranked = sorted(cats.items(), key=lambda kv: -kv[1])
        if ranked:
            code, score = ranked[0]
            close = len(ranked) > 1 and ranked[0][1] - ranked[1][1] < margin
            ambiguous = score < min_score or close
        else:
            code, score, ambiguous = "", float("nan"), True
        rows.append({"disorder": name, "cases": counts[name], "code": code,
                     "description": description(code) if code else "", "score": f"{score:.3f}",
                     "ambiguous": "yes" if ambiguous else "no", "confirmed": "",
                     "suggestions": " | ".join(f"{c} {description(c)} ({s:.3f})" for c, s in ranked)})
    return rows


def run_mapping(
    work: str | Path,
    suggester: str | Suggest = "knowledge",
    top: int = 5,
    min_score: float = 0.5,
    margin: float = 0.03,
    skip_pending: bool = False,
) -> dict:
    """Write / update ``map/mapping.csv`` for the accepted disorders; returns a summary."""
    w = Work(work, create=False)
    suggest = SUGGESTERS[suggester] if isinstance(suggester, str) else suggester
    if isinstance(suggester, str) and suggester not in SUGGESTERS:
        raise ValueError(f"unknown suggester {suggester!r}; use one of {sorted(SUGGESTERS)}")
    counts = accepted_disorders(w.root, skip_pending=skip_pending)
    path = w.path("map", "mapping.csv")
    with w.step_log("map") as lg:
        old = {r["disorder"]: r for r in read_csv(path, required=MAP_FIELDS[:3])} if path.exists() else {}
        new = [n for n in counts if n not in old]
        lg.info("%d disorders: %d already in %s, %d to suggest codes for", len(counts), len(counts) - len(new),
                path, len(new))
        rows = {n: {**old[n], "cases": counts[n]} for n in counts if n in old}
        if new:
            for r in _suggestion_rows(new, counts, suggest, top, min_score, margin):
                rows[r["disorder"]] = r
        dropped = sorted(set(old) - set(counts))
        if dropped:
            lg.info("%d rows dropped (no longer accepted disorders): %s", len(dropped), dropped[:10])
        ordered = [rows[n] for n in counts]
        write_csv(path, MAP_FIELDS, ordered)
        summary = {"disorders": len(ordered), "new": len(new),
                   "ambiguous": sum(_unreviewed(r) for r in ordered),
                   "confirmed": sum(r["confirmed"].lower() in ("yes", "y") for r in ordered),
                   "unmapped": sum(not r["code"] for r in ordered), "file": str(path)}
        lg.info("mapping: %s", summary)
    return summary


def _unreviewed(row: dict) -> bool:
    """A mapping row marked ambiguous that nobody confirmed."""
    return (row.get("ambiguous") or "").strip().lower() == "yes" and \
        (row.get("confirmed") or "").strip().lower() not in ("yes", "y")


def ambiguous_unconfirmed(work: str | Path) -> list[str]:
    """The disorders of ``map/mapping.csv`` whose mapping is ambiguous and not confirmed."""
    w = Work(work, create=False)
    path = w.require("map", "mapping.csv", hint="run `raddiag curate map WORK` first")
    return [r["disorder"] for r in read_csv(path, required=["disorder", "code"]) if _unreviewed(r)]


def read_mapping(work: str | Path) -> dict[str, Optional[str]]:
    """Disorder -> 3-character category (None = no code) from the person-edited mapping file."""
    w = Work(work, create=False)
    path = w.require("map", "mapping.csv", hint="run `raddiag curate map WORK` first")
    out: dict[str, Optional[str]] = {}
    for i, r in enumerate(read_csv(path, required=["disorder", "code"]), 2):
        where = f"{path}, line {i} ({r['disorder']!r})"
        if "confirmed" in r:
            parse_yes_no(r["confirmed"], where)
        try:
            out[r["disorder"]] = category(r["code"]) if r["code"] else None
        except ValueError as exc:
            raise ValueError(f"{where}: {exc}") from None
    return out

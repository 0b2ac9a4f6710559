"""Step 2: quality check of the filter from a manually checked, seeded sample
(the paper's confusion matrix, Fig. 6): precision and recall of "is a disorder"."""
from __future__ import annotations

import random
from pathlib import Path
from typing import Optional

from raddiag.csvfile import read_csv, write_csv
from raddiag.curation.work import Work, parse_yes_no, read_json, write_json

CHECK_FIELDS = ["title", "predicted", "how", "truth"]


def sample_checklist(work: str | Path, n: int, seed: int = 0, overwrite: bool = False) -> Path:
    """Write ``qc/checklist.csv``: ``n`` decided titles drawn with ``seed``; a person fills
    ``truth`` (yes / no). An existing checklist is kept (it may hold a person's work)
    unless ``overwrite``."""
    w = Work(work, create=False)
    decisions = read_json(w.require("filter", "decisions.json", hint="run `raddiag curate filter` first"))
    path = w.path("qc", "checklist.csv")
    if path.exists() and not overwrite:
        return path
    if n < 1:
        raise ValueError(f"--sample must be at least 1, got {n}")
    decided = sorted(t for t, d in decisions.items() if d["disorder"] is not None)
    chosen = random.Random(seed).sample(decided, min(n, len(decided)))
    write_csv(path, CHECK_FIELDS, ({"title": t, "predicted": "yes" if decisions[t]["disorder"] else "no",
                                    "how": decisions[t]["how"], "truth": ""} for t in chosen))
    return path


def confusion(pairs: list[tuple[bool, bool]]) -> dict:
    """(predicted, truth) pairs -> TP/FP/FN/TN, precision, recall, accuracy (None when undefined)."""
    tp = sum(p and t for p, t in pairs)
    fp = sum(p and not t for p, t in pairs)
    fn = sum((not p) and t for p, t in pairs)
    tn = sum((not p) and (not t) for p, t in pairs)
    return {"tp": tp, "fp": fp, "fn": fn, "tn": tn, "n": len(pairs),
            "precision": tp / (tp + fp) if tp + fp else None,
            "recall": tp / (tp + fn) if tp + fn else None,
            "accuracy": (tp + tn) / len(pairs) if pairs else None}


def run_qc(work: str | Path, sample: int, seed: int = 0, checked: Optional[str | Path] = None) -> dict:
    """Sample the checklist if needed, and score whatever of it a person has checked.

    ``checked``: a filled checklist (default: ``qc/checklist.csv``). Writes ``qc/report.json``
    and ``qc/report.txt``. Predictions are taken from the *current* decisions, so a
    re-run after review scores the final filter.
    """
    w = Work(work, create=False)
    with w.step_log("qc") as log:
        path = Path(checked) if checked else sample_checklist(w.root, sample, seed)
        rows = read_csv(path, required=["title", "truth"])
        decisions = read_json(w.root / "filter" / "decisions.json")
        pairs, unchecked, unknown = [], 0, []
        for r in rows:
            truth = parse_yes_no(r["truth"], f"{path}, row for {r['title']!r}")
            if truth is None:
                unchecked += 1
                continue
            d = decisions.get(r["title"])
            if d is None or d["disorder"] is None:
                unknown.append(r["title"])
                continue
            pairs.append((bool(d["disorder"]), truth))
        rep = confusion(pairs)
        rep.update(checklist=str(path), sampled=len(rows), unchecked=unchecked, not_decided=unknown)
        write_json(w.path("qc", "report.json"), rep)
        w.path("qc", "report.txt").write_text(format_report(rep) + "\n")
        log.info("qc: %d checked of %d sampled; precision %s recall %s", rep["n"], len(rows),
                 rep["precision"], rep["recall"])
    return rep


def format_report(rep: dict) -> str:
    f = lambda v: "n/a" if v is None else f"{v:.3f}"  # noqa: E731
    lines = [f"checked {rep['n']} of {rep['sampled']} sampled titles ({rep['unchecked']} not yet checked)",
             "                 truth: disorder   truth: not",
             f"pred: disorder   {rep['tp']:>15}   {rep['fp']:>10}",
             f"pred: not        {rep['fn']:>15}   {rep['tn']:>10}",
             f"precision {f(rep['precision'])}  recall {f(rep['recall'])}  accuracy {f(rep['accuracy'])}"]
    if rep["unchecked"]:
        lines.append(f"fill the 'truth' column (yes / no) of {rep['checklist']} and run qc again")
    return "\n".join(lines)

"""Step 1: which linked article titles are disorders (LLM with two prompts, or rules),
and the person's review of the disagreements."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

from raddiag.curation.records import load_records, title_counts
from raddiag.csvfile import read_csv, write_csv
from raddiag.curation.work import Work, parse_yes_no, read_json, write_json

REVIEW_FIELDS = ["title", "cases", "prompt_a", "prompt_b", "is_disorder"]


def _yn(v: Optional[bool]) -> str:
    return "" if v is None else ("yes" if v else "no")


def run_filter(
    records_dir: str | Path,
    work: str | Path,
    llm_url: Optional[str] = None,
    model: Optional[str] = None,
    rules: bool = False,
    batch: int = 20,
    timeout: float = 30.0,
    retries: int = 4,
    backoff: float = 1.0,
    progress: bool = False,
) -> dict:
    """Decide for every linked article title whether it is a disorder.

    LLM mode (``llm_url`` + ``model``): a title is a disorder when both prompts say yes, not
    one when both say no; otherwise it goes to ``filter/review.csv``. Rules mode: the
    documented rules of :mod:`raddiag.curation.rules`. Decisions a person already made
    (review file) are kept. Returns a summary dict.
    """
    if rules == bool(llm_url):
        raise ValueError("choose one filter: --llm-url URL --model NAME, or --rules")
    if llm_url and not model:
        raise ValueError("--llm-url needs --model NAME (the model the endpoint serves)")
    if batch < 1:
        raise ValueError(f"--batch must be at least 1, got {batch}")
    w = Work(work)
    records = load_records(records_dir)
    w.update_state(records_dir=str(Path(records_dir).resolve()))
    titles = title_counts(records)
    write_json(w.path("filter", "titles.json"), titles)
    person = read_review(w) if (w.root / "filter" / "review.csv").exists() else {}
    old = read_json(w.root / "filter" / "decisions.json") if (w.root / "filter" / "decisions.json").exists() else {}
    person.update({t: d["disorder"] for t, d in old.items() if d.get("how") == "person" and t not in person})

    with w.step_log("filter") as log:
        log.info("%d records, %d distinct article titles (%s mode)", len(records), len(titles),
                 "rules" if rules else f"LLM {model} at {llm_url}")
        decisions: dict[str, dict] = {}
        if rules:
            from raddiag.curation.rules import classify_title, icd_terms

            terms = icd_terms()
            for t, n in titles.items():
                yes, why = classify_title(t, terms)
                decisions[t] = {"disorder": yes, "how": "rules", "reason": why, "cases": n}
        else:
            from raddiag.curation.llm import AnswerCache, ChatClient, EndpointError, ask_titles

            client = ChatClient(llm_url, model, timeout=timeout, retries=retries, backoff=backoff)
            cache = AnswerCache(w.path("filter", "llm_cache.jsonl"))
            bar = None
            if progress:
                from tqdm import tqdm

                bar = tqdm(total=2 * len(titles), desc="filter", unit="title")
            try:
                answers = ask_titles(list(titles), client, cache, batch=batch,
                                     progress=bar.update if bar else None)
            except EndpointError as exc:
                log.error("%s", exc)
                raise
            finally:
                client.close()
                if bar:
                    bar.close()
            log.info("%d requests made to %s", client.calls, client.endpoint)
            for t, n in titles.items():
                a, b = answers[t]["a"], answers[t]["b"]
                if a is True and b is True:
                    d = {"disorder": True, "how": "both-yes"}
                elif a is False and b is False:
                    d = {"disorder": False, "how": "both-no"}
                else:
                    d = {"disorder": None, "how": "review"}
                decisions[t] = {**d, "answers": {"a": a, "b": b}, "cases": n}
        for t, v in person.items():
            if t in decisions and v is not None:
                decisions[t].update(disorder=v, how="person")
        write_json(w.path("filter", "decisions.json"), decisions)
        review = [t for t, d in decisions.items() if d["how"] in ("review", "person") and "answers" in d]
        write_csv(w.path("filter", "review.csv"), REVIEW_FIELDS,
                  ({"title": t, "cases": decisions[t]["cases"], "prompt_a": _yn(decisions[t]["answers"]["a"]),
                    "prompt_b": _yn(decisions[t]["answers"]["b"]),
                    "is_disorder": _yn(decisions[t]["disorder"]) if decisions[t]["how"] == "person" else ""}
                   for t in review))
        summary = summarise(decisions)
        log.info("decisions: %s", summary)
        if summary["pending"]:
            log.info("%d titles await review: edit %s (is_disorder: yes / no), then run "
                     "`raddiag curate review %s`", summary["pending"], w.root / "filter" / "review.csv", w.root)
    return summary


def summarise(decisions: dict[str, dict]) -> dict:
    vals = [d["disorder"] for d in decisions.values()]
    return {"titles": len(vals), "disorders": sum(v is True for v in vals),
            "not_disorders": sum(v is False for v in vals), "pending": sum(v is None for v in vals),
            "by_person": sum(d["how"] == "person" for d in decisions.values())}


def read_review(w: Work) -> dict[str, Optional[bool]]:
    path = w.root / "filter" / "review.csv"
    rows = read_csv(path, required=["title", "is_disorder"])
    return {r["title"]: parse_yes_no(r["is_disorder"], f"{path}, row for {r['title']!r}") for r in rows}


def apply_review(work: str | Path) -> dict:
    """Read the person's decisions from ``filter/review.csv`` into ``filter/decisions.json``;
    return the summary (``pending`` = titles still undecided)."""
    w = Work(work, create=False)
    dpath = w.require("filter", "decisions.json", hint="run `raddiag curate filter` first")
    decisions = read_json(dpath)
    with w.step_log("review") as log:
        person = read_review(w)
        unknown = sorted(set(person) - set(decisions))
        if unknown:
            raise ValueError(f"{w.root / 'filter' / 'review.csv'}: titles not in the decisions: {unknown[:5]}")
        n = 0
        for t, v in person.items():
            if v is not None:
                decisions[t].update(disorder=v, how="person")
                n += 1
        write_json(dpath, decisions)
        summary = summarise(decisions)
        summary["pending_titles"] = sorted(t for t, d in decisions.items() if d["disorder"] is None)
        log.info("%d decisions read from the review file; %d titles still pending", n, summary["pending"])
    return summary


def accepted_disorders(work: str | Path, skip_pending: bool = False) -> dict[str, int]:
    """Disorder title -> case count. Pending titles raise unless ``skip_pending``."""
    w = Work(work, create=False)
    decisions = read_json(w.require("filter", "decisions.json", hint="run `raddiag curate filter` first"))
    pending = [t for t, d in decisions.items() if d["disorder"] is None]
    if pending and not skip_pending:
        raise ValueError(
            f"{len(pending)} article titles await review (e.g. {pending[:3]}): edit "
            f"{w.root / 'filter' / 'review.csv'} and run `raddiag curate review {w.root}`, "
            "or pass --skip-pending to leave them out")
    return {t: d["cases"] for t, d in decisions.items() if d["disorder"] is True}

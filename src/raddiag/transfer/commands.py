"""CLI: ``raddiag zeroshot``."""
from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser("zeroshot", help="zero-shot transfer of a trained run to another labelled dataset",
                       description="Score a prepared target dataset with a trained run, without training: "
                                   "class mapping (F1/MCC/ACC), normal vs abnormal (AUC/AP), and text "
                                   "zero-shot through the knowledge-guided head.")
    p.add_argument("run", help="trained run folder")
    p.add_argument("--data", required=True, help="prepared target dataset folder, or shards (raddiag data shard: a folder or an index URL)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--mode", nargs="+", default=["mapping", "normal", "text"],
                   choices=["mapping", "normal", "text"], help="which zero-shot modes to run")
    p.add_argument("--mapping", help="JSON {target class: [source classes]}; default: suggested")
    p.add_argument("--split", default="test")
    p.add_argument("--encoder", help="text encoder folder for the text mode (default: the run's own, the one its label "
                        "embeddings were made with)")
    p.add_argument("--single-name", action="store_true",
                   help="text mode: embed each class name alone, not the mean of its prompt set")
    p.add_argument("--batch-size", type=int, default=8)
    p.set_defaults(func=_run)


def _run(args) -> int:
    from raddiag.transfer.zeroshot import zeroshot

    res = zeroshot(args.run, args.data, args.out, modes=args.mode, mapping=args.mapping, split=args.split,
                   encoder_dir=args.encoder, batch_size=args.batch_size, progress=True,
                   prompts=not args.single_name)
    print(format_results(res))
    print(f"\nfull results: {args.out}/zeroshot.json")
    return 0


def format_results(res: dict) -> str:
    lines = [f"zero-shot on {res['n_cases']} {res['split']} cases"]
    pct = lambda v: "  n/a " if v is None else f"{100 * v:6.2f}"
    if "mapping" in res:
        m = res["mapping"]["macro"]
        lines.append(f"  class mapping   F1 {pct(m['f1'])}  MCC {pct(m['mcc'])}  ACC {pct(m['acc'])}  "
                     f"({averaged_text(res['mapping'])})")
        notes = res["mapping"].get("notes", {})
        for t in res["mapping"]["unmapped"]:
            lines.append(f"    unmapped: {t}" + (f" ({notes[t]})" if t in notes else ""))
    if "normal" in res:
        lines.append(f"  normal/abnormal {normal_text(res['normal'], pct)}")
    if "text" in res:
        t = res["text"]
        if "skipped" in t:
            lines.append(f"  text            {t['skipped']}")
        elif "all" in t:
            a = t["all"]
            lines.append("  text            " + "  ".join(
                f"{k.upper()} {pct(a[k]['value'])}" for k in ("auc", "ap", "f1", "mcc", "acc") if k in a))
            if t.get("complemented"):
                lines.append(f"    scored as 1 - p(the class they negate): {', '.join(t['complemented'])}")
    return "\n".join(lines)


def averaged_text(mapping: dict) -> str:
    """Which target classes the mapping macro averages, and those it leaves out with the reason,
    in the words of ``raddiag metrics`` (without a positive: no case of the class in the split)."""
    from raddiag.data.errors import examples
    from raddiag.evaluation.summary import named

    avg, n = mapping["averaged"], len(mapping["per_class"])
    text = f"over {len(avg)} of {n} target classes: {examples(avg)}"
    left = [(why, mapping.get(key) or []) for why, key in
            (("unmapped", "unmapped"), ("without a positive", "no_positive"), ("without a negative", "no_negative"))]
    left = [(why, names) for why, names in left if names]
    if left:
        text += (f"; {sum(len(v) for _, v in left)} of the {n} left out of the average ("
                 + ", ".join(f"{why}: {len(v)}{named(v)}" for why, v in left) + ")")
    return text


def normal_text(n: dict, pct) -> str:
    """The normal/abnormal figures, the cases and classes behind them, or why there are none."""
    if "skipped" in n:
        return n["skipped"]
    classes = ", ".join(repr(c) for c in n.get("normal_classes", []))
    if n.get("na_reason"):
        return f"n/a: {n['na_reason']} ({n['n_normal']} normal, {n['n_abnormal']} abnormal; normal classes: {classes})"
    return (f"AUC {pct(n['auc'])}  AP {pct(n['ap'])} with the normal cases as positives, {pct(n['ap_abnormal'])} "
            f"with the abnormal ones  ({n['n_normal']} normal, {n['n_abnormal']} abnormal cases; "
            f"normal classes: {classes})")

"""Dataset statistics: the paper's Figure 2 in numbers and plots.

(a) modality distribution of abnormal vs normal cases, (b) anatomy distribution of abnormal
vs normal cases, (c) scans per case, (d) cases per class (long-tail curve) at disorder and
ICD-10-CM granularity with head / medium / tail counts (head >= 100 training cases,
medium >= 30, tail fewer; Normal is head).
"""
from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Optional

from raddiag.data.case import NORMAL, Case
from raddiag.data.store import PreparedData, PrepareReport
from raddiag.staging import write_json


def _is_normal(rec: dict, field: str = "labels") -> bool:
    return not [x for x in rec.get(field) or [] if x != NORMAL]


def compute_stats(data: str | Path | PreparedData) -> dict:
    """Numbers of a prepared dataset (JSON-serialisable)."""
    data = data if isinstance(data, PreparedData) else PreparedData(data)
    recs = data.records
    out: dict = {"root": str(data.root), "cases": len(recs), "scans": sum(len(r["scans"]) for r in recs),
                 "size": data.size, "depth": data.depth}
    out["splits"] = {s: {"cases": sum(r["split"] == s for r in recs),
                         "scans": sum(len(r["scans"]) for r in recs if r["split"] == s)}
                     for s in ("train", "val", "test")}
    mod = {"abnormal": Counter(), "normal": Counter()}
    ana = {"abnormal": Counter(), "normal": Counter()}
    scans_mod: Counter = Counter()
    for r in recs:
        kind = "normal" if _is_normal(r) else "abnormal"
        mods = {s["modality"] for s in r["scans"]}
        mod[kind].update(mods)                       # cases containing the modality (Figure 2a)
        scans_mod.update(s["modality"] for s in r["scans"])
        anats = {s.get("anatomy") for s in r["scans"] if s.get("anatomy")} or {r.get("anatomy") or "unknown"}
        ana[kind].update(anats)
    out["modality_cases"] = {k: dict(v.most_common()) for k, v in mod.items()}
    out["modality_scans"] = dict(scans_mod.most_common())
    out["anatomy_cases"] = {k: dict(v.most_common()) for k, v in ana.items()}
    out["modalities_per_case"] = dict(sorted(Counter(len({s["modality"] for s in r["scans"]}) for r in recs).items()))
    out["scans_per_case"] = dict(sorted(Counter(len(r["scans"]) for r in recs).items()))
    out["normal_cases"] = sum(_is_normal(r) for r in recs)
    out["classes"] = {}
    for gran, field in (("disorder", "labels"), ("icd10", "icd10")):
        ls = data.label_space(gran)
        all_counts = Counter(x for r in recs for x in _classes_of(r, field))
        groups = ls.groups
        out["classes"][gran] = {
            "n_classes": len(ls),
            "cases_per_class": dict(all_counts.most_common()),
            "train_counts": dict(zip(ls.names, ls.counts)),
            "without_train_cases": [n for n, c in zip(ls.names, ls.counts) if not c and all_counts[n]],
            "groups": {g: int((groups == g).sum()) for g in ("head", "medium", "tail")},
            "group_rule": f"head >= {ls.head_min} training cases, medium >= {ls.medium_min}, tail fewer; Normal is head",
        }
    return out


def stats_text(st: dict) -> str:
    lines = [f"{st['root']}: {st['cases']} cases, {st['scans']} scans ({st['normal_cases']} normal cases); "
             f"stored at {st['size']}x{st['size']}, depth <= {st['depth']}"]
    lines.append("split    cases   scans")
    for s, v in st["splits"].items():
        lines.append(f"{s:<7}{v['cases']:>7}{v['scans']:>8}")
    lines.append("modality (cases containing it)   abnormal   normal   scans")
    for m in sorted(set(st["modality_cases"]["abnormal"]) | set(st["modality_cases"]["normal"]),
                    key=lambda m: -st["modality_scans"].get(m, 0)):
        lines.append(f"  {m:<31}{st['modality_cases']['abnormal'].get(m, 0):>9}"
                     f"{st['modality_cases']['normal'].get(m, 0):>9}{st['modality_scans'].get(m, 0):>8}")
    lines.append("anatomy                          abnormal   normal")
    for a in sorted(set(st["anatomy_cases"]["abnormal"]) | set(st["anatomy_cases"]["normal"])):
        lines.append(f"  {a:<31}{st['anatomy_cases']['abnormal'].get(a, 0):>9}{st['anatomy_cases']['normal'].get(a, 0):>9}")
    lines.append("scans per case: " + ", ".join(f"{k}: {v}" for k, v in st["scans_per_case"].items()))
    lines.append("modalities per case: " + ", ".join(f"{k}: {v}" for k, v in st["modalities_per_case"].items()))
    for gran, c in st["classes"].items():
        g = c["groups"]
        lines.append(f"{gran}: {c['n_classes']} classes; head {g['head']}, medium {g['medium']}, tail {g['tail']} "
                     f"({c['group_rule']})")
        top = list(c["cases_per_class"].items())
        lines.append("  cases per class: " + counts_text(top[:12])
                     + (f", ... ({len(top) - 12} more)" if len(top) > 12 else ""))
        lines += _untrained_line(c.get("without_train_cases"))
    return "\n".join(lines)


def counts_text(pairs) -> str:
    """``(name, count)`` pairs as "Pneumothorax 2, 'Pneumothorax, Rib fracture' 1": a name holding
    a comma quoted, so that the list reads one way."""
    return ", ".join(f"{k!r} {v}" if "," in k else f"{k} {v}" for k, v in pairs)


def _untrained_line(names) -> list[str]:
    """The line naming the classes without a training case (never learned), if any."""
    from raddiag.data.errors import examples

    if not names:
        return []
    return [f"  {len(names)} class(es) without a training case (never learned): "
            + examples([repr(n) for n in names], shown=10)]


def plot_stats(st: dict, out_dir: str | Path) -> list[Path]:
    """Figure 2 panels as PNGs (matplotlib, Agg backend). Returns the files written."""
    from raddiag.plots import plain, pyplot

    plt = pyplot()

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = []

    def two_bars(key: str, title: str, fname: str):
        fig, axes = plt.subplots(1, 2, figsize=(11, 4))
        for ax, kind, colour in zip(axes, ("abnormal", "normal"), ("tab:red", "tab:blue")):
            d = st[key][kind]
            names, vals = [plain(n) for n in d], list(d.values())
            total = sum(vals) or 1
            bars = ax.barh(names[::-1], vals[::-1], color=colour)
            for b, v in zip(bars, vals[::-1]):
                ax.text(b.get_width(), b.get_y() + b.get_height() / 2, f" {v} ({100 * v / total:.1f}%)",
                        va="center", fontsize=8)
            ax.set_title(f"{title}: {kind} cases")
            ax.set_xlabel("cases")
            ax.margins(x=0.3)
        fig.tight_layout()
        fig.savefig(out / fname, dpi=110)
        plt.close(fig)
        files.append(out / fname)

    two_bars("modality_cases", "Modality", "modality.png")
    two_bars("anatomy_cases", "Anatomy", "anatomy.png")

    fig, ax = plt.subplots(figsize=(6, 4))
    k = list(st["scans_per_case"])
    ax.bar(range(len(k)), list(st["scans_per_case"].values()), color="tab:green")
    ax.set_xticks(range(len(k)), [str(x) for x in k])
    ax.set_xlabel("scans in the case")
    ax.set_ylabel("cases")
    ax.set_title("Cases by number of scans")
    fig.tight_layout()
    fig.savefig(out / "scans_per_case.png", dpi=110)
    plt.close(fig)
    files.append(out / "scans_per_case.png")

    fig, axes = plt.subplots(1, 2, figsize=(12, 5))
    for ax, (gran, c) in zip(axes, st["classes"].items()):
        _class_panel(ax, gran, c)
    fig.tight_layout()
    fig.savefig(out / "class_distribution.png", dpi=110)
    plt.close(fig)
    files.append(out / "class_distribution.png")
    return files


NAMED_BARS = 30     # up to this many classes: a bar per class, named; more: the long-tail curve by rank


def _class_panel(ax, gran: str, c: dict) -> None:
    """Training cases per abnormal class (log scale; the cases of every split where the training
    counts are not given): named bars for a few classes, the long-tail curve by rank for many; the
    head / medium cut-offs, which are training counts, dotted; the group counts under a two-line
    title. (Bars of all splits' cases beside cut-offs of training cases showed a medium class of
    82 training cases above the head line.)"""
    from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullFormatter

    what = "training cases" if "train_counts" in c else "cases"
    abnormal = [(n, v) for n, v in c.get("train_counts", c["cases_per_class"]).items()
                if n != NORMAL and n not in MISSING.values()]
    pairs = sorted(((n, v) for n, v in abnormal if v > 0), key=lambda x: -x[1])
    unseen = len(abnormal) - len(pairs)
    counts = [v for _, v in pairs]
    if len(pairs) <= NAMED_BARS:
        ax.bar_label(ax.bar(range(1, len(counts) + 1), counts, color="tab:blue"), fontsize=8)
        ax.set_xticks(range(1, len(counts) + 1), [n if len(n) <= 24 else n[:23] + "..." for n, _ in pairs],
                      rotation=35 if len(pairs) > 3 else 0, ha="right" if len(pairs) > 3 else "center", fontsize=8)
    else:
        ax.plot(range(1, len(counts) + 1), counts)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("class rank (most cases first)")
    ax.set_xlim(0.4, max(1, len(counts)) + 0.6)
    ax.set_yscale("log")
    if not counts:     # an empty log axis ticks at random: the range of the cut-offs instead
        ax.text(0.5, 0.5, "no class with cases", ha="center", va="center", transform=ax.transAxes, color="grey")
        ax.set_xticks([])
        ax.set_ylim(1, 200)
    ax.yaxis.set_major_locator(LogLocator(subs=(1, 2, 5)))            # 1, 2, 5, 10, 20, ... as plain numbers
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.yaxis.set_minor_formatter(NullFormatter())
    for thr, name in ((100, "head"), (30, "medium")):
        ax.axhline(thr, ls=":", color="grey")
        ax.annotate(f"{name}\n>= {thr}", (1.01, thr), xycoords=("axes fraction", "data"), ha="left", va="center",
                    fontsize=8, color="grey", annotation_clip=False)      # beside the axes: never on a bar
    g = c["groups"]
    ax.set_title(f"{gran}: {len(counts)} abnormal class(es)" + (f" (+{unseen} without training cases)" if unseen else "")
                 + f"\nby training cases: head {g['head']} (incl. Normal), medium {g['medium']}, tail {g['tail']}",
                 fontsize=10)
    ax.set_ylabel(f"{what} (log scale)")


def write_stats(data_dir: str | Path, out_dir: Optional[str | Path] = None, plots: bool = True) -> tuple[dict, Path]:
    """Compute, save ``stats.json`` + ``stats.txt`` (+ PNGs) into ``out_dir`` (default DIR/stats)."""
    st = compute_stats(data_dir)
    out = Path(out_dir) if out_dir else Path(data_dir) / "stats"
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "stats.json", st)
    (out / "stats.txt").write_text(stats_text(st) + "\n")
    if plots:
        st["plots"] = [str(p) for p in plot_stats(st, out)]
    return st, out


def intensity_lines(meta: dict) -> list[str]:
    """The windows a dataset was prepared with and its scans' raw intensity kinds per modality."""
    lines = []
    if meta.get("window") is not None or meta.get("windows"):
        lines.append(f"  windows: all scans {meta.get('window') or 'none'}"
                     + "".join(f"; {k} {v}" for k, v in (meta.get("windows") or {}).items()))
    kinds = meta.get("intensity") or {}
    if kinds:
        lines.append("  raw intensity (scans, their kept slices): " + "; ".join(
            f"{m} " + ", ".join(f"{k} {n}" for k, n in s["kinds"].items())
            # the range is of all the modality's scans, not of the last kind named (a new user read it so)
            + (f" (values of all {sum(s['kinds'].values())}: {s['min']:g}..{s['max']:g})" if len(s["kinds"]) > 1
               else f" ({s['min']:g}..{s['max']:g})")
            for m, s in kinds.items()))
    return lines + _window_on_other_kinds(meta.get("window"), kinds)


def _window_on_other_kinds(window, kinds: dict) -> list[str]:
    """A note when the all-scans window is in HU (its low end below 0) and some modality's scans are
    not HU: a new user's MRI (0..800) came out 81 % white under --window lung, unsaid."""
    if not window or window[0] >= 0:
        return []
    other = [m for m, s in kinds.items() if any(k != "hu" for k in s["kinds"])]
    if not other:
        return []
    return [f"  note: the all-scans window {list(window)} is in HU, and {', '.join(other)} scans are not (their raw "
            "kinds above): they were clipped to it too; --window CT=NAME windows the CTs only"]


# what an abnormal case without names of a granularity is counted as (it is not Normal)
MISSING = {"labels": "no disorder name (cases with codes only)",
           "icd10": "no code (abnormal cases without ICD-10-CM codes; `raddiag knowledge map NAME` suggests them)"}


def _classes_of(rec: dict, field: str) -> list[str]:
    """A case record's classes of one granularity (``labels`` or ``icd10``) for the counts."""
    names = [y for y in rec.get(field) or [] if y != NORMAL]
    return names or [NORMAL if _is_normal(rec) and _is_normal(rec, "icd10") else MISSING[field]]


def multi_scan_lines(recs: list[dict]) -> list[str]:
    """The cases holding several scans of one modality, per modality: every scan is stored, but
    training and prediction feed at most the run's scan caps of each (README "Scan caps")."""
    from raddiag.config import DataConfig, MULTI_IMAGE_CAPS

    per: dict[str, list] = {}
    for r in recs:
        for m, n in Counter(s["modality"] for s in r["scans"]).items():
            if n > 1:
                per.setdefault(m, []).append((n, r["id"]))
    if not per:
        return []
    paper = DataConfig()
    lines = ["  cases with several scans of one modality (all stored; a run feeds at most its scan caps of "
             "each, README 'Scan caps'):"]
    for m, cases in sorted(per.items(), key=lambda x: -len(x[1])):
        most = max(n for n, _ in cases)
        lines.append(f"    {m}: {len(cases)} case(s), up to {most} scans (e.g. {cases[0][1]}); caps: "
                     f"{paper.modality_caps.get(m, paper.default_modality_cap)} in the paper's presets, "
                     f"{MULTI_IMAGE_CAPS.get(m, paper.default_modality_cap)} in cpu / gpu"
                     + (f"; --max-scans {m}={most} keeps them all" if most > MULTI_IMAGE_CAPS.get(m, 1) else ""))
    return lines


def prepare_summary(out_dir: str | Path, report: PrepareReport, notes: list[str] = ()) -> str:
    """What ``data prepare`` prints: cases / scans per split, label counts (disorder and ICD),
    modality counts, source notes and every skipped file with its reason."""
    data = PreparedData(out_dir)
    recs = data.records
    lines = [f"prepared {report.cases_out} of {report.cases_in} cases, {report.scans_out} of {report.scans_in} scans "
             f"-> {out_dir}"]
    lines += [f"  note: {n}" for n in notes]
    lines.append("  split    cases   scans")
    for s in ("train", "val", "test"):
        rs = [r for r in recs if r["split"] == s]
        lines.append(f"  {s:<7}{len(rs):>7}{sum(len(r['scans']) for r in rs):>8}")
    for gran, field in (("disorder", "labels"), ("ICD-10-CM", "icd10")):
        c = Counter(x for r in recs for x in _classes_of(r, field))
        lines.append(f"  {gran} labels ({len(c) - (MISSING[field] in c)}): " + counts_text(c.most_common()))
    mc = Counter(s["modality"] for r in recs for s in r["scans"])
    lines.append("  modalities (scans): " + ", ".join(f"{k} {v}" for k, v in mc.most_common()))
    lines += intensity_lines(data.meta)
    lines += multi_scan_lines(recs)
    skipped = report.skipped_scans + report.skipped_cases
    if skipped:
        lines.append(f"  skipped {len(report.skipped_scans)} scan(s), {len(report.skipped_cases)} case(s):")
        for s in report.skipped_scans:
            lines.append(f"    case {s['case']}: {s['file']}: {s['reason']}")
        for s in report.skipped_cases:
            lines.append(f"    case {s['case']}: {s['reason']}")
    else:
        lines.append("  nothing skipped")
    if report.warnings:
        lines.append(f"  {len(report.warnings)} input warning(s) (shown above), listed in the report")
    lines.append(f"  full report: {Path(out_dir) / 'report.txt'} (and report.json)")
    return "\n".join(lines)


__all__ = ["compute_stats", "stats_text", "plot_stats", "write_stats", "prepare_summary", "Case"]

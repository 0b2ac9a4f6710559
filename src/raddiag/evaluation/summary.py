"""What ``evaluate``, ``metrics`` and the demo print: the README's table (every metric of each
class group, in percent, with the AUC's interval), the same per anatomy, and for a single-label
run the accuracy, balanced accuracy and confusion matrix (:mod:`raddiag.evaluation.multiclass`)."""
from __future__ import annotations

from typing import Optional

from raddiag.data.errors import examples, one_line

from .engine import anatomy_groups, anatomy_name

COLUMNS = {"auc": "AUC", "ap": "AP", "f1": "F1", "mcc": "MCC", "acc": "ACC", "recall_at_fpr_0.01": "R@0.01",
           "recall_at_fpr_0.05": "R@0.05", "recall_at_fpr_0.1": "R@0.1"}
GROUPS = ("all", "head", "medium", "tail", "normal")


def pct(v: Optional[float]) -> str:
    return "n/a" if v is None else f"{100 * v:.1f}"


def interval(e: dict) -> str:
    """``[low, high]`` of a metric entry in percent; a note when every resample agreed; else ''."""
    if e.get("ci_no_spread"):
        return "(no spread)"
    return f"[{pct(e['ci_low'])}, {pct(e['ci_high'])}]" if e.get("ci_low") is not None else ""


def _row(label: str, g: dict, width: int, note: str = "") -> str:
    cells = "".join(f"{pct(g.get(k, {}).get('value')):>8}" for k in COLUMNS)
    return f"{label:<{width}}{cells}   {interval(g.get('auc', {}))}{note}"


def na_note(g: dict, n_cases) -> str:
    """Why a row of :func:`anatomy_table` is n/a (no class with a positive and a negative among its
    cases: an AUC needs both), in the demo's manner (``(not counted: < 3 classes)``); '' when it is not."""
    auc = g.get("auc", {})
    if auc.get("value") is not None:
        return ""
    cases = f"its {n_cases} case{'s' if n_cases != 1 else ''}" if n_cases else "its cases"
    return f"(n/a: none of the {auc.get('n_excluded', 0)} classes has both a positive and a negative among {cases})"


def group_table(metrics: dict, what: str = "test split") -> list[str]:
    """The class groups' rows (those with an AUC), every metric and the AUC's interval; ``what``
    names the cases scored."""
    lines = [f"{what}, macro over classes, percent (95% bootstrap CI for AUC)",
             f"{'group':<8}" + "".join(f"{h:>8}" for h in COLUMNS.values()) + "   AUC CI"]
    return lines + [_row(g, metrics[g], 8) for g in GROUPS
                    if metrics.get(g, {}).get("auc", {}).get("value") is not None]


def anatomy_table(metrics: dict) -> list[str]:
    """The same columns for all classes on each anatomy's cases (empty without anatomies)."""
    keys = anatomy_groups(metrics)
    if not keys:
        return []
    names = {k: one_line(anatomy_name(k), 24) for k in keys}
    width = max(9, *(len(n) + 2 for n in names.values()))
    cases = metrics.get("meta", {}).get("anatomy_cases", {})
    return (["by anatomy of the cases (all classes on that anatomy's cases)",
             f"{'anatomy':<{width}}" + "".join(f"{h:>8}" for h in COLUMNS.values()) + "   AUC CI"]
            + [_row(names[k], metrics[k], width, na_note(metrics[k], cases.get(anatomy_name(k), {}).get("n_cases")))
               for k in keys])


def multiclass_lines(mc: dict) -> list[str]:
    """Accuracy, balanced accuracy and macro one-vs-rest AUC with intervals, per-class precision /
    recall / F1 of the predicted (most probable) class, and the confusion matrix."""
    lines = [f"one class per case (data.task=multiclass: the most probable class is the prediction), "
             f"{mc['n_cases']} cases, percent ({mc['ci']})"]
    for key, label in (("accuracy", "accuracy"), ("balanced_accuracy", "balanced accuracy"),
                       ("auc_ovr", "macro one-vs-rest AUC")):
        e = mc[key]
        note = "   (the table's 'all' AUC)" if key == "auc_ovr" else ""
        lines.append(f"  {label:<24}{pct(e['value']):>6}   {interval(e)}{note}")
    rows = mc["per_class"]
    names = [one_line(r["name"], 30) for r in rows]
    w = max(8, *(len(n) for n in names)) + 5
    lines.append(f"  {'class':<{w}}{'cases':>7}{'predicted':>11}{'precision':>11}{'recall':>8}{'F1':>7}")
    for i, (r, n) in enumerate(zip(rows, names), 1):
        lines.append(f"  {f'({i}) {n}':<{w}}{r['cases']:>7}{r['predicted']:>11}{pct(r['precision']):>11}"
                     f"{pct(r['recall']):>8}{pct(r['f1']):>7}")
    lines.append("  confusion matrix (rows: true class, columns: predicted class, numbered as above)")
    m = mc["confusion"]["matrix"]
    cw = max(5, *(len(str(v)) + 2 for row in m for v in row))
    lines.append(f"  {'':<{w}}" + "".join(f"{f'({j})':>{cw}}" for j in range(1, len(m) + 1)))
    for i, (row, n) in enumerate(zip(m, names), 1):
        lines.append(f"  {f'({i}) {n}':<{w}}" + "".join(f"{v:>{cw}}" for v in row))
    return lines


def classes_line(metrics: dict) -> str:
    """How many classes each printed group averages, and how many of the label space every average
    leaves out (the table alone did not say that 'all' was 7 of a run's 14 classes)."""
    meta = metrics["meta"]
    shown = [g for g in GROUPS if metrics.get(g, {}).get("auc", {}).get("value") is not None]
    line = "classes averaged: " + ", ".join(f"{g} {metrics[g]['auc']['n_classes']}" for g in shown)
    left = meta["n_classes"] - meta["n_classes_defined"]
    if left:
        line += (f"; {left} of the {meta['n_classes']} left out of every average (without a positive: "
                 f"{meta['n_classes_no_positive']}{named(meta.get('classes_no_positive'))}, without a negative: "
                 f"{meta['n_classes_no_negative']}{named(meta.get('classes_no_negative'))})")
    return line


def named(names) -> str:
    """`` (a, b, c and 4 more)`` for a list of class names; empty for none (or an older file's meta)."""
    return f" ({examples([repr(one_line(n, 40)) for n in names])})" if names else ""


def threshold_line(meta: dict) -> str:
    """Where the F1 / MCC / ACC thresholds came from, and how many classes fell back to the fixed one
    (a class without a validation positive has no F1-maximising threshold)."""
    line = f"F1 / MCC / ACC thresholds: {meta['threshold_note']}"
    fb = meta.get("n_threshold_fallback", 0)
    if fb:
        line += (f", for {meta['n_classes'] - fb} of the {meta['n_classes']} classes; {fb} without a chosen "
                 f"threshold (no positive to choose it on, or none stored) use {meta['threshold_fallback_value']:g}"
                 f"{named(meta.get('classes_threshold_fallback'))}")
    return line


def evaluation_summary(metrics: dict, what: str = "test split") -> str:
    """Everything ``evaluate`` / ``metrics`` print before the file list; the meta's ``warnings``
    (``evaluate``'s data checks, :mod:`.data_checks`) first."""
    warned = [f"WARNING: {one_line(w)}" for w in metrics["meta"].get("warnings") or ()]
    lines = (warned + [""] if warned else []) + group_table(metrics, what)
    anatomy = anatomy_table(metrics)
    if anatomy:
        lines += [""] + anatomy
    if "multiclass" in metrics:
        lines += [""] + multiclass_lines(metrics["multiclass"])
    meta = metrics["meta"]
    lines += ["", threshold_line(meta)
              + (" (one-vs-rest; the multiclass figures use the most probable class)" if "multiclass" in metrics
                 else ""), f"class groups: {meta['class_groups']}", classes_line(metrics)]
    return "\n".join(lines)

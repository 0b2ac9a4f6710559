"""Self-contained HTML report (opens offline): paper-style table in percent with 95 % CIs,
ROC curves per group with CI bands (Fig. 3), the normal/abnormal bar plot by anatomy
(Fig. 5a) and prediction-probability distributions for chosen classes (Fig. 4a).
Plots are matplotlib (Agg) PNGs embedded as base64 ``data:`` URIs; no external resource."""
from __future__ import annotations

import base64
import html
import io
from pathlib import Path
from typing import Optional

import numpy as np

from raddiag.data.labels import LabelSpace
from raddiag.plots import plain, pyplot

from .engine import anatomy_groups, anatomy_name
from .metrics import METRICS

HEADERS = {"auc": "AUC", "ap": "AP", "f1": "F1", "mcc": "MCC", "acc": "ACC",
           "recall_at_fpr_0.01": "R@0.01", "recall_at_fpr_0.05": "R@0.05", "recall_at_fpr_0.1": "R@0.1"}
GROUP_TITLES = {"all": "All", "head": "Head", "medium": "Medium", "tail": "Tail", "normal": "Normal vs abnormal"}


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)  # tight_layout already ran: "tight" bbox would draw twice
    pyplot().close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _cell(e: Optional[dict]) -> str:
    if not e or e.get("value") is None:
        return "&ndash;"
    s = f"{100 * e['value']:.2f}"
    if e.get("ci_no_spread"):
        s += "<br><small>CI: no spread (every resample equal)</small>"
    elif e.get("ci_low") is not None:
        s += f"<br><small>[{100 * e['ci_low']:.2f}, {100 * e['ci_high']:.2f}]</small>"
    return s


def metrics_table(metrics: dict, groups: list[str], caption: str) -> str:
    head = "".join(f"<th>{HEADERS[k]}</th>" for k in METRICS)
    rows = []
    for g in groups:
        m = metrics.get(g, {})
        any_e = next(iter(m.values()), {})
        n = f"{any_e.get('n_classes', 0)} classes" + (f", {any_e['n_excluded']} excluded" if any_e.get("n_excluded") else "")
        label = html.escape(GROUP_TITLES.get(g) or f"anatomy {anatomy_name(g)}")
        rows.append(f"<tr><td>{label}<br><small>{n}</small></td>" + "".join(f"<td>{_cell(m.get(k))}</td>" for k in METRICS) + "</tr>")
    return (f"<table><caption>{html.escape(caption)}</caption><tr><th>Group</th>{head}</tr>"
            + "".join(rows) + "</table>")


def multiclass_html(mc: dict) -> str:
    """The single-label section (``metrics["multiclass"]``): accuracy, balanced accuracy, macro
    one-vs-rest AUC with intervals, per-class precision / recall / F1, the confusion matrix."""
    def pct(e):
        return _cell({"value": e["value"], "ci_low": e["ci_low"], "ci_high": e["ci_high"]})

    top = ("<table><caption>One class per case (the most probable class is the prediction), % "
           f"[{html.escape(mc['ci'])}]</caption><tr><th>Accuracy</th><th>Balanced accuracy</th>"
           f"<th>Macro one-vs-rest AUC</th></tr><tr><td>{pct(mc['accuracy'])}</td>"
           f"<td>{pct(mc['balanced_accuracy'])}</td><td>{pct(mc['auc_ovr'])}</td></tr></table>")
    rows = "".join(f"<tr><td>{html.escape(r['name'])}</td><td>{r['cases']}</td><td>{r['predicted']}</td>"
                   f"<td>{100 * r['precision']:.1f}</td><td>{100 * r['recall']:.1f}</td><td>{100 * r['f1']:.1f}</td></tr>"
                   for r in mc["per_class"])
    per_class = ("<table><caption>Per class, % (of the predicted class)</caption><tr><th>Class</th><th>Cases</th>"
                 f"<th>Predicted</th><th>Precision</th><th>Recall</th><th>F1</th></tr>{rows}</table>")
    conf = mc["confusion"]
    names = [html.escape(n) for n in conf["classes"]]
    head = "".join(f"<th>{n}</th>" for n in names)
    body = "".join(f"<tr><th>{n}</th>" + "".join(f"<td>{v}</td>" for v in row) + "</tr>"
                   for n, row in zip(names, conf["matrix"]))
    matrix = (f"<table><caption>Confusion matrix: rows are the true class, columns the predicted class"
              f"</caption><tr><th></th>{head}</tr>{body}</table>")
    return top + per_class + matrix


def roc_figure(roc: dict) -> str:
    plt = pyplot()
    groups = [g for g in ("all", "head", "medium", "tail") if g in roc]
    fig, axes = plt.subplots(1, len(groups), figsize=(3.6 * len(groups), 3.6), squeeze=False)
    for ax, g in zip(axes[0], groups):
        r = roc[g]
        if np.all(np.isnan(r["tpr"])):
            ax.text(0.5, 0.5, "no class defined", ha="center")
        else:
            ax.step(r["fpr"], r["tpr"], where="post", color="C3", label="macro ROC")
            if not np.all(np.isnan(r["low"])):
                ax.fill_between(r["fpr"], r["low"], r["high"], step="post", color="C3", alpha=0.25, label="95% CI")
        ax.plot([0, 1], [0, 1], "k:", lw=0.8)
        ax.set_title(GROUP_TITLES[g])
        ax.set_xlabel("false-positive rate")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.01)
    axes[0][0].set_ylabel("true-positive rate (macro)")
    if axes[0][0].get_legend_handles_labels()[0]:          # no class defined: nothing to name
        axes[0][0].legend(loc="lower right", fontsize=8)
    fig.subplots_adjust(left=0.07, right=0.99, bottom=0.15, top=0.91, wspace=0.25)  # fixed: tight_layout draws once more
    return _png(fig)


def normal_by_anatomy_figure(metrics: dict) -> Optional[str]:
    rows = ["normal"] + anatomy_groups(metrics, normal=True)
    names = [anatomy_name(r) for r in rows[1:]]
    labels = ["all cases"] + [plain(n) for n in names]
    keys = [("auc", "AUC"), ("ap", "AP"), ("recall_at_fpr_0.05", "Recall@0.05")]
    if "normal" not in metrics or not names:
        return None
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(max(6, 1.3 * len(rows)), 3.6))
    x = np.arange(len(rows))
    wdt = 0.8 / len(keys)
    for j, (k, lab) in enumerate(keys):
        val = np.array([np.nan if metrics[r][k]["value"] is None else metrics[r][k]["value"] for r in rows])
        lo = np.array([np.nan if metrics[r][k]["ci_low"] is None else metrics[r][k]["ci_low"] for r in rows])
        hi = np.array([np.nan if metrics[r][k]["ci_high"] is None else metrics[r][k]["ci_high"] for r in rows])
        # A percentile interval need not contain the point estimate in general (it does for the
        # fixed-class bootstrap in practice): clip so matplotlib always gets lengths >= 0.
        err = np.clip(np.vstack([np.nan_to_num(val - lo), np.nan_to_num(hi - val)]), 0.0, None)
        ax.bar(x + (j - 1) * wdt, np.nan_to_num(val), wdt, yerr=err, capsize=2, label=lab)
    ax.set_xticks(x)
    ax.set_xticklabels(labels, rotation=20, ha="right")
    ax.set_ylim(0, 1.05)
    ax.set_title("Normal vs abnormal, by anatomy")
    ax.legend(fontsize=8, ncol=3, loc="upper right")
    fig.tight_layout()
    return _png(fig)


def distribution_figure(scores, labels, thresholds, names, classes, anatomy=None) -> Optional[str]:
    """Fig. 4a: per chosen class, scores of positives, intra-anatomy negatives (same anatomy as
    a positive) and inter-anatomy negatives, with the threshold as a dashed line."""
    if not classes:
        return None
    plt = pyplot()
    ncol = min(3, len(classes))
    nrow = int(np.ceil(len(classes) / ncol))
    fig, axes = plt.subplots(nrow, ncol, figsize=(4.2 * ncol, 3.0 * nrow), squeeze=False)
    for ax, c in zip(axes.ravel(), classes):
        s, y = scores[:, c], labels[:, c].astype(bool)
        if anatomy is not None:
            pos_anat = set(anatomy[y])
            intra = ~y & np.isin(anatomy, list(pos_anat))
            inter = ~y & ~intra
            parts = [(y, "positive", "C3"), (intra, "intra-anatomy negative", "C0"),
                     (inter, "inter-anatomy negative", "0.6")]
        else:
            parts = [(y, "positive", "C3"), (~y, "negative", "C0")]
        x0 = 0
        for m, lab, col in parts:
            v = np.sort(s[m])[::-1]
            if len(v):  # one artist per part (a bar per case is slow for thousands of cases)
                # at most 400 steps per part: the axis is ~380 px wide, so more are not visible
                # and only cost drawing time (seconds at thousands of cases)
                idx = (np.arange(min(len(v), 400)) * len(v)) // min(len(v), 400)
                ax.stairs(v[idx], x0 + np.r_[idx, len(v)], fill=True, color=col, label=f"{lab} ({len(v)})")
            x0 += len(v)
        ax.axhline(thresholds[c], color="k", ls="--", lw=1, label=f"threshold {thresholds[c]:.3g}")
        ax.set_title(plain(str(names[c])[:40]), fontsize=9)
        ax.set_ylim(0, 1.0 if s.max() <= 1 else None)
        ax.set_xlabel("cases")
        ax.set_ylabel("probability")
        ax.legend(fontsize=6, loc="upper right")  # loc="best" searches the data: slow
    for ax in axes.ravel()[len(classes):]:
        ax.axis("off")
    # fixed margins (no extra draw), in inches: as fractions they clipped the tick labels of a one-class figure
    w, h = fig.get_size_inches()
    fig.subplots_adjust(left=0.65 / w, right=1 - 0.05 / w, bottom=0.5 / h, top=1 - 0.3 / h, wspace=0.3, hspace=0.45)
    return _png(fig)


CSS = """body{font-family:sans-serif;margin:24px;max-width:1250px;color:#222}
table{border-collapse:collapse;margin:12px 0}th,td{border:1px solid #bbb;padding:4px 8px;text-align:center}
caption{font-weight:bold;text-align:left;padding:4px 0}small{color:#666}.warn{color:#a40;font-weight:bold}
img{max-width:100%}"""


def write_report(path: Path, result: dict, scores, labels, label_space: LabelSpace, anatomy=None,
                 title: str = "raddiag evaluation") -> Path:
    metrics = result["metrics"]
    meta = metrics["meta"]
    scores, labels = np.asarray(scores), np.asarray(labels)
    parts = [f"<h1>{html.escape(title)}</h1>",
             *(f"<p class='warn'>Warning: {html.escape(w)}</p>" for w in meta.get("warnings") or ()),
             f"<p>{meta['n_cases']} cases, {meta['n_classes']} classes ({meta['n_classes_defined']} with positive "
             f"and negative cases; {meta['n_classes_no_positive']} without positives and "
             f"{meta['n_classes_no_negative']} without negatives are excluded from the averages). "
             f"Confidence intervals: {html.escape(meta['ci'])}, {meta['n_boot']} resamples.</p>"]
    cls = "warn" if meta["threshold_source"] == "test" else ""
    parts.append(f"<p class='{cls}'>F1 / MCC / ACC thresholds: {html.escape(meta['threshold_note'])}"
                 f"{'; ' + str(meta['n_threshold_fallback']) + ' classes without a chosen threshold (no validation positives, or none stored) use 0.5' if meta['n_threshold_fallback'] else ''}.</p>")
    if meta.get("threshold_warning"):
        parts.append(f"<p class='warn'>{html.escape(meta['threshold_warning'])}.</p>")
    parts.append(f"<p>Class groups: {html.escape(meta['class_groups'])}.</p>")
    parts.append("<h2>Results (percent)</h2>")
    parts.append(metrics_table(metrics, [g for g in ("head", "medium", "tail", "all", "normal") if g in metrics],
                               "Macro-averaged metrics by class group, % [95% CI]"))
    if "multiclass" in metrics:
        parts.append("<h2>Single-label results (data.task=multiclass)</h2>" + multiclass_html(metrics["multiclass"]))
    anat = anatomy_groups(metrics)
    if anat:
        parts.append(metrics_table(metrics, anat, "All classes, by anatomy of the cases, % [95% CI]"))
    parts.append("<h2>ROC curves</h2><p>Macro ROC (mean recall at each FPR over the group's classes) "
                 "with the 95% bootstrap band.</p>")
    parts.append(f"<img alt='ROC curves' src='{roc_figure(result['roc'])}'>")
    nb = normal_by_anatomy_figure(metrics)
    if nb:
        parts.append("<h2>Normal vs abnormal by anatomy</h2>")
        parts.append(f"<img alt='normal by anatomy' src='{nb}'>")
    dist = distribution_figure(scores, labels, result["thresholds"], label_space.names, result["plot_classes"],
                               None if anatomy is None else np.asarray(anatomy, dtype=object))
    if dist:
        parts.append("<h2>Prediction probability distribution</h2>")
        parts.append(f"<img alt='probability distributions' src='{dist}'>")
    doc = (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
           f"<style>{CSS}</style></head><body>{''.join(parts)}</body></html>")
    path = Path(path)
    path.write_text(doc)
    return path

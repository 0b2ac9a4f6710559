"""The one evaluation engine: ``raddiag metrics`` (saved predictions) and ``raddiag evaluate``
(a run folder) both call :func:`evaluate_predictions`.

Groups (paper Section 2 / 4.3.1): ``all``, ``head``, ``medium``, ``tail`` (from the label space's
training counts), ``normal`` (the ``Normal`` class: normal-vs-abnormal), and, when the cases'
anatomy is given, ``anatomy/<name>`` (all classes, on that anatomy's cases) and
``anatomy/<name>/normal`` (the Normal class on that anatomy's cases, the bar plot of Fig. 5a).
"""
from __future__ import annotations

import logging
import re
import warnings
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from raddiag.csvfile import write_csv
from raddiag.data.errors import InputWarning
from raddiag.data.labels import LabelSpace, check_thresholds
from raddiag.staging import write_json

from .bootstrap import CI_METHODS, DEFAULT_CI_METHOD, bootstrap_ci, bootstrap_per_class, check_n_boot
from .metrics import FALLBACK_THRESHOLD, METRICS, best_f1_thresholds, check_inputs, macro, per_class_metrics

log = logging.getLogger(__name__)

CLASS_GROUPS = ("all", "head", "medium", "tail", "normal")
PROTOCOLS = ("paper", "release")       # release: the authors' own evaluation choices (.release)
FPR_GRID = np.linspace(0.0, 1.0, 101)
INPUT_NAMES = {"test": "test predictions", "val": "validation predictions", "labels": "label space",
               "val_split": "validation"}   # the split the validation predictions are of (the threshold note)
THRESHOLD_SOURCES = {
    "validation": "chosen by maximal F1 on the {split} split",
    "label_space": "stored in the label space (chosen earlier on validation)",
    "test": "chosen on test (optimistic)",
}


CI_DESCRIPTIONS = {
    "guarded": "Wald interval on the logit scale (Fisher z for MCC) with the bootstrap standard error, "
               "never narrower than the percentile interval nor reaching beyond it by more than half its "
               "width in all, and always holding the estimate",
    "logit": "Wald interval on the logit scale (Fisher z for MCC) with the bootstrap standard error",
    "percentile": "percentile interval",
}
NO_COUNTS = "none: the label space has no training counts (no --labels), so no head / medium / tail groups"


def placeholder_names(c: int) -> list[str]:
    """The stand-in class names of predictions evaluated without a label space."""
    return [f"class_{i}" for i in range(c)]


def anatomy_key(name: str) -> str:
    """The ``metrics.json`` group of an anatomy: ``anatomy/<name>``, a "/" in the name written
    "%2F" ("Head/Neck" -> ``anatomy/Head%2FNeck``): the name stays one key segment, apart from
    the ``/normal`` group of each anatomy. A "%" is written "%25" first, so that no two names share
    a key (the anatomies "Head/Neck" and "Head%2FNeck" did, and one of them was lost)."""
    return "anatomy/" + name.replace("%", "%25").replace("/", "%2F")


def anatomy_groups(metrics: dict, normal: bool = False) -> list[str]:
    """The sorted anatomy keys of ``metrics``: each anatomy's all-classes group, or with ``normal``
    its ``/normal`` group. Told apart by their segments (a name's "/" is escaped), not by the ending:
    an anatomy named "normal" has the key ``anatomy/normal``, and its row was once left out."""
    segments = 3 if normal else 2
    return sorted(k for k in metrics if k.startswith("anatomy/") and len(k.split("/")) == segments)


def anatomy_name(key: str) -> str:
    """The anatomy of a group key made by :func:`anatomy_key` (its ``/normal`` group's too)."""
    return re.sub("%(25|2F)", lambda m: "%" if m.group(1) == "25" else "/", key.split("/")[1])


def _group_masks(label_space: LabelSpace) -> dict[str, np.ndarray]:
    """Masks of the class groups; head / medium / tail only when the label space has training
    counts or fixed groups (without them every class would be called tail, or head)."""
    groups = CLASS_GROUPS if label_space.has_groups else ("all", "normal")
    return {g: label_space.group_mask(g) for g in groups}


def _groups_note(label_space: LabelSpace) -> str:
    if label_space.fixed_groups is not None:
        return f"head / medium / tail: {label_space.group_note or 'fixed in the label space'}"
    if not label_space.has_groups:
        return NO_COUNTS
    return (f"head / medium / tail by training cases (head >= {label_space.head_min}, "
            f"medium >= {label_space.medium_min}, Normal is head)")


def _entry(value, ci, n_classes, n_excluded, no_spread: bool = False) -> dict:
    f = (lambda x: None if x is None or not np.isfinite(x) else float(x))
    return {"value": f(value), "ci_low": f(ci[0]), "ci_high": f(ci[1]), "ci_no_spread": bool(no_spread),
            "n_classes": int(n_classes), "n_excluded": int(n_excluded)}


def _no_spread(replicates: np.ndarray) -> bool:
    """Every resample gave the same value (a perfectly separated class, say): an interval says
    nothing about the uncertainty then, and is reported as ``ci_no_spread``, not as [x, x]."""
    r = replicates[np.isfinite(replicates)]
    return r.size > 1 and bool(r.min() == r.max())


def _summarise(point: dict, boot: Optional[dict], masks: dict[str, np.ndarray], alpha: float,
               ci_method: str = DEFAULT_CI_METHOD) -> dict:
    """``{group: {metric: entry}}`` from per-class point values and bootstrap replicates."""
    res = {}
    for g, mask in masks.items():
        res[g] = {}
        for k in METRICS:
            if k not in point:
                continue
            v, n_used, n_excl = macro(point[k], mask)
            ci, flat = (None, None), False
            if boot is not None and k in boot and mask.any():
                reps = macro(boot[k], mask)[0]
                flat = _no_spread(reps)
                ci = (v, v) if flat else bootstrap_ci(reps, v, alpha, ci_method, metric=k)
            res[g][k] = _entry(v, ci, n_used, n_excl, flat)
    return res


def _choose_thresholds(c: int, label_space: LabelSpace, val_scores, val_labels, test_scores, test_labels,
                       use_label_space_thresholds: bool, names: dict):
    if val_scores is not None:
        val_scores, val_labels = check_inputs(val_scores, val_labels, names["val"])
        if val_scores.shape[1] != c:
            raise ValueError(f"{names['val']}: {val_scores.shape[1]} classes, but {names['test']} has {c}")
        thr, fb = best_f1_thresholds(val_scores, val_labels, return_fallback=True)
        check_thresholds(thr, label_space.names, names["val"])
        return thr, fb, "validation"
    if use_label_space_thresholds and label_space.thresholds is not None:
        return (*label_space.threshold_values(), "label_space")
    log.warning("no validation predictions: thresholds for F1/MCC/ACC are chosen on the test split "
                "itself (optimistic)")
    thr, fb = best_f1_thresholds(test_scores, test_labels, return_fallback=True)
    return thr, fb, "test"


def _fallback_warning(scores: np.ndarray, fallback: np.ndarray, source: str) -> Optional[str]:
    """Why the 0.5 fallback threshold is meaningless here, or None: scores outside [0, 1] are
    logits (or other scales), where 0.5 is no decision point. On the test split the fallback
    classes have no positives and are excluded anyway."""
    n = int(fallback.sum())
    lo, hi = (float(scores.min()), float(scores.max())) if n and source != "test" else (0.0, 1.0)
    if lo >= 0.0 and hi <= 1.0:
        return None
    return (f"scores lie outside [0, 1] ({lo:.3g} to {hi:.3g}: logits?), but {n} class(es) without a "
            f"chosen threshold use the fallback {FALLBACK_THRESHOLD}, which means nothing on that scale; "
            "their F1 / MCC / ACC are not meaningful (give probabilities: the sigmoid of logits)")


def plot_indices(plot_classes: Sequence, label_space: LabelSpace) -> list[int]:
    """Class indices of ``plot_classes`` (names, or indices in the API); a ValueError names one
    that is not a class."""
    out = []
    for p in plot_classes:
        known = p in label_space if isinstance(p, str) else 0 <= int(p) < len(label_space)
        if not known:
            raise ValueError(f"--plot-classes: {p!r} is not a class of the label space ({len(label_space)} classes, "
                             f"e.g. {label_space.names[0]!r})")
        out.append(label_space.index(p) if isinstance(p, str) else int(p))
    return out


def default_plot_classes(point: dict, labels: np.ndarray, names: Sequence[str], k: int = 3) -> list[int]:
    """Up to ``k`` best and ``k`` worst classes by AUC among those with the most positives
    (at least 5 when available), as in Fig. 4a (three successful, three failed)."""
    npos = labels.sum(0)
    auc = point["auc"]
    ok = ~np.isnan(auc)
    if not ok.any():
        return []
    floor = min(5, int(npos[ok].max()))
    cand = np.nonzero(ok & (npos >= floor))[0]
    cand = cand[np.argsort(-auc[cand], kind="stable")]
    pick = list(cand[:k]) + [c for c in cand[::-1][:k] if c not in cand[:k]]
    return [int(c) for c in pick]


def evaluate_predictions(test_scores, test_labels, label_space: LabelSpace, val_scores=None, val_labels=None,
                         anatomy=None, case_ids=None, out_dir=None, n_boot: int = 1000, seed: int = 0,
                         plot_classes=None, use_label_space_thresholds: bool = True, alpha: float = 0.05,
                         ci_method: str = DEFAULT_CI_METHOD, progress: bool = False, title: str = "raddiag evaluation",
                         input_names: Optional[dict] = None, task: str = "multilabel", protocol: str = "paper",
                         extra_meta: Optional[dict] = None) -> dict:
    """Score predictions (probabilities ``[N, C]``) against multi-hot labels.

    Thresholds for F1/MCC/ACC: maximal F1 on ``val_*`` when given; else the label space's stored
    thresholds (``use_label_space_thresholds``); else chosen on the test split and flagged
    ``"chosen on test (optimistic)"`` in the output. Returns a dict with ``metrics`` (the
    ``metrics.json`` content), ``per_class`` (``{metric: [C]}``), ``thresholds`` ``[C]``,
    ``threshold_source`` and ``roc`` (per-group macro ROC curves with bands). ``ci_method``: the
    interval of each macro metric (:func:`~raddiag.evaluation.bootstrap.bootstrap_ci`). With ``out_dir``
    writes ``metrics.json``, ``per_class.csv``, ``predictions.npz`` and ``report.html``.
    ``input_names``: what errors call the ``test``, ``val`` and ``labels`` inputs (the CLI: their files).
    ``protocol="release"`` also computes the release's own figures (thresholds on this split, R@FPR at
    the nearest FPR, its fixed group ranges; :mod:`.release`) into ``metrics["release_protocol"]``.
    ``task="multiclass"`` (one class per case) adds ``metrics["multiclass"]``
    (:func:`raddiag.evaluation.multiclass.multiclass_metrics`: accuracy, balanced accuracy, macro
    one-vs-rest AUC, confusion matrix). ``extra_meta``: fields the caller adds to the meta (``evaluate``:
    its data checks, :mod:`.data_checks`; their ``warnings`` head the report).
    """
    names = {**INPUT_NAMES, **{k: v for k, v in (input_names or {}).items() if v}}
    check_n_boot(n_boot, seed)
    if ci_method not in CI_METHODS:
        raise ValueError(f"unknown interval method {ci_method!r}; choose from {CI_METHODS}")
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown evaluation protocol {protocol!r}; choose from {PROTOCOLS}")
    scores, labels = check_inputs(test_scores, test_labels, names["test"])
    n, c = scores.shape
    if len(label_space) != c:
        raise ValueError(f"{names['labels']}: {len(label_space)} classes, but {names['test']} has {c}")
    if anatomy is not None:
        anatomy = np.array(["unknown" if a is None or a == "" else str(a) for a in anatomy], dtype=object)
        if anatomy.shape != (n,):
            raise ValueError(f"{names['test']}: anatomy has {anatomy.shape[0]} entries for {n} cases")
    if case_ids is not None and len(case_ids) != n:
        raise ValueError(f"{names['test']}: case_ids has {len(case_ids)} entries for {n} cases")
    if task == "multiclass":       # before any work: a case with two classes is refused
        from raddiag.task import check_single_label

        check_single_label(labels, case_ids, label_space.names, names["test"])
    plot_idx = None if plot_classes is None else plot_indices(plot_classes, label_space)

    thr, fallback, source = _choose_thresholds(c, label_space, val_scores, val_labels, scores, labels,
                                               use_label_space_thresholds, names)
    threshold_warning = _fallback_warning(scores, fallback, source)
    if threshold_warning:
        warnings.warn(f"{names['test']}: {threshold_warning}", InputWarning, stacklevel=2)
    point = per_class_metrics(scores, labels, thr, fpr_grid=FPR_GRID)
    masks = _group_masks(label_space)
    boot = None
    if n_boot > 0:
        boot = bootstrap_per_class(scores, labels, thr, n_boot=n_boot, seed=seed, progress=progress,
                                   fpr_grid=FPR_GRID, roc_groups={g: m for g, m in masks.items() if g != "normal"})
    metrics = _summarise(point, boot, masks, alpha, ci_method)

    roc = _roc_curves(point, boot, masks, alpha)
    anatomy_point = _by_anatomy(metrics, scores, labels, thr, anatomy, masks, n_boot, seed, alpha, ci_method)
    metrics["meta"] = _meta(point, labels, label_space, thr_info=(fallback, source, threshold_warning),
                            names=names, n_boot=n_boot, seed=seed, alpha=alpha, ci_method=ci_method,
                            anatomy_point=anatomy_point)
    metrics["meta"].update(extra_meta or {})
    if protocol == "release":
        from .release import release_protocol

        metrics["release_protocol"] = release_protocol(scores, labels, label_space.granularity)
    if task == "multiclass":
        from .multiclass import multiclass_metrics

        metrics["multiclass"] = multiclass_metrics(scores, labels, label_space.names, n_boot, seed, alpha,
                                                   case_ids, names["test"])
    if plot_idx is None:
        plot_idx = default_plot_classes(point, labels, label_space.names)
    result = {"metrics": metrics, "per_class": point, "thresholds": thr, "threshold_source": source,
              "threshold_fallback": fallback, "roc": roc, "plot_classes": plot_idx}
    if out_dir is not None:
        write_outputs(Path(out_dir), result, scores, labels, label_space, anatomy, case_ids, title)
    return result


def _roc_curves(point: dict, boot: Optional[dict], masks: dict, alpha: float) -> dict:
    """Per-group macro ROC curves on :data:`FPR_GRID`, with bootstrap bands when ``boot``."""
    roc = {}
    for g, m in masks.items():
        if g == "normal":
            continue
        curve = macro(point["roc"].T, m)[0] if m.any() else np.full(len(FPR_GRID), np.nan)
        band = (np.full_like(curve, np.nan),) * 2
        if boot is not None:
            with np.errstate(all="ignore"), warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)      # an FPR no resample defines: nan band
                band = tuple(np.nanpercentile(boot["roc"][g], q, axis=0) for q in (100 * alpha / 2, 100 * (1 - alpha / 2)))
        roc[g] = {"fpr": FPR_GRID, "tpr": curve, "low": band[0], "high": band[1]}
    return roc


def _by_anatomy(metrics: dict, scores, labels, thr, anatomy, masks: dict, n_boot: int, seed: int, alpha: float,
                ci_method: str) -> dict:
    """Each anatomy's ``all`` and ``normal`` groups into ``metrics`` (its cases only); returns
    ``{anatomy: {"n_cases": n}}``."""
    anatomy_point = {}
    if anatomy is None:
        return anatomy_point
    for i, name in enumerate(sorted(set(anatomy))):
        rows = anatomy == name
        s_a, y_a = scores[rows], labels[rows]
        p_a = per_class_metrics(s_a, y_a, thr)
        b_a = bootstrap_per_class(s_a, y_a, thr, n_boot=n_boot, seed=seed + 1 + i) if n_boot > 0 else None
        sub = _summarise(p_a, b_a, {"all": masks["all"], "normal": masks["normal"]}, alpha, ci_method)
        metrics[anatomy_key(name)] = sub["all"]
        metrics[anatomy_key(name) + "/normal"] = sub["normal"]
        anatomy_point[name] = {"n_cases": int(rows.sum())}
    return anatomy_point


def _meta(point: dict, labels: np.ndarray, label_space: LabelSpace, thr_info: tuple, names: dict, n_boot: int,
          seed: int, alpha: float, ci_method: str, anatomy_point: dict) -> dict:
    """``metrics["meta"]``: what was counted, left out and chosen, and how the intervals were made."""
    fallback, source, threshold_warning = thr_info
    n, c = labels.shape
    npos = labels.sum(0)

    def named(mask) -> list[str]:
        return [label_space.names[j] for j in np.flatnonzero(mask)]

    return {
        "n_cases": int(n), "n_classes": int(c),
        "n_classes_defined": int((~np.isnan(point["auc"])).sum()),
        "n_classes_no_positive": int((npos == 0).sum()),
        "n_classes_no_negative": int((npos == n).sum()),
        "classes_no_positive": named(npos == 0),
        "classes_no_negative": named(npos == n),
        "classes_threshold_fallback": named(fallback),
        "class_groups": _groups_note(label_space),
        "threshold_source": source,
        "threshold_note": THRESHOLD_SOURCES[source].format(split=names["val_split"]),
        "n_threshold_fallback": int(fallback.sum()),
        "threshold_fallback_value": FALLBACK_THRESHOLD,
        "threshold_warning": threshold_warning,
        "n_boot": int(n_boot), "seed": int(seed), "ci": f"{100 * (1 - alpha):g}% bootstrap over cases, "
              + CI_DESCRIPTIONS[ci_method]
              + "; the classes averaged are fixed "
              "from the full test set (a resample that misses a class's positives or negatives redraws "
              "them from that class)",
        "recall_at_fpr": "largest TPR over ROC operating points (distinct score thresholds, score >= t is "
                         "positive) with FPR <= target; no interpolation",
        "anatomy_cases": anatomy_point,
    }


def write_outputs(out: Path, result: dict, scores, labels, label_space: LabelSpace, anatomy, case_ids,
                  title: str) -> None:
    """``metrics.json``, ``predictions.npz``, ``per_class.csv`` and ``report.html``, written into a
    stage inside ``out`` and moved in together when all four are complete: a failure or a kill
    half-way (the report) left the new metrics.json beside the last call's predictions and report."""
    from raddiag.staging import staged_files

    with staged_files(out, "eval") as stage:
        _write_outputs(stage, result, scores, labels, label_space, anatomy, case_ids, title)


def _write_outputs(out: Path, result: dict, scores, labels, label_space: LabelSpace, anatomy, case_ids,
                   title: str) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from .report import write_report

    write_json(out / "metrics.json", result["metrics"])
    # the class of each column: `metrics --labels` checks a label file against it (order included);
    # none for the stand-in names of a call without a label space
    named = list(label_space.names) != placeholder_names(len(label_space))
    extra = {"class_names": np.asarray([str(x) for x in label_space.names])} if named else {}
    if case_ids is not None:
        extra["case_ids"] = np.asarray([str(x) for x in case_ids])
    if anatomy is not None:
        extra["anatomy"] = np.asarray([str(x) for x in anatomy])
    labels = np.asarray(labels)
    # predictions.npz is written on a second thread while the CSV and the report (matplotlib,
    # which holds the GIL) are made; uncompressed: probabilities barely compress and zlib took
    # most of a large call. The writer's CRC and file writes release the GIL.
    with ThreadPoolExecutor(1) as ex:
        saved = ex.submit(np.savez, out / "predictions.npz", scores=_saved_scores(scores),
                          labels=labels.view(np.uint8) if labels.dtype == bool else np.asarray(labels, np.uint8),
                          thresholds=np.asarray(result["thresholds"], np.float64), **extra)
        write_per_class_csv(out / "per_class.csv", result, labels, label_space)
        write_report(out / "report.html", result, scores, labels, label_space, anatomy, title=title)
        saved.result()


def _saved_scores(scores: np.ndarray) -> np.ndarray:
    """Scores as float32 (half the file) only where float32 holds them exactly (a model's
    probabilities): rounded, distinct float64 scores became ties (1 - 1e-9 and 1 - 1e-10 are
    both 1.0 in float32), and scoring the written file gave another AUC than metrics.json
    (0.743 became 0.5); beyond float32's range they came back as inf."""
    if scores.dtype == np.float32:
        return scores
    with np.errstate(over="ignore"):
        small = scores.astype(np.float32)
    return small if np.array_equal(small, scores) else scores


def write_per_class_csv(path: Path, result: dict, labels: np.ndarray, label_space: LabelSpace) -> None:
    """One row a class. The threshold is written in full (the shortest text that reads back as the
    same float): rounded to 6 digits, a float32 sigmoid's 0.99999988 read 1, which gives other
    F1 / MCC / ACC than the row printed beside it."""
    point, thr = result["per_class"], result["thresholds"]
    # without training counts there are no head / medium / tail groups (NO_COUNTS): none is written,
    # where every class read 'tail' with train_count 0 (a new user's `metrics` without --labels)
    groups = label_space.groups if label_space.has_groups else [""] * len(label_space)
    counts = label_space.counts if label_space.has_groups else [""] * len(label_space)
    npos = np.count_nonzero(labels, axis=0)
    header = ["index", "name", "code", "group", "train_count", "n_pos", "n_neg", "threshold",
              "threshold_fallback", *METRICS]
    write_csv(path, header, ([i, name, label_space.codes[i] or "", groups[i], counts[i], int(npos[i]),
                              int(len(labels) - npos[i]), repr(float(thr[i])), int(result["threshold_fallback"][i]),
                              *["" if np.isnan(point[k][i]) else f"{point[k][i]:.6f}" for k in METRICS]]
                             for i, name in enumerate(label_space.names)))

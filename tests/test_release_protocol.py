"""``--protocol release`` against a transcription of the release's evaluation functions
(RP3D-Diag ``src/Eval/eval.py``: ``calculate_mF1max_MCC``, ``calculate_mRecall_FPR``,
``calculate_multilabel_AUC``, ``calculate_mAP`` and the group slices of ``compute_metrics``),
kept here line for line in behaviour, on random logits with ties."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st
from sklearn.metrics import (average_precision_score, matthews_corrcoef, precision_recall_curve,
                             roc_auc_score, roc_curve)

from raddiag.evaluation.release import release_protocol

EXAMPLES = int(os.environ.get("RADDIAG_FUZZ_EXAMPLES", "25"))


# -- the transcription ------------------------------------------------------------------------------

def sigmoid(x):
    return 1 / (1 + np.exp(-x))


def find_nearest(array, value):
    array = np.asarray(array)
    idx = (np.abs(array - value)).argmin()
    return idx


def calculate_multilabel_AUC(labels, logits):
    scores = sigmoid(logits)
    auc_list = []
    for i in range(labels.shape[1]):
        if len(np.unique(labels[:, i])) < 2:
            continue
        auc_list.append(roc_auc_score(labels[:, i], scores[:, i]))
    return np.mean(auc_list)


def calculate_mAP(labels, logits):
    scores = sigmoid(logits)
    AP_list = []
    for class_i in range(labels.shape[1]):
        if len(np.unique(labels[:, class_i])) < 2:
            continue
        AP_list.append(average_precision_score(labels[:, class_i], scores[:, class_i]))
    return np.mean(AP_list)


def calculate_mF1max_MCC(labels, logits):
    scores = sigmoid(logits)
    n_classes = labels.shape[1]
    F1max_list = []
    MCC_list = []
    for class_i in range(n_classes):
        if len(np.unique(labels[:, class_i])) < 2:
            continue
        precision, recall, thresholds = precision_recall_curve(labels[:, class_i], scores[:, class_i])
        with np.errstate(invalid="ignore"):
            f1_scores = 2 * (precision * recall) / (precision + recall)
        f1_scores[np.isnan(f1_scores)] = 0
        max_f1_index = np.argmax(f1_scores)
        max_f1 = f1_scores[max_f1_index]
        max_f1_threshold = thresholds[max_f1_index]
        F1max_list.append(max_f1)
        pred_class = (scores[:, class_i] >= max_f1_threshold).astype(int)
        mcc = matthews_corrcoef(labels[:, class_i], pred_class)
        MCC_list.append(mcc)
    return np.mean(F1max_list), np.mean(MCC_list)


def calculate_mRecall_FPR(labels, logits, fpr_points):
    scores = sigmoid(logits)
    n_classes = labels.shape[1]
    macro_recall_at_fpr = {fpr: [] for fpr in fpr_points}
    for class_i in range(n_classes):
        if len(np.unique(labels[:, class_i])) < 2:
            continue
        fpr, tpr, thresholds = roc_curve(labels[:, class_i], scores[:, class_i])
        for point in fpr_points:
            idx = find_nearest(fpr, point)
            macro_recall_at_fpr[point].append(tpr[idx])
    return {fpr: np.mean(recalls) for fpr, recalls in macro_recall_at_fpr.items()}


def eval_strategy(labels, logits):
    mF1max, mMCC = calculate_mF1max_MCC(labels, logits)
    r = calculate_mRecall_FPR(labels, logits, [0.01, 0.05, 0.1, 0.2, 0.5])
    return {"auc": calculate_multilabel_AUC(labels, logits), "ap": calculate_mAP(labels, logits),
            "f1max": mF1max, "mcc": mMCC, **{f"recall_at_fpr_{f:g}": v for f, v in r.items()}}


def compute_metrics(labels, logits, level):
    cut = {"icd10s": (165, 395), "articles": (85, 555)}[level]
    return {"head": eval_strategy(labels[:, :cut[0]], logits[:, :cut[0]]),
            "medium": eval_strategy(labels[:, cut[0]:cut[1]], logits[:, cut[0]:cut[1]]),
            "tail": eval_strategy(labels[:, cut[1]:], logits[:, cut[1]:])}


# -- the comparison ----------------------------------------------------------------------------------

def _logits(seed, n, c, levels):
    rng = np.random.default_rng(seed)
    y = (rng.random((n, c)) < rng.uniform(0.05, 0.5, c)).astype(int)
    for j in range(c):                      # every class defined in every group (the release's means
        y[j % n, j], y[(j + 1) % n, j] = 1, 0   # of empty lists would be nan)
    x = rng.normal(size=(n, c)) + rng.uniform(0, 3, c) * y
    if levels:
        x = np.round(x * levels) / levels
    return x, y


@settings(max_examples=max(5, EXAMPLES // 5), deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**31), n=st.integers(6, 120), levels=st.sampled_from([None, 1, 3]),
       level=st.sampled_from(["articles", "icd10s"]))
def test_release_protocol_equals_the_releases_functions(seed, n, levels, level):
    c = 600
    logits, y = _logits(seed, n, c, levels)
    ref = compute_metrics(y, logits, level)
    ours = release_protocol(sigmoid(logits), y, {"articles": "disorder", "icd10s": "icd10"}[level])
    for g in ("head", "medium", "tail"):
        for k, v in ref[g].items():
            assert ours[g][k] == pytest.approx(float(v), abs=1e-12), (g, k)


def test_evaluate_protocol_release_prints_and_writes_it(tmp_path, capsys):
    from raddiag.cli import main

    logits, y = _logits(0, 200, 600, 2)
    np.savez(tmp_path / "p.npz", scores=sigmoid(logits), labels=y)
    assert main(["metrics", "--pred", str(tmp_path / "p.npz"), "--out", str(tmp_path / "o"), "--n-boot", "0",
                 "--protocol", "release"]) == 0
    out = capsys.readouterr().out
    assert "release protocol" in out and "F1max" in out
    m = json.loads((tmp_path / "o" / "metrics.json").read_text())
    ref = compute_metrics(y, logits, "articles")
    assert m["release_protocol"]["tail"]["recall_at_fpr_0.05"] == pytest.approx(ref["tail"]["recall_at_fpr_0.05"])
    assert m["release_protocol"]["head"]["n_classes"] == 85


def test_a_small_label_space_is_told_its_classes_all_lie_in_head():
    """A new user's 2-class run printed 'head 0-84, medium 85-554, tail 555+' and a head row of
    both classes, without a word that the release's ranges cannot split such a label space."""
    from raddiag.evaluation.release import format_release_protocol

    logits, y = _logits(1, 80, 2, None)
    res = release_protocol(sigmoid(logits), y)
    assert res["head"]["n_classes"] == 2 and res["medium"]["n_classes"] == 0
    assert "all 2 classes here lie in head" in format_release_protocol(res).splitlines()[0]
    x, t = _logits(1, 80, 600, None)
    assert "lie in head" not in release_protocol(sigmoid(x), t)["meta"]["groups"]

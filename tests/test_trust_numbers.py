"""Issue 25: the callers of the metric kernel print the numbers the data give.

Zero-shot normal / abnormal and mapping figures against scikit-learn on the scores the run
produced; ``finetune --fraction``'s label space counts the cases it trained on; an imported
release checkpoint is evaluated in the release's head / medium / tail groups; intervals hold
their estimate and stay within 1.5x the percentile interval on the cases RESULTS.md printed.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, f1_score, roc_auc_score

from raddiag.data.labels import LabelSpace, release_groups
from raddiag.evaluation.bootstrap import bootstrap_ci, percentile_ci


# -- zero-shot ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def zeroshot_run(tmp_path_factory):
    from test_zeroshot import SOURCE, tiny_run_and_target

    labels = [["Normal", "Viral pneumonia", "Pneumonia due to Streptococcus"][i % 3] for i in range(18)]
    return tiny_run_and_target(tmp_path_factory.mktemp("zs25"), SOURCE, labels, 14,
                               {"Viral pneumonia": ["J12"], "Pneumonia due to Streptococcus": ["J15"]})


def _captured_predictions(monkeypatch):
    """Record what the zero-shot run predicted (the scores its figures must come from)."""
    import raddiag.inference as inference

    seen = []
    real = inference.predict_dataset

    def spy(*a, **k):
        seen.append(real(*a, **k))
        return seen[-1]

    monkeypatch.setattr(inference, "predict_dataset", spy)
    return seen


def test_zeroshot_normal_and_mapping_figures_equal_scikit_learn_on_the_same_scores(zeroshot_run, monkeypatch):
    from test_zeroshot import SOURCE

    from raddiag.data.store import PreparedData
    from raddiag.transfer.zeroshot import zeroshot

    run, target, tmp = zeroshot_run
    seen = _captured_predictions(monkeypatch)
    res = zeroshot(run, target, tmp / "out25", modes=("mapping", "normal"))
    preds = seen[0]
    names = PreparedData(target).label_space("disorder").names
    abnormal = preds.labels[:, names.index("Normal")] == 0
    score = 1.0 - preds.scores[:, SOURCE.index("Normal")]
    assert 0 < abnormal.sum() < len(abnormal)
    assert res["normal"]["auc"] == pytest.approx(roc_auc_score(abnormal, score), abs=1e-12)
    # AP of the Normal class (the paper's Figure 5, evaluate's normal row) and of abnormality detection
    p_normal = preds.scores[:, SOURCE.index("Normal")].astype(np.float64)
    assert res["normal"]["ap"] == pytest.approx(average_precision_score(~abnormal, p_normal), abs=1e-12)
    assert res["normal"]["ap_abnormal"] == pytest.approx(average_precision_score(abnormal, score), abs=1e-12)
    # mapping mode: a target class is predicted when any linked source class passes its threshold
    for t, row in res["mapping"]["per_class"].items():
        links = row["linked"]
        if not links:
            continue
        i = names.index(t)
        pred = np.any([preds.scores[:, SOURCE.index(s)] >= 0.5 for s in links], axis=0)
        y = preds.labels[:, i].astype(bool)
        if y.any() and not y.all():
            assert row["f1"] == pytest.approx(f1_score(y, pred, zero_division=0), abs=1e-12), t


# -- finetune --fraction ----------------------------------------------------------------------------

@pytest.mark.slow
def test_finetune_fraction_writes_the_counts_of_the_cases_it_trained_on(tmp_path):
    from test_finetune import _single_image_data
    from test_training_data import make_tiny_data, tiny_overrides

    from raddiag.cli import main
    from raddiag.config import preset
    from raddiag.data.store import PreparedData
    from raddiag.training import train

    data = make_tiny_data(tmp_path / "pre", n_cases=24)
    train(data, tmp_path / "pre_run", preset("tiny", tiny_overrides(**{"train.epochs": 1})), progress=False)
    target = _single_image_data(tmp_path, n_cases=40)
    assert main(["finetune", str(tmp_path / "pre_run"), "--data", str(target), "--fraction", "0.3",
                 "--out", str(tmp_path / "ft"), "--epochs", "1", "--no-progress"]) == 0
    info = json.loads((tmp_path / "ft" / "finetune.json").read_text())
    assert info["train_cases"] < info["train_cases_total"]
    assert info["train_fraction"] == pytest.approx(info["train_cases"] / info["train_cases_total"])
    labels = LabelSpace.load(tmp_path / "ft" / "label_space.json")
    full = PreparedData(target).label_space(labels.granularity)
    # the counts are those of a subset: never above the split's, and they add up to the labels
    # of train_cases cases (each tiny case carries one or two labels)
    assert all(c <= f for c, f in zip(labels.counts, full.counts))
    assert sum(labels.counts) < sum(full.counts)
    assert info["train_cases"] <= sum(labels.counts) <= 2 * info["train_cases"]


def test_training_counts_follow_the_chosen_indices(tmp_path):
    """The trainer's own rule, on a prepared folder: the counts of ``train_indices``' cases."""
    from test_training_data import make_tiny_data

    from raddiag.config import preset
    from raddiag.data.dataset import CaseDataset
    from raddiag.data.store import PreparedData
    from raddiag.training.trainer import _counted_on

    data = PreparedData(make_tiny_data(tmp_path / "d", n_cases=30))
    cfg = preset("tiny")
    labels = data.label_space(cfg.data.granularity)
    records = data.records_for("train")
    pick = [0, 3, 4]
    counted = _counted_on(labels, data, cfg, pick, CaseDataset)
    expected = {n: 0 for n in labels.names}
    for i in pick:
        for name in labels.case_labels(records[i]):
            expected[name] += 1
    assert counted.counts == [expected[n] for n in labels.names]
    assert counted.names == labels.names


# -- release groups ----------------------------------------------------------------------------------

def _release_labels(path, n):
    names = ["Normal"] + [f"disorder {i}" for i in range(1, n)]
    path.write_text(json.dumps({name: i for i, name in enumerate(names)}))
    return path, names


def test_release_label_space_has_the_releases_fixed_groups_and_keeps_them(tmp_path):
    path, _ = _release_labels(tmp_path / "dict.json", 600)
    ls = LabelSpace.from_release(path)
    g = list(ls.groups)
    assert g.count("head") == 85 and g.count("medium") == 470 and g.count("tail") == 45
    assert g[84] == "head" and g[85] == "medium" and g[554] == "medium" and g[555] == "tail"
    ls.save(tmp_path / "ls.json")
    back = LabelSpace.load(tmp_path / "ls.json")
    assert list(back.groups) == g and back.group_note == ls.group_note
    assert release_groups(600, "icd10")[0].count("head") == 165


def test_release_groups_from_a_training_file(tmp_path):
    from raddiag.data.adapters.rp3d import release_label_counts

    path, names = _release_labels(tmp_path / "dict.json", 6)
    cases = {f"https://x/case/{i}": {"Samples": [{"articles": str([names[1 + i % 3]]), "image_data_path": "[]",
                                                   "image_modality": "[]"},
                                                  {"articles": [names[1 + i % 3], names[5]] if i < 40 else []}]}
             for i in range(150)}
    (tmp_path / "train.json").write_text(json.dumps(cases))
    counts = release_label_counts(tmp_path / "train.json")
    assert counts == {names[1]: 50, names[2]: 50, names[3]: 50, names[5]: 40}
    ls = LabelSpace.from_release(path, counts)
    assert ls.counts == [0, 50, 50, 50, 0, 40] and ls.fixed_groups is None
    assert list(ls.groups) == ["head", "medium", "medium", "medium", "tail", "medium"]


def test_an_imported_release_checkpoint_is_evaluated_in_head_medium_and_tail(tmp_path, capsys):
    from test_import_official import _write_bin, released_state

    from raddiag.cli import main

    n = 600
    ck = _write_bin(released_state(classes=n), tmp_path / "ck")
    labels, _ = _release_labels(tmp_path / "dict.json", n)
    assert main(["import-official", str(ck), "--labels", str(labels), "--out", str(tmp_path / "run")]) == 0
    rng = np.random.default_rng(0)
    y = rng.random((400, n)) < 0.05
    s = rng.random((400, n)) + y
    np.savez(tmp_path / "pred.npz", scores=s, labels=y)
    capsys.readouterr()
    assert main(["metrics", "--pred", str(tmp_path / "pred.npz"), "--labels", str(tmp_path / "run" / "label_space.json"),
                 "--out", str(tmp_path / "m"), "--n-boot", "0"]) == 0
    out = capsys.readouterr().out
    rows = {line.split()[0] for line in out.splitlines() if line.strip()}
    assert {"head", "medium", "tail"} <= rows
    m = json.loads((tmp_path / "m" / "metrics.json").read_text())
    assert m["head"]["auc"]["n_classes"] + m["head"]["auc"]["n_excluded"] == 85
    assert m["tail"]["auc"]["n_classes"] + m["tail"]["auc"]["n_excluded"] == 45
    assert "release's fixed ranges" in m["meta"]["class_groups"]


# -- intervals -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("point, replicates", [
    (0.017, np.r_[np.zeros(700), np.full(200, 0.02), np.full(100, 0.06)]),     # F1 near 0
    (0.962, np.r_[np.ones(800), np.full(150, 0.9), np.full(50, 0.8)]),         # a recall near 1
    (0.447, np.linspace(0.1, 0.8, 1000)),                                       # few cases, wide
    (0.184, 0.19 + 0.08 * np.random.default_rng(0).random(1000)),               # AP biased upward
])
def test_an_interval_holds_its_estimate_and_stays_within_1_5x_the_percentile_interval(point, replicates):
    lo, hi = bootstrap_ci(replicates, point)
    p_lo, p_hi = percentile_ci(replicates)
    assert lo <= point <= hi
    assert hi - lo <= 1.5 * (p_hi - p_lo) + max(0.0, p_lo - point) + max(0.0, point - p_hi) + 1e-12
    assert lo <= p_lo and hi >= p_hi                      # never narrower than the percentile interval
    w_lo, w_hi = bootstrap_ci(replicates, point, method="logit")
    if point < 0.05:                                       # the Wald interval alone balloons there
        assert w_hi - w_lo > 3 * (hi - lo)


def test_json_outputs_are_strict_json_with_null_for_nan(tmp_path):
    """Red team: finetune.json held a bare ``NaN`` (best_val_auc before any validation), which is no
    JSON (JavaScript's JSON.parse refuses the file). Every non-finite number is written as null."""
    import numpy as np

    from raddiag.staging import write_json

    obj = {"a": float("nan"), "b": [1.0, float("inf"), np.float32("-inf"), np.float64(2.5)], "c": {"d": (np.nan,)},
           "e": "NaN", "f": 3}
    write_json(tmp_path / "x.json", obj)
    text = (tmp_path / "x.json").read_text()
    strict = json.loads(text, parse_constant=lambda c: pytest.fail(f"non-JSON constant {c}"))
    assert strict == {"a": None, "b": [1.0, None, None, 2.5], "c": {"d": [None]}, "e": "NaN", "f": 3}


def test_a_fraction_the_classes_outweigh_is_told_with_the_cases_that_train():
    """Red team: ``--fraction 0.01`` of 84 cases of 44 classes trained on 40 cases and finetune.json
    said only ``fraction: 0.01``; the 1, 10 and 30 % runs trained on nearly one subset."""
    from raddiag.transfer.finetune import subset_note

    note = subset_note(0.01, 40, 84, 44)
    assert "asks for 1" in note and "44 classes" in note and "takes 40 (48 % of the cases)" in note
    assert subset_note(0.1, 9, 84, 3) is None             # 8 asked, 9 taken: as asked
    assert subset_note(0.3, 25, 84, 44) is None
    assert subset_note(0.01, 2, 84, 2) is None            # 1 asked, 2 taken: one case over
    assert subset_note(0.01, 3, 84, 3) is not None


@pytest.mark.parametrize("kind", ["constant", "random", "perfect"])
def test_retrieval_figures_equal_a_brute_force_count_with_ties_against(kind):
    """Red team: ties were counted for the target, so an encoder that gives every text the same
    vector scored recall@1 = 1.0. The rank of a query is here counted by hand: the candidates
    (other than the target) at least as close as the target."""
    import torch

    from raddiag.knowledge.train import HeldOut, evaluate_retrieval

    rng = np.random.default_rng(0)
    cands = [f"c{i}" for i in range(40)]
    queries = [f"q{i}" for i in range(25)]
    targets = [int(t) for t in rng.integers(0, len(cands), len(queries))]
    vec = {t: rng.normal(size=8) for t in cands + queries}
    if kind == "constant":
        vec = {t: np.ones(8) for t in vec}
    elif kind == "perfect":
        vec.update({q: vec[cands[t]] for q, t in zip(queries, targets)})

    class Encoder:
        def encode(self, texts, **_):
            return torch.tensor(np.stack([vec[t] for t in texts]), dtype=torch.float32)

    res = evaluate_retrieval(Encoder(), HeldOut(cands, cands, queries, targets, [], cands))
    ranks = []
    for q, t in zip(queries, targets):
        sim = {c: float(np.float32(vec[q]).astype(np.float32) @ np.float32(vec[c])) for c in cands}
        ranks.append(sum(1 for c in cands if c != cands[t] and sim[c] >= sim[cands[t]]))
    assert res["ranks"] == ranks
    assert res["recall@1"] == pytest.approx(np.mean([r < 1 for r in ranks]))
    assert res["recall@10"] == pytest.approx(np.mean([r < 10 for r in ranks]))
    if kind == "constant":
        assert res["recall@1"] == 0.0 and res["mean_rank"] == len(cands)

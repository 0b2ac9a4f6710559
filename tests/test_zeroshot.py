"""Zero-shot transfer: union-after-thresholding mapping, normal/abnormal, text mode, CLI."""
import json

import numpy as np
import pytest

from raddiag.data.case import Case, Scan
from raddiag.data.labels import LabelSpace
from raddiag.data.store import prepare_cases
from raddiag.transfer.zeroshot import load_mapping, mapped_margins, suggest_mapping, zeroshot

SOURCE = LabelSpace(names=["Normal", "Viral pneumonia", "Bacterial pneumonia", "Glioma"],
                    codes=[None, "J12", "J15", "C71"])


def test_mapping_is_a_union_after_thresholding():
    scores = np.array([[0.2, 0.9], [0.6, 0.1], [0.1, 0.1]])
    thr = np.array([0.5, 0.8])
    m = mapped_margins(scores, thr, [[0, 1], [1], []])
    assert (m[:, 0] >= 0).tolist() == [True, True, False]      # any linked class passes
    assert (m[:, 1] >= 0).tolist() == [True, False, False]
    assert (m[:, 2] < 0).all()                                  # unlinked: never positive


def test_suggested_mapping_by_name_then_code():
    target = LabelSpace(names=["Normal", "viral  pneumonia", "Pneumonia due to Streptococcus"],
                        codes=[None, "J12", "J15"])
    links = suggest_mapping(SOURCE, target)
    assert links["Normal"] == ["Normal"]
    assert links["viral  pneumonia"] == ["Viral pneumonia"]
    assert links["Pneumonia due to Streptococcus"] == ["Bacterial pneumonia"]


def test_mapping_file_errors_name_the_file(tmp_path):
    target = LabelSpace(names=["Normal", "Tumour"])
    p = tmp_path / "map.json"
    p.write_text(json.dumps({"Tumour": ["Glioma", "Nope"]}))
    with pytest.raises(ValueError, match=r"map.json: source class 'Nope'"):
        load_mapping(p, SOURCE, target)
    p.write_text(json.dumps({"Tumor": "Glioma"}))
    with pytest.raises(ValueError, match=r"map.json: target class 'Tumor'"):
        load_mapping(p, SOURCE, target)
    p.write_text(json.dumps({"Tumour": []}))              # it read as mapped and scored nothing
    with pytest.raises(ValueError, match=r"map.json: 'Tumour' links to no source class"):
        load_mapping(p, SOURCE, target)
    p.write_text(json.dumps({"Tumour": "Glioma"}))
    assert load_mapping(p, SOURCE, target) == {"Tumour": ["Glioma"]}


def tiny_run_and_target(tmp, source: LabelSpace, labels: list[str], n_test: int, icd10=None):
    """A knowledge-head run scoring ``source`` and a prepared target: case ``i`` has label
    ``labels[i]`` (the first ``n_test`` in test, the rest in val)."""
    from raddiag.serving.sample import make_tiny_run

    run = make_tiny_run(tmp / "run", classes=source.names, codes=source.codes, head="knowledge",
                        thresholds=[0.5] * len(source))
    rng = np.random.default_rng(0)
    cases = []
    for i, label in enumerate(labels):
        np.save(tmp / f"{i}.npy", rng.normal(100, 20, (40, 40, 1 + i % 3)).astype(np.float32))
        cases.append(Case(id=f"c{i}", split="test" if i < n_test else "val", labels=[label],
                          icd10=(icd10 or {}).get(label, []),
                          scans=[Scan(str(tmp / f"{i}.npy"), "X-ray" if i % 3 == 0 else "CT")]))
    prepare_cases(cases, tmp / "target", size=32, depth=4, workers=1)
    return run.root, tmp / "target", tmp


@pytest.fixture(scope="module")
def run_and_target(tmp_path_factory):
    labels = [["Normal", "Viral pneumonia", "Pneumonia due to Streptococcus"][i % 3] for i in range(16)]
    return tiny_run_and_target(tmp_path_factory.mktemp("zs"), SOURCE, labels, 12,
                               {"Viral pneumonia": ["J12"], "Pneumonia due to Streptococcus": ["J15"]})


def test_zeroshot_all_modes(run_and_target):
    run, target, tmp = run_and_target
    res = zeroshot(run, target, tmp / "out")
    assert res["n_cases"] == 12
    m = res["mapping"]
    assert m["per_class"]["Pneumonia due to Streptococcus"]["linked"] == ["Bacterial pneumonia"]
    assert m["unmapped"] == [] and all(0 <= m["macro"][k] <= 1 for k in ("f1", "acc"))
    assert 0 <= res["normal"]["auc"] <= 1 and res["normal"]["n_normal"] == 4
    assert 0 <= res["text"]["all"]["auc"]["value"] <= 1 and res["text"]["threshold_source"] == "validation"
    saved = json.loads((tmp / "out" / "zeroshot.json").read_text())
    assert saved["normal"] == res["normal"]
    assert json.loads((tmp / "out" / "mapping.json").read_text())["Viral pneumonia"] == ["Viral pneumonia"]


def test_zeroshot_cli(run_and_target, capsys):
    from raddiag.cli import main

    run, target, tmp = run_and_target
    assert main(["zeroshot", str(run), "--data", str(target), "--out", str(tmp / "cli"),
                 "--mode", "mapping", "normal"]) == 0
    out = capsys.readouterr().out
    assert "class mapping" in out and "normal/abnormal AUC" in out
    # the macro says which target classes it averages (one mapped class read like a result of all)
    assert "(over 3 of 3 target classes: " in out
    assert main(["zeroshot", str(run), "--data", str(tmp / "missing"), "--out", str(tmp / "x")]) == 2


def test_zeroshot_from_shards_equals_the_prepared_folder(run_and_target):
    from raddiag.data.shards import write_shards

    run, target, tmp = run_and_target
    shards = write_shards(target, tmp / "target-shards") and tmp / "target-shards"
    want = zeroshot(run, target, tmp / "out-prepared")
    got = zeroshot(run, f"pipe:cat {shards}/shards.json", tmp / "out-shards")
    assert got["n_cases"] == want["n_cases"] == 12
    for mode in ("mapping", "normal"):
        assert got[mode] == want[mode]
    assert got["text"]["all"] == want["text"]["all"]


def test_a_mapping_file_with_a_bom_is_read_and_links_that_are_no_names_are_refused(tmp_path):
    target = LabelSpace(names=["Normal", "Tumour"])
    p = tmp_path / "map.json"
    p.write_bytes(b"\xef\xbb\xbf" + json.dumps({"Tumour": ["Glioma"]}).encode())
    assert load_mapping(p, SOURCE, target) == {"Tumour": ["Glioma"]}
    for bad in ({"Tumour": 5}, {"Tumour": [["Glioma"]]}, {"Tumour": None}):
        p.write_text(json.dumps(bad))
        with pytest.raises(ValueError, match=r"map.json: 'Tumour' must link to a source class name or a list of them"):
            load_mapping(p, SOURCE, target)
    p.write_bytes(b"\xff\xfe{}")
    with pytest.raises(ValueError, match=r"map.json: cannot read the class mapping"):
        load_mapping(p, SOURCE, target)


def test_a_bad_mapping_file_or_out_is_refused_before_any_prediction(run_and_target, monkeypatch):
    import raddiag.inference

    def no_prediction(*a, **k):
        raise AssertionError("predicted before the mapping file was checked")
    monkeypatch.setattr(raddiag.inference, "predict_dataset", no_prediction)
    run, target, tmp = run_and_target
    (tmp / "bad.json").write_text(json.dumps({"Nope": ["Glioma"]}))
    with pytest.raises(ValueError, match=r"bad.json: target class 'Nope'"):
        zeroshot(run, target, tmp / "out-bad", modes=["mapping"], mapping=tmp / "bad.json")
    (tmp / "afile").write_text("keep")
    with pytest.raises(ValueError, match=r"afile: is a file, not a folder"):
        zeroshot(run, target, tmp / "afile", modes=["mapping"])


def test_a_failed_zeroshot_leaves_no_out_folder(run_and_target, tmp_path):
    """The run, the data and the mapping are read before --out is made: a mistake leaves nothing."""
    run, target, _ = run_and_target
    out = tmp_path / "never-made"
    bad = tmp_path / "map.json"
    bad.write_text(json.dumps({"No such class": ["Glioma"]}))
    with pytest.raises(ValueError, match="No such class"):
        zeroshot(run, target, out, mapping=bad)
    with pytest.raises(FileNotFoundError, match="no-run: does not exist"):
        zeroshot(tmp_path / "no-run", target, out)
    assert not out.exists()


def test_a_zeroshot_call_that_fails_leaves_the_last_results_whole(run_and_target, monkeypatch):
    """Red team: mapping.json was written as soon as the mapping mode was done; a failure (or a kill)
    in a later mode left the new mapping beside the last call's zeroshot.json, which it did not make."""
    from raddiag.knowledge.encoder import TextEncoder

    run, target, tmp = run_and_target
    out = tmp / "whole"
    zeroshot(run, target, out, modes=("mapping", "normal"))
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    def broken(*_a, **_k):
        raise RuntimeError("the text encoder failed")

    monkeypatch.setattr(TextEncoder, "load", broken)
    with pytest.raises(RuntimeError, match="text encoder failed"):
        zeroshot(run, target, out, mapping={"Viral pneumonia": ["Glioma"]})
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_zeroshot_normal_auc_keeps_the_order_of_tiny_normal_probabilities(run_and_target, monkeypatch):
    """Red team: the abnormal score was 1 - p(Normal) in float32, so every p(Normal) below 3e-8 read
    exactly 1 and cases the model told apart tied (AUC 0.5 where ranking on p gives 0.75). The AUC
    is now scikit-learn's on -p(Normal) for any p the model gives."""
    from sklearn.metrics import roc_auc_score

    import raddiag.inference as inference

    run, target, tmp = run_and_target
    real = inference.predict_dataset
    seen = {}

    def tiny_normal(model, ds, *a, **k):
        preds = real(model, ds, *a, **k)
        p = np.geomspace(1e-12, 1e-9, len(preds.scores)).astype(np.float32)[::-1]
        preds.scores[:, SOURCE.index("Normal")] = p
        seen["p"], seen["abnormal"] = p, 1 - preds.labels[:, ds.labels.index("Normal")]
        return preds

    monkeypatch.setattr(inference, "predict_dataset", tiny_normal)
    res = zeroshot(run, target, tmp / "tiny-normal", modes=("normal",))
    want = roc_auc_score(seen["abnormal"], -seen["p"].astype(np.float64))
    assert want not in (0.5,) and res["normal"]["auc"] == pytest.approx(want)

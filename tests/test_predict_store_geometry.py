"""Prediction reads a scan as training read its store (a new user's report): data prepared once at
the README's 256 x 32 and trained at 64 x 8 are resized from the store on every load, while
``predict`` resized each file to 64 x 8 at once; the same model's probabilities differed by up to
0.116 between ``evaluate`` and ``predict``, and a test case changed its top class."""
from __future__ import annotations

import numpy as np
import pytest

from test_evaluate_guards import SPLITS, _cases
from test_training_data import tiny_overrides

from raddiag.data.store import PreparedData, prepare_cases


@pytest.fixture(scope="module")
def fine_store_run(tmp_path_factory):
    """A ``tiny`` run at 32 px x 4 slices trained from a store prepared at 48 px x 6."""
    from raddiag.config import preset
    from raddiag.training import train

    d = tmp_path_factory.mktemp("stored")
    cases = _cases(d / "raw", lambda i: SPLITS[i % 3])
    prepare_cases(cases, d / "fine", size=48, depth=6, workers=1)
    train(d / "fine", d / "run", preset("tiny", tiny_overrides(**{"train.epochs": 1})), progress=False)
    return d, cases


def test_the_run_records_the_geometry_of_the_store_it_trained_from(fine_store_run):
    from raddiag.run import RunFolder

    d, _ = fine_store_run
    cfg = RunFolder(d / "run").load_config()
    assert (cfg.data.size, cfg.data.depth, cfg.data.stored_geometry) == (32, 4, [48, 6])


def test_predict_on_the_files_gives_evaluates_probabilities(fine_store_run, tmp_path):
    import raddiag
    from raddiag.evaluation.run_eval import evaluate_run

    d, cases = fine_store_run
    evaluate_run(d / "run", d / "fine", "test", tmp_path / "ev", n_boot=0, progress=False)
    with np.load(tmp_path / "ev" / "predictions.npz") as z:
        want, ids = z["scores"], [str(c) for c in z["case_ids"]]
    model = raddiag.load(d / "run")
    by_id = {c.id: c for c in cases}
    names = PreparedData(d / "fine").label_space("disorder").names
    assert list(model.labels.names) == list(names)
    got = []
    for cid in ids:
        scan = by_id[cid].scans[0]
        res = model.predict(scan.paths[0], modality=scan.modality, top=len(names))
        p = {f.name: f.probability for f in res.ranked}
        got.append([p[n] for n in names])
    np.testing.assert_allclose(np.array(got), want, atol=2e-6)


def test_a_saliency_figure_shows_the_file_slice_the_model_saw_through_the_store(tmp_path):
    """7 slices in the file, a store of 6, a run of 4: the model saw file slices 0, 1, 3, 4 (the
    store's 0, 1, 3, 4); read at the run's depth straight from the file they are 0, 1, 3, 5 (red team)."""
    from raddiag.data.case import Scan
    from raddiag.data.preprocess import display_slice

    rng = np.random.default_rng(0)
    vol = rng.random((7, 12, 12)).astype(np.float32)
    np.save(tmp_path / "ct.npy", vol.transpose(1, 2, 0))
    scan = Scan(paths=[str(tmp_path / "ct.npy")], modality="CT", is_3d=True)

    def shown(i, **k):
        return display_slice(scan, i, 4, **k)

    def scaled(z):
        sl = vol[z]
        return (sl - sl.min()) / (sl.max() - sl.min())

    for i, z in enumerate([0, 1, 3, 4]):
        np.testing.assert_allclose(shown(i, stored_depth=6), scaled(z), atol=1e-6)
    np.testing.assert_allclose(shown(3), scaled(5), atol=1e-6)            # a run without a store: as before


def test_a_volume_stays_3d_when_the_store_kept_one_slice(tmp_path):
    """A store of depth 1 keeps one slice of a 23-slice CT; prepare records it 3D, and predict said 2D."""
    from raddiag.config import preset
    from raddiag.serving.predict import Predictor
    from raddiag.serving.sample import make_tiny_run

    np.save(tmp_path / "ct.npy", np.random.default_rng(1).normal(0, 300, (20, 20, 23)).astype(np.float32))
    run = make_tiny_run(tmp_path / "run", overrides=["data.stored_geometry=[16, 1]"])
    res = Predictor.load(run.root).predict(str(tmp_path / "ct.npy"), modality="CT")
    assert [(s.is_3d, s.slices) for s in res.scans] == [(True, 1)]
    assert preset("tiny", ["data.stored_geometry=[16, 1]"]).data.stored_geometry == [16, 1]


def test_a_bad_stored_geometry_names_the_field():
    from raddiag.config import preset

    with pytest.raises(ValueError, match=r"data.stored_geometry \[0, 8\]: .*size"):
        preset("tiny", ["data.stored_geometry=[0, 8]"])

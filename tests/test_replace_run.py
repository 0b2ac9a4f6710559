"""Issue 27 item 4: a run folder's parts always belong together. ``train --overwrite`` trains
beside the old run and swaps the new one in whole; a failure (a NaN loss) or a kill leaves the old
run as it was; and loading refuses a folder whose weights, config and label space come from
different runs, naming them (old weights beside a new label list printed other diseases' names
with the old probabilities)."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from raddiag.run import RunFolder
from test_cli_errors import one_line_error, run_cli
from test_training_data import make_tiny_data, tiny_overrides

PARTS = ("config.yaml", "label_space.json", "model.safetensors", "checkpoints/last.pt")


def _bytes(run: Path) -> dict:
    return {p: (run / p).read_bytes() for p in PARTS}


def _stages(run: Path) -> list[Path]:
    return sorted(run.parent.glob(f".{run.name}.*"))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny dataset and a one-epoch run trained on it (copied per test)."""
    from raddiag.config import preset
    from raddiag.training import train

    d = tmp_path_factory.mktemp("replace_run")
    data = make_tiny_data(d / "data", n_cases=12)
    train(data, d / "run", preset("tiny", tiny_overrides(**{"train.epochs": 1})), progress=False)
    return {"data": data, "run": d / "run"}


@pytest.fixture
def old_run(trained, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(trained["run"], run)
    return run


def test_parts_of_different_runs_are_refused_naming_them(tmp_path, capsys):
    import raddiag
    from raddiag.serving.sample import make_tiny_run, sample_png

    a = make_tiny_run(tmp_path / "a", classes=["Normal", "Pleural effusion"])
    b = make_tiny_run(tmp_path / "b", classes=["Normal", "Pituitary adenoma"], seed=1)
    shutil.copyfile(a.weights, b.weights)            # what a half-replaced run left: old weights, new labels
    (tmp_path / "x.png").write_bytes(sample_png(32))
    rc, _, err = run_cli(capsys, "predict", b.root, tmp_path / "x.png", "--modality", "X-ray")
    assert rc == 2
    one_line_error(err, str(b.root), "do not belong together", "model.safetensors of run",
                   "config.yaml and label_space.json of run")
    with pytest.raises(ValueError, match="do not belong together"):
        raddiag.load(b.root)
    rc, _, err = run_cli(capsys, "evaluate", b.root, "--data", tmp_path, "--out", tmp_path / "ev")
    assert rc == 2 and "do not belong together" in err
    assert raddiag.load(a.root).labels.names == ["Normal", "Pleural effusion"]   # a whole run loads


def test_a_run_without_ids_still_loads_and_new_thresholds_keep_the_id(tmp_path):
    """Runs written before ids (no part carries one) load as before; a later write of the label
    space (evaluate's thresholds) keeps the folder's id."""
    import json

    import yaml

    from raddiag.serving.sample import make_tiny_run

    run = make_tiny_run(tmp_path / "r")
    run_id = run.run_id()
    assert set(run.part_ids().values()) == {run_id} and len(run_id) == 32
    labels = run.load_labels()
    labels.thresholds = [0.3] * len(labels)
    run.save_labels(labels)
    assert json.loads(run.labels.read_text())["run_id"] == run_id
    run.check()
    for part in (run.config, run.labels):              # strip the ids, as an older raddiag wrote them
        text = part.read_text()
        data = yaml.safe_load(text) if part.suffix == ".yaml" else json.loads(text)
        data.pop("run_id")
        part.write_text(yaml.safe_dump(data) if part.suffix == ".yaml" else json.dumps(data))
    with pytest.raises(ValueError, match="config.yaml and label_space.json carry no run id"):
        run.check()                                    # the weights still say which run they are
    from safetensors.torch import load_file, save_file

    save_file(load_file(str(run.weights)), str(run.weights), metadata={"format": "pt"})
    assert run.check().run_id() is None


def test_a_failed_overwrite_leaves_the_old_run_whole(trained, old_run):
    """A NaN loss in the new run's first step: the old run's files are byte for byte as they were
    (its checkpoint too), nothing is left beside it; a good run then replaces it whole."""
    from raddiag.config import preset
    from raddiag.training import train

    before = _bytes(old_run)
    bad = old_run.parent / "bad"
    shutil.copytree(trained["data"], bad)
    sl = np.memmap(bad / "slices.f16", dtype=np.float16, mode="r+")
    sl[:] = np.nan
    sl.flush()
    del sl
    cfg = preset("tiny", tiny_overrides(**{"train.epochs": 2}))
    with pytest.raises(FloatingPointError):
        train(bad, old_run, cfg, progress=False, overwrite=True)
    assert _bytes(old_run) == before
    assert _stages(old_run) == []
    old_id = RunFolder(old_run).run_id()
    result = train(trained["data"], old_run, cfg, progress=False, overwrite=True)
    assert result.run.root == old_run and result.epochs_run == 2
    new = RunFolder(old_run).check()
    assert new.run_id() not in (None, old_id) and set(new.part_ids().values()) == {new.run_id()}
    assert (old_run / "config.yaml").read_bytes() != before["config.yaml"]
    assert _stages(old_run) == [] and not (old_run / ".staging.lock").exists()


def test_kill_9_during_an_overwrite_leaves_the_old_run_whole(trained, old_run):
    """``kill -9`` once the new run has written its config: the old run is untouched and loads;
    the new run's unfinished folder is hidden, and the next command removes it."""
    before = _bytes(old_run)
    args = [sys.executable, "-m", "raddiag", "train", "--data", str(trained["data"]), "--out", str(old_run),
            "--overwrite", "--preset", "tiny", "--no-progress"]
    for o in tiny_overrides(**{"train.epochs": 500}):
        args += ["--set", o]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        deadline = time.time() + 120
        while time.time() < deadline and proc.poll() is None:
            staged = [s for s in _stages(old_run) if (s / "config.yaml").exists()]
            if staged or (old_run / "config.yaml").read_bytes() != before["config.yaml"]:
                break
            time.sleep(0.05)
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        time.sleep(0.5)                                  # into the first epoch
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert _bytes(old_run) == before
    RunFolder(old_run).check()
    from raddiag.staging import stage_prefix, sweep_stale

    left = _stages(old_run)
    assert len(left) == 1 and left[0].name.startswith(stage_prefix(old_run, "train"))
    assert sweep_stale(old_run.parent, stage_prefix(old_run, "train")) == left
    assert _stages(old_run) == []


def test_label_embeddings_belong_to_a_knowledge_run_only(tmp_path):
    """A knowledge-head run's label embeddings are one of its parts (another run's are refused);
    an MLP-head run ignores an embeddings file left from an earlier run in its folder."""
    from raddiag.serving.sample import make_tiny_run

    know = make_tiny_run(tmp_path / "k", head="knowledge")
    other = make_tiny_run(tmp_path / "o", head="knowledge", seed=1)
    shutil.copyfile(other.label_embeddings, know.label_embeddings)
    with pytest.raises(ValueError, match="label_embeddings.safetensors of run"):
        know.check()
    mlp = make_tiny_run(tmp_path / "m")
    shutil.copyfile(other.label_embeddings, mlp.label_embeddings)
    assert "label_embeddings.safetensors" not in mlp.check().part_ids()

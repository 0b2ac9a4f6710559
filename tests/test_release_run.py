"""The authors' released checkpoint used directly as a run (raddiag.models.release): imported on
first use into a cached run folder keyed by the weights' content hash."""
from __future__ import annotations

import hashlib
import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

import raddiag
import raddiag.models.release as release
from raddiag.models import load_model
from raddiag.models.official import import_official
from raddiag.run import resolve_run
from test_import_official import _batch, _labels, _write_bin, released_state


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("RADDIAG_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache" / "release"


@pytest.fixture
def imports(monkeypatch):
    """Counts the imports the release cache runs."""
    calls = []

    def counted(*a, **k):
        calls.append(a[0])
        return import_official(*a, **k)

    monkeypatch.setattr(release, "import_official", counted)
    return calls


def _release(tmp_path, seed=0):
    """The release's layout: the label dictionary at the repository root, one folder per model."""
    repo = tmp_path / "RadDiag"
    ck = _write_bin(released_state(early=True, seed=seed), repo / "RP3D_5569_E")
    _labels(repo)
    return ck


def _scores(model):
    images, scan_mask, slice_mask, mods = _batch()
    with torch.no_grad():
        return model(images, scan_mask, slice_mask, mods)


def test_load_of_a_release_folder_equals_an_explicit_import(tmp_path, cache, imports):
    ck = _release(tmp_path)
    pred = raddiag.load(ck, backend="off")
    assert pred.run_dir.parent == cache and len(imports) == 1
    import_official(ck, tmp_path / "RadDiag" / "disorder_label_dict.json", tmp_path / "explicit")
    model, cfg, labels = load_model(tmp_path / "explicit")
    assert pred.cfg == cfg and pred.labels.names == labels.names
    ours, theirs = pred.model.state_dict(), model.state_dict()
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)
    torch.testing.assert_close(_scores(pred.model), _scores(model), atol=0, rtol=0)
    info = json.loads((pred.run_dir / "release.json").read_text())
    want = hashlib.sha256((ck / "pytorch_model.bin").read_bytes()).hexdigest()   # whole file at once
    assert info["sha256"] == want and pred.run_dir.name.startswith(want[:24])


def test_second_use_reuses_the_cache_and_a_changed_file_is_imported_anew(tmp_path, cache, imports):
    ck = _release(tmp_path)
    first = resolve_run(ck)
    stamp = first.weights.stat().st_mtime_ns
    again = resolve_run(ck / "pytorch_model.bin")          # the file itself names the same release
    copy = shutil.copytree(tmp_path / "RadDiag", tmp_path / "elsewhere") / "RP3D_5569_E"
    assert again.root == first.root == resolve_run(copy).root     # keyed by content, not by path
    assert len(imports) == 1 and first.weights.stat().st_mtime_ns == stamp
    before = _scores(load_model(first)[0])

    _write_bin(released_state(early=True, seed=5), ck)      # the same path, new weights
    changed = resolve_run(ck)
    assert changed.root != first.root and len(imports) == 2
    assert sorted(p.name for p in cache.iterdir()) == sorted([first.root.name, changed.root.name])
    assert not torch.allclose(_scores(load_model(changed)[0]), before)


def test_label_dictionary_given_and_a_broken_entry_reimported(tmp_path, cache, imports):
    ck = _write_bin(released_state(early=False, seed=2), tmp_path / "late")   # no label dictionary near
    with pytest.raises(FileNotFoundError, match="no disorder_label_dict.json beside"):
        resolve_run(ck)
    (tmp_path / "lbl").mkdir()
    labels = _labels(tmp_path / "lbl")
    run = resolve_run(ck, labels)
    assert run.load_labels().names[0] == "Normal" and run.load_config().model.fusion == "max"
    run.weights.unlink()                                    # an entry broken by hand is imported again
    assert resolve_run(ck, labels).root == run.root and run.weights.exists() and len(imports) == 2
    with pytest.raises(ValueError, match="only for the authors' released checkpoint"):
        resolve_run(run.root, labels)
    assert not [p for p in cache.iterdir() if p.name.startswith(".")]   # no temporary folder left


def test_a_concurrent_import_of_the_same_release_is_used(tmp_path, cache, monkeypatch):
    """Another process renames its import of the same release into place while this one
    imports: this one ends on the other's complete folder, with nothing left over."""
    ck = _release(tmp_path)
    raced = []

    def racing_import(*a, **k):
        run = import_official(*a, **k)
        if not raced:              # the "other process": the whole lookup, import and rename
            raced.append(1)
            other = release.release_run(ck)
            (other.root / "marker").write_text("first")
        return run

    monkeypatch.setattr(release, "import_official", racing_import)
    run = resolve_run(ck)
    assert raced and (run.root / "marker").read_text() == "first"
    assert [p.name for p in cache.iterdir()] == [run.root.name]


def test_a_folder_that_is_neither_is_a_clear_error(tmp_path, cache):
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="empty: neither a run folder .* nor the authors' released"):
        resolve_run(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="nope: does not exist"):
        raddiag.load(tmp_path / "nope")
    ours = tmp_path / "ours"                                # our own weights without config.yaml
    ours.mkdir()
    from safetensors.torch import save_file

    save_file({"encoder.cls_token": torch.zeros(1, 1, 4)}, str(ours / "model.safetensors"))
    with pytest.raises(FileNotFoundError, match="ours: neither a run folder"):
        resolve_run(ours)


def test_cli_commands_take_the_release(tmp_path, cache, imports, capsys):
    from raddiag.cli import main

    ck = _release(tmp_path)
    Image.fromarray((np.random.default_rng(0).random((40, 40)) * 255).astype(np.uint8)).save(tmp_path / "a.png")
    argv = ["predict", str(ck), str(tmp_path / "a.png"), "--modality", "X-ray", "--json", "--backend", "off"]
    assert main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    names = {"Normal"} | {f"disorder {i}" for i in range(1, 7)}
    assert len(out) == 1 and {f["name"] for f in out[0]["ranked"]} == names
    assert main(argv) == 0 and len(imports) == 1            # the second command used the cache
    moved = tmp_path / "labels.json"
    shutil.move(tmp_path / "RadDiag" / "disorder_label_dict.json", moved)
    capsys.readouterr()
    assert main(argv) == 2 and "no disorder_label_dict.json beside" in capsys.readouterr().err
    assert main(argv + ["--release-labels", str(moved)]) == 0
    (tmp_path / "empty").mkdir()
    assert main(["export", str(tmp_path / "empty")]) == 2
    assert "neither a run folder" in capsys.readouterr().err

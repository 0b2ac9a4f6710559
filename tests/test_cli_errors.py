"""Issue 13, the CLI half: every failure is one line ``raddiag: error: ...`` naming the file and the
reason, exit code 2 for bad input and 1 for other failures, a traceback only with ``--debug``."""
from __future__ import annotations

import errno

import numpy as np
import pytest

from raddiag.cli import EXIT_BAD_INPUT, EXIT_FAILURE, main


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of ``raddiag ARGV`` in this process; argparse exits count too."""
    try:
        rc = main([str(a) for a in argv])
    except SystemExit as exc:
        rc = exc.code
    out = capsys.readouterr()
    return rc, out.out, out.err


def one_line_error(err: str, *needles: str) -> str:
    """The single ``raddiag: error:`` line of ``err`` (no traceback); it holds every needle."""
    lines = [ln for ln in err.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("raddiag: error:")]
    assert len(errors) == 1, err
    assert "Traceback" not in err, err
    for n in needles:
        assert n in errors[0], (n, errors[0])
    return errors[0]


# -- the top level: exit codes, --debug -------------------------------------------------------
def _npz(path, **arrays):
    np.savez(path, **arrays)
    return path


def test_bad_input_is_one_line_exit_2_and_debug_shows_the_traceback(tmp_path, capsys):
    missing = tmp_path / "nope.npz"
    rc, _, err = run_cli(capsys, "metrics", "--pred", missing, "--out", tmp_path / "m")
    assert rc == EXIT_BAD_INPUT
    one_line_error(err, str(missing), "does not exist")
    for argv in (["--debug", "metrics", "--pred", missing, "--out", tmp_path / "m"],
                 ["metrics", "--pred", missing, "--out", tmp_path / "m", "--debug"]):
        with pytest.raises(FileNotFoundError, match="does not exist"):
            main([str(a) for a in argv])


def test_os_error_exit_1_names_the_file(tmp_path, capsys, monkeypatch):
    """A full disk while writing the outputs: exit 1, one line naming the file and the reason."""
    import raddiag.evaluation.engine as engine

    def full_disk(out, *a, **k):
        raise OSError(errno.ENOSPC, "No space left on device", str(out / "metrics.json"))

    monkeypatch.setattr(engine, "write_outputs", full_disk)
    pred = _npz(tmp_path / "p.npz", scores=np.array([[0.1], [0.9]]), labels=np.array([[0], [1]]))
    rc, _, err = run_cli(capsys, "metrics", "--pred", pred, "--out", tmp_path / "m", "--n-boot", 0)
    assert rc == EXIT_FAILURE
    one_line_error(err, str(tmp_path / "m" / "metrics.json"), "No space left on device")


def test_unexpected_error_one_line_with_a_hint(tmp_path, capsys, monkeypatch):
    import raddiag.evaluation.engine as engine

    def bug(*a, **k):
        raise RuntimeError("something broke\nover two lines")

    monkeypatch.setattr(engine, "evaluate_predictions", bug)
    pred = _npz(tmp_path / "p.npz", scores=np.array([[0.1], [0.9]]), labels=np.array([[0], [1]]))
    rc, _, err = run_cli(capsys, "metrics", "--pred", pred, "--out", tmp_path / "m")
    assert rc == EXIT_FAILURE
    one_line_error(err, "RuntimeError", "something broke; over two lines", "--debug")


# -- metrics ----------------------------------------------------------------------------------
def test_metrics_rejects_negative_n_boot(tmp_path, capsys):
    pred = _npz(tmp_path / "p.npz", scores=np.array([[0.1], [0.9]]), labels=np.array([[0], [1]]))
    rc, _, err = run_cli(capsys, "metrics", "--pred", pred, "--out", tmp_path / "m", "--n-boot", "-5")
    assert rc == 2 and "--n-boot" in err and ">= 0" in err
    assert not (tmp_path / "m").exists()
    from raddiag.data.labels import LabelSpace
    from raddiag.evaluation.engine import evaluate_predictions

    with pytest.raises(ValueError, match="n_boot"):
        evaluate_predictions(np.array([[0.1], [0.9]]), np.array([[0], [1]]), LabelSpace(names=["a"], counts=[1]),
                             n_boot=-5)


@pytest.mark.parametrize("what, arrays, needle", [
    ("string scores", {"scores": np.array([["0.1"], ["0.9"]]), "labels": np.array([[0], [1]])}, "must be numbers"),
    ("duplicate ids", {"scores": np.array([[0.1], [0.9], [0.4]]), "labels": np.array([[0], [1], [1]]),
                       "case_ids": np.array(["a", "b", "a"])}, "duplicate case ids ['a']"),
    ("zero rows", {"scores": np.zeros((0, 2)), "labels": np.zeros((0, 2))}, "no predictions"),
])
def test_metrics_bad_prediction_files(tmp_path, capsys, what, arrays, needle):
    pred = _npz(tmp_path / "p.npz", **arrays)
    rc, _, err = run_cli(capsys, "metrics", "--pred", pred, "--out", tmp_path / "m", "--n-boot", 0)
    assert rc == EXIT_BAD_INPUT, what
    one_line_error(err, str(pred), needle)
    assert not (tmp_path / "m" / "metrics.json").exists()


def test_metrics_on_an_npy(tmp_path, capsys):
    pred = tmp_path / "p.npy"
    np.save(pred, np.zeros((3, 2)))
    rc, _, err = run_cli(capsys, "metrics", "--pred", pred, "--out", tmp_path / "m")
    assert rc == EXIT_BAD_INPUT
    one_line_error(err, str(pred), "not an .npz")


# -- training: --out, --resume, --overwrite, run-folder files -----------------------------------
@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A prepared tiny dataset and the tiny-model settings as CLI arguments."""
    from test_training_data import make_tiny_data, tiny_overrides

    d = tmp_path_factory.mktemp("cli_train")
    data = make_tiny_data(d / "data", n_cases=12)
    args = ["--preset", "tiny", "--no-progress"]
    for o in tiny_overrides(**{"train.epochs": 1}):
        args += ["--set", o]
    return {"dir": d, "data": data, "args": args}


def _train_args(tiny, out, *extra):
    return ["train", "--data", tiny["data"], "--out", out, *tiny["args"], *extra]


def test_train_out_under_a_file(tiny, tmp_path, capsys):
    (tmp_path / "afile").write_text("x")
    rc, _, err = run_cli(capsys, *_train_args(tiny, tmp_path / "afile" / "run"))
    assert rc == EXIT_BAD_INPUT
    one_line_error(err, str(tmp_path / "afile" / "run"), "a parent is a file")


def test_train_out_on_a_read_only_disk(tiny, tmp_path, capsys, monkeypatch):
    import pathlib

    ro = tmp_path / "ro"
    real_mkdir = pathlib.Path.mkdir

    def mkdir(self, *a, **k):
        if self == ro or ro in self.parents:
            raise OSError(errno.EROFS, "Read-only file system", str(self))
        return real_mkdir(self, *a, **k)

    monkeypatch.setattr(pathlib.Path, "mkdir", mkdir)
    rc, _, err = run_cli(capsys, *_train_args(tiny, ro / "run"))
    assert rc == EXIT_FAILURE
    one_line_error(err, str(ro / "run"), "cannot create the run folder", "Read-only file system")


def test_train_out_on_a_full_disk(tiny, tmp_path, capsys, monkeypatch):
    """The disk fills up while a checkpoint or the weights are written: one line naming the file,
    and no half-written file left behind."""
    import raddiag.staging as staging

    def fsync(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(staging.os, "fsync", fsync)
    out = tmp_path / "run"
    rc, _, err = run_cli(capsys, *_train_args(tiny, out))
    assert rc == EXIT_FAILURE
    line = one_line_error(err, str(out), "No space left on device")
    assert any(f"{name}: No space" in line for name in ("config.yaml", "model.safetensors", "last.pt"))
    assert not [p for p in out.rglob("*") if ".tmp" in p.name]


def test_resume_on_another_label_space(tiny, tmp_path, capsys):
    out = tmp_path / "run"
    assert run_cli(capsys, *_train_args(tiny, out))[0] == 0
    rc, _, err = run_cli(capsys, "train", "--data", tiny["data"], "--out", out, "--resume",
                         "--granularity", "icd10", "--no-progress")
    assert rc == EXIT_BAD_INPUT
    one_line_error(err, str(out), "label space differs", "label_space.json")


def test_train_over_a_run_with_weights_but_no_checkpoint(tiny, tmp_path, capsys):
    from raddiag.serving.sample import make_tiny_run

    run = make_tiny_run(tmp_path / "run")
    before = run.weights.read_bytes()
    rc, _, err = run_cli(capsys, *_train_args(tiny, run.root))
    assert rc == EXIT_BAD_INPUT
    one_line_error(err, str(run.root), "model.safetensors", "--overwrite")
    assert run.weights.read_bytes() == before
    rc, out, _ = run_cli(capsys, *_train_args(tiny, run.root, "--overwrite"))
    assert rc == 0 and run.weights.read_bytes() != before
    assert (run.checkpoints / "last.pt").exists()
    # the start summary named the hidden folder the run trained in, gone once it was swapped in
    assert f"training {run.root} (" in out and f"metrics: {run.metrics_csv} " in out
    assert f"--logdir {run.tensorboard})" in out and ".run.train-" not in out.replace("training in .run.train-", "")


@pytest.mark.parametrize("name, content, needle", [
    ("model.safetensors", b"\x00" * 40, "not a readable safetensors file"),
    ("config.yaml", b"data: [size: 32\nmodel: {", "not a readable YAML config"),
    ("config.yaml", b"- just\n- a list\n", "expected a mapping"),
    ("config.yaml", b"\xff\xfe\x00bad", "not a readable YAML config"),
    ("label_space.json", b"{\"names\": [1,", "not a readable label space"),
])
def test_malformed_run_folder_file_is_named(tmp_path, capsys, name, content, needle):
    from raddiag.serving.sample import make_tiny_run, sample_png

    run = make_tiny_run(tmp_path / "run")
    (run.root / name).write_bytes(content)
    (tmp_path / "a.png").write_bytes(sample_png(32))
    rc, _, err = run_cli(capsys, "predict", run.root, tmp_path / "a.png", "--modality", "X-ray")
    assert rc == EXIT_BAD_INPUT
    one_line_error(err, str(run.root / name), needle)


# -- predict: several cases, saliency outputs --------------------------------------------------
@pytest.fixture(scope="module")
def cases(tmp_path_factory):
    from raddiag.serving.sample import make_tiny_run, sample_png

    d = tmp_path_factory.mktemp("cli_predict")
    make_tiny_run(d / "run")
    for name, seed in (("good1", 1), ("good2", 2)):
        (d / name).mkdir()
        (d / name / "a.png").write_bytes(sample_png(40, seed=seed))
    (d / "bad").mkdir()
    (d / "bad" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 30)     # truncated PNG
    return d


def test_predict_several_cases_keeps_the_good_ones(cases, capsys):
    import json

    from raddiag.serving.predict import CaseError, CaseResult, Predictor

    pred = Predictor.load(cases / "run")
    got = pred.predict([str(cases / "good1"), str(cases / "bad"), str(cases / "good2")], modality="X-ray")
    assert [type(r) for r in got] == [CaseResult, CaseError, CaseResult]
    assert got[1].case_id == "bad" and "broken.png" in got[1].error
    alone = pred.predict(str(cases / "good2"), modality="X-ray")       # the good ones are as if alone
    assert [f.probability for f in got[2].ranked] == pytest.approx([f.probability for f in alone.ranked])

    rc, out, err = run_cli(capsys, "predict", cases / "run", cases / "good1", cases / "bad", cases / "good2",
                           "--modality", "X-ray", "--json")
    assert rc == EXIT_BAD_INPUT
    rows = json.loads(out)
    assert [r["case_id"] for r in rows] == ["good1", "bad", "good2"]
    assert "ranked" in rows[0] and "ranked" in rows[2] and "broken.png" in rows[1]["error"]
    one_line_error(err, "1 of 3 cases failed", "broken.png")

    rc, out, err = run_cli(capsys, "predict", cases / "run", cases / "good1", cases / "bad", "--modality", "X-ray")
    assert rc == EXIT_BAD_INPUT and "Case good1" in out and "Case bad: error:" in out


def test_predict_saliency_refuses_to_overwrite(cases, tmp_path, capsys):
    argv = ["predict", cases / "run", cases / "good1", "--modality", "X-ray", "--saliency", tmp_path / "o",
            "--saliency-top-k", 4]
    assert run_cli(capsys, *argv)[0] == 0
    written = sorted((tmp_path / "o").glob("*.png"))
    assert written
    written[0].write_bytes(b"mine")
    rc, _, err = run_cli(capsys, *argv)
    assert rc == EXIT_BAD_INPUT
    one_line_error(err, str(written[0]), "--overwrite")
    assert written[0].read_bytes() == b"mine"
    assert run_cli(capsys, *argv, "--overwrite")[0] == 0
    assert written[0].read_bytes().startswith(b"\x89PNG")

    (tmp_path / "afile").write_text("x")
    rc, _, err = run_cli(capsys, *argv[:-4], "--saliency", tmp_path / "afile")
    assert rc == EXIT_BAD_INPUT
    one_line_error(err, str(tmp_path / "afile"), "must be a folder")


# -- found by a red-team pass over the merged hardening ------------------------------------------
def test_metrics_bootstrap_with_no_positive_case(tmp_path, capsys):
    """Every label 0: the metrics are undefined (shown as '-'), the bootstrap must not crash."""
    pred = _npz(tmp_path / "p.npz", scores=np.random.default_rng(0).random((20, 3)), labels=np.zeros((20, 3)))
    rc, _, err = run_cli(capsys, "metrics", "--pred", pred, "--out", tmp_path / "m", "--n-boot", 5)
    assert rc == 0, err
    assert (tmp_path / "m" / "metrics.json").exists()


def test_predict_refuses_an_empty_name_in_a_comma_joined_case(tmp_path, capsys, monkeypatch):
    """'x.npy,' must not become 'x.npy' + '.', which would read every scan of the current folder."""
    np.save(tmp_path / "other.npy", np.random.default_rng(0).random((16, 16, 4)).astype(np.float32))
    monkeypatch.chdir(tmp_path)
    for case in ("x.npy,", ",x.npy", "x.npy,,y.npy"):
        rc, _, err = run_cli(capsys, "predict", tmp_path / "run", case, "--modality", "CT")
        assert rc == EXIT_BAD_INPUT
        one_line_error(err, repr(case), "empty file name")


def test_non_finite_loss_is_bad_input():
    from raddiag.cli import describe_error

    code, text = describe_error(FloatingPointError("training loss is nan at epoch 1, step 1; cases of the batch: a"))
    assert code == EXIT_BAD_INPUT and "unexpected" not in text


def test_metrics_refuses_to_write_over_its_own_input(tmp_path, capsys):
    (tmp_path / "ev").mkdir()
    pred = _npz(tmp_path / "ev" / "predictions.npz", scores=np.array([[0.1], [0.9]]), labels=np.array([[0], [1]]))
    before = pred.read_bytes()
    rc, _, err = run_cli(capsys, "metrics", "--pred", pred, "--out", tmp_path / "ev", "--n-boot", 0)
    assert rc == EXIT_BAD_INPUT
    one_line_error(err, str(pred), "overwrite")
    assert pred.read_bytes() == before


def test_error_line_is_not_printed_onto_an_open_progress_bar(tmp_path, capsys, monkeypatch):
    from tqdm import tqdm

    import raddiag.evaluation.engine as engine

    def fail_with_a_bar_open(*a, **k):
        tqdm(total=10, desc="work").update(3)            # left open, as a failing loop leaves it
        raise ValueError("x.npz: broken")

    monkeypatch.setattr(engine, "evaluate_predictions", fail_with_a_bar_open)
    pred = _npz(tmp_path / "p.npz", scores=np.array([[0.1], [0.9]]), labels=np.array([[0], [1]]))
    rc, _, err = run_cli(capsys, "metrics", "--pred", pred, "--out", tmp_path / "m")
    assert rc == EXIT_BAD_INPUT
    assert not list(getattr(tqdm, "_instances", ()))
    assert err.splitlines()[-1] == "raddiag: error: x.npz: broken"


@pytest.mark.parametrize("argv, needle", [
    (["predict", "RUN", "CASE", "--batch-size", "0"], "--batch-size: must be an integer >= 1, got 0"),
    (["predict", "RUN", "CASE", "--saliency-top-k", "-3"], "--saliency-top-k: must be an integer >= 1, got -3"),
    (["evaluate", "RUN", "--data", "D", "--batch-size", "x"], "must be an integer >= 1, got 'x'"),
    (["data", "synth", "--out", "O", "--cases", "0"], "--cases: must be an integer >= 1"),
    (["predict", "RUN", "CASE", "--device", "cuda:7"], "--device"),
    (["predict", "RUN", "CASE", "--device", "gpu"], "is not a device"),
])
def test_counts_and_devices_are_checked_while_parsing(capsys, argv, needle):
    rc, _, err = run_cli(capsys, *argv)
    assert rc == 2 and needle in err, err
    assert "Traceback" not in err


def test_every_integer_option_but_seeds_and_ports_must_be_positive():
    """Options added later get the check too: walk the whole parser."""
    import argparse

    from raddiag.cli import ZERO_ALLOWED, build_parser, positive_int

    def walk(parser):
        for a in parser._actions:
            if isinstance(a, argparse._SubParsersAction):
                for child in a.choices.values():
                    yield from walk(child)
            else:
                yield a

    ints = [a for a in walk(build_parser()) if a.type in (int, positive_int)]
    assert any(a.dest == "batch_size" for a in ints)
    assert [a.option_strings for a in ints if a.type is int and a.dest not in ZERO_ALLOWED] == []
    assert positive_int("3") == 3
    with pytest.raises(argparse.ArgumentTypeError):
        positive_int("0")

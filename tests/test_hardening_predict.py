"""Hostile inputs to ``raddiag predict``, the service, ``raddiag zeroshot`` and ``raddiag
knowledge map``: one test per finding, each failing before its fix."""
from __future__ import annotations

import pytest

from raddiag.cli import main
from raddiag.serving.sample import make_tiny_run, sample_png


@pytest.fixture(scope="module")
def krun(tmp_path_factory):
    d = tmp_path_factory.mktemp("hp")
    make_tiny_run(d / "krun", head="knowledge")
    (d / "cxr.png").write_bytes(sample_png(32))
    return d


@pytest.mark.parametrize("classes, reason", [
    (["Pneumonia", "", "Edema"], "class name 2 of 3 is empty"),
    (["Pneumonia", "   "], "class name 2 of 2 is empty"),
    (["Pneumonia", "Edema", "Pneumonia"], "'Pneumonia' is given twice (names 1 and 3)"),
    (["Pneumonia", "pneumonia "], "'pneumonia' is given twice (names 1 and 2: 'Pneumonia' differs only"),
    (["Pneumonia", "a\nb"], "class name 2 of 2 ('a\\nb') holds a control character"),
])
def test_bad_class_names_are_refused_naming_the_one_at_fault(krun, capsys, classes, reason):
    rc = main(["predict", str(krun / "krun"), str(krun / "cxr.png"), "--modality", "X-ray", "--classes", *classes])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and reason in err[0], err


def test_the_error_for_many_class_names_stays_short(krun, capsys):
    names = [f"disease {i}" for i in range(5000)] + [""]
    rc = main(["predict", str(krun / "krun"), str(krun / "cxr.png"), "--modality", "X-ray", "--classes", *names])
    err = capsys.readouterr().err
    assert rc == 2 and "class name 5001 of 5001 is empty" in err and len(err) < 400


def test_a_file_named_png_that_is_no_image_is_named_once_with_a_plain_reason(krun, tmp_path, capsys):
    (tmp_path / "b.png").write_text("not a png")
    rc = main(["predict", str(krun / "krun"), str(tmp_path / "b.png"), "--modality", "X-ray"])
    err = capsys.readouterr()
    text = err.out + err.err
    assert rc == 2 and "b.png: cannot be read: not an image Pillow can decode" in text
    assert "UnidentifiedImageError" not in text and text.count("b.png") == 2   # the case line and the summary


def test_a_file_removed_while_it_is_read_says_so(monkeypatch, tmp_path):
    import raddiag.data.readers as readers
    from raddiag.data.errors import ScanError

    (tmp_path / "a.png").write_bytes(sample_png(32))

    def vanished(path, *a, **k):
        raise FileNotFoundError(2, "No such file or directory", str(path))
    monkeypatch.setattr(readers, "open_image", vanished)
    with pytest.raises(ScanError, match=r"a.png: cannot be read: the file was removed or renamed while it was read$"):
        readers.open_file(tmp_path / "a.png")


def test_a_very_long_class_name_is_shortened_in_the_table_not_in_json(krun, capsys):
    long = "Pneumonia " + "x" * 3000
    args = ["predict", str(krun / "krun"), str(krun / "cxr.png"), "--modality", "X-ray", "--classes", long, "Edema"]
    assert main(args) == 0
    lines = capsys.readouterr().out.splitlines()
    assert max(map(len, lines)) < 200 and any("Pneumonia xxx" in x and "..." in x for x in lines)
    import json

    assert main([*args, "--json"]) == 0
    assert long in [f["name"] for f in json.loads(capsys.readouterr().out)[0]["ranked"]]


def _client(krun, **kw):
    from fastapi.testclient import TestClient

    from raddiag.serving.app import create_app

    return TestClient(create_app(krun / "krun", **kw), raise_server_exceptions=False)


def test_the_service_refuses_more_class_names_than_its_limit_before_embedding_them(krun, monkeypatch):
    from raddiag.serving.predict import Predictor

    def no_embedding(*a, **k):
        raise AssertionError("embedded before the count was checked")
    monkeypatch.setattr(Predictor, "class_embeddings", no_embedding)
    with _client(krun, max_classes=3) as c:
        r = c.post("/predict", files={"files": ("a.png", sample_png(32), "image/png")},
                   data={"modality": "X-ray", "classes": "a\nb\nc\nd"})
        assert r.status_code == 413 and "4 class names" in r.json()["detail"] and "3" in r.json()["detail"]
        assert c.get("/health").json()["max_classes"] == 3


def test_a_class_name_with_a_comma_is_one_class_in_the_service_as_in_the_cli(krun, capsys):
    """New user: "Crohn's disease (β) – 50%, grade≥2" sent once was scored as two made-up classes."""
    import json

    comma = "Crohn's disease (β) – 50%, grade≥2"
    assert main(["predict", str(krun / "krun"), str(krun / "cxr.png"), "--modality", "X-ray", "--classes", comma,
                 "Edema", "--json"]) == 0
    cli = {f["name"]: f["probability"] for f in json.loads(capsys.readouterr().out)[0]["ranked"]}
    with _client(krun) as c:
        png = (krun / "cxr.png").read_bytes()
        for data in ({"modality": "X-ray", "classes": [comma, "Edema"]},
                     {"modality": "X-ray", "classes": comma + "\nEdema"}):
            r = c.post("/predict", files={"files": ("cxr.png", png, "image/png")}, data=data)
            assert r.status_code == 200, r.text
            served = {f["name"]: f["probability"] for f in r.json()["ranked"]}
            assert set(served) == set(cli) == {comma, "Edema"}
            assert served == pytest.approx(cli, abs=1e-6)


def test_a_huge_unknown_modality_is_not_echoed_back_whole(krun):
    with _client(krun) as c:
        r = c.post("/predict", files={"files": ("a.png", sample_png(32), "image/png")}, data={"modality": "x" * 100000})
    assert r.status_code == 422 and "unknown modality 'xxx" in r.json()["detail"] and len(r.text) < 1000


@pytest.mark.parametrize("args, reason", [
    (["--port", "70000"], "argument --port: must be a port number 0..65535, got 70000"),
    (["--max-mb", "nan"], "argument --max-mb: must be a number of MB > 0, got 'nan'"),
    (["--max-mb", "0"], "argument --max-mb: must be a number of MB > 0, got '0'"),
    (["--max-mb", "-5"], "argument --max-mb: must be a number of MB > 0, got '-5'"),
])
def test_serve_refuses_a_port_or_size_limit_that_cannot_work_before_loading(krun, capsys, args, reason):
    with pytest.raises(SystemExit) as e:
        main(["serve", str(krun / "krun"), *args])
    assert e.value.code == 2 and reason in capsys.readouterr().err


@pytest.mark.parametrize("names, reason", [(["Pneumonia", ""], "name 2 of 2 is empty"),
                                           (["   ", "Pneumonia"], "name 1 of 2 is empty")])
def test_knowledge_map_refuses_an_empty_name_up_front_naming_which(monkeypatch, capsys, names, reason):
    import raddiag.knowledge.map as kmap

    def no_encoder(*a, **k):
        raise AssertionError("the encoder was loaded before the names were checked")
    monkeypatch.setattr(kmap, "resolve_encoder", no_encoder)
    rc = main(["knowledge", "map", *names])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and reason in err[0]


def test_knowledge_map_prints_each_name_on_one_short_line(monkeypatch, capsys):
    import raddiag.knowledge.commands as kcmd
    import raddiag.knowledge.map as kmap

    monkeypatch.setattr(kmap, "resolve_encoder", lambda e: (None, "test"))
    monkeypatch.setattr(kcmd, "_kb", lambda a: None)
    monkeypatch.setattr(kcmd, "_print_sources", lambda kb: None)
    monkeypatch.setattr(kmap, "suggest_codes", lambda names, **k: [[("J18", "Pneumonia", 0.9)] for _ in names])
    assert main(["knowledge", "map", "a\nb", "pneumonia " * 1000]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "a\\nb" and lines[1].startswith("  J18") and max(map(len, lines)) < 200


def test_the_table_names_the_scans_used_and_those_the_scan_caps_left_out(krun, tmp_path):
    import numpy as np

    from raddiag.serving.predict import Predictor

    rng = np.random.default_rng(0)
    for i in range(12):
        np.save(tmp_path / f"{i}.npy", rng.random((32, 32, 4), dtype=np.float32))
    res = Predictor.load(krun / "krun").predict(str(tmp_path), modality="CT", top=1)
    kept = sum(s.used for s in res.scans)
    assert kept < 12 and len(res.scans) == 12
    used = [s.id for s in res.scans if s.used]
    left = [s.id for s in res.scans if not s.used]
    # the table names the files: those used and those the caps left out (the first five, then "...")
    assert f"{kept} scan(s) used: " + ", ".join(f"{u} (CT 3D)" for u in used) + ";" in str(res)
    assert (f"{12 - kept} left out by the run's scan caps (README 'Scan caps'): " + ", ".join(left[:5]) + ", ...;"
            in str(res))
    assert "left out" not in str(Predictor.load(krun / "krun").predict(str(tmp_path / "0.npy"), modality="CT"))


def test_scans_left_out_by_the_scan_caps_are_not_kept_in_memory(tmp_path):
    import subprocess
    import sys

    import numpy as np

    make_tiny_run(tmp_path / "run", size=128, depth=16)
    rng = np.random.default_rng(0)
    (tmp_path / "c").mkdir()
    for i in range(40):
        np.save(tmp_path / "c" / f"{i}.npy", rng.random((16, 16, 4), dtype=np.float32))
    code = ("import resource, sys\nfrom raddiag.serving.predict import Predictor\n"
            "p = Predictor.load(sys.argv[1]); p.predict(sys.argv[2] + '/0.npy', modality='CT')\n"
            "a = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
            "r = p.predict(sys.argv[2], modality='CT')\n"
            "print(sum(s.used for s in r.scans), (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - a) / 1024)")
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "run"), str(tmp_path / "c")],
                         capture_output=True, text=True, check=True).stdout.split()
    used, grew_mb = int(out[0]), float(out[1])
    per_scan_mb = 128 * 128 * 16 * 2 / 2**20                  # one preprocessed float16 scan: 0.5 MB
    assert used < 40 and grew_mb < 15 * per_scan_mb, grew_mb    # 40 scans kept: 20 MB


def test_an_empty_case_name_is_refused_not_read_as_the_current_folder(krun, tmp_path, monkeypatch, capsys):
    """Red team: `predict RUN ""` (an unset shell variable) and `Predictor.predict("")` read Path("")
    as ".": every scan under the current folder became one case, predicted and printed ("Case : 24
    scan(s)")."""
    import raddiag

    for i in range(3):
        (tmp_path / f"{i}.png").write_bytes(sample_png(32, seed=i))
    monkeypatch.chdir(tmp_path)
    assert main(["predict", str(krun / "krun"), "", "--modality", "X-ray"]) == 2
    err = capsys.readouterr().err
    assert "empty name" in err and "Case" not in err
    pred = raddiag.load(krun / "krun")
    for given in ("", " ", None):
        with pytest.raises(ValueError, match="empty name|nothing to predict"):
            pred.predict(given, modality="X-ray")
    with pytest.raises(ValueError, match="1 of 2 is an empty name"):        # a list with a file: one case
        pred.predict(["", str(tmp_path / "0.png")], modality="X-ray")
    got = pred.predict([[""], [str(tmp_path / "0.png")]], modality="X-ray")     # several cases: one error each
    assert "empty name" in got[0].error and got[1].case_id == "0"

"""`raddiag demo` end to end at a test-sized budget (the full demo is `make demo`)."""
import json

import pytest


@pytest.mark.slow
def test_demo_runs_end_to_end(tmp_path, monkeypatch, capsys):
    from raddiag.cli import main

    monkeypatch.setenv("RADDIAG_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--cases", "60", "--epochs", "1", "--knowledge-steps", "2"]) == 0
    printed = capsys.readouterr().out
    assert "[4/4] evaluating" in printed and "AUC" in printed and str(out / "report.html") in printed
    metrics = json.loads((out / "metrics.json").read_text())
    assert 0.0 <= metrics["all"]["auc"]["value"] <= 1.0
    assert "<table" in (out / "report.html").read_text()
    assert (out / "run" / "model.safetensors").exists() and (out / "run" / "label_embeddings.safetensors").exists()
    assert (tmp_path / "cache" / "knowledge-minilm-s2-seed0" / "config.json").exists()
    # a second run reuses the data and the encoder, and replaces the run
    assert main(["demo", "--out", str(out), "--cases", "60", "--epochs", "1", "--knowledge-steps", "2"]) == 0
    printed = capsys.readouterr().out
    assert "reusing the generated dataset" in printed and "replacing the previous demo run" in printed

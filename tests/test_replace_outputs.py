"""Issue 27 item 6 and the saliency part of item 4: outputs that replace earlier ones are built
beside them and put in place only when complete; a failure half-way leaves the old output whole."""
from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def two_cases(tmp_path_factory):
    from raddiag.serving.sample import make_tiny_run, sample_png

    d = tmp_path_factory.mktemp("saliency_replace")
    make_tiny_run(d / "run")
    for name, seed in (("c1", 1), ("c2", 2)):
        (d / name).mkdir()
        (d / name / "a.png").write_bytes(sample_png(40, seed=seed))
    return d


def test_a_failed_saliency_overwrite_leaves_the_old_overlays(two_cases, tmp_path, monkeypatch):
    """The second of two maps fails: no overlay of this call lands (the first one was replaced
    already), the earlier ones stay as they were, nothing hidden is left; then a good call
    replaces them."""
    import raddiag.serving.saliency as sal
    from raddiag.serving.predict import Predictor

    pred = Predictor.load(two_cases / "run")
    cases = [str(two_cases / "c1"), str(two_cases / "c2")]
    out = tmp_path / "sal"
    pred.predict(cases, modality="X-ray", saliency=out, saliency_top_k=4)
    files = sorted(out.iterdir())
    assert len(files) == 2
    for f in files:
        f.write_bytes(b"an earlier model's overlay")
    real, calls = sal.overlay, []

    def overlay_then_fail(*a, **k):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("disk gone")
        return real(*a, **k)

    monkeypatch.setattr(sal, "overlay", overlay_then_fail)
    with pytest.raises(RuntimeError, match="disk gone"):
        pred.predict(cases, modality="X-ray", saliency=out, saliency_top_k=4, overwrite=True)
    assert sorted(out.iterdir()) == files                     # no stage left either
    assert {f.read_bytes() for f in files} == {b"an earlier model's overlay"}
    monkeypatch.setattr(sal, "overlay", real)
    got = pred.predict(cases, modality="X-ray", saliency=out, saliency_top_k=4, overwrite=True)
    assert sorted(out.iterdir()) == files and all(f.read_bytes().startswith(b"\x89PNG") for f in files)
    assert sorted(s["path"] for r in got for s in r.saliency) == [str(f) for f in files]

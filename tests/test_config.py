import pytest

from raddiag.config import PRESETS, RunConfig, preset


def test_presets_round_trip_through_yaml(tmp_path):
    for name in PRESETS:
        cfg = preset(name)
        cfg.save(tmp_path / f"{name}.yaml")
        assert RunConfig.load(tmp_path / f"{name}.yaml") == cfg


def test_overrides_are_typed():
    cfg = preset("tiny", ["train.lr=0.01", "model.fusion=max", "data.window=[-1000, 400]",
                          "train.deterministic=true", "train.epochs=3"])
    assert cfg.train.lr == 0.01 and cfg.model.fusion == "max"
    assert cfg.data.window == [-1000.0, 400.0] and cfg.train.deterministic is True
    with pytest.raises(ValueError, match="unknown setting"):
        preset("tiny", ["model.nope=1"])
    with pytest.raises(ValueError, match="expects true/false"):
        preset("tiny", ["train.deterministic=yes please"])
    with pytest.raises(ValueError, match="expects int"):
        preset("tiny", ["train.epochs=1.5"])
    with pytest.raises(ValueError, match="unknown preset"):
        preset("huge")


def test_exponent_floats_without_a_dot_are_floats():
    # YAML 1.1 (PyYAML) reads "2e-3" as a string; a user typing --set train.lr=2e-3 means 0.002.
    cfg = preset("tiny", ["train.lr=2e-3", "train.weight_decay=5E-2", "data.window=[-1e3, 4e2]"])
    assert cfg.train.lr == 0.002 and cfg.train.weight_decay == 0.05
    assert cfg.data.window == [-1000.0, 400.0]
    with pytest.raises(ValueError, match="expects float"):
        preset("tiny", ["train.lr=fast"])

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


def test_settings_that_cannot_work_are_refused_up_front(tmp_path):
    for bad, why in (("data.depth=0", "depth must be"), ("data.size=-3", "size must be"),
                     ("data.size=20000", "size must be"), ("train.lr=1e999", "train.lr"),
                     ("train.batch_size=0", "train.batch_size"), ("train=1", "is a section")):
        with pytest.raises(ValueError, match=why):
            preset("tiny", [bad])
    cfg = preset("tiny")
    cfg.data.size = 0                       # a hand-edited config.yaml is checked on load too
    cfg.save(tmp_path / "c.yaml")
    with pytest.raises(ValueError, match="size must be"):
        RunConfig.load(tmp_path / "c.yaml")


def test_prepare_refuses_an_output_geometry_out_of_range(tmp_path):
    from raddiag.data.store import prepare_cases

    with pytest.raises(ValueError, match="size must be"):
        prepare_cases([], tmp_path / "out", size=20000)
    assert not (tmp_path / "out").exists()


def test_a_yaml_alias_bomb_in_a_config_is_refused_in_one_short_line(tmp_path):
    """Red team: a run folder's config.yaml of a few hundred bytes holds 10**k list items by YAML
    aliases; the type error printed the value whole, and `predict RUN` hung (10**9 items: killed
    after a minute at 2.8 GB)."""
    import pytest

    items = "[&a0 [1, 1, 1, 1, 1, 1, 1, 1, 1, 1], " + ", ".join(     # 10**6 items in 300 bytes
        f"&a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 6)) + "]"
    path = tmp_path / "config.yaml"
    path.write_text("data:\n  windows: {CT: " + items + "}\n")
    with pytest.raises(ValueError, match=r"config.yaml: setting 'windows' expects str, got \[\[") as exc:
        RunConfig.load(path)
    assert len(str(exc.value)) - len(str(path)) < 200

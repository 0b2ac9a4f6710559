"""Recipes as presets (`cpu`, `gpu`) with their training settings, `describe --preset` printing
them, and scan caps settable per modality (`--max-scans`, `--set data.modality_caps.M=N`)."""
from __future__ import annotations

import pytest
import yaml

from raddiag.cli import main
from raddiag.config import PRESET_JOBS, PRESETS, RunConfig, preset, scan_cap_overrides
from raddiag.data.dataset import select_scans


def test_cpu_preset_is_the_demos_recipe():
    from raddiag.demo import DEMO_PRESET

    cfg = preset(DEMO_PRESET)
    assert DEMO_PRESET == "cpu"
    # the recipe README "What `make demo` does" measured: tiny geometry, ResNet-based encoder,
    # fusion + knowledge head, 8 epochs, repeat-factor t = 0.05, key-slice swap 0.3
    assert (cfg.data.size, cfg.data.depth) == (64, 8)
    assert (cfg.model.encoder, cfg.model.fusion, cfg.model.head) == ("resnet", "transformer", "knowledge")
    assert (cfg.train.epochs, cfg.train.repeat_factor, cfg.train.key_slice_swap) == (8, 0.05, 0.3)
    # multi-image modalities keep several images; the paper's presets keep the release's caps
    assert cfg.data.modality_caps["Ultrasound"] == 4 and cfg.data.modality_caps["Mammography"] == 4
    assert "Ultrasound" not in preset("paper").data.modality_caps
    assert set(PRESET_JOBS) == set(PRESETS)


def test_describe_prints_the_training_settings(capsys):
    assert main(["describe", "--preset", "gpu", "--classes", "3", "--scans", "1"]) == 0
    out = capsys.readouterr().out
    assert "for: a real set of hundreds to a few thousand cases on one GPU" in out
    training = out.split("training:\n")[1].split("parameters:")[0]
    rows = {line[:38].strip(): line[38:].strip() for line in training.splitlines()}
    assert rows["epochs"] == "30" and rows["learning rate (AdamW, cosine)"] == "0.0003"
    assert rows["repeat-factor sampling threshold"] == "0.05" and rows["early stopping (epochs)"] == "8"
    assert rows["task"] == "multilabel"
    assert rows["scans per case (caps)"] == ("at most 4 a case; CT 3, MRI 3, X-ray 2, Ultrasound 4, Mammography 4, "
                                            "other modalities 1")


def test_describe_says_when_overrides_change_what_the_presets_line_names(capsys):
    """New user: `describe --set model.head=knowledge` printed the preset's 'MLP head' unremarked."""
    assert main(["describe", "--preset", "tiny", "--classes", "3", "--scans", "1", "--set", "model.head=knowledge"]) == 0
    assert "MLP head) (the preset's; here changed: head=knowledge)" in capsys.readouterr().out
    assert main(["describe", "--preset", "tiny", "--classes", "3", "--scans", "1"]) == 0
    assert "here changed" not in capsys.readouterr().out


def test_scan_caps_per_modality_from_the_command_line():
    assert scan_cap_overrides(["6", "US=8", "other=2"]) == [
        "data.max_scans=6", "data.modality_caps.US=8", "data.default_modality_cap=2"]
    cfg = preset("tiny", scan_cap_overrides(["6", "US=8", "other=2"]) + ["data.modality_caps.Mammography=3"])
    # a DICOM code becomes the modality's name, so the cap is applied
    assert cfg.data.modality_caps == {"CT": 3, "MRI": 3, "X-ray": 2, "Ultrasound": 8, "Mammography": 3}
    assert (cfg.data.max_scans, cfg.data.default_modality_cap) == (6, 2)
    scans = [{"modality": "Ultrasound"}] * 9 + [{"modality": "Nuclear medicine"}] * 3
    assert select_scans(scans, cfg.data, None) == [0, 1, 2, 3, 4, 5]          # 6 a case in all
    cfg.data.max_scans = 20
    assert select_scans(scans, cfg.data, None) == list(range(8)) + [9, 10]     # 8 ultrasound, 2 other


@pytest.mark.parametrize("bad, message", [
    (["data.modality_caps.Ultrasond=8"], "unknown modality 'Ultrasond'"),
    (["data.modality_caps.CT=0"], "must be >= 1"),
    (["data.max_scans.CT=2"], "not a mapping"),
    (["data.task=ordinal"], "data.task must be one of"),
])
def test_bad_caps_and_tasks_are_refused(bad, message):
    with pytest.raises(ValueError, match=message):
        preset("tiny", bad)


def test_max_scans_flag_is_checked(tmp_path, capsys):
    assert main(["train", "--data", str(tmp_path), "--out", str(tmp_path / "r"), "--preset", "cpu",
                 "--max-scans", "Ultrasound=many"]) == 2
    assert "--max-scans 'Ultrasound=many': expected N or MODALITY=N" in capsys.readouterr().err


def test_a_config_saved_before_the_task_setting_still_loads(tmp_path):
    d = preset("tiny").to_dict()
    del d["data"]["task"]
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(d))
    cfg = RunConfig.load(tmp_path / "config.yaml")
    assert cfg.data.task == "multilabel" and cfg.data.modality_caps == {"CT": 3, "MRI": 3, "X-ray": 2}

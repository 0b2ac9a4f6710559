"""What a new user meets first: the start summary of `train`, `--modality` defaulting to a run's
only modality, repeated `classes` form fields in the service, a readable class-distribution plot,
and the prepare report naming cases with more scans than the caps keep."""
from __future__ import annotations

import json

import numpy as np
import pytest

from raddiag.cli import main
from raddiag.data.store import PreparedData
from test_training_data import make_tiny_data, tiny_overrides


def test_train_prints_its_start_summary(tmp_path, capsys):
    data = make_tiny_data(tmp_path, n_cases=24)
    run = tmp_path / "run"
    # prepared at 32 px, trained at 16; the scan cap from --max-scans
    overrides = [o for o in tiny_overrides(**{"data.size": 16}) if not o.startswith("data.max_scans")]
    assert main(["train", "--data", str(data), "--out", str(run), "--preset", "tiny", "--no-progress",
                 "--max-steps", "1", "--max-scans", "1"] + [x for o in overrides for x in ("--set", o)]) == 0
    out = capsys.readouterr().out
    lines = {line.split(":")[0].split(",")[0].strip(): line for line in out.splitlines() if line.startswith("  ")}
    # stopped by --max-steps before any validation: said so, not "best val macro AUC nan (epoch 0)"
    last = out.strip().splitlines()[-1]
    assert "before any validation: no best epoch yet" in last and "nan" not in last, last
    records = PreparedData(data).records
    n = {s: sum(r["split"] == s for r in records) for s in ("train", "val")}
    assert lines["cases"].strip() == f"cases: train {n['train']}, val {n['val']}"
    train_counts = {c: sum(c in r["labels"] for r in records if r["split"] == "train")
                    for c in ("Bright corner", "Dark band")}
    assert all(f"{c} {k}" in lines["classes (3)"] for c, k in train_counts.items())
    assert lines["device"].strip().startswith("device: cpu, ") and "threads" in lines["device"]
    # tiny loads in this process: where, by the loading plan (training.prefetch)
    assert "; loading between steps" in lines["device"] or "; loading ahead in a background thread" in lines["device"]
    from raddiag.models import load_model

    model = load_model(run)[0]
    assert f"{sum(p.numel() for p in model.parameters()):,} parameters" in lines["model"]
    assert "16 x 16 px" in lines["input"] and "prepared at 32 px x 4: resampled on load" in lines["input"]
    extra = sum(len(r["scans"]) - 1 for r in records if r["split"] == "train")     # one scan a case kept
    assert f"leave out {extra} training scan(s)" in lines["scan caps"] and "at most 1 a case" in lines["scan caps"]
    assert f"{run / 'metrics.csv'} (a row per epoch)" in lines["metrics"]
    assert f"tensorboard --logdir {run / 'tensorboard'}" in lines["TensorBoard logs"]
    val = [r for r in records if r["split"] == "val"]
    pos = {c: sum(c in r["labels"] for r in val) for c in ("Bright corner", "Dark band")}
    pos["Normal"] = sum(r["labels"] in ([], ["Normal"]) for r in val)
    scored = [c for c, k in pos.items() if 0 < k < len(val)]
    assert lines["best epoch"].strip().startswith(
        f"best epoch: the highest validation macro AUC, over the {len(scored)} of 3 classes with a positive and a "
        f"negative among the {n['val']} val cases")
    assert lines["best epoch"].endswith("a small validation split: which epoch scores best is partly chance")


@pytest.fixture(scope="module")
def one_modality_run(tmp_path_factory):
    """A knowledge-head run whose training data held X-ray scans only (its intensity.json says so)."""
    from raddiag.data.intensity import write_run_intensity
    from raddiag.serving.sample import make_tiny_run

    root = tmp_path_factory.mktemp("onemod")
    run = make_tiny_run(root / "run", head="knowledge", size=32, depth=1)
    write_run_intensity(run.root, {"intensity": {"X-ray": {"kinds": {"8-bit": 3}, "min": 0, "max": 255}}}, root)
    return run.root


def test_modality_defaults_to_the_runs_only_modality(one_modality_run, tmp_path, capsys):
    from raddiag.serving.sample import make_tiny_run, sample_png

    (tmp_path / "cxr.png").write_bytes(sample_png(32))
    assert main(["predict", str(one_modality_run), str(tmp_path / "cxr.png")]) == 0
    out, err = capsys.readouterr()
    assert "cxr.png (X-ray 2D)" in out
    notes = [line for line in err.splitlines() if "--modality" in line]
    assert notes == ["raddiag: note: no --modality given: non-DICOM files are taken as X-ray, the one modality "
                     "this run was trained on"]
    other = make_tiny_run(tmp_path / "other", size=32, depth=1)        # records no modality: still asked for
    assert main(["predict", str(other.root), str(tmp_path / "cxr.png")]) == 2
    assert "pass it explicitly: --modality CT for every file here" in capsys.readouterr().err
    # a new user's folder of a NIfTI CT and a PNG X-ray: what to do was in neither message
    case = tmp_path / "c003"
    case.mkdir()
    (case / "xray.png").write_bytes(sample_png(32))
    (case / "ct.png").write_bytes(sample_png(32))
    assert main(["predict", str(other.root), str(case)]) == 2
    assert "(a.nii.gz,b.png --modality CT,X-ray), or a --manifest" in capsys.readouterr().err
    assert main(["predict", str(other.root), str(case), "--modality", "CT,X-ray"]) == 2
    assert ("2 modalities given for 1 inputs; give one, or one per input (a folder is one input: for its files of "
            "different modalities, list the files joined by commas") in capsys.readouterr().err
    assert main(["predict", str(other.root), f"{case / 'ct.png'},{case / 'xray.png'}", "--modality", "CT,X-ray"]) == 0


def test_the_service_takes_repeated_classes_fields(one_modality_run):
    from fastapi.testclient import TestClient

    from raddiag.serving.app import create_app
    from raddiag.serving.sample import sample_png

    with TestClient(create_app(one_modality_run)) as client:
        files = [("files", ("a.png", sample_png(32)))]
        r = client.post("/predict", files=files, data={"classes": ["Pneumothorax", "Rib fracture\nAtelectasis"],
                                                       "top": "5"})
        assert r.status_code == 200, r.text
        assert sorted(f["name"] for f in r.json()["ranked"]) == ["Atelectasis", "Pneumothorax", "Rib fracture"]
        assert r.json()["scans"][0]["modality"] == "X-ray"               # the run's only modality
        r = client.post("/predict", files=files, data={"classes": "Pneumothorax", "saliency": "true",
                                                       "saliency_class": "Nope"})
        assert r.status_code == 200 and r.json()["ranked"][0]["name"] == "Pneumothorax"
        assert "'Nope' is not among the scored classes" in r.json()["saliency_error"]


def test_the_class_distribution_plot_is_readable():
    """Both panels' titles fit side by side (they overlapped), ranks are whole numbers (ticks read
    1.25, 1.50, ...), a few classes are named bars with their counts."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from raddiag.data.stats import _class_panel

    many = {"cases_per_class": {f"disease {i}": 2000 // (i + 1) for i in range(400)},
            "groups": {"head": 12, "medium": 30, "tail": 358}}
    few = {"cases_per_class": {"Normal": 50, "Glioma": 3, "Meningioma": 2}, "groups": {"head": 1, "medium": 0, "tail": 2}}
    fig, axes = plt.subplots(1, 2, figsize=(12, 5))
    _class_panel(axes[0], "disorder", many)
    _class_panel(axes[1], "icd10", few)
    fig.tight_layout()
    fig.canvas.draw()
    boxes = [ax.title.get_window_extent() for ax in axes]
    assert boxes[0].x1 < boxes[1].x0                                       # no overlap
    ticks = [t for t in axes[0].get_xticks() if axes[0].get_xlim()[0] <= t <= axes[0].get_xlim()[1]]
    assert ticks and all(float(t).is_integer() for t in ticks)
    assert [t.get_text() for t in axes[1].get_xticklabels()] == ["Glioma", "Meningioma"]    # Normal left out
    assert [t.get_text() for t in axes[1].texts if t.get_text().isdigit()] == ["3", "2"]
    plt.close(fig)


def test_the_class_distribution_bars_are_the_training_counts_the_group_lines_are_drawn_on():
    """The bars were every split's cases, the head / medium lines training counts: COVID-19, a
    medium class of 82 training cases, stood above the 'head >= 100' line at 119."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from raddiag.data.stats import _class_panel

    c = {"cases_per_class": {"COVID-19": 119, "Normal": 3, "ARDS": 8, "Influenza": 1},
         "train_counts": {"Normal": 3, "COVID-19": 82, "ARDS": 7, "Influenza": 0},
         "groups": {"head": 1, "medium": 1, "tail": 2}}
    fig, ax = plt.subplots()
    _class_panel(ax, "disorder", c)
    assert [round(b.get_height()) for b in ax.patches] == [82, 7]
    assert ax.get_ylabel() == "training cases (log scale)" and "(+1 without training cases)" in ax.get_title()
    plt.close(fig)


def test_prepare_names_cases_with_more_scans_of_a_modality_than_the_caps_keep(tmp_path, capsys):
    rows = []
    for i in range(4):
        scans = []
        for j in range(1 + 2 * i):                       # 1, 3, 5, 7 ultrasound images
            np.save(tmp_path / f"c{i}_{j}.npy", np.random.default_rng(j).random((20, 20)).astype(np.float32))
            scans.append({"path": f"c{i}_{j}.npy", "modality": "US"})
        rows.append(json.dumps({"id": f"c{i}", "labels": ["Cyst"], "scans": scans}))
    (tmp_path / "cases.jsonl").write_text("\n".join(rows) + "\n")
    assert main(["data", "prepare", str(tmp_path / "cases.jsonl"), "--format", "manifest", "--out",
                 str(tmp_path / "data"), "--size", "32", "--workers", "1"]) == 0
    out = capsys.readouterr().out
    assert ("    Ultrasound: 3 case(s), up to 7 scans (e.g. c1); caps: 1 in the paper's presets, 4 in cpu / gpu; "
            "--max-scans Ultrasound=7 keeps them all") in out.splitlines()


def test_a_folder_per_class_is_a_source(tmp_path, capsys):
    from PIL import Image

    from raddiag.data.adapters import load_source

    rng = np.random.default_rng(0)
    for cls, n in (("benign", 4), ("malignant", 3), ("Normal", 2)):
        (tmp_path / "src" / cls).mkdir(parents=True)
        for i in range(n):
            Image.fromarray(rng.integers(0, 255, (24, 30), dtype=np.uint8)).save(tmp_path / "src" / cls / f"{i}.png")
    case = tmp_path / "src" / "malignant" / "patient7"             # a folder: one case of its images
    case.mkdir()
    for i in range(3):
        Image.fromarray(rng.integers(0, 255, (24, 30), dtype=np.uint8)).save(case / f"f{i}.png")
    (tmp_path / "src" / "benign" / "notes.txt").write_text("not a scan")
    (tmp_path / "src" / "README.txt").write_text("beside the class folders: no class")
    res = load_source("folders", tmp_path / "src", modality="US", anatomy="Breast")
    by_id = {c.id: c for c in res.cases}
    assert len(by_id) == 10 and by_id["benign/0.png"].labels == ["benign"]
    assert by_id["Normal/1.png"].labels == ["Normal"]
    assert [s.id for s in by_id["malignant/patient7"].scans] == ["f0.png", "f1.png", "f2.png"]
    assert {s.modality for c in res.cases for s in c.scans} == {"Ultrasound"}
    assert "ignored 2 file(s) that are not scans" in res.notes[-1] and "README.txt" in res.notes[-1]
    with pytest.raises(ValueError, match="needs --modality"):
        load_source("folders", tmp_path / "src")
    assert main(["data", "prepare", str(tmp_path / "src"), "--format", "folders", "--modality", "Ultrasound",
                 "--out", str(tmp_path / "data"), "--size", "32", "--workers", "1"]) == 0
    data = PreparedData(tmp_path / "data")
    assert len(data) == 10 and {r["split"] for r in data.records} <= {"train", "val", "test"}
    out = capsys.readouterr().out
    assert "folders: 10 cases in 3 class folders (Normal 2, benign 4, malignant 4), Ultrasound" in out
    # abnormal cases without codes are not Normal at ICD-10-CM granularity (they were counted so)
    icd = next(line for line in out.splitlines() if "ICD-10-CM labels" in line)
    assert icd.startswith("  ICD-10-CM labels (1): no code (abnormal cases without ICD-10-CM codes") and icd.endswith(
        ") 8, Normal 2")


def test_the_service_draws_saliency_for_a_resnet_encoder_run(tmp_path):
    from fastapi.testclient import TestClient

    from raddiag.serving.app import create_app
    from raddiag.serving.sample import make_tiny_run, sample_png

    run = make_tiny_run(tmp_path / "run", size=32, depth=1, overrides=["model.encoder=resnet"])
    with TestClient(create_app(run.root)) as client:
        r = client.post("/predict", files=[("files", ("a.png", sample_png(64)))],
                        data={"modality": "X-ray", "saliency": "true"})
    body = r.json()
    assert r.status_code == 200 and "saliency_error" not in body
    (s,) = body["saliency"]
    assert s["overlay"].startswith("data:image/png;base64,") and s["layer"].startswith("stem2d.")
    assert s["size"] == [64, 64]                                   # drawn on the upload at its own size

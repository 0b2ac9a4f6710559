"""WebDataset shards of a prepared dataset: writing, checksums, decoding equal to the memory map,
and the split by rank and DataLoader worker (ranks and workers simulated by parameters)."""
from __future__ import annotations

import hashlib
import math
import tarfile
from collections import Counter
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from raddiag.config import DataConfig
from raddiag.data import shards as shards_mod
from raddiag.data.dataset import CaseDataset, collate_cases
from raddiag.data.shards import ShardDataset, ShardError, verify_shards, write_shards
from raddiag.data.labels import LabelSpace
from raddiag.data.store import PreparedData

SHARD_SIZE = 40_000   # a few cases per shard: several shards per split


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    from raddiag.data.synth import synthesize

    root = tmp_path_factory.mktemp("shards") / "prep"
    synthesize(root, n_cases=30, size=16, depth=2, workers=1, raw_size=(24, 32), raw_depth=(4, 8))
    return root


@pytest.fixture(scope="module")
def sharded(prepared):
    out = prepared.parent / "sh"
    write_shards(prepared, out, shard_size=SHARD_SIZE)
    return out


def _cfg():
    return DataConfig(size=16, depth=2)


def _same_batch(a: dict, b: dict) -> None:
    assert a["case_ids"] == b["case_ids"]
    for k in ("images", "scan_mask", "slice_mask", "modality", "key_slice", "is_3d", "labels"):
        assert torch.equal(a[k], b[k]), k
    assert a["anatomy"] == b["anatomy"]


def test_index_checksums_and_counts_match_the_files(prepared, sharded):
    import json

    index = json.loads((sharded / "shards.json").read_text())
    data = PreparedData(prepared)
    for split, sp in index["splits"].items():
        ids = []
        for sh in sp["shards"]:
            path = sharded / sh["name"]
            assert hashlib.sha256(path.read_bytes()).hexdigest() == sh["sha256"]
            assert path.stat().st_size == sh["bytes"]
            assert sh["bytes"] <= SHARD_SIZE or sh["n_cases"] == 1
            with tarfile.open(path) as tar:
                names = tar.getnames()
            jsons = [n for n in names if n.endswith(".json")]
            assert len(jsons) == sh["n_cases"]
            ids += [json.loads(tar_member(path, n))["id"] for n in jsons]
        assert ids == [r["id"] for r in data.records_for(split)]   # every case once, in order
        assert sp["n_cases"] == len(ids)
    assert len(index["splits"]["train"]["shards"]) > 2
    assert (index["size"], index["depth"]) == (16, 2)
    assert LabelSpace.from_dict(index["label_spaces"]["icd10"]).names == data.label_space("icd10").names
    assert not [p for p in sharded.iterdir() if p.name.startswith(".")]   # no temporary files left
    assert verify_shards(sharded) == sum(len(sp["shards"]) for sp in index["splits"].values())


def tar_member(path, name) -> bytes:
    with tarfile.open(path) as tar:
        return tar.extractfile(name).read()


@pytest.mark.parametrize("train", [False, True])
def test_batch_from_shards_equals_the_memory_map_batch(prepared, sharded, train):
    data = PreparedData(prepared)
    labels = data.label_space("disorder")
    split = "train" if train else "test"
    mm = CaseDataset(data, split, labels, _cfg(), train=train, seed=5)
    ds = ShardDataset(sharded, split, labels, _cfg(), train=train, seed=5, shuffle_buffer=4)
    assert ds._use_stored   # the shards' own multi-hot labels
    mm.set_epoch(1)
    ds.set_epoch(1)
    got = list(ds)
    pos = {r["id"]: i for i, r in enumerate(mm.records)}
    assert sorted(s["case_id"] for s in got) == sorted(pos)
    if not train:   # evaluation reads in split order
        assert [s["case_id"] for s in got] == [r["id"] for r in mm.records]
    for k in range(0, len(got), 4):
        chunk = got[k:k + 4]
        _same_batch(collate_cases(chunk, depth=2), collate_cases([mm[pos[s["case_id"]]] for s in chunk], depth=2))


def test_another_label_space_is_encoded_from_the_record(prepared, sharded):
    data = PreparedData(prepared)
    icd = LabelSpace(names=list(reversed(data.label_space("icd10").names)), granularity="icd10")
    mm = CaseDataset(data, "val", icd, _cfg())
    got = list(ShardDataset(sharded, "val", icd, _cfg()))
    assert all(torch.equal(a["labels"], torch.from_numpy(b)) for a, b in zip(got, mm.targets))


@pytest.mark.parametrize("rank", [0, 1])
def test_a_pipe_source_gives_the_folder_batches(prepared, sharded, rank):
    """``pipe:cat .../shards.json``: the index by the command, each shard by the same command with
    its name in place of shards.json; rank 1 of 2 starts and stops inside shards (pipes cut early)."""
    from raddiag.data.shards import ShardData, open_training_data

    labels = PreparedData(prepared).label_space("disorder")
    sources = [f"pipe:cat {sharded}/shards.json", sharded / "shards.json"]   # a URL, a local index file
    for train in (False, True):
        ref = ShardDataset(sharded, "train", labels, _cfg(), train=train, seed=3, rank=rank, world_size=2,
                           shuffle_buffer=4)
        want = list(ref)
        for src in sources:
            ds = ShardDataset(src, "train", labels, _cfg(), train=train, seed=3, rank=rank, world_size=2,
                              shuffle_buffer=4)
            got = list(ds)
            assert len(got) == len(want) == len(ref)
            for k in range(0, len(got), 4):
                _same_batch(collate_cases(got[k:k + 4], depth=2), collate_cases(want[k:k + 4], depth=2))
    data = open_training_data(sources[0])
    assert isinstance(data, ShardData) and data.count("test") == PreparedData(prepared).count("test")
    assert verify_shards(sources[0]) == verify_shards(sharded)


def test_a_bad_url_source_is_named(prepared, sharded, tmp_path):
    labels = PreparedData(prepared).label_space("disorder")
    with pytest.raises(ShardError, match="must name the index shards.json"):
        ShardDataset(f"pipe:cat {sharded}/index.json", "test", labels, _cfg())
    with pytest.raises(ShardError, match="pipe:cat /nonexistent/shards.json"):
        ShardDataset("pipe:cat /nonexistent/shards.json", "test", labels, _cfg())
    out = _copy(sharded, tmp_path)
    (out / "test-000000.tar").unlink()
    ds = ShardDataset(f"pipe:cat {out}/shards.json", "test", labels, _cfg())
    with pytest.raises(ShardError, match=f"pipe:cat {out}/test-000000.tar"):
        list(ds)


def _read_share(ds, monkeypatch, worker: int, n_workers: int) -> list[str]:
    monkeypatch.setattr(shards_mod, "get_worker_info", lambda: SimpleNamespace(id=worker, num_workers=n_workers))
    return [s["case_id"] for s in ds]


@pytest.mark.parametrize("world", [2, 3])
def test_every_case_once_per_epoch_across_ranks_and_workers(prepared, sharded, monkeypatch, world):
    data = PreparedData(prepared)
    labels = data.label_space("disorder")
    train_ids = [r["id"] for r in data.records_for("train")]
    n, per_rank, batch = len(train_ids), math.ceil(len(train_ids) / world), 3
    orders = []
    for epoch in (0, 1):
        seen: list[str] = []
        for rank in range(world):
            ds = ShardDataset(sharded, "train", labels, _cfg(), train=True, seed=1, rank=rank, world_size=world,
                              shuffle_buffer=3)
            ds.set_epoch(epoch)
            shares = [_read_share(ds, monkeypatch, w, 2) for w in range(2)]
            assert sum(map(len, shares)) == per_rank == len(ds)      # equal on every rank
            assert sum(math.ceil(len(s) / batch) for s in shares) == ds.batches_per_epoch(batch, 2)
            seen += [c for s in shares for c in s]
        counts = Counter(seen)
        assert set(counts) == set(train_ids)                          # nothing lost
        assert sum(counts.values()) == world * per_rank
        assert sum(v - 1 for v in counts.values()) == world * per_rank - n   # only the padding repeats
        orders.append(seen)
    assert n % world or max(Counter(orders[0]).values()) == 1         # divisible: exactly once each
    assert orders[0] != orders[1]                                     # reshuffled per epoch


def test_batches_per_epoch_is_equal_on_every_rank_with_uneven_shards(sharded, prepared):
    labels = PreparedData(prepared).label_space("disorder")
    counts = {ShardDataset(sharded, "train", labels, _cfg(), train=True, rank=r, world_size=4).batches_per_epoch(2, 3)
              for r in range(4)}
    assert len(counts) == 1


def _copy(sharded, tmp_path):
    import shutil

    out = tmp_path / "copy"
    shutil.copytree(sharded, out)
    return out


@pytest.mark.parametrize("damage", ["flip_data", "flip_header", "truncate"])
def test_a_damaged_shard_is_named(prepared, sharded, tmp_path, damage):
    out = _copy(sharded, tmp_path)
    victim = out / "test-000000.tar"
    b = bytearray(victim.read_bytes())
    if damage == "flip_data":
        b[len(b) // 2] ^= 0xFF
    elif damage == "flip_header":
        b[100] ^= 0xFF
    else:
        b = b[: len(b) // 2]
    victim.write_bytes(bytes(b))
    labels = PreparedData(prepared).label_space("disorder")
    with pytest.raises(ShardError, match="test-000000.tar"):
        list(ShardDataset(out, "test", labels, _cfg()))
    with pytest.raises(ShardError, match="test-000000.tar"):
        verify_shards(out)


def test_cli_writes_shards_and_refuses_to_overwrite(prepared, tmp_path, capsys):
    from raddiag.cli import main

    out = tmp_path / "cli"
    assert main(["data", "shard", str(prepared), "--out", str(out), "--shard-size", "40KB"]) == 0
    n_train = len(PreparedData(prepared).records_for("train"))
    assert f"train: {n_train} cases in " in capsys.readouterr().out
    assert verify_shards(out) > 0
    assert main(["data", "shard", str(prepared), "--out", str(out)]) != 0
    assert main(["data", "shard", str(prepared), "--out", str(out), "--overwrite", "--shard-size", "1G"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["shards.json", "test-000000.tar", "train-000000.tar",
                                                     "val-000000.tar"]   # the old, smaller shards removed


@pytest.mark.slow
def test_train_from_shards_validates_as_the_memory_map_and_resumes_at_an_epoch_boundary(tmp_path):
    from test_training_data import make_tiny_data, tiny_overrides

    from raddiag.config import preset
    from raddiag.data.dataset import CaseDataset
    from raddiag.models import load_model
    from raddiag.training import train, validate
    from raddiag.training.metrics import macro_auc

    data = make_tiny_data(tmp_path / "data", n_cases=24)
    sh = tmp_path / "sh"
    write_shards(data, sh, shard_size=30_000)
    cfg = preset("tiny", tiny_overrides(**{"train.epochs": 2}))
    whole = train(sh, tmp_path / "whole", cfg, progress=False)
    n_train = len(PreparedData(data).records_for("train"))
    assert whole.epochs_run == 2 and whole.steps == 2 * math.ceil(n_train / 4)
    # validation read from the shards equals validation read from the memory map
    model, cfg2, labels = load_model(tmp_path / "whole")
    val = CaseDataset(data, "val", labels, cfg2.data)
    assert macro_auc(*validate(model, val, cfg2)) == pytest.approx(whole.best_val_auc, abs=1e-6)
    # evaluation's predictions from the shards equal those from the memory map
    from raddiag.evaluation.run_eval import predict_split

    from_shards = predict_split(model, cfg2, labels, sh, "val", progress=False)
    from_map = predict_split(model, cfg2, labels, data, "val", progress=False)
    assert from_shards["case_ids"] == from_map["case_ids"]
    assert np.array_equal(from_shards["scores"], from_map["scores"])
    assert np.array_equal(from_shards["labels"], from_map["labels"])
    # stopped at the end of epoch 1 and resumed: the same second epoch as the uninterrupted run
    first = train(sh, tmp_path / "cut", cfg, progress=False, max_steps=math.ceil(n_train / 4))
    assert first.epochs_run == 1
    done = train(sh, tmp_path / "cut", cfg, resume=True, progress=False)
    assert done.steps == whole.steps
    assert done.history[-1]["train_loss"] == pytest.approx(whole.history[-1]["train_loss"], rel=1e-5)
    assert done.history[-1]["val_auc"] == pytest.approx(whole.history[-1]["val_auc"], abs=1e-6)
    # stopped mid-epoch 1 (after 2 of its steps) and resumed: the shard stream is read past them
    train(sh, tmp_path / "mid", cfg, progress=False, max_steps=2)
    mid = train(sh, tmp_path / "mid", cfg, resume=True, progress=False)
    assert mid.steps == whole.steps
    for a, b in zip(mid.history, whole.history[-len(mid.history):]):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-5)
        assert a["val_auc"] == pytest.approx(b["val_auc"], abs=1e-6)


def test_train_from_shards_refuses_case_subsets(tmp_path):
    from test_training_data import make_tiny_data, tiny_overrides

    from raddiag.config import preset
    from raddiag.training import train

    data = make_tiny_data(tmp_path / "data", n_cases=12)
    write_shards(data, tmp_path / "sh")
    with pytest.raises(ValueError, match="shard folder"):
        train(tmp_path / "sh", tmp_path / "run", preset("tiny", tiny_overrides()), progress=False, train_indices=[0, 1])


def test_the_cpu_recipe_from_shards_says_what_to_set_before_any_work(tmp_path, monkeypatch):
    """The cpu and gpu recipes sample by repeat factor, which shards cannot: a new user met a bare
    refusal after the text encoder had loaded. It now comes first and names the setting."""
    from test_training_data import make_tiny_data, tiny_overrides

    from raddiag.config import preset
    from raddiag.training import train, trainer

    data = make_tiny_data(tmp_path / "data", n_cases=12)
    write_shards(data, tmp_path / "sh")

    def no_encoder(*a, **k):
        raise AssertionError("the text encoder was loaded before the settings were checked")

    monkeypatch.setattr(trainer, "run_label_embeddings", no_encoder)
    cfg = preset("cpu", tiny_overrides())
    with pytest.raises(ValueError, match=r"train.repeat_factor=0.05 \(preset cpu\).*--set train.repeat_factor=0"):
        train(tmp_path / "sh", tmp_path / "run", cfg, progress=False)


_DDP_READER = '''
import json, sys
import torch.distributed as dist
from raddiag.config import DataConfig
from raddiag.data.dataset import make_loader
from raddiag.data.shards import ShardData, ShardDataset

def main():
    dist.init_process_group("gloo")
    root, out = sys.argv[1], sys.argv[2]
    labels = ShardData(root).label_space("disorder")
    ds = ShardDataset(root, "train", labels, DataConfig(size=16, depth=2), train=True, seed=3, shuffle_buffer=3)
    loader = make_loader(ds, batch_size=2, num_workers=2)
    seen = {}
    for epoch in (0, 1):
        ds.set_epoch(epoch)
        batches = [b["case_ids"] for b in loader]
        seen[epoch] = {"ids": [c for b in batches for c in b], "batches": len(batches),
                       "expected": ds.batches_per_epoch(2, 2), "workers": loader.num_workers}
    parts = [None] * dist.get_world_size()
    dist.all_gather_object(parts, seen)
    if dist.get_rank() == 0:
        open(out, "w").write(json.dumps(parts))
    dist.destroy_process_group()

if __name__ == "__main__":
    main()
'''


def test_two_process_gloo_readers_with_two_workers_see_every_case_once(prepared, sharded, tmp_path):
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    script, out = tmp_path / "reader.py", tmp_path / "seen.json"
    script.write_text(_DDP_READER)
    exe = Path(sys.executable).with_name("torchrun")
    run = [str(exe)] if exe.exists() else [sys.executable, "-m", "torch.distributed.run"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[1] / "src") + os.pathsep + env.get("PYTHONPATH", "")
    res = subprocess.run(run + ["--standalone", "--nproc_per_node", "2", str(script), str(sharded), str(out)],
                         env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-4000:]
    parts = json.loads(out.read_text())
    train_ids = [r["id"] for r in PreparedData(prepared).records_for("train")]
    per_rank = math.ceil(len(train_ids) / 2)
    for epoch in ("0", "1"):
        ranks = [p[epoch] for p in parts]
        assert [r["workers"] for r in ranks] == [2, 2]
        assert [len(r["ids"]) for r in ranks] == [per_rank, per_rank]
        assert ranks[0]["batches"] == ranks[1]["batches"] == ranks[0]["expected"]   # DDP cannot hang
        counts = Counter(c for r in ranks for c in r["ids"])
        assert set(counts) == set(train_ids)
        assert sum(counts.values()) - len(train_ids) == 2 * per_rank - len(train_ids)   # the padding only
    assert parts[0]["0"]["ids"] != parts[0]["1"]["ids"]     # the workers see the new epoch: reshuffled


@pytest.mark.slow
def test_two_process_ddp_trains_from_shards_and_validation_matches_single_process(tmp_path):
    import csv
    import os
    import subprocess
    from pathlib import Path

    from test_ddp import _torchrun
    from test_training_data import make_tiny_data, tiny_overrides

    from raddiag.data.dataset import CaseDataset
    from raddiag.models import load_model
    from raddiag.training import validate
    from raddiag.training.metrics import macro_auc

    data = make_tiny_data(tmp_path / "data", n_cases=27)       # 11 val cases: an odd number, padded
    sh = tmp_path / "sh"
    write_shards(data, sh, shard_size=60_000)
    prep = PreparedData(data)
    n_train, n_val = len(prep.records_for("train")), len(prep.records_for("val"))
    run = tmp_path / "run"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[1] / "src") + os.pathsep + env.get("PYTHONPATH", "")
    cmd = _torchrun() + ["--standalone", "--nproc_per_node", "2", "-m", "raddiag", "train", "--data", str(sh),
                         "--preset", "tiny", "--out", str(run), "--no-progress"]
    cmd += [a for o in tiny_overrides(**{"train.epochs": 2}) for a in ("--set", o)]
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=500)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-4000:]
    rows = list(csv.DictReader((run / "metrics.csv").open()))
    per_epoch = math.ceil(math.ceil(n_train / 2) / 4)            # batch 4, padded share per rank
    assert [int(r["step"]) for r in rows] == [per_epoch, 2 * per_epoch]
    best = max(float(r["val_auc"]) for r in rows)
    model, cfg, labels = load_model(run)
    scores, y = validate(model, CaseDataset(data, "val", labels, cfg.data), cfg)
    assert n_val % 2 and y.shape[0] == n_val
    assert macro_auc(scores, y) == pytest.approx(best, abs=1e-6)   # the gathered shard validation, unpadded

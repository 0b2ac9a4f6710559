"""Red-team cases of shard indexes (issue 27): a shard name is data, never code or a path out of
the shard folder; ``data shard --overwrite`` removes only its own shards and swaps the new ones in
only when complete; ``evaluate --data pipe:...`` reads shards as the README documents."""
from __future__ import annotations

import json
import os
import shutil

import pytest

from test_shards import prepared, sharded  # noqa: F401 - the same small prepared dataset and its shards

from raddiag.data import shards as shards_mod
from raddiag.data.shards import ShardDataset, ShardError, shard_location, verify_shards, write_shards
from raddiag.data.store import PreparedData
from raddiag.config import DataConfig


def _with_name(sharded, tmp_path, name: str, split: str = "test", k: int = 0):
    """A copy of the shard folder whose index names shard ``k`` of ``split`` ``name``."""
    out = tmp_path / "copy"
    shutil.copytree(sharded, out)
    index = json.loads((out / "shards.json").read_text())
    index["splits"][split]["shards"][k]["name"] = name
    (out / "shards.json").write_text(json.dumps(index))
    return out


def test_a_shard_name_holding_a_shell_command_is_refused_and_never_run(prepared, sharded, tmp_path):
    """Issue 27.1: with ``pipe:cat DIR/shards.json`` the name was pasted into the shell command
    (and ``cat`` still printed the right bytes, so the sha256 check passed)."""
    pwned = tmp_path / "PWNED"
    out = _with_name(sharded, tmp_path, f"test-000000.tar; touch {pwned} #")
    labels = PreparedData(prepared).label_space("disorder")
    source = f"pipe:cat {out}/shards.json"
    with pytest.raises(ShardError, match="not 'test-000000.tar'.*refused"):
        list(ShardDataset(source, "test", labels, DataConfig(size=16, depth=2)))
    with pytest.raises(ShardError, match="refused"):
        verify_shards(source)
    assert not pwned.exists()


@pytest.mark.parametrize("name", ["../x.tar", "/abs/x.tar", "test-000000.tar/../../x.tar", "x.tar",
                                  "test-000001.tar", "test-000000.tar\n", "test-00000.tar"])
def test_a_shard_name_outside_the_folder_or_not_written_by_data_shard_is_refused(sharded, tmp_path, name):
    out = _with_name(sharded, tmp_path, name)
    for source in (out, out / "shards.json", f"pipe:cat {out}/shards.json"):
        with pytest.raises(ShardError, match="refused"):
            verify_shards(source)


def test_a_shard_location_stays_inside_the_index_folder_or_url_prefix(tmp_path):
    url = "https://host/data/shards/shards.json?sig=abc"
    assert shard_location(url, "train-000003.tar") == "https://host/data/shards/train-000003.tar?sig=abc"
    assert shard_location(f"pipe:cat {tmp_path}/shards.json", "val-000000.tar") == f"pipe:cat {tmp_path}/val-000000.tar"
    assert shard_location(tmp_path, "val-000000.tar") == tmp_path / "val-000000.tar"
    for bad in ("../other/train-000000.tar", "/etc/passwd", "a b.tar", "train-000000.tar'", "$(id)-000000.tar"):
        for source in (url, f"pipe:cat {tmp_path}/shards.json", tmp_path):
            with pytest.raises(ShardError, match="not a shard name"):
                shard_location(source, bad)


def test_an_index_split_name_with_shell_syntax_is_refused(sharded, tmp_path):
    out = tmp_path / "copy"
    shutil.copytree(sharded, out)
    index = json.loads((out / "shards.json").read_text())
    evil = "test;id"
    index["splits"][evil] = index["splits"].pop("test")
    for k, sh in enumerate(index["splits"][evil]["shards"]):
        sh["name"] = f"{evil}-{k:06d}.tar"       # consistent with its split key, still not a shard name
    (out / "shards.json").write_text(json.dumps(index))
    with pytest.raises(ShardError, match="refused"):
        verify_shards(f"pipe:cat {out}/shards.json")


@pytest.mark.parametrize("mutate, reason", [
    (lambda i: "[" * 100_000, "not valid JSON"),
    (lambda i: i["splits"]["test"]["shards"][0].update(n_cases="3"), "integers >= 0"),
    (lambda i: i["splits"]["test"]["shards"][0].update(sha256=None), "64 hex digits"),
    (lambda i: i["splits"]["test"].update(n_cases=-5), "declares -5 cases"),
    (lambda i: i.update(size="big"), "'size' and 'depth' must be integers"),
    (lambda i: i.update(label_spaces=[]), "'label_spaces' an object"),
], ids=["nested-too-deep", "count-a-string", "no-sha256", "negative-split-count", "size-a-string",
        "label-spaces-a-list"])
def test_an_index_of_the_wrong_shape_is_a_shard_error_naming_it(sharded, tmp_path, mutate, reason):
    """Found trying the surface again: these were RecursionError, TypeError or ValueError deep in
    the reader (a traceback, or a split read with a negative length)."""
    out = tmp_path / "copy"
    shutil.copytree(sharded, out)
    index = json.loads((out / "shards.json").read_text())
    text = mutate(index)
    (out / "shards.json").write_text(text if isinstance(text, str) else json.dumps(index))
    with pytest.raises(ShardError, match=reason) as e:
        verify_shards(out)
    assert "shards.json" in str(e.value)


def test_overwrite_removes_only_shard_names_inside_out(prepared, sharded, tmp_path):
    """Issue 27.5: ``--overwrite`` unlinked every name the old index listed, ``../victim.txt``
    and absolute paths included."""
    from raddiag.cli import main

    out = tmp_path / "sub" / "out"
    shutil.copytree(sharded, out)
    victims = [tmp_path / "sub" / "victim.txt", tmp_path / "abs-victim.txt", out / "notes.txt"]
    for v in victims:
        v.write_text("keep me")
    index = json.loads((out / "shards.json").read_text())
    index["splits"]["test"]["shards"] += [{"name": "../victim.txt", "n_cases": 0, "bytes": 0, "sha256": ""},
                                          {"name": str(victims[1]), "n_cases": 0, "bytes": 0, "sha256": ""},
                                          {"name": "notes.txt", "n_cases": 0, "bytes": 0, "sha256": ""}]
    (out / "shards.json").write_text(json.dumps(index))
    (out / "train-000099.tar").write_bytes(b"an old shard the new index does not list")
    index["splits"]["train"]["shards"].append({"name": "train-000099.tar", "n_cases": 0, "bytes": 0, "sha256": ""})
    (out / "shards.json").write_text(json.dumps(index))
    assert main(["data", "shard", str(prepared), "--out", str(out), "--overwrite", "--shard-size", "1G"]) == 0
    assert all(v.read_text() == "keep me" for v in victims)
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt", "shards.json", "test-000000.tar",
                                                     "train-000000.tar", "val-000000.tar"]
    assert verify_shards(out) == 3


def test_a_failed_overwrite_leaves_the_old_shards_whole(prepared, sharded, tmp_path, monkeypatch):
    """The new shards are written beside the old ones and swapped in only when complete (the old
    index used to be deleted first: a failure left a folder that was no shard folder)."""
    out = tmp_path / "out"
    shutil.copytree(sharded, out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    real, calls = shards_mod._case_members, []

    def failing(*a, **k):
        calls.append(1)
        if len(calls) > 5:
            raise OSError("disk full (simulated)")
        return real(*a, **k)

    monkeypatch.setattr(shards_mod, "_case_members", failing)
    with pytest.raises(OSError, match="simulated"):
        write_shards(prepared, out, shard_size=1 << 30, overwrite=True)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before      # nothing half-written left
    assert verify_shards(out) == verify_shards(sharded)


def test_the_staging_folder_of_a_killed_run_is_removed_by_the_next(prepared, tmp_path):
    """A killed run's stage (its lock file free) is removed; one a live writer holds is left,
    whatever process ids say (a pid can be reused): raddiag.staging's rule, as for every stage."""
    import subprocess
    import sys

    from raddiag.staging import LOCK

    out = tmp_path / "out"
    stale = out / f"{shards_mod.STAGING}99999999-abc"
    stale.mkdir(parents=True)
    (stale / LOCK).touch()                                                   # its writer is gone
    (stale / "train-000000.tar").write_bytes(b"half a shard")
    reused = out / f"{shards_mod.STAGING}{os.getpid()}-killed"            # a killed run's pid, now reused
    reused.mkdir()
    (reused / LOCK).touch()
    live = out / f"{shards_mod.STAGING}{os.getpid()}-held"
    live.mkdir()
    (live / LOCK).touch()
    holder = subprocess.Popen([sys.executable, "-c", "import fcntl, os, sys, time; fd = os.open(sys.argv[1], os.O_RDWR); "
                               "fcntl.flock(fd, fcntl.LOCK_EX); print('held', flush=True); time.sleep(60)",
                               str(live / LOCK)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        write_shards(prepared, out, shard_size=1 << 30)
        assert not stale.exists() and not reused.exists() and live.exists()
    finally:
        holder.kill()
    assert sorted(p.name for p in out.iterdir() if p.name.startswith(".") and p != live) == []


def test_evaluate_reads_a_pipe_index_as_it_reads_the_folder(prepared, sharded, tmp_path, capsys):
    """Issue 27.13: ``evaluate --data "pipe:cat DIR/shards.json"`` said the folder did not exist."""
    from raddiag.cli import main
    from raddiag.serving.sample import make_tiny_run

    labels = PreparedData(prepared).label_space("disorder")
    run = make_tiny_run(tmp_path / "run", classes=labels.names, size=16, depth=2).root
    common = ["evaluate", str(run), "--n-boot", "0", "--val-split", ""]
    assert main([*common, "--data", f"pipe:cat {sharded}/shards.json", "--out", str(tmp_path / "pipe")]) == 0
    assert main([*common, "--data", str(sharded), "--out", str(tmp_path / "folder")]) == 0
    pipe, folder = (json.loads((tmp_path / d / "metrics.json").read_text()) for d in ("pipe", "folder"))
    checked = [m["meta"].pop("trained_on_cases") for m in (pipe, folder)]   # they name the data as given
    assert [(c["n"], c["of"]) for c in checked] == [(None, 6)] * 2                # (data_checks): the run
    assert [len(m["meta"].pop("warnings")) for m in (pipe, folder)] == [1, 1]    # records no training data
    assert pipe == folder
    assert main([*common, "--data", f"pipe:cat {tmp_path}/none/shards.json", "--out", str(tmp_path / "x")]) == 2
    assert "none/shards.json" in capsys.readouterr().err


def test_a_failing_pipe_command_is_said_by_its_exit_status(tmp_path):
    """A new user's `pipe:false ...` printed WebDataset's raw Popen tuple as the reason."""
    from raddiag.data.shard_index import read_index

    with pytest.raises(ShardError) as err:
        read_index(f"pipe:false {tmp_path}/shards.json")
    assert str(err.value) == (f"pipe:false {tmp_path}/shards.json: the index cannot be read (the command exited "
                              "with status 1)")

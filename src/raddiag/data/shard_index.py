"""Where a shard index and its shards live, and the index read back and checked
(:mod:`raddiag.data.shards` writes and streams the shards).

A source is a shard folder, a local index file (``.../shards.json``) or a URL WebDataset's
``gopen`` opens (``pipe:COMMAND``, ``http(s)://...``); every shard lies next to its index. Shard
names are data (an index may come from shared storage, e.g. ``pipe:aws s3 cp ...``): only the
names ``data shard`` writes are accepted (:data:`SHARD_NAME`), so that a name can run nothing in a
``pipe:`` command and reach nothing outside the index's folder or URL prefix.
"""
from __future__ import annotations

import json
import re
import shlex
import urllib.parse
from pathlib import Path

SHARD_FORMAT = 1
INDEX = "shards.json"
SPLIT_NAME = re.compile(r"[A-Za-z0-9_]+")
SHARD_NAME = re.compile(r"[A-Za-z0-9_]+-[0-9]{6}\.tar")   # the only names data shard writes
SHARD_NAME_TEXT = "SPLIT-NNNNNN.tar: letters, digits, '_', then 6 digits"


class ShardError(ValueError):
    """A shard folder or shard that cannot be read: the message names the file and the reason."""


def is_url(source) -> bool:
    """A source WebDataset opens rather than a local path: ``pipe:CMD`` or ``SCHEME://...``."""
    s = str(source)
    return s.startswith("pipe:") or re.match(r"[A-Za-z][A-Za-z0-9+.-]*://", s) is not None


def as_source(source) -> Path | str:
    """A shard source as given: a URL stays a string, anything else is a local path."""
    return str(source) if is_url(source) else Path(source)


def shard_location(source, name: str) -> Path | str:
    """Where shard ``name`` of ``source``'s index lives: next to the index. A folder or a local
    index file: the folder / the file's folder; a URL: the same URL with ``name`` in place of
    its (last) ``shards.json``, e.g. ``pipe:cat /data/s/shards.json`` -> ``pipe:cat /data/s/NAME``.
    ``name`` is data (an index may come from shared storage): only a name ``data shard`` writes
    is accepted (:data:`SHARD_NAME`: no folder, no ``..``, no shell syntax), and it is quoted for
    the shell in a ``pipe:`` command and for a URL path otherwise (belt and braces)."""
    if not (isinstance(name, str) and (name == INDEX or SHARD_NAME.fullmatch(name))):
        raise ShardError(f"{source}: {name!r} is not a shard name ({SHARD_NAME_TEXT}); refused")
    if is_url(source):
        s = str(source)
        k = s.rfind(INDEX)
        quoted = shlex.quote(name) if s.startswith("pipe:") else urllib.parse.quote(name)
        return s[:k] + quoted + s[k + len(INDEX):]
    return _local_index(source).parent / name


def _local_index(source) -> Path:
    """The index file of a local source: the source itself when it is a ``*.json`` file, else the
    folder's ``shards.json``."""
    p = Path(source)
    return p if p.suffix == ".json" and p.is_file() else p / INDEX


def open_source(location: Path | str):
    """A binary stream of a local file or of a URL (WebDataset's gopen: ``pipe:``, ``http(s)://``, ...)."""
    if isinstance(location, Path):
        return location.open("rb")
    from webdataset.gopen import gopen

    return gopen(location, "rb")


def _why(source, exc: Exception) -> str:
    """A read failure in words: a ``pipe:`` command's exit status (WebDataset's error carries the
    Popen arguments as a raw tuple: a new user read "(('false ...',), {'shell': True, ...})"), else
    the error itself."""
    status = re.search(r"exit (-?\d+)", str(exc)) if str(source).startswith("pipe:") else None
    if status:
        return f"the command exited with status {status.group(1)}"
    return f"{type(exc).__name__}: {exc}"


def _read_index_bytes(source) -> tuple[bytes, str]:
    """(bytes, where) of ``source``'s index: a folder's shards.json, a local index file, or a URL."""
    if is_url(source):
        if INDEX not in str(source):
            raise ShardError(f"{source}: a URL source must name the index {INDEX} (e.g. pipe:cat /data/shards/{INDEX} "
                             f"or https://host/shards/{INDEX}); each shard is read by the same URL with its name in "
                             f"place of {INDEX}")
        try:
            with open_source(str(source)) as f:
                return f.read(), str(source)
        except (OSError, ValueError) as exc:
            raise ShardError(f"{source}: the index cannot be read ({_why(source, exc)})") from None
    path = _local_index(source)
    if not path.is_file():
        raise FileNotFoundError(f"{source}: not a shard folder ({INDEX} is missing; run `raddiag data shard`)")
    return path.read_bytes(), str(path)


def read_index(root: str | Path) -> dict:
    """The index of a shard folder (``root/shards.json``), of a local index file or of a URL
    (:func:`shard_location`), checked: every error names the file."""
    raw, path = _read_index_bytes(root)
    try:
        index = json.loads(raw.decode("utf-8"))
    except (ValueError, RecursionError) as exc:      # bad JSON or UTF-8, or nested too deep
        raise ShardError(f"{path}: not valid JSON ({exc}); shard the dataset again") from None
    if not isinstance(index, dict) or index.get("format_version") != SHARD_FORMAT:
        raise ShardError(f"{path}: shard format {index.get('format_version') if isinstance(index, dict) else None!r}, "
                         f"this raddiag reads {SHARD_FORMAT}; shard the dataset again")
    for k in ("size", "depth", "splits", "label_spaces"):
        if k not in index:
            raise ShardError(f"{path}: {k!r} is missing; shard the dataset again")
    if not (_count(index["size"], 1) and _count(index["depth"], 1) and isinstance(index["label_spaces"], dict)):
        raise ShardError(f"{path}: 'size' and 'depth' must be integers >= 1 and 'label_spaces' an object; "
                         "shard the dataset again")
    _check_shard_names(index, path)
    _check_counts(index, path)
    return index


def _count(v, least: int = 0) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= least


def _check_counts(index: dict, path: str) -> None:
    """Each shard's case count and bytes are integers >= 0 and its sha256 64 hex digits, and a
    split's case count is the sum of its shards' (a reader cuts shares by them)."""
    for split, sp in index["splits"].items():
        for sh in sp["shards"]:
            sha = sh.get("sha256")
            if not (_count(sh.get("n_cases")) and _count(sh.get("bytes")) and isinstance(sha, str)
                    and re.fullmatch(r"[0-9a-f]{64}", sha)):
                raise ShardError(f"{path}: shard {sh['name']!r}: 'n_cases' and 'bytes' must be integers >= 0 and "
                                 "'sha256' 64 hex digits; shard the dataset again")
        if sp.get("n_cases") != sum(sh["n_cases"] for sh in sp["shards"]):
            raise ShardError(f"{path}: split {split!r} declares {sp.get('n_cases')!r} cases, its shards hold "
                             f"{sum(sh['n_cases'] for sh in sp['shards'])}; shard the dataset again")


def _check_shard_names(index: dict, path: str) -> None:
    """Every shard an index lists is named as ``data shard`` names it: shard ``k`` of split ``S``
    is ``S-{k:06d}.tar``. A name is read by a shell (``pipe:``), a web server or the file system:
    any other name (``x.tar; touch PWNED``, ``../x.tar``, ``/abs/x.tar``) is refused before anything is read."""
    splits = index["splits"]
    if not isinstance(splits, dict):
        raise ShardError(f"{path}: 'splits' is not an object; shard the dataset again")
    for split, sp in splits.items():
        shards = sp.get("shards") if isinstance(sp, dict) else None
        if not isinstance(shards, list) or not all(isinstance(sh, dict) for sh in shards):
            raise ShardError(f"{path}: split {split!r} has no list of shards; shard the dataset again")
        for k, sh in enumerate(shards):
            want = f"{split}-{k:06d}.tar"
            if sh.get("name") != want or not SHARD_NAME.fullmatch(want):
                raise ShardError(f"{path}: shard {k} of split {split!r} is named {sh.get('name')!r}, not "
                                 f"{want!r}; an index lists only the names `raddiag data shard` writes "
                                 f"({SHARD_NAME_TEXT}): refused")


def is_shard_folder(path: str | Path) -> bool:
    """A shard folder, a local index file (``*.json``) or a URL source (:func:`shard_location`)."""
    return is_url(path) or _local_index(path).is_file()

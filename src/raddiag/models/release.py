"""The authors' released checkpoint used as a run: imported on first use into a cached run folder.

``raddiag.load(CKPT)`` and every command that takes a RUN accept the release's checkpoint
folder (``pytorch_model.bin`` or ``*.safetensors``) or the weights file itself
(:func:`raddiag.run.resolve_run`). The first use imports it as ``raddiag import-official`` does;
later uses find the import in the cache::

    CACHE/release/<sha256 of the weights, 24 hex>-<sha256 of the label dictionary, 12 hex>-v<IMPORTER>/
      config.yaml, label_space.json, model.safetensors   (what import-official writes)
      release.json                                        the source paths and their hashes

``CACHE`` is ``$RADDIAG_CACHE`` or ``~/.cache/raddiag`` (:func:`raddiag.cache.cache_dir`). The key is
the files' content (hashed in chunks, never read whole into memory), so a copy of the same file
elsewhere reuses the import and a changed file is imported anew. An import is written into a
temporary folder beside its final place and renamed into place when complete, so a reader never
sees half an import and two processes importing at once both end with the same complete folder.
The label dictionary is ``disorder_label_dict.json`` in the checkpoint's folder or the folder
above it (the release keeps it at the repository root), or the one given.
"""
from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Optional

from raddiag.cache import cache_dir
from raddiag.run import RunFolder

from .official import checkpoint_file, import_official

log = logging.getLogger(__name__)

LABEL_DICT = "disorder_label_dict.json"
IMPORTER_VERSION = 2            # 2: the release's head / medium / tail groups; part of the cache key: raise it when an import would come out differently
CHUNK = 1 << 20                 # bytes hashed per read
_RELEASE_PREFIXES = ("resnet2D.", "attention1D.", "vitFuse.")


def release_weights(path: str | Path) -> Optional[Path]:
    """The weights file when ``path`` is the authors' released checkpoint (a folder or the file),
    else None. A ``.safetensors`` file counts when its keys have the release's names (its header
    alone is read); a ``.bin`` / ``.pt`` / ``.pth`` file counts by its name (its keys are checked on
    import)."""
    try:
        weights = checkpoint_file(path)
    except FileNotFoundError:
        return None
    if weights.suffix == ".safetensors":
        from safetensors import safe_open

        try:
            with safe_open(str(weights), "pt") as f:
                keys = list(f.keys())
        except Exception:  # noqa: BLE001 - not a readable safetensors file: not a release
            return None
        keys = [k[len("module."):] if k.startswith("module.") else k for k in keys]
        return weights if any(k.startswith(_RELEASE_PREFIXES) for k in keys) else None
    return weights if weights.suffix in (".bin", ".pt", ".pth") else None


def find_label_dict(weights: Path, given: Optional[str | Path] = None) -> Path:
    """The label dictionary: ``given``, else ``disorder_label_dict.json`` beside the weights or
    one folder up; an error names where it looked."""
    if given is not None:
        given = Path(given)
        if not given.is_file():
            raise FileNotFoundError(f"{given}: label dictionary does not exist")
        return given
    places = [weights.parent, weights.parent.parent]
    for folder in places:
        if (folder / LABEL_DICT).is_file():
            return folder / LABEL_DICT
    raise FileNotFoundError(f"{weights}: no {LABEL_DICT} beside the released checkpoint (looked in "
                            f"{' and '.join(map(str, places))}); give the release's label dictionary "
                            "(--release-labels FILE, or labels=FILE in Python)")


def file_sha256(path: Path) -> str:
    """SHA-256 of a file's content, read in :data:`CHUNK`-byte pieces."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def release_run(ckpt: str | Path, labels: Optional[str | Path] = None,
                cache: Optional[str | Path] = None) -> RunFolder:
    """The cached run folder of the released checkpoint ``ckpt`` (imported now when it is not
    cached yet); ``labels``: its label dictionary when it is not beside it (:func:`find_label_dict`);
    ``cache``: the folder of the imports (default ``CACHE/release``)."""
    weights = release_weights(ckpt)
    if weights is None:
        raise FileNotFoundError(f"{ckpt}: not the authors' released checkpoint (expected pytorch_model.bin "
                                "or *.safetensors with the release's key names)")
    labels = find_label_dict(weights, labels)
    t0 = time.perf_counter()
    digest = file_sha256(weights)
    log.info("%s: sha256 %s (%.0f MB hashed in %d MiB chunks, %.1f s) keys its cached import", weights,
             digest[:16], weights.stat().st_size / 1e6, CHUNK >> 20, time.perf_counter() - t0)
    key = f"{digest[:24]}-{file_sha256(labels)[:12]}-v{IMPORTER_VERSION}"
    run = RunFolder((Path(cache) if cache is not None else cache_dir() / "release") / key)
    if _complete(run):
        log.info("using the cached import %s", run.root)
        return run
    log.info("importing the released checkpoint %s with %s -> %s (first use)", weights, labels, run.root)
    _import_into(run.root, weights, labels, digest)
    return run.check()


def _complete(run: RunFolder) -> bool:
    try:
        run.check()
    except FileNotFoundError:
        return False
    return (run.root / "release.json").is_file()   # written last, before the rename


def _import_into(root: Path, weights: Path, labels: Path, digest: str) -> None:
    """Import into a temporary folder beside ``root``, then rename it into place (a rename onto
    a non-empty folder fails: another process's complete import is then used, an incomplete
    entry is set aside first)."""
    try:
        root.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OSError(exc.errno, f"cannot create the cache of imported releases ({exc.strerror}); set "
                                 "$RADDIAG_CACHE to a writable folder", str(root.parent)) from None
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.", suffix=".tmp", dir=root.parent))
    try:
        tmp.chmod(0o755)                 # mkdtemp's 0700 would hide a shared cache from other users
        import_official(weights, labels, tmp)
        (tmp / "release.json").write_text(json.dumps(
            {"checkpoint": str(weights.resolve()), "sha256": digest, "labels": str(labels.resolve()),
             "labels_sha256": file_sha256(labels), "importer_version": IMPORTER_VERSION}, indent=1) + "\n")
        for attempt in range(2):
            try:
                os.rename(tmp, root)
                return
            except OSError as exc:
                if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                    raise
            if _complete(RunFolder(root)):
                log.info("%s: imported meanwhile by another process; using that", root)
                return
            if attempt == 0:
                log.warning("%s: incomplete cached import (a file removed?); replacing it", root)
                _set_aside(root)
        raise FileExistsError(f"{root}: cannot replace this incomplete cached import; delete it")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _set_aside(root: Path) -> None:
    stale = Path(tempfile.mkdtemp(prefix=f".{root.name}.", suffix=".stale", dir=root.parent))
    try:
        os.rename(root, stale / "old")
    except FileNotFoundError:
        pass
    shutil.rmtree(stale, ignore_errors=True)

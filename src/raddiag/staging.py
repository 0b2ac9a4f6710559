"""Outputs replaced whole: a file through a temporary sibling, a folder built beside the old one
and swapped in when complete.

:func:`atomic_write` writes a file to a temporary sibling, fsyncs it and renames it into place.

A command that replaces a folder (``train --overwrite``, ``curate export``, ``predict --saliency
--overwrite``) writes the new one into a hidden *stage* beside it, ``.NAME.KIND-PID-XXXXXX``, and
puts it in place with :func:`swap_in` only once it is whole; a failure removes the stage, so the
old folder stays as it was. ``data prepare`` stages inside its output (``.prepare-PID-XXXXXX``).

:func:`staged_files` stages files inside a folder the user names and moves them in at the end.

A process killed with SIGKILL cannot clean up: each stage holds a lock file (``flock``) for as
long as the process that made it lives, so the next command's :func:`sweep_stale` removes exactly
the stages nobody holds (naming each), never a stage another process is still writing; a
process id is not proof, as ids are reused (a container starts its processes from 1 again).
A hidden folder of that name without a lock file (a stage of an older raddiag) is named, not
removed.
"""
from __future__ import annotations

import errno
import json
import logging
import math
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Optional

log = logging.getLogger(__name__)

LOCK = ".staging.lock"
_held: dict[Path, int] = {}         # stage -> file descriptor of its lock, held until swap or cleanup


def stage_prefix(target: Path, kind: str) -> str:
    """The name every stage of ``target`` for ``kind`` begins with (``.NAME.KIND-``)."""
    return f".{Path(target).name[:100]}.{kind}-"


def make_stage(parent: Path, prefix: str) -> Path:
    """A new, empty, locked folder ``parent/PREFIX PID-XXXXXX`` (see the module doc)."""
    parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f"{prefix}{os.getpid()}-", dir=parent))
    stage.chmod(0o755)                # mkdtemp's 0700 would hide the swapped-in output from other users
    fd = os.open(stage / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    _lock(fd, blocking=True)
    _held[stage] = fd
    return stage


def stage_beside(target: Path, kind: str) -> Path:
    """A locked stage for a new ``target`` beside it, after removing stale ones (:func:`sweep_stale`)."""
    target = _real(target)
    sweep_stale(target.parent, stage_prefix(target, kind))
    return make_stage(target.parent, stage_prefix(target, kind))


def discard(stage: Path) -> None:
    """Remove a stage of this process (a failed or interrupted command)."""
    _release(stage)
    shutil.rmtree(stage, ignore_errors=True)


def swap_in(stage: Path, target: Path) -> None:
    """Put the complete folder ``stage`` at ``target``, replacing what is there. On Linux both are
    exchanged in one step (``renameat2(RENAME_EXCHANGE)``): a reader, or a kill at any moment,
    sees the old folder or the new, never a mix and never neither."""
    target = _real(target)
    if target.is_dir():
        if _exchange(stage, target):
            _release(stage, target / LOCK)            # the lock file travelled with the new content
            shutil.rmtree(stage, ignore_errors=True)  # now the old content
            return
        aside = make_stage(target.parent, stage_prefix(target, "old"))   # swept if this run dies now
        os.rename(target, aside / "old")
        os.rename(stage, target)
        _release(stage, target / LOCK)
        discard(aside)
        return
    os.rename(stage, target)
    _release(stage, target / LOCK)


@contextmanager
def staged_files(folder: Path, kind: str):
    """A stage inside ``folder`` (``.KIND-PID-XXXXXX``) for files that are moved into ``folder`` only
    when the block completes; a failure leaves ``folder`` as it was. For outputs that go into a
    folder the user names, which may hold anything else (``predict --saliency``): the folder
    itself is never renamed. The moves take milliseconds and are not one step."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    sweep_stale(folder, f".{kind}-")
    stage = make_stage(folder, f".{kind}-")
    try:
        yield stage
        for f in sorted(stage.iterdir()):
            if f.name != LOCK:
                os.replace(f, folder / f.name)
    finally:
        discard(stage)


def sweep_stale(parent: Path, prefix: str) -> list[Path]:
    """Remove the stages ``parent/PREFIX*`` that no live process holds; return them. A matching
    folder without a lock file is left, with a warning naming it."""
    removed = []
    if not Path(parent).is_dir():
        return removed
    for p in sorted(Path(parent).glob(f"{prefix}*")):
        if not p.is_dir() or p.is_symlink() or p in _held:
            continue
        state = _owner(p)
        if state == "stale":
            shutil.rmtree(p, ignore_errors=True)
            log.warning("%s: removed the unfinished output of an earlier run that was killed", p)
            removed.append(p)
        elif state == "unknown":
            log.warning("%s: an unfinished output of an earlier run, or of one still running (it holds no "
                        "lock to tell: an older raddiag); remove it when no raddiag command is writing there", p)
    return removed


def write_json(path, obj, indent: Optional[int] = 1) -> None:
    """``obj`` as strict JSON (NaN and infinities written as ``null``: a bare ``NaN`` is no JSON,
    and JavaScript's ``JSON.parse`` refuses the whole file), through :func:`atomic_write`."""
    text = json.dumps(_finite(obj), indent=indent, ensure_ascii=False, allow_nan=False) + "\n"
    atomic_write(path, lambda f: f.write(text.encode("utf-8")))


def _finite(obj):
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    if hasattr(obj, "dtype") and getattr(obj, "ndim", None) == 0:    # a NumPy scalar
        return _finite(obj.item())
    return obj


def atomic_write(path, write) -> None:
    """Call ``write(fileobj)`` on a temp file next to ``path``; fsync; rename over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        if exc.filename is None:            # a failed write (full disk) carries no file name: add it
            raise OSError(exc.errno, exc.strerror or str(exc), str(path)) from exc
        raise
    finally:
        if tmp.exists():
            tmp.unlink()
    try:  # make the rename itself durable
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:  # pragma: no cover - some filesystems refuse directory fsync
        pass


# -- locks -------------------------------------------------------------------------------------
def _lock(fd: int, blocking: bool) -> Optional[bool]:
    """Take the lock of ``fd``: True, False (another process holds it), None (no ``flock`` here)."""
    try:
        import fcntl
    except ImportError:        # pragma: no cover - not POSIX: no lock, stages are then named, not removed
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        return True
    except OSError as exc:
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            return False
        raise


def _owner(stage: Path) -> str:
    """'stale' (its lock is free), 'live' (a process holds it) or 'unknown' (no lock file)."""
    try:
        fd = os.open(stage / LOCK, os.O_RDWR)
    except FileNotFoundError:
        return "unknown"
    try:
        return {True: "stale", False: "live", None: "unknown"}[_lock(fd, blocking=False)]
    finally:
        os.close(fd)                 # closing drops the lock taken just now


def _release(stage: Path, lock_file: Optional[Path] = None) -> None:
    """Let go of ``stage``'s lock (and remove ``lock_file``, where the lock file now lies)."""
    fd = _held.pop(stage, None)
    if lock_file is not None:
        lock_file.unlink(missing_ok=True)
    if fd is not None:
        os.close(fd)


def _real(target: Path) -> Path:
    """``target``, or the folder it links to: the stage goes beside the real folder (same file system)."""
    target = Path(target)
    return target.resolve() if target.is_symlink() else target


def _exchange(a: Path, b: Path) -> bool:
    """Swap two folders atomically (Linux ``renameat2`` with ``RENAME_EXCHANGE``); False where the
    system or the file system cannot (then :func:`swap_in` renames in two steps)."""
    import ctypes
    import sys

    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):       # pragma: no cover - a libc without renameat2 (glibc < 2.28)
        return False
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    return False

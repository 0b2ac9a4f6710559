"""Worker processes started from a user's script that lacks ``if __name__ == "__main__":``.

A process started with ``spawn`` or ``forkserver`` re-runs the main script to rebuild its
state (``multiprocessing.spawn.get_preparation_data``). When the call that starts workers
sits at the script's top level, the re-run calls it again while the child is still
bootstrapping; multiprocessing then raises "An attempt has been made to start a new process
before the current process has finished its bootstrapping phase" in the child and the
caller sees a ``BrokenProcessPool``. :func:`worker_processes_allowed` sees that case
before any process starts: the code then runs in-process, with a warning that says what to add.

:func:`forkserver_pool` is the one way raddiag starts a process pool; its workers end when the
process that started them ends, even by SIGKILL (see :func:`_follow_parent`).
"""
from __future__ import annotations

import ast
import multiprocessing
import os
import sys
import threading
import warnings
from pathlib import Path
from typing import Optional


def _is_main_guard(test: ast.expr) -> bool:
    if not (isinstance(test, ast.Compare) and len(test.ops) == 1 and isinstance(test.ops[0], ast.Eq)):
        return False
    sides = [test.left, test.comparators[0]]
    return (any(isinstance(s, ast.Name) and s.id == "__name__" for s in sides)
            and any(isinstance(s, ast.Constant) and s.value == "__main__" for s in sides))


def unguarded_main_script() -> Optional[str]:
    """The main script's path when this call runs while that script is executing its top level
    outside an ``if __name__ == "__main__":`` block; else ``None`` (also for the REPL,
    ``python -c``, notebooks and ``python -m package``, which children do not re-run)."""
    main = sys.modules.get("__main__")
    path = getattr(main, "__file__", None)
    if main is None or not path:
        return None
    spec_name = getattr(getattr(main, "__spec__", None), "name", "") or ""
    if spec_name == "__main__" or spec_name.endswith(".__main__"):   # as multiprocessing.spawn skips them
        return None
    frame = sys._getframe(1)
    while frame is not None and not (frame.f_globals is main.__dict__ and frame.f_code.co_name == "<module>"):
        frame = frame.f_back
    if frame is None:            # the script's top level has finished (a callback, a thread)
        return None
    try:
        tree = ast.parse(Path(path).read_text(), path)
    except (OSError, SyntaxError, ValueError):   # cannot tell: leave the workers on
        return None
    line = frame.f_lineno
    for node in ast.walk(tree):
        if (isinstance(node, ast.If) and _is_main_guard(node.test)
                and node.body[0].lineno <= line <= node.body[-1].end_lineno):
            return None
    return str(path)


def worker_processes_allowed(what: str, start_method: Optional[str] = None) -> bool:
    """False (with a ``RuntimeWarning`` naming the script and the fix) when worker processes
    started now would re-run an unguarded main script; ``fork`` never re-runs it."""
    method = start_method or multiprocessing.get_start_method(allow_none=True) \
        or multiprocessing.get_all_start_methods()[0]
    if method == "fork":
        return True
    script = unguarded_main_script()
    if script is None:
        return True
    warnings.warn(
        f"{what}: {script} calls it at the top level, outside `if __name__ == \"__main__\":`. Worker "
        "processes re-run the main script, so the work runs in this process instead (slower). Put the "
        "script's code under `if __name__ == \"__main__\":` to use worker processes.",
        RuntimeWarning, stacklevel=3)
    return False


def forkserver_pool(workers: int, initializer=None, initargs: tuple = ()):
    """A ``ProcessPoolExecutor`` of ``workers`` processes started by ``forkserver`` (not ``fork``:
    forking a process whose torch / OpenMP threads are running can deadlock the children),
    each following this process (:func:`_follow_parent`) before ``initializer(*initargs)``."""
    from concurrent.futures import ProcessPoolExecutor

    return ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("forkserver"),
                               initializer=_start_worker, initargs=(os.getpid(), initializer, initargs))


def map_in_order(pool, fn, items, chunksize: int = 1, poll: float = 0.25):
    """``pool.map(fn, items, chunksize=chunksize)`` (tasks submitted now, results in order) whose
    wait wakes every ``poll`` seconds. SIGTERM may be delivered to any of this process's threads
    (the pool's manager and queue threads too); Python runs its handler in the main thread, which,
    blocked in ``pool.map``'s wait, would only notice when the next result came, seconds later."""
    items = list(items)
    futures = [pool.submit(_run_chunk, fn, items[i:i + chunksize]) for i in range(0, len(items), chunksize)]

    def results():
        from concurrent.futures import TimeoutError

        try:
            for fut in futures:
                while True:
                    try:
                        chunk = fut.result(timeout=poll)
                        break
                    except TimeoutError:
                        continue
                yield from chunk
        finally:
            for fut in futures:
                fut.cancel()

    return results()


def _run_chunk(fn, items: list) -> list:
    return [fn(x) for x in items]


def stop_pool(pool, wait: bool = True) -> None:
    """Shut ``pool`` down; ``wait=False`` (an error, SIGTERM) ends its workers now rather than
    after the task each is in (which the interpreter's exit would otherwise wait for)."""
    terminate = getattr(pool, "terminate_workers", None)                   # Python 3.14+
    procs = list((getattr(pool, "_processes", None) or {}).values())       # earlier: the pool's own table
    if not wait and terminate is not None:
        terminate()
        return
    pool.shutdown(wait=wait, cancel_futures=True)                          # (it forgets its processes)
    if not wait:
        for proc in procs:
            proc.terminate()


def _start_worker(parent: int, initializer, initargs: tuple) -> None:
    _follow_parent(parent)
    if initializer is not None:
        initializer(*initargs)


def _follow_parent(pid: int) -> None:
    """End this worker as soon as process ``pid`` (the pool's owner) has ended. A pool's owner
    killed with SIGKILL cannot stop it, and its workers would wait for work forever (each holds
    both ends of the task queue), keeping the forkserver and the resource tracker alive too.
    A thread waits on a pidfd of the owner (Linux 5.3+: no polling, no reused process ids),
    else checks every second that the owner is there."""
    import select
    import time

    try:
        fd = os.pidfd_open(pid)
    except (AttributeError, OSError):       # not Linux, an old kernel, or the owner is gone already
        fd = None

    def watch():
        if fd is not None:
            select.select([fd], [], [])
        else:
            while _alive(pid):
                time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=watch, name="raddiag-follow-parent", daemon=True).start()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:                 # pragma: no cover - a process of another user has the id
        return True
    return True

"""Worker processes started from a user's script that lacks ``if __name__ == "__main__":``.

A process started with ``spawn`` or ``forkserver`` re-runs the main script to rebuild its
state (``multiprocessing.spawn.get_preparation_data``). When the call that starts workers
sits at the script's top level, the re-run calls it again while the child is still
bootstrapping; multiprocessing then raises "An attempt has been made to start a new process
before the current process has finished its bootstrapping phase" in the child and the
caller sees a ``BrokenProcessPool``. :func:`worker_processes_allowed` sees that case
before any process starts: the code then runs in-process, with a warning that says what to add.
"""
from __future__ import annotations

import ast
import multiprocessing
import sys
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

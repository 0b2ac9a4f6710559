"""The ``raddiag`` command line: a thin layer over the library.

Each sub-package owns its commands in a ``commands.py`` module exposing
``register(subparsers)``; this module only assembles them. Handlers import
their heavy dependencies lazily so that ``raddiag --help`` stays fast.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import sys
import warnings

# (module, doc) in the order they appear in --help.
COMMAND_MODULES = [
    "raddiag.data.commands",        # data prepare | synth | stats
    "raddiag.knowledge.commands",   # knowledge train | embed | map | evaluate
    "raddiag.models.commands",      # import-official | describe
    "raddiag.training.commands",    # train | finetune
    "raddiag.evaluation.commands",  # evaluate | metrics
    "raddiag.transfer.commands",    # zeroshot
    "raddiag.serving.commands",     # predict | serve | export
    "raddiag.curation.commands",    # curate ...
    "raddiag.demo",                 # demo
]


# Exit codes (README "Limits and errors"): 0 success, 2 bad input (a file or an argument that
# cannot be used: the message names it), 1 any other failure (a read-only or full disk, a bug).
EXIT_BAD_INPUT = 2
EXIT_FAILURE = 1
# errors about what the user gave: a missing or wrong path, a bad value, an unreadable file
# FloatingPointError: the trainer's stop at a non-finite loss, caused by the data or the settings.
BAD_INPUT = (ValueError, FileNotFoundError, NotADirectoryError, IsADirectoryError, FileExistsError,
             FloatingPointError)


class UserError(Exception):
    """An error caused by the user's input: printed without a traceback."""


class Terminated(BaseException):
    """SIGTERM arrived: raised in the main thread so that every ``finally`` runs (worker pools
    shut down, unfinished outputs removed) before the command exits with 143. A BaseException,
    so that no ``except Exception`` takes it for an error of the work."""


def _on_sigterm(signum, frame):
    raise Terminated()


def _handle_sigterm():
    """Install :func:`_on_sigterm` for this command; returns the handler to restore (None: not
    installed: off the main thread, or under torchrun, which stops its ranks itself and whose
    ranks may sit in a collective that a Python handler would wait for)."""
    import os
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread() or "TORCHELASTIC_RUN_ID" in os.environ:
        return None
    return signal.signal(signal.SIGTERM, _on_sigterm)


def describe_error(exc: BaseException) -> tuple[int, str]:
    """``(exit code, one-line message)`` for an error that ended a command."""
    if isinstance(exc, KeyError) and exc.args:
        text = str(exc.args[0])            # str(KeyError) adds quotes
    elif isinstance(exc, OSError) and exc.strerror:
        where = exc.filename if exc.filename is not None else None
        text = f"{where}: {exc.strerror}" if where is not None and str(where) not in exc.strerror else exc.strerror
    else:
        text = str(exc) or type(exc).__name__
    # one line: a line ending in ":" introduces the next ("nothing was read: m.jsonl:2: ..."), others "; "
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    text = "".join(line + ("" if i == len(lines) - 1 else " " if line.endswith(":") else "; ")
                   for i, line in enumerate(lines))
    if isinstance(exc, (UserError, *BAD_INPUT)):
        return EXIT_BAD_INPUT, text
    if isinstance(exc, OSError):
        return EXIT_FAILURE, text
    return EXIT_FAILURE, f"{type(exc).__name__}: {text} (unexpected; rerun with --debug for the traceback)"


def _close_progress_bars() -> None:
    """Close progress bars an error left open, so the error line is not printed onto (and then
    redrawn over by) a bar."""
    if "tqdm" in sys.modules:
        from tqdm import tqdm

        for bar in list(getattr(tqdm, "_instances", ())):
            bar.close()


def _sub_commands(parser: argparse.ArgumentParser):
    """Every sub-command's parser under ``parser``, at any depth (each once)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in dict.fromkeys(action.choices.values()):
                yield child
                yield from _sub_commands(child)


def _add_debug(parser: argparse.ArgumentParser) -> None:
    """``--debug`` on the top parser and on every sub-command (so it may come last too)."""
    parser.add_argument("--debug", action="store_true", default=False, help="show the full traceback of an error")
    for child in _sub_commands(parser):
        child.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                           help="show the full traceback of an error")


# Integer options that may be 0 (never negative: numpy refuses a negative seed, deep in a run);
# every other ``type=int`` option of every sub-command is a count or a size and must be positive
# (``_check_arguments``).
ZERO_ALLOWED = {"seed", "port", "min_per_cell", "retries"}


def int_at_least(minimum: int):
    """argparse type: an integer >= ``minimum``."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be an integer >= {minimum}, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be an integer >= {minimum}, got {value}")
        return value

    parse.__name__ = f"integer >= {minimum}"
    return parse


positive_int = int_at_least(1)
non_negative_int = int_at_least(0)


def port_arg(text: str) -> int:
    """argparse type: a TCP port, 0..65535 (0: any free one)."""
    value = non_negative_int(text)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"must be a port number 0..65535, got {value}")
    return value


def device_arg(text: str) -> str:
    """argparse type: a torch device this machine has (``cpu``, ``cuda``, ``cuda:1``, ``mps``)."""
    if text == "cpu":
        return text            # the default: no torch import while parsing
    import torch

    try:
        dev = torch.device(text)
    except RuntimeError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a device (cpu, cuda, cuda:N, mps)") from None
    if dev.type == "cuda":
        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if n == 0:
            raise argparse.ArgumentTypeError(f"{text!r}: this machine has no CUDA device (torch {torch.__version__})")
        if dev.index is not None and dev.index >= n:
            raise argparse.ArgumentTypeError(f"{text!r}: this machine has {n} CUDA device(s)")
    elif dev.type == "mps" and not torch.backends.mps.is_available():
        raise argparse.ArgumentTypeError(f"{text!r}: MPS is not available on this machine")
    elif dev.type not in ("cpu", "cuda", "mps"):
        raise argparse.ArgumentTypeError(f"{text!r}: device type {dev.type!r} is not supported (cpu, cuda, mps)")
    return text


def _check_arguments(parser: argparse.ArgumentParser) -> None:
    """Give every sub-command's counts (``type=int``) the positive check (ZERO_ALLOWED: >= 0) and
    every ``--device`` the device check, in one place, so a 0 or an absent GPU is one clear
    argparse line rather than a hang or a traceback deep in torch."""
    for p in (parser, *_sub_commands(parser)):
        for action in p._actions:
            if action.type is int and action.dest == "port":
                action.type = port_arg
            elif action.type is int:
                action.type = non_negative_int if action.dest in ZERO_ALLOWED else positive_int
            elif action.dest == "device" and action.type is None:
                action.type = device_arg


def _add_release_labels(parser: argparse.ArgumentParser) -> None:
    """Every command that takes a RUN (a positional ``run``) also takes the authors' released
    checkpoint there (:func:`raddiag.run.resolve_run`, called in :func:`main`), with
    ``--release-labels`` for its label dictionary when it is not beside it."""
    for child in _sub_commands(parser):
        run = next((a for a in child._actions if a.dest == "run" and not a.option_strings), None)
        if run is not None:
            run.help = (run.help or "run folder") + "; or the authors' released checkpoint (folder " \
                "or file), imported on first use into a cached run folder"
            child.add_argument("--release-labels", default=None, metavar="JSON",
                               help="the release's disorder_label_dict.json when RUN is the released "
                                    "checkpoint and the file is not beside it")


def _resolve_release(args) -> None:
    """A RUN that is the released checkpoint becomes its cached import (:func:`raddiag.run.resolve_run`,
    which the commands call again: a run folder, or a path that does not exist, is left to them so
    that they check their other inputs first, as before)."""
    from pathlib import Path

    from raddiag.run import RunFolder, resolve_run

    run = Path(args.run)
    if args.release_labels is not None or (run.exists() and not RunFolder(run).looks_like_run()):
        args.run = str(resolve_run(run, args.release_labels).root)


def build_parser() -> argparse.ArgumentParser:
    from raddiag import __version__

    parser = argparse.ArgumentParser(
        prog="raddiag",
        description="Case-level radiology diagnosis over 2D and 3D scans (RadDiag).",
        epilog="Exit codes: 0 success, 2 bad input (the message names the file and the reason), "
               "1 other failures (e.g. a read-only or full disk). Errors are one line; --debug "
               "shows the traceback.",
    )
    parser.add_argument("--version", action="version", version=f"raddiag {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:  # a sub-package not built yet
            if exc.name != name:
                raise
            continue
        module.register(sub)
    _add_release_labels(parser)
    _add_debug(parser)
    _check_arguments(parser)
    return parser


def _one_line_warnings() -> None:
    """Inside ``warnings.catch_warnings``: every input warning (a scan's intensities unlike the
    training scans', files of a case folder skipped) is shown, as one line naming its file
    (raddiag.data.errors.InputWarning), not as Python's source-line warning; above a progress
    bar, not inside it (``tqdm.write``)."""
    from raddiag.data.errors import InputWarning, one_line

    shown = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):
        if not issubclass(category, InputWarning):
            return shown(message, category, filename, lineno, file, line)
        from tqdm import tqdm

        tqdm.write(f"raddiag: warning: {one_line(message)}", file=file or sys.stderr)

    warnings.simplefilter("always", InputWarning)
    warnings.showwarning = show


def _quiet_stdout() -> None:
    """Point stdout at /dev/null: its reader is gone, and the interpreter's final flush would
    otherwise fail again (Python's documented way, "Note on SIGPIPE")."""
    import os

    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_BAD_INPUT
    from raddiag.training.kernel_cache import widen_kernel_cache

    widen_kernel_cache()             # before the process's first convolution
    previous = _handle_sigterm()
    try:
        if hasattr(args, "release_labels"):
            _resolve_release(args)
        with warnings.catch_warnings():
            _one_line_warnings()
            rc = args.func(args)
    except KeyboardInterrupt:
        print("raddiag: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:          # `raddiag predict ... --json | head`: the reader has what it wanted
        _quiet_stdout()
        return 141                   # as a program killed by SIGPIPE (128 + 13), silently
    except Terminated:
        _close_progress_bars()
        # the service writes nothing to remove: stopping it is its normal end
        print("raddiag: terminated (SIGTERM)" + ("; the service stopped" if args.command == "serve"
                                                 else "; unfinished outputs removed"), file=sys.stderr)
        return 143
    except Exception as exc:  # noqa: BLE001 - every failure becomes one line (a traceback with --debug)
        if args.debug:
            raise
        code, text = describe_error(exc)
        _close_progress_bars()
        from raddiag.data.errors import one_line

        print(f"raddiag: error: {one_line(text)}", file=sys.stderr)
        return code
    finally:
        if previous is not None:
            import signal

            signal.signal(signal.SIGTERM, previous)
    return int(rc or 0)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())

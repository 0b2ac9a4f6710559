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


class UserError(Exception):
    """An error caused by the user's input: printed without a traceback."""


def build_parser() -> argparse.ArgumentParser:
    from raddiag import __version__

    parser = argparse.ArgumentParser(
        prog="raddiag",
        description="Case-level radiology diagnosis over 2D and 3D scans (RadDiag).",
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
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        rc = args.func(args)
    except UserError as exc:
        print(f"raddiag: error: {exc}", file=sys.stderr)
        return 2
    except (FileNotFoundError, ValueError) as exc:
        # Library errors carry the file and the reason; show them plainly.
        if args.verbose:
            raise
        print(f"raddiag: error: {exc}", file=sys.stderr)
        return 2
    return int(rc or 0)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())

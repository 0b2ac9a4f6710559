"""JSON and JSON Lines files written by people (manifests, label spaces, release files, mappings,
knowledge, case records): in JSON Lines blank lines and ``#`` comments are allowed; every error
names the file (and the line)."""
from __future__ import annotations

import codecs
import json
from pathlib import Path
from typing import Any, Iterator, Optional


def parse_json(text: str, where) -> Any:
    """The JSON value of ``text``; a ValueError naming ``where`` when it is not JSON, or nested
    deeper than the parser follows (``"[" * 100000`` raised RecursionError: an "unexpected" error
    naming no file, from every reader of a label space, release file, mapping or manifest)."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{where}: not valid JSON (line {exc.lineno}: {exc.msg})") from None
    except RecursionError:
        raise ValueError(f"{where}: not valid JSON here (nested too deeply for the parser)") from None


def read_json(path: str | Path) -> Any:
    """The JSON value of the file ``path`` (a leading UTF-8 BOM skipped), errors as :func:`parse_json`
    and for a file that is not UTF-8."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path}: not UTF-8 text (byte {exc.object[exc.start]:#04x} at {exc.start})") from None
    return parse_json(text, path)


def scan_jsonl(path: str | Path, what: str = "file") -> Iterator[tuple[str, Optional[dict], Optional[str]]]:
    """Yield ``(where, record, problem)`` per non-empty line, ``where`` being ``"PATH:LINE"``;
    ``problem`` (record None) says why a line is not a JSON object (bad UTF-8, bad JSON, ...),
    so that a caller can report every bad line at once."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: {what} does not exist")
    with path.open("rb") as f:
        for lineno, raw in enumerate(f, 1):
            where = f"{path}:{lineno}"
            if lineno == 1:
                raw = raw.removeprefix(codecs.BOM_UTF8)   # a BOM (Windows editors) is no part of the record
            try:
                line = raw.decode("utf-8").strip()
            except UnicodeDecodeError as exc:
                yield where, None, f"not valid UTF-8 (byte {raw[exc.start]:#04x} at column {exc.start + 1})"
                continue
            if not line or line.startswith("#"):
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as exc:
                yield where, None, f"not valid JSON ({exc.msg})"
                continue
            except RecursionError:
                yield where, None, "not valid JSON here (nested too deeply for the parser)"
                continue
            if not isinstance(rec, dict):
                yield where, None, f"expected a JSON object, got {type(rec).__name__}"
                continue
            yield where, rec, None


def iter_jsonl(path: str | Path, what: str = "file") -> Iterator[tuple[str, dict]]:
    """Yield ``(where, record)`` per non-empty line; the first bad line raises ValueError."""
    for where, rec, problem in scan_jsonl(path, what):
        if problem:
            raise ValueError(f"{where}: {problem}")
        yield where, rec

"""CSV files people open in a spreadsheet (``review.csv``, ``mapping.csv``, ``per_class.csv``,
``qc/checklist.csv``): written atomically, with text cells a spreadsheet cannot run, and read
back as written.

A cell that begins with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return is a formula to
Excel, LibreOffice and Google Sheets (``=HYPERLINK("http://x", "y")`` in a title from the web):
:func:`sheet_cell` writes it with a leading apostrophe (OWASP's "CSV injection" advice), which
the spreadsheet shows as text, and :func:`read_csv` takes that apostrophe off again. The rule is
one-to-one: a text that already begins with apostrophes before such a character gets one more,
so every text reads back as itself; a plain number (``-0.5``, ``+1e-3``) stays a number.
"""
from __future__ import annotations

import csv
import os
import re
import sys
from pathlib import Path
from typing import Iterable, Mapping, Sequence

_FORMULA = re.compile(r"'*[=+\-@\t\r]")
_ESCAPED = re.compile(r"'+[=+\-@\t\r]")
_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")

# a cell may be as long as the text it holds (a title of 200,000 characters): csv's default
# limit of 131,072 characters refused the review.csv the same program had written
csv.field_size_limit(min(sys.maxsize, 2**31 - 1))


def sheet_cell(value):
    """``value`` as a spreadsheet reads it back as text: a text that a spreadsheet would take
    for a formula gets a leading apostrophe; numbers and other texts are unchanged."""
    if isinstance(value, str) and _FORMULA.match(value) and not _NUMBER.fullmatch(value):
        return "'" + value
    return value


def read_cell(text: str) -> str:
    """The text :func:`sheet_cell` was given (its apostrophe taken off)."""
    return text[1:] if _ESCAPED.match(text) else text


def write_csv(path: str | Path, header: Sequence[str], rows: Iterable[Mapping | Sequence]) -> None:
    """Write ``rows`` (dicts keyed by ``header``, extra keys ignored, or sequences in its order)
    under ``header``, every cell through :func:`sheet_cell`; written beside and renamed into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow([sheet_cell(h) for h in header])
        for r in rows:
            cells = [r.get(h, "") for h in header] if isinstance(r, Mapping) else r
            w.writerow([sheet_cell(c) for c in cells])
    os.replace(tmp, path)


def read_csv(path: str | Path, required: Iterable[str] = ()) -> list[dict]:
    """The rows of a CSV file with a header, as dicts of stripped texts as they were written
    (:func:`read_cell`); a UTF-8 BOM (a spreadsheet's export) is skipped. Every error names the file."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: file does not exist")
    with path.open(newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        fields = [read_cell(h) for h in reader.fieldnames or []]
        missing = set(required) - set(fields)
        if missing:
            raise ValueError(f"{path}: missing column(s) {sorted(missing)}; found {fields}")
        reader.fieldnames = fields
        return [{k: read_cell((v or "").strip()) for k, v in row.items() if k is not None} for row in reader]

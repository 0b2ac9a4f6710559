"""The WORK folder: all curation state in plain JSON / JSONL / CSV files, plus one log per step.

```
WORK/
  state.json                 records folder and the settings of the last runs
  logs/<step>.log            what each step did (appended on every run)
  filter/titles.json         article title -> number of cases linking it
  filter/llm_cache.jsonl     every LLM answer, appended (fsync) as it arrives
  filter/decisions.json      title -> decision (disorder true / false / null = awaiting review)
  filter/review.csv          disagreements for a person (column is_disorder: yes / no)
  qc/checklist.csv, qc/report.json
  map/mapping.csv            disorder -> suggested and chosen ICD-10-CM category
  normals/records.jsonl, normals/images/, normals/report.txt
```
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
from pathlib import Path
from typing import Any, Iterable, Iterator

from raddiag.jsonl import read_json  # noqa: F401 - the curation steps read their JSON through here
from raddiag.staging import write_json  # noqa: F401 - and write it through here

log = logging.getLogger("raddiag.curation")


class Work:
    """Paths and small file helpers for one curation WORK folder."""

    def __init__(self, root: str | Path, create: bool = True):
        self.root = Path(root)
        if create:
            self.root.mkdir(parents=True, exist_ok=True)
        elif not self.root.is_dir():
            raise FileNotFoundError(f"{self.root}: curation work folder does not exist "
                                    "(run `raddiag curate filter RECORDS_DIR --work WORK` first)")

    def path(self, *parts: str) -> Path:
        p = self.root.joinpath(*parts)
        p.parent.mkdir(parents=True, exist_ok=True)
        return p

    # -- state ----------------------------------------------------------------------
    @property
    def state_file(self) -> Path:
        return self.root / "state.json"

    def state(self) -> dict:
        return read_json(self.state_file) if self.state_file.exists() else {}

    def update_state(self, **kv: Any) -> None:
        st = self.state()
        st.update(kv)
        write_json(self.state_file, st)

    def records_dir(self) -> Path:
        d = self.state().get("records_dir")
        if not d:
            raise FileNotFoundError(f"{self.state_file}: no records folder recorded; "
                                    "run `raddiag curate filter RECORDS_DIR --work WORK` first")
        return Path(d)

    def require(self, *parts: str, hint: str) -> Path:
        p = self.root.joinpath(*parts)
        if not p.exists():
            raise FileNotFoundError(f"{p}: missing; {hint}")
        return p

    # -- logging ----------------------------------------------------------------------
    @contextlib.contextmanager
    def step_log(self, step: str) -> Iterator[logging.Logger]:
        """Log of one step: ``WORK/logs/<step>.log`` (appended), also to the normal logging."""
        handler = logging.FileHandler(self.path("logs", f"{step}.log"), encoding="utf-8")
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        handler.setLevel(logging.DEBUG)
        log.addHandler(handler)
        old = log.level
        if log.level == logging.NOTSET or log.level > logging.INFO:
            log.setLevel(logging.INFO)
        log.info("== %s: start", step)
        try:
            yield log
            log.info("== %s: done", step)
        except BaseException as exc:
            log.error("== %s: stopped: %s", step, exc)
            raise
        finally:
            log.removeHandler(handler)
            handler.close()
            log.setLevel(old)


# -- file helpers ------------------------------------------------------------------------


def append_jsonl(path: str | Path, rows: Iterable[dict]) -> None:
    """Append rows and fsync, so that what was appended survives a crash."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
        f.flush()
        os.fsync(f.fileno())


def read_jsonl(path: str | Path) -> list[dict]:
    """Rows of a JSONL file; a torn last line (a crash mid-write) is ignored."""
    path = Path(path)
    if not path.exists():
        return []
    out = []
    lines = path.read_text(encoding="utf-8").splitlines()
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            if i == len(lines):
                log.warning("%s: ignoring a torn last line", path)
                continue
            raise ValueError(f"{path}:{i}: not valid JSON") from None
    return out


YES = {"yes", "y", "true", "1", "disorder", "x"}
NO = {"no", "n", "false", "0", "not", "not a disorder"}


def parse_yes_no(value: str, where: str) -> bool | None:
    """'yes' / 'no' (and common spellings) -> bool; blank -> None; anything else raises."""
    v = (value or "").strip().lower()
    if not v:
        return None
    if v in YES:
        return True
    if v in NO:
        return False
    raise ValueError(f"{where}: {value!r} is not yes / no (leave it blank if undecided)")

"""Article filtering with an OpenAI-compatible chat completions endpoint.

Two differently worded prompts (after the paper's self-consistency design, Fig. 6) ask,
for a batch of article titles, whether each one names a disorder. Every answer is
appended to an on-disk cache (JSONL, fsync) the moment it arrives, keyed by a hash of
prompt + model + title, so a crash or a failed endpoint loses nothing and a rerun asks
only what is missing. Any server that speaks ``POST {url}/v1/chat/completions``
works: OpenAI, vLLM, Ollama, llama.cpp server.

The API key, if needed, comes from the environment (``OPENAI_API_KEY``) and is never logged.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

from raddiag.curation.work import append_jsonl, read_jsonl

log = logging.getLogger("raddiag.curation")

# Two prompts with similar meaning, differently worded (paper Sec. 4.1, Fig. 6).
PROMPTS: dict[str, str] = {
    "a": (
        "You are a radiologist curating a dataset. For each numbered Radiopaedia article title "
        "below, decide whether it is the name of a disorder (a disease, injury, congenital anomaly, "
        "tumour or other pathological condition a patient can be diagnosed with). Titles that name "
        "anatomy, imaging signs, techniques, protocols, classifications or normal variants are not "
        "disorders.\nAnswer with a JSON list of \"yes\" or \"no\", one per title, in order, and nothing else."
    ),
    "b": (
        "Here is a numbered list of medical article titles. Which of them could be written as a "
        "diagnosis on a radiology report, i.e. refer to an abnormal condition of the body rather "
        "than to a body part, a sign, a method or a scoring system?\nReply only with a JSON list "
        "with one entry per title, in the same order: \"yes\" if it is a diagnosis, \"no\" otherwise."
    ),
}


class EndpointError(RuntimeError):
    """The chat endpoint failed after all retries; the message says what is saved."""


def cache_key(prompt_id: str, model: str, title: str) -> str:
    h = hashlib.sha256()
    for part in (PROMPTS[prompt_id], model, title):
        h.update(part.encode("utf-8"))
        h.update(b"\x00")
    return h.hexdigest()


MAX_REPLY = 64_000   # characters of a reply the parser reads: 20 titles' answers need a few hundred
MAX_DEPTH = 8        # nesting of a JSON reply: a list of answers, or of {"answer": ...} objects
MAX_BODY = 4 << 20   # bytes of an HTTP reply read from the endpoint


def _as_bool(v, depth: int = 0) -> Optional[bool]:
    if isinstance(v, bool):
        return v
    if isinstance(v, (int, float)) and v in (0, 1):
        return bool(v)
    if isinstance(v, str):
        s = v.strip().strip(".").lower()
        if s in ("yes", "y", "true", "1", "disorder"):
            return True
        if s in ("no", "n", "false", "0", "not a disorder"):
            return False
    if isinstance(v, dict) and depth < MAX_DEPTH:  # {"title": ..., "answer": "yes"}
        for k in ("answer", "disorder", "is_disorder", "value"):
            if k in v:
                return _as_bool(v[k], depth + 1)
    return None


def _json_depth(text: str) -> int:
    """The deepest nesting of ``[`` and ``{`` in ``text`` outside JSON strings (one linear pass)."""
    depth = deepest = 0
    in_str = escaped = False
    for c in text:
        if in_str:
            if escaped:
                escaped = False
            elif c == "\\":
                escaped = True
            elif c == '"':
                in_str = False
        elif c == '"':
            in_str = True
        elif c in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif c in "]}":
            depth -= 1
    return deepest


def _candidates(text: str) -> list[str]:
    """The reply, and its spans from the first ``[`` to the last ``]`` and from the first ``{``
    to the last ``}`` (prose around a JSON answer), found in linear time."""
    out = [text]
    for a, b in ("[]", "{}"):
        i, j = text.find(a), text.rfind(b)
        if 0 <= i < j:
            out.append(text[i:j + 1])
    return out


def _from_json(obj, n: int) -> Optional[list[bool]]:
    if isinstance(obj, dict):
        for k in ("answers", "answer", "results"):
            if isinstance(obj.get(k), list):
                obj = obj[k]
                break
        else:
            try:
                obj = [obj[str(i + 1)] if str(i + 1) in obj else obj[i + 1] for i in range(n)]
            except (KeyError, TypeError):
                return None
    if isinstance(obj, list) and len(obj) == n:
        vals = [_as_bool(v) for v in obj]
        if all(v is not None for v in vals):
            return vals  # type: ignore[return-value]
    return None


def parse_answers(content: str, n: int) -> Optional[list[bool]]:
    """Robustly read ``n`` yes/no answers from a model's reply; None when it cannot.

    Accepts a JSON list of yes/no/true/false/1/0 (also inside a ```json fence or surrounded
    by prose), a JSON object keyed by 1-based number, or ``n`` numbered lines ``1. yes``.
    A reply is model output, so bounded: over :data:`MAX_REPLY` characters or nested deeper than
    :data:`MAX_DEPTH` it is not parsed (None: the titles go to review), and every step is linear
    in its length (a 300 KB reply of ``[`` took minutes, 3,000 of them raised RecursionError).
    """
    if not isinstance(content, str) or len(content) > MAX_REPLY:
        return None
    text = content.strip()
    if text.startswith("```"):
        text = re.sub(r"\A```[a-zA-Z]*", "", text).lstrip()
    if text.endswith("```"):
        text = text[:-3].rstrip()
    for cand in _candidates(text):
        if _json_depth(cand) > MAX_DEPTH:
            continue
        try:
            got = _from_json(json.loads(cand), n)
        except ValueError:
            continue
        if got is not None:
            return got
    # numbered lines: "1. yes", "2) No - ..." (spaces, not newlines, around the number: linear)
    lines = re.findall(r"^[ \t]*(\d{1,6})[ \t]*[.):-][ \t]*(yes|no|true|false)\b", text, re.I | re.M)
    if len(lines) == n and [int(i) for i, _ in lines] == list(range(1, n + 1)):
        return [v.lower() in ("yes", "true") for _, v in lines]
    if n == 1:
        m = re.match(r"\W*(yes|no|true|false)\b", text, re.I)
        if m:
            return [m.group(1).lower() in ("yes", "true")]
    return None


@dataclass
class ChatClient:
    """Minimal OpenAI-compatible chat client: retries with exponential backoff on 5xx, 429,
    timeouts and connection errors; fails fast (clear message) on other 4xx."""

    url: str
    model: str
    timeout: float = 30.0
    retries: int = 4
    backoff: float = 1.0            # seconds, doubled after each failed try
    temperature: float = 0.0
    max_tokens: int = 1024

    def __post_init__(self) -> None:
        import httpx

        base = self.url.rstrip("/")
        for suffix in ("/chat/completions", "/v1"):
            if base.endswith(suffix):
                base = base[: -len(suffix)]
        self.endpoint = f"{base}/v1/chat/completions"
        headers = {"Content-Type": "application/json"}
        key = os.environ.get("OPENAI_API_KEY")
        if key:
            headers["Authorization"] = f"Bearer {key}"
        self._client = httpx.Client(timeout=self.timeout, headers=headers)
        self.calls = 0

    def close(self) -> None:
        self._client.close()

    def _post(self, payload: dict) -> tuple[int, Optional[bytes]]:
        """(HTTP status, body) of one request; the body is None when it is over :data:`MAX_BODY`
        bytes (read no further: a reply is another program's output, not trusted to be small)."""
        with self._client.stream("POST", self.endpoint, json=payload) as r:
            parts, size = [], 0
            for chunk in r.iter_bytes():
                size += len(chunk)
                if size > MAX_BODY:
                    return r.status_code, None
                parts.append(chunk)
            return r.status_code, b"".join(parts)

    def chat(self, system: str, user: str) -> str:
        import httpx

        payload = {"model": self.model, "temperature": self.temperature, "max_tokens": self.max_tokens,
                   "messages": [{"role": "system", "content": system}, {"role": "user", "content": user}]}
        last = ""
        for attempt in range(self.retries + 1):
            if attempt:
                delay = self.backoff * 2 ** (attempt - 1)
                log.warning("%s: %s; retry %d/%d in %.1f s", self.endpoint, last, attempt, self.retries, delay)
                time.sleep(delay)
            self.calls += 1
            try:
                status, body = self._post(payload)
            except httpx.TimeoutException:
                last = f"no answer within {self.timeout:g} s (timeout)"
                continue
            except httpx.TransportError as exc:
                last = f"connection failed ({type(exc).__name__}: {exc})"
                continue
            if status >= 500 or status == 429:
                last = f"HTTP {status} {_shown(body, 200)}"
                continue
            if status >= 400:
                raise EndpointError(f"{self.endpoint}: HTTP {status} {_shown(body, 300)} "
                                    f"(model {self.model!r}; check the URL, the model name and OPENAI_API_KEY)")
            if body is None:
                log.warning("%s: a reply over %d bytes: not read (its titles go to review)", self.endpoint, MAX_BODY)
                return ""
            try:
                return _reply_content(body)
            except (ValueError, KeyError, IndexError, TypeError, RecursionError):
                last = f"reply is not a chat completion: {_shown(body, 200)}"
                continue
        raise EndpointError(f"{self.endpoint}: failed after {self.retries + 1} tries (last: {last})")


def _reply_content(body: bytes) -> str:
    """The message text of a chat completion's JSON body (RecursionError: nested too deep)."""
    return json.loads(body)["choices"][0]["message"]["content"] or ""


def _shown(body: Optional[bytes], n: int) -> str:
    return f"(a body over {MAX_BODY} bytes)" if body is None else repr(body[:n].decode("utf-8", "replace"))


def _user_message(titles: Sequence[str]) -> str:
    return "\n".join(f"{i + 1}. {t}" for i, t in enumerate(titles))


class AnswerCache:
    """Append-only JSONL of answers: {key, prompt, model, title, answer}."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.answers: dict[str, Optional[bool]] = {r["key"]: r["answer"] for r in read_jsonl(self.path)}

    def get(self, prompt_id: str, model: str, title: str):
        return self.answers.get(cache_key(prompt_id, model, title), "missing")

    def add(self, prompt_id: str, model: str, pairs: Sequence[tuple[str, Optional[bool]]]) -> None:
        rows = [{"key": cache_key(prompt_id, model, t), "prompt": prompt_id, "model": model,
                 "title": t, "answer": a} for t, a in pairs]
        append_jsonl(self.path, rows)
        for r in rows:
            self.answers[r["key"]] = r["answer"]


def ask_titles(
    titles: Sequence[str],
    client: ChatClient,
    cache: AnswerCache,
    batch: int = 20,
    prompts: Sequence[str] = ("a", "b"),
    progress: Optional[Callable[[int], None]] = None,
) -> dict[str, dict[str, Optional[bool]]]:
    """Answers of each prompt for each title: {title: {"a": bool|None, "b": bool|None}}.

    Cached answers are not asked again. A batch whose reply cannot be parsed is split in
    halves and asked again; a single title whose reply still cannot be parsed gets None
    (it goes to review). On an endpoint failure the answers so far are already on disk
    and :class:`EndpointError` says how many.
    """
    total = len(titles) * len(prompts)
    for pid in prompts:
        todo = [t for t in titles if cache.get(pid, client.model, t) == "missing"]
        log.info("prompt %s: %d of %d titles cached, %d to ask", pid, len(titles) - len(todo), len(titles), len(todo))
        queue = [todo[i:i + batch] for i in range(0, len(todo), batch)]
        while queue:
            chunk = queue.pop(0)
            try:
                content = client.chat(PROMPTS[pid], _user_message(chunk))
            except EndpointError as exc:
                done = sum(cache.get(p, client.model, t) != "missing" for p in prompts for t in titles)
                raise EndpointError(
                    f"{exc}. {done} of {total} answers are saved in {cache.path}; "
                    "rerun the same command to continue from there") from None
            parsed = parse_answers(content, len(chunk))
            if parsed is None:
                if len(chunk) > 1:
                    half = len(chunk) // 2
                    log.warning("prompt %s: could not parse the reply for %d titles; asking in halves",
                                pid, len(chunk))
                    queue[:0] = [chunk[:half], chunk[half:]]
                    continue
                log.warning("prompt %s: unparseable reply for %r: %r -> review", pid, chunk[0], content[:200])
                parsed = [None]
            cache.add(pid, client.model, list(zip(chunk, parsed)))
            if progress:
                progress(len(chunk))
    return {t: {pid: cache.get(pid, client.model, t) for pid in prompts} for t in titles}

"""Curation step 1 against a real loopback HTTP server speaking the chat completions API:
decisions, review, retries on server errors and timeouts, nothing lost when the endpoint fails."""
from __future__ import annotations

import csv
import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from raddiag.curation.filter import accepted_disorders, apply_review, run_filter
from raddiag.curation.llm import EndpointError, parse_answers
from raddiag.curation.work import read_json, read_jsonl

DISORDERS = {"Pneumothorax", "Hip dislocation", "Segond fracture", "Meningioma", "Appendicitis"}
DISAGREE = "Os trigonum"          # prompt a says yes, prompt b says no -> review
TITLES = sorted(DISORDERS | {DISAGREE, "Chest radiograph", "Hounsfield unit", "Air crescent sign"})


class FakeLLM:
    """Deterministic chat-completions server on 127.0.0.1. ``fail_first``: 500 for the first k
    calls; ``down``: 500 while set; ``sleep_first``: seconds to sleep on the first call."""

    def __init__(self):
        self.calls = 0
        self.fail_first = 0
        self.down = False
        self.down_after = None
        self.sleep_first = 0.0
        self.headers = []
        self.content = None       # a fixed reply (hostile models)
        self.body = None          # a fixed HTTP body (hostile servers)
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):  # quiet
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                fake.calls += 1
                n = fake.calls
                fake.headers.append(dict(self.headers))
                if self.path != "/v1/chat/completions":
                    return self._send(404, {"error": "not found"})
                if n == 1 and fake.sleep_first:
                    time.sleep(fake.sleep_first)
                if n <= fake.fail_first or fake.down or (fake.down_after is not None and n > fake.down_after):
                    return self._send(500, {"error": "internal error"})
                system, user = body["messages"][0]["content"], body["messages"][1]["content"]
                titles = [re.sub(r"^\d+\.\s*", "", l) for l in user.splitlines() if l.strip()]
                prompt_a = system.startswith("You are a radiologist")
                ans = [t in DISORDERS or (t == DISAGREE and prompt_a) for t in titles]
                if fake.body is not None:
                    return self._send(200, None, fake.body)
                if fake.content is not None:
                    return self._send(200, {"choices": [{"message": {"role": "assistant", "content": fake.content}}]})
                if prompt_a:   # JSON list in a code fence
                    content = "```json\n" + json.dumps(["yes" if a else "no" for a in ans]) + "\n```"
                else:          # numbered lines: the parser must cope with both
                    content = "\n".join(f"{i + 1}. {'Yes' if a else 'No'}" for i, a in enumerate(ans))
                self._send(200, {"choices": [{"message": {"role": "assistant", "content": content}}]})

            def _send(self, code, obj, data=None):
                data = json.dumps(obj).encode() if data is None else data
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                try:
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):   # the client timed out
                    pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def llm():
    s = FakeLLM()
    yield s
    s.close()


@pytest.fixture
def records(tmp_path) -> Path:
    """Case records linking the titles (no images needed for the filter)."""
    d = tmp_path / "records"
    d.mkdir()
    for i, t in enumerate(TITLES):
        rec = {"id": f"c{i}", "articles": [t], "studies": [{"modality": "CT", "images": [{"path": f"img{i}.npy"}]}]}
        (d / f"c{i}.json").write_text(json.dumps(rec))
    return d


def _fast(**kw):
    return {"model": "test-model", "batch": 3, "timeout": 5.0, "retries": 3, "backoff": 0.01, **kw}


def test_parse_answers_formats():
    assert parse_answers('["yes", "no", "Yes"]', 3) == [True, False, True]
    assert parse_answers('Sure:\n```json\n[true, false]\n```', 2) == [True, False]
    assert parse_answers('{"1": "no", "2": "yes"}', 2) == [False, True]
    assert parse_answers('{"answers": ["no"]}', 1) == [False]
    assert parse_answers("1. Yes - a disease\n2) no", 2) == [True, False]
    assert parse_answers("Yes.", 1) == [True]
    assert parse_answers('["yes"]', 2) is None            # wrong count
    assert parse_answers("I cannot tell", 2) is None


def test_two_prompts_review_and_cache(llm, records, tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-secret-test-key")
    work = tmp_path / "work"
    s = run_filter(records, work, llm_url=llm.url, **_fast())
    n_titles = len(TITLES)
    assert llm.calls == 2 * -(-n_titles // 3)            # two prompts, batches of 3
    assert llm.headers[0]["Authorization"] == "Bearer sk-secret-test-key"
    assert s == {"titles": n_titles, "disorders": len(DISORDERS), "not_disorders": 3, "pending": 1, "by_person": 0}
    dec = read_json(work / "filter" / "decisions.json")
    assert dec["Pneumothorax"]["how"] == "both-yes" and dec["Chest radiograph"]["how"] == "both-no"
    assert dec[DISAGREE] == {"disorder": None, "how": "review", "answers": {"a": True, "b": False}, "cases": 1}
    for log in (work / "logs").iterdir():                 # the key is never logged
        assert "sk-secret" not in log.read_text()

    with pytest.raises(ValueError, match="await review"):
        accepted_disorders(work)
    # the person decides in the review file
    path = work / "filter" / "review.csv"
    rows = list(csv.DictReader(path.open()))
    assert [r["title"] for r in rows] == [DISAGREE] and rows[0]["prompt_a"] == "yes" and rows[0]["prompt_b"] == "no"
    rows[0]["is_disorder"] = "no"
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    r = apply_review(work)
    assert r["pending"] == 0 and r["by_person"] == 1
    assert set(accepted_disorders(work)) == DISORDERS

    # a rerun asks nothing (cache) and keeps the person's decision
    before = llm.calls
    s2 = run_filter(records, work, llm_url=llm.url, **_fast())
    assert llm.calls == before
    assert s2["pending"] == 0 and read_json(work / "filter" / "decisions.json")[DISAGREE]["how"] == "person"
    # another model is another cache key: it is asked again
    run_filter(records, work, llm_url=llm.url, **_fast(model="other-model"))
    assert llm.calls > before


def test_server_errors_are_retried(llm, records, tmp_path):
    llm.fail_first = 2
    s = run_filter(records, tmp_path / "w", llm_url=llm.url, **_fast())
    assert llm.calls == 2 + 2 * -(-len(TITLES) // 3)
    assert s["disorders"] == len(DISORDERS)


def test_timeout_is_retried(llm, records, tmp_path):
    llm.sleep_first = 1.5
    t = time.time()
    s = run_filter(records, tmp_path / "w", llm_url=llm.url, **_fast(timeout=0.3))
    assert s["disorders"] == len(DISORDERS) and s["pending"] == 1
    assert llm.calls == 1 + 2 * -(-len(TITLES) // 3)
    assert time.time() - t < 30
    assert "timeout" in (tmp_path / "w" / "logs" / "filter.log").read_text()


def test_failed_endpoint_loses_nothing(llm, records, tmp_path):
    work = tmp_path / "w"
    clean = tmp_path / "clean"
    run_filter(records, clean, llm_url=llm.url, **_fast())
    n_batches = 2 * -(-len(TITLES) // 3)

    llm.calls, llm.down_after = 0, 2                     # two good answers, then the server breaks
    with pytest.raises(EndpointError) as ei:
        run_filter(records, work, llm_url=llm.url, **_fast(retries=2))
    msg = str(ei.value)
    assert llm.url in msg and "HTTP 500" in msg and "6 of" in msg and "rerun" in msg
    cached = read_jsonl(work / "filter" / "llm_cache.jsonl")
    assert len(cached) == 6                               # the 2 answered batches of 3 are on disk
    assert "stopped" in (work / "logs" / "filter.log").read_text()

    llm.calls, llm.down_after = 0, None                  # the server is back: only the rest is asked
    run_filter(records, work, llm_url=llm.url, **_fast())
    assert llm.calls == n_batches - 2
    assert read_json(work / "filter" / "decisions.json") == read_json(clean / "filter" / "decisions.json")


def test_cli_reports_unreachable_endpoint(records, tmp_path, capsys):
    from raddiag.cli import main

    import socket

    with socket.socket() as s:                            # a free loopback port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    rc = main(["curate", "filter", str(records), "--work", str(tmp_path / "w"), "--llm-url",
               f"http://127.0.0.1:{port}", "--model", "m", "--retries", "1", "--backoff", "0.01"])
    err = capsys.readouterr().err
    assert rc == 2
    assert f"127.0.0.1:{port}/v1/chat/completions" in err and "connection failed" in err and "0 of" in err
    assert "Traceback" not in err


def test_filter_needs_one_mode(records, tmp_path):
    with pytest.raises(ValueError, match="choose one filter"):
        run_filter(records, tmp_path / "w")
    with pytest.raises(ValueError, match="--model"):
        run_filter(records, tmp_path / "w", llm_url="http://127.0.0.1:1")


# -- hostile replies (issue 27.10) ---------------------------------------------------------
@pytest.mark.timeout(60)      # a quadratic parse of these took minutes
@pytest.mark.parametrize("reply", ["[" * 3000, "{" * 3000, '{"answers": ' * 3000, "[" * 60_000,
                                   " " * 60_000 + "x```", "\n" * 60_000 + "x", "1" * 60_000 + ". yes",
                                   "[" * 300_000, "yes " * 75_000])
def test_a_hostile_reply_is_not_parsed(reply):
    assert parse_answers(reply, 1) is None


def test_a_bounded_reply_still_parses_with_prose_around_it():
    assert parse_answers("Here: " + "[" * 5 + "]" * 5 + ' ["yes", "no"] thanks', 2) is None   # two spans
    assert parse_answers('Answer: ["yes", {"answer": "no"}]. Done.', 2) == [True, False]
    assert parse_answers("x" * 1000 + "\n1. yes\n2. no", 2) == [True, False]


@pytest.mark.timeout(120)
@pytest.mark.parametrize("reply", ["[" * 3000, "[" * 300_000])
def test_a_hostile_model_sends_the_titles_to_review_on_every_run(llm, records, tmp_path, reply):
    """``"[" * 3000`` crashed curate filter with RecursionError, again on every rerun."""
    llm.content = reply
    for _ in range(2):
        s = run_filter(records, tmp_path / "w", llm_url=llm.url, **_fast())
        assert s["pending"] == len(TITLES) and s["disorders"] == 0


def test_a_hostile_server_body_is_bounded(llm, records, tmp_path, monkeypatch):
    from raddiag.curation import llm as llm_mod

    llm.body = b"[" * 100_000                  # no chat completion, and too deep for json
    with pytest.raises(EndpointError, match="not a chat completion"):
        run_filter(records, tmp_path / "w1", llm_url=llm.url, **_fast(retries=1))
    monkeypatch.setattr(llm_mod, "MAX_BODY", 2_000)
    llm.body = None
    llm.content = "x" * 5_000                  # over the body limit: not read, the titles go to review
    s = run_filter(records, tmp_path / "w2", llm_url=llm.url, **_fast())
    assert s["pending"] == len(TITLES)

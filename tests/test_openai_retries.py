"""The OpenAI-compatible backend against a small misbehaving server on 127.0.0.1 (real HTTP):
429 and 503 (with Retry-After) are retried with backoff, so is a timeout and a dropped
connection; other errors and exhausted retries end with one clear LLMError; the adaptive limit
keeps one or two requests at a one-slot server and climbs on a server with many slots; the
knowledge pipeline stops asking at the first error and a re-run asks only what is missing."""
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from engine.knowledge import KnowledgeSettings, build_knowledge
from engine.llm import LLMError, LLMSpec, Prompt, SamplingSettings, open_llm
from tests.test_openai_backend import _answer


class Server:
    """Per model name a behaviour; counts requests per (model, question)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.seen: dict[tuple, int] = {}
        self.slots = {"one-slot": threading.Semaphore(1), "many-slots": threading.Semaphore(64)}
        self.busy = 0
        self.busy_peak = 0
        self.fail_after = None  # "broken-later": answer this many, then 500 for everything

    def count(self, model, question) -> int:
        with self.lock:
            n = self.seen.get((model, question), 0) + 1
            self.seen[(model, question)] = n
            return n

    def total(self, model) -> int:
        return sum(v for (m, _), v in self.seen.items() if m == model)


STATE = Server()


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *a):
        pass

    def reply(self, code, payload, headers=()):
        msg = json.dumps(payload).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(msg)))
        for k, v in headers:
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(msg)

    def answer(self, question, seed):
        text = _answer(question, seed)
        self.reply(200, {"choices": [{"message": {"role": "assistant", "content": text}, "index": 0}],
                         "usage": {"prompt_tokens": 10, "completion_tokens": 20}})

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        model, question = body["model"], body["messages"][-1]["content"]
        n = STATE.count(model, question)
        if model == "429-twice" and n <= 2:
            return self.reply(429, {"error": {"message": "rate limited"}})
        if model == "503-retry-after" and n == 1:
            return self.reply(503, {"error": {"message": "loading model"}}, [("Retry-After", "0.2")])
        if model == "always-503":
            return self.reply(503, {"error": {"message": "overloaded"}})
        if model == "bad-request":
            return self.reply(400, {"error": {"message": "no such model"}})
        if model == "hang-once" and n == 1:
            time.sleep(1.0)
        if model == "drop-once" and n == 1:
            self.close_connection = True
            self.connection.shutdown(2)  # hang up without a reply
            return
        if model == "broken-later" and STATE.total(model) > STATE.fail_after:
            return self.reply(500, {"error": {"message": "internal error"}})
        if model in STATE.slots:
            with STATE.slots[model]:
                with STATE.lock:
                    STATE.busy += 1
                    STATE.busy_peak = max(STATE.busy_peak, STATE.busy)
                time.sleep(0.15)
                with STATE.lock:
                    STATE.busy -= 1
        self.answer(question, body.get("seed", 0))


class QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        pass  # clients that time out hang up before the answer: expected


@pytest.fixture(scope="module")
def server():
    srv = QuietServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()
    srv.server_close()


def _llm(server, model, **kw):
    kw.setdefault("retry_backoff_s", 0.01)
    return open_llm(LLMSpec(kind="openai", base_url=server, model=model, **kw))


Q = Prompt.ask('Please summarize 4 visual attributes of "cat".')


def test_429_is_retried_with_backoff(server):
    llm = _llm(server, "429-twice")
    assert llm.generate(Q, SamplingSettings()).startswith("1. fur")
    assert STATE.seen[("429-twice", Q.messages[0][1])] == 3 and llm.retried == 2
    assert llm.limit.changes[0] == ("overloaded", 1)  # 2 halved: the server said it is overloaded


def test_503_waits_for_retry_after(server):
    llm = _llm(server, "503-retry-after")
    t0 = time.perf_counter()
    assert llm.generate(Q, SamplingSettings()).startswith("1. fur")
    assert time.perf_counter() - t0 >= 0.2 and llm.retried == 1  # waited the server's Retry-After


def test_timeout_and_dropped_connection_are_retried(server):
    llm = _llm(server, "hang-once", timeout_s=0.3)
    assert llm.generate(Q, SamplingSettings()).startswith("1. fur") and llm.retried == 1
    llm = _llm(server, "drop-once")
    assert llm.generate(Q, SamplingSettings()).startswith("1. fur") and llm.retried == 1


def test_exhausted_retries_and_other_errors_are_one_clear_error(server):
    llm = _llm(server, "always-503", retries=2)
    with pytest.raises(LLMError, match=r"HTTP 503.*overloaded.*Gave up after 3 attempts"):
        llm.generate(Q, SamplingSettings())
    assert STATE.seen[("always-503", Q.messages[0][1])] == 3
    llm = _llm(server, "bad-request")
    with pytest.raises(LLMError, match=r"HTTP 400.*no such model"):
        llm.generate(Q, SamplingSettings())
    assert llm.retried == 0
    with pytest.raises(LLMError, match="max_concurrency"):
        _llm(server, "m", max_concurrency=0)


def test_limit_stays_low_on_a_one_slot_server_and_climbs_on_a_wide_one(server):
    # max_retries=0: the fake server's repeated answers are gate-rejected duplicates, and re-asking
    # them would change the question count this test reasons about
    settings = KnowledgeSettings(steps=("attributes", "coarse_sentences"), attributes_per_category=4,
                                 max_retries=0)
    cats = [f"thing{i}" for i in range(6)]  # 6 + 24 questions
    one = _llm(server, "one-slot", max_concurrency=8)
    kn = build_knowledge(cats, one, settings)
    assert not kn.cancelled and len(kn.answers) == 30 and one.usage.calls == 30
    # Requests that queue double the latency: the limit never climbs far above the one slot.
    assert one.limit.peak <= 3 and one.limit.limit <= 2 and ("queued", 1) in one.limit.changes
    STATE.busy_peak = 0
    wide = _llm(server, "many-slots", max_concurrency=8)
    kn = build_knowledge(cats, wide, settings)
    assert not kn.cancelled and wide.usage.calls == 30
    assert wide.limit.limit >= 4 and wide.limit.peak >= 4 and STATE.busy_peak >= 2


def test_pipeline_stops_at_the_first_error_and_resumes_asking_only_what_is_missing(server):
    settings = KnowledgeSettings(steps=("attributes",))
    cats = [f"item{i}" for i in range(12)]
    cache = {}

    class Cache:
        def get(self, key):
            return cache.get(key)

        def put(self, key, question, raw, items, meta):
            cache[key] = raw

    STATE.fail_after = 5
    llm = _llm(server, "broken-later", max_concurrency=4)
    with pytest.raises(LLMError, match="HTTP 500"):
        build_knowledge(cats, llm, settings, cache=Cache())
    answered = len(cache)
    # Questions not yet started when the error came were not sent at all.
    assert answered == 5 and STATE.total("broken-later") < 5 + 4 + 1
    STATE.fail_after = 10 ** 6
    again = _llm(server, "broken-later", max_concurrency=4)
    kn = build_knowledge(cats, again, settings, cache=Cache())
    assert not kn.cancelled and again.usage.calls == 12 - answered
    assert sum(a.cached for a in kn.answers) == answered and len(cache) == 12

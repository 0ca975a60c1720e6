"""The OpenAI-compatible backend against a small /v1/chat/completions server on 127.0.0.1
(http.server in a thread): plain and streamed answers, headers, an error status, a timeout, and
the whole question pipeline through it (several questions in flight at once)."""
import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from engine.knowledge import KnowledgeSettings, Regenerate, build_knowledge
from engine.llm import LLMError, LLMSpec, Prompt, SamplingSettings, open_llm


def _answer(question: str, seed: int) -> str:
    names = re.findall(r'"([^"]+)"', question)
    if "other names" in question:
        return "kitty, moggy" if names and names[0] == "cat" else "none"
    if "super-categories" in question:
        return "animal: cat, dog\nvehicle: car"
    if "scene" in question and "Categorize" in question:
        return "home: cat, dog\nstreet: car, dog"
    if "sentences" in question:
        cats = " and a ".join(names[:2]) if "scene" in question else names[0]
        angle = "close up" if "describing the" in question else "from afar"
        return (f"Sure! Here are the sentences:\n1. A photo of a {cats} {angle} (seed {seed}).\n"
                f"2. The {cats} stands near a wall.\n3. A {names[0]} seen from the")
    if "delete" in question:
        return "1. fur\n2. shiny"
    return "1. fur\n2. shiny\n3. four legs\n4. wheels"


class Handler(BaseHTTPRequestHandler):
    calls = []

    def log_message(self, *a):
        pass

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        Handler.calls.append({"path": self.path, "auth": self.headers.get("Authorization"), "body": body})
        if self.path != "/v1/chat/completions":
            self.send_error(404)
            return
        if body["model"] == "broken":
            msg = b'{"error": {"message": "model overloaded"}}'
            self.send_response(503)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(msg)))
            self.end_headers()
            self.wfile.write(msg)
            return
        if body["model"] == "slow":
            time.sleep(1.5)
        text = _answer(body["messages"][-1]["content"], body.get("seed", 0))
        if body.get("stream"):
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.end_headers()
            for piece in re.findall(r"\S+\s*", text):
                chunk = {"choices": [{"delta": {"content": piece}, "index": 0}]}
                self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
            self.wfile.write(b"data: [DONE]\n\n")
            return
        msg = json.dumps({"choices": [{"message": {"role": "assistant", "content": text}, "index": 0}],
                          "usage": {"prompt_tokens": 10, "completion_tokens": 5}}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(msg)))
        self.end_headers()
        self.wfile.write(msg)


class QuietServer(ThreadingHTTPServer):
    def handle_error(self, request, client_address):
        pass  # the client of the timeout test hangs up before the slow answer: expected


@pytest.fixture(scope="module")
def server():
    srv = QuietServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()
    srv.server_close()


def test_plain_and_streamed_answers(server):
    llm = open_llm(LLMSpec(kind="openai", base_url=server, model="m", api_key="sk-test"))
    assert llm.is_chat and llm.id.startswith("openai:")
    p = Prompt.ask('Please summarize 4 visual attributes of "cat".')
    text = llm.generate(p, SamplingSettings(seed=7))
    assert text.startswith("1. fur")
    last = Handler.calls[-1]
    assert last["auth"] == "Bearer sk-test" and last["body"]["seed"] == 7 and last["body"]["model"] == "m"
    assert last["body"]["messages"] == [{"role": "user", "content": p.messages[0][1]}]
    pieces = []
    streamed = llm.generate(p, SamplingSettings(seed=7), on_text=pieces.append)
    assert streamed == text and len(pieces) > 1 and "".join(pieces) == text
    assert llm.usage.calls == 2


def test_error_status_is_a_clear_error(server):
    llm = open_llm(LLMSpec(kind="openai", base_url=server + "/v1", model="broken", retry_backoff_s=0.01))
    with pytest.raises(LLMError, match=r"HTTP 503.*model overloaded.*Gave up after 5 attempts"):
        llm.generate(Prompt.ask("hi"), SamplingSettings())


def test_timeout_is_a_clear_error(server):
    llm = open_llm(LLMSpec(kind="openai", base_url=server, model="slow", timeout_s=0.3, retries=1,
                           retry_backoff_s=0.01))
    with pytest.raises(LLMError, match=r"did not answer within 0.3 s"):
        llm.generate(Prompt.ask("hi"), SamplingSettings())


def test_unreachable_server_and_missing_settings():
    with pytest.raises(LLMError, match="Cannot reach"):
        open_llm(LLMSpec(kind="openai", base_url="http://127.0.0.1:9", model="m", timeout_s=2)).generate(
            Prompt.ask("hi"), SamplingSettings())
    with pytest.raises(LLMError, match="base_url"):
        open_llm(LLMSpec(kind="openai", model="m"))


def test_pipeline_through_http_with_concurrency_and_regenerate(server):
    llm = open_llm(LLMSpec(kind="openai", base_url=server, model="m"))
    cats = ["cat", "dog", "car"]
    cache = {}

    class Cache:
        def get(self, key):
            return cache.get(key)

        def put(self, key, question, raw, items, meta):
            cache[key] = raw

    progress = []
    kn = build_knowledge(cats, llm, KnowledgeSettings(), cache=Cache(),
                         on_progress=lambda d, t, q: progress.append((d, t)))
    assert not kn.cancelled and kn.sentences
    assert kn.synonyms["cat"] == ["kitty", "moggy"] and kn.super_of == {"cat": "animal", "dog": "animal", "car": "vehicle"}
    assert kn.scene_groups == [["cat", "dog"], ["dog", "car"]]
    assert kn.common_attributes[:3] == ["fur", "shiny", "four legs"]
    assert {s.source for s in kn.sentences} == {"coarse", "fine", "scene"}
    scene = [s for s in kn.sentences if s.source == "scene"]
    assert all(len(s.labels) == 2 for s in scene)
    assert all("seen from the" not in s.text for s in kn.sentences)  # cut-off last line dropped
    done = [d for d, _ in progress]  # one total fixed before the first question; a finished run reaches it
    assert len({t for _, t in progress}) == 1 and done == sorted(done) and done[-1] == progress[-1][1]
    assert len(progress) >= len(kn.answers)
    assert all(a.raw and a.key in cache for a in kn.answers)
    # A second run asks nothing; regenerating the "dog" attribute question asks it (and only the
    # questions whose text depends on it: none here, the answer text is the same).
    n = llm.usage.calls
    again = build_knowledge(cats, llm, KnowledgeSettings(), cache=Cache())
    assert llm.usage.calls == n and again.texts() == kn.texts()
    build_knowledge(cats, llm, KnowledgeSettings(), cache=Cache(),
                    regenerate=Regenerate(steps=["attributes"], categories=["dog"]))
    assert llm.usage.calls == n + 1
    assert Handler.calls[-1]["body"]["seed"] != 0
    # Regenerating a category re-asks only the questions about it (not the whole-vocabulary ones).
    n = llm.usage.calls
    regen = build_knowledge(cats, llm, KnowledgeSettings(), cache=Cache(), regenerate=Regenerate(categories=["car"]))
    about_car = [a for a in regen.answers if "car" in a.categories and a.step not in ("super", "common", "scenes")]
    assert llm.usage.calls - n == len(about_car) > 0
    assert all(not a.cached for a in about_car) and all(a.cached for a in regen.answers if a not in about_car)
    n = llm.usage.calls
    build_knowledge(cats, llm, KnowledgeSettings(), cache=Cache(), regenerate=Regenerate(steps=["common"]))
    assert llm.usage.calls - n == 1


def test_sentence_questions_carry_their_worked_example_as_an_earlier_exchange(server):
    """What the server receives: the worked example (EXAMPLE_FIELDS) as a user question and its
    assistant answer before the real question; none for the other steps, none when it is emptied."""
    from dataclasses import replace

    from engine.knowledge_settings import DEFAULT_TEMPLATES, EXAMPLE_FIELDS, example_question

    llm = open_llm(LLMSpec(kind="openai", base_url=server, model="m"))
    steps = ("attributes", "coarse_sentences", "scenes", "scene_sentences")
    Handler.calls.clear()
    build_knowledge(["cat", "dog"], llm, KnowledgeSettings(steps=steps, n_coarse_sentences=2, max_retries=0))
    sent = [c["body"]["messages"] for c in Handler.calls]
    coarse = [m for m in sent if "from the angle of" in m[-1]["content"]]
    scene = [m for m in sent if "scene containing" in m[-1]["content"]]
    others = [m for m in sent if m not in coarse and m not in scene]
    assert coarse and scene and others
    t = DEFAULT_TEMPLATES["coarse_sentences"]
    for m in coarse:
        assert [x["role"] for x in m] == ["user", "assistant", "user"]
        assert m[0]["content"] == example_question("coarse_sentences", t) and m[1]["content"] == t.example
        assert "school bus" in m[0]["content"] and "Please help me generate 3 different" in m[0]["content"]
    assert all("a scene containing dog and frisbee" in m[0]["content"] and m[1]["role"] == "assistant" for m in scene)
    assert all(len(m) == 1 for m in others)
    assert EXAMPLE_FIELDS["scene_sentences"] == {"category1": "dog", "category2": "frisbee"}
    # emptied: the question goes alone
    Handler.calls.clear()
    none = {k: replace(v, example="") for k, v in DEFAULT_TEMPLATES.items()}
    build_knowledge(["cat"], llm, KnowledgeSettings(templates=none, steps=steps[:2], n_coarse_sentences=2,
                                                    max_retries=0))
    assert Handler.calls and all(len(c["body"]["messages"]) == 1 for c in Handler.calls)


def test_a_worked_example_only_where_a_step_can_have_one():
    from dataclasses import replace

    from engine.knowledge_settings import DEFAULT_TEMPLATES

    bad = dict(DEFAULT_TEMPLATES, attributes=replace(DEFAULT_TEMPLATES["attributes"], example="1. fur"))
    with pytest.raises(ValueError, match="attributes question cannot have a worked example"):
        KnowledgeSettings(templates=bad).validate()

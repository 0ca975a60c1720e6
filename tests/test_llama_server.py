"""Knowledge through a REAL OpenAI-compatible server: llama-cpp-python's own
`python -m llama_cpp.server` serving the bundled SmolLM2 GGUF on 127.0.0.1. That server answers
one request at a time (one slot): the backend is allowed 8 in flight and must find that out.
Asserts structure only (never what the sampled model writes)."""
import os
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from engine.knowledge import JsonlAnswerCache, KnowledgeSettings, build_knowledge
from engine.llm import LLMError, LLMSpec, SamplingSettings, bundled_path, open_llm

pytest.importorskip("llama_cpp.server", reason="needs llama-cpp-python[server] (requirements-dev.txt)")
pytestmark = pytest.mark.llm

CATS = ["cat", "bicycle", "chair"]
# One synonyms and one attributes question per category: 6 questions whatever the model writes.
SETTINGS = KnowledgeSettings(steps=("synonyms", "attributes"), n_attributes=3,
                             sampling=SamplingSettings(max_tokens=32))
N_QUESTIONS = 6


class LlamaServer:
    """`python -m llama_cpp.server` as a child process on a fixed loopback port."""

    def __init__(self, log_path):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self.log_path = log_path
        self.proc = None

    def start(self):
        cmd = [sys.executable, "-m", "llama_cpp.server", "--model", str(bundled_path("smollm2")),
               "--model_alias", "smollm2", "--host", "127.0.0.1", "--port", str(self.port),
               "--n_threads", "1", "--n_threads_batch", "1", "--n_ctx", "2048"]
        env = dict(os.environ, OMP_NUM_THREADS="1")
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"llama_cpp.server exited: {open(self.log_path).read()[-2000:]}")
            try:
                with urllib.request.urlopen(self.url + "/models", timeout=2) as r:
                    if r.status == 200:
                        return self
            except OSError:
                time.sleep(0.3)
        raise RuntimeError("llama_cpp.server did not come up within 180 s")

    def kill(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        if self.proc:
            self.log.close()


@pytest.fixture
def server(tmp_path):
    srv = LlamaServer(tmp_path / "server.log").start()
    yield srv
    srv.kill()


def _spec(srv, **kw):
    return LLMSpec(kind="openai", base_url=srv.url, model="smollm2", max_concurrency=8, **kw)


def test_a_run_over_a_one_slot_server_completes(server, tmp_path):
    llm = open_llm(_spec(server))
    cache = JsonlAnswerCache(tmp_path / "answers.jsonl")
    kn = build_knowledge(CATS, llm, SETTINGS, cache=cache)
    assert not kn.cancelled and len(kn.answers) == N_QUESTIONS and llm.usage.calls == N_QUESTIONS
    assert len(cache) == N_QUESTIONS and all(a.raw for a in kn.answers)
    # One slot: the adaptive limit never kept more than a few requests at the server.
    assert llm.limit.peak <= 3 and llm.limit.limit <= 3
    again = open_llm(_spec(server))
    build_knowledge(CATS, again, SETTINGS, cache=JsonlAnswerCache(tmp_path / "answers.jsonl"))
    assert again.usage.calls == 0


def test_a_run_over_a_killed_and_restarted_server_resumes_asking_only_what_is_missing(server, tmp_path):
    import threading

    path = tmp_path / "answers.jsonl"
    cache = JsonlAnswerCache(path)
    llm = open_llm(_spec(server, retries=1, retry_backoff_s=0.05))
    failure = []

    def run():
        try:
            build_knowledge(CATS, llm, SETTINGS, cache=cache)
        except LLMError as e:
            failure.append(str(e))

    t = threading.Thread(target=run)
    t.start()
    while len(cache) < 2 and t.is_alive():  # mid-run: some answers in, most not
        time.sleep(0.05)
    server.kill()  # mid-run: SIGKILL, no goodbye
    t.join(120)
    assert not t.is_alive() and failure and "Is the server running?" in failure[0]
    answered = len(JsonlAnswerCache(path))
    assert 2 <= answered < N_QUESTIONS
    server.start()  # same port, fresh process
    again = open_llm(_spec(server))
    kn = build_knowledge(CATS, again, SETTINGS, cache=JsonlAnswerCache(path))
    assert not kn.cancelled and len(kn.answers) == N_QUESTIONS
    assert again.usage.calls == N_QUESTIONS - answered  # only what was missing
    assert sum(a.cached for a in kn.answers) == answered

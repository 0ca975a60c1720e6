"""Models from the Hub (engine.hub_models) through huggingface_hub's real download path, against a
local server on 127.0.0.1 that answers the way the Hub does (HF_ENDPOINT points at it):

  HEAD/GET /{repo}/resolve/{revision}/{file}  302 to the file's storage URL on a second origin
        (the "CDN", another port), with X-Repo-Commit, X-Linked-Etag (the sha256) and X-Linked-Size;
        404 + X-Error-Code EntryNotFound / RepoNotFound for what it does not have
  GET /blobs/{sha256} (second origin)         the bytes, honouring Range (206 + Content-Range)

Cases: fresh download, cached (no GET again), a connection dropped mid-file that huggingface_hub
resumes with a Range request, offline (HF_HUB_OFFLINE, and no server) with and without a cached
file, a bad repo or file name; and a real GGUF (the bundled SmolLM2) opened through LLMSpec(kind="hub").
"""
import hashlib
import struct
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from engine.hub_models import CURATED, HubModelError, hub_model_path, resolve
from engine.llm import LLMError, LLMSpec, Prompt, SamplingSettings, open_llm

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def tiny_gguf(pad: int = 65000) -> bytes:
    """A GGUF v3 file with no tensors and a few metadata strings (about `pad` bytes)."""
    def s(text: str) -> bytes:
        b = text.encode()
        return struct.pack("<Q", len(b)) + b
    kv = [("general.name", "tiny test model"), ("general.description", "x" * pad)]
    out = b"GGUF" + struct.pack("<IQQ", 3, 0, len(kv))
    for k, v in kv:
        out += s(k) + struct.pack("<I", 8) + s(v)
    return out


class FakeHub:
    """Two loopback servers: the Hub API origin and a storage origin, with a request log."""

    def __init__(self, files: dict[tuple[str, str], bytes]):
        self.files = {k: (v, hashlib.sha256(v).hexdigest()) for k, v in files.items()}
        self.blobs = {sha: data for data, sha in self.files.values()}
        self.log: list[tuple[str, str, str]] = []   # (method, path, Range header)
        self.drop_next_get_at: int | None = None     # close the connection after this many bytes
        hub, self.cdn = self, None

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def do_HEAD(self):
                self.answer(body=False)

            def do_GET(self):
                self.answer(body=True)

            def answer(self, body: bool):
                hub.log.append((self.command, self.path, self.headers.get("Range", "")))
                parts = self.path.split("/")
                if self.server is hub.api and len(parts) >= 6 and parts[3] == "resolve":
                    return self.resolve("/".join(parts[1:3]), "/".join(parts[5:]))
                if self.server is hub.storage and parts[1] == "blobs" and parts[2] in hub.blobs:
                    return self.blob(hub.blobs[parts[2]], body)
                self.send_response(404)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def resolve(self, repo, filename):
                if not any(r == repo for r, _ in hub.files):
                    self.send_response(401)
                    self.send_header("X-Error-Code", "RepoNotFound")
                elif (repo, filename) not in hub.files:
                    self.send_response(404)
                    self.send_header("X-Error-Code", "EntryNotFound")
                    self.send_header("X-Repo-Commit", COMMIT)
                else:
                    data, sha = hub.files[(repo, filename)]
                    self.send_response(302)
                    self.send_header("Location", f"{hub.storage_url}/blobs/{sha}")
                    self.send_header("X-Repo-Commit", COMMIT)
                    self.send_header("X-Linked-Etag", f'"{sha}"')
                    self.send_header("X-Linked-Size", str(len(data)))
                    self.send_header("ETag", '"git-sha1-of-the-pointer"')
                self.send_header("Content-Length", "0")
                self.end_headers()

            def blob(self, data, body):
                start = 0
                rng = self.headers.get("Range")
                if rng and rng.startswith("bytes="):
                    start = int(rng[6:].split("-")[0])
                chunk = data[start:]
                self.send_response(206 if start else 200)
                if start:
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                self.send_header("Content-Length", str(len(chunk)))
                self.send_header("ETag", f'"{hashlib.sha256(data).hexdigest()}"')
                self.end_headers()
                if not body:
                    return
                cut = hub.drop_next_get_at
                if cut is not None:
                    hub.drop_next_get_at = None
                    self.wfile.write(chunk[:cut])
                    self.wfile.flush()
                    self.close_connection = True
                    self.connection.shutdown(2)  # the connection drops mid-file
                    return
                self.wfile.write(chunk)

        self.api = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.storage = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.api.server_address[1]}"
        self.storage_url = f"http://127.0.0.1:{self.storage.server_address[1]}"
        for srv in (self.api, self.storage):
            threading.Thread(target=srv.serve_forever, daemon=True).start()

    def gets(self):
        return [entry for entry in self.log if entry[0] == "GET" and "/blobs/" in entry[1]]

    def close(self):
        for srv in (self.api, self.storage):
            srv.shutdown()
            srv.server_close()


REPO, FILE = "tester/tiny-GGUF", "tiny-q4_k_m.gguf"


def online(monkeypatch, hub: FakeHub, cache: Path) -> None:
    """Point huggingface_hub at `hub` with an empty cache; the test session is offline otherwise."""
    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("IFS_OFFLINE", raising=False)
    # huggingface_hub reads HF_HUB_OFFLINE once, at import: in a full test session something
    # (open_clip) imported it while tests/conftest.py had the session offline
    import huggingface_hub.constants as hf_constants
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", False)


@pytest.fixture
def hub(monkeypatch, tmp_path):
    data = tiny_gguf()
    h = FakeHub({(REPO, FILE): data})
    online(monkeypatch, h, tmp_path / "hub-cache")
    h.data = data
    yield h
    h.close()


def test_fresh_download_then_cached(hub, tmp_path):
    path = hub_model_path(resolve(REPO, FILE))
    assert path.read_bytes() == hub.data and str(path).startswith(str(tmp_path / "hub-cache"))
    assert path.read_bytes()[:4] == b"GGUF"
    assert len(hub.gets()) == 1 and hub.gets()[0][2] == ""
    again = hub_model_path(resolve(REPO, FILE))
    assert again == path and len(hub.gets()) == 1, "a cached file is not downloaded again"


def test_dropped_connection_resumes_with_a_range_request(monkeypatch, tmp_path):
    # huggingface_hub writes in 10 MiB chunks: a file of 14 MB cut after 12 MB has one chunk on
    # disk when the connection drops, and the retry asks only for the rest.
    data = tiny_gguf(14_000_000)
    h = FakeHub({(REPO, FILE): data})
    online(monkeypatch, h, tmp_path / "hub-cache")
    try:
        h.drop_next_get_at = 12_000_000
        path = hub_model_path(resolve(REPO, FILE))
        assert path.read_bytes() == data
        gets = h.gets()
        assert len(gets) == 2 and gets[0][2] == "", gets
        start = int(gets[1][2].removeprefix("bytes=").rstrip("-"))
        assert 0 < start <= 12_000_000, gets
    finally:
        h.close()


def test_offline_without_and_with_a_cached_file(hub, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(HubModelError, match="not in the Hub cache"):
        hub_model_path(resolve(REPO, FILE))
    assert hub.log == [], "offline asks the server nothing"
    monkeypatch.delenv("HF_HUB_OFFLINE")
    path = hub_model_path(resolve(REPO, FILE))
    monkeypatch.setenv("IFS_OFFLINE", "1")
    n = len(hub.log)
    assert hub_model_path(resolve(REPO, FILE)) == path and len(hub.log) == n


def closed_port_url() -> str:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


def test_no_connection(hub, monkeypatch):
    path = hub_model_path(resolve(REPO, FILE))
    monkeypatch.setenv("HF_ENDPOINT", closed_port_url())  # nothing answers: a machine without a network
    assert hub_model_path(resolve(REPO, FILE)) == path, "a cached file opens without the server"
    with pytest.raises(HubModelError, match="not in the Hub cache and cannot be downloaded"):
        hub_model_path(resolve(REPO, "other.gguf"))


def test_bad_names_give_one_sentence(hub):
    with pytest.raises(HubModelError, match="no file"):
        hub_model_path(resolve(REPO, "missing.gguf"))
    with pytest.raises(HubModelError, match="no repository"):
        hub_model_path(resolve("nobody/nothing", FILE))
    with pytest.raises(HubModelError, match="not a Hub repository"):
        resolve("no slash", FILE)
    with pytest.raises(HubModelError, match="not a .gguf"):
        resolve(REPO, "weights.bin")
    with pytest.raises(HubModelError, match="Unknown Hub model"):
        resolve("gpt-9")


def test_curated_list_has_a_small_and_a_mid_model_and_chatglm():
    sizes = [m.size_gb for m in CURATED.values()]
    assert any(s <= 1.5 for s in sizes) and any(1.5 < s <= 2.5 for s in sizes)
    assert any("glm" in m.repo.lower() for m in CURATED.values())
    assert all(m.filename.lower().endswith(".gguf") and "q4_k_m" in m.filename.lower() for m in CURATED.values())


def test_a_real_gguf_through_llmspec_hub(monkeypatch, tmp_path):
    from engine.bundled_models import bundled_model_path

    data = Path(bundled_model_path("smollm2")).read_bytes()
    h = FakeHub({("HuggingFaceTB/SmolLM2-135M-Instruct-GGUF", "smollm2-135m-instruct-q8_0.gguf"): data})
    online(monkeypatch, h, tmp_path / "hub-cache")
    try:
        spec = LLMSpec(kind="hub", repo="HuggingFaceTB/SmolLM2-135M-Instruct-GGUF",
                       filename="smollm2-135m-instruct-q8_0.gguf", n_threads=1)
        llm = open_llm(spec, cached=False)
        assert llm.is_chat and llm.generate(Prompt.ask("Name a color."), SamplingSettings(max_tokens=4)).strip()
        llm.close()
        with pytest.raises(LLMError, match="no file"):
            open_llm(LLMSpec(kind="hub", repo="HuggingFaceTB/SmolLM2-135M-Instruct-GGUF", filename="nope.gguf"))
    finally:
        h.close()


def test_command_line_hub_option_names_a_curated_model_or_a_file():
    from engine.llm import spec_from_options

    assert spec_from_options(hub="qwen2.5-3b") == LLMSpec(kind="hub", name="qwen2.5-3b")
    s = spec_from_options(hub="Qwen/Qwen2.5-7B-Instruct-GGUF/qwen2.5-7b-instruct-q4_k_m.gguf", n_threads=1)
    assert (s.kind, s.repo, s.filename, s.n_threads) == ("hub", "Qwen/Qwen2.5-7B-Instruct-GGUF",
                                                         "qwen2.5-7b-instruct-q4_k_m.gguf", 1)
    assert spec_from_options().name == "qwen1.5b" and spec_from_options(llm="smollm2").name == "smollm2"

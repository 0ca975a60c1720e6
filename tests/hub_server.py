"""A local stand-in for the Hugging Face Hub on 127.0.0.1, for huggingface_hub's real download path
(HF_ENDPOINT points at it); shared by tests/test_hub_models.py and the studio's Hub picker tests
(the ``hub`` fixture lives in tests/conftest.py):

  HEAD/GET /{repo}/resolve/{revision}/{file}  302 to the file's storage URL on a second origin
        (the "CDN", another port), with X-Repo-Commit, X-Linked-Etag (the sha256) and X-Linked-Size;
        404 + X-Error-Code EntryNotFound / RepoNotFound for what it does not have
  GET /blobs/{sha256} (second origin)         the bytes, honouring Range (206 + Content-Range)
"""
import hashlib
import socket
import struct
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

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


def closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"

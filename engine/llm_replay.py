"""Replayed LLM answers: a backend that answers every question with what a real model once wrote.

Why: a sampled answer from llama.cpp depends on the machine (the CPU build of its kernels), so a
test that runs the real pipeline on the real model passes on one machine and fails on the next.
`ReplayLLM` answers from a recording of REAL answers instead, so the pipeline around the model
(prompts, parsing, caching, storage, the studio) runs for real and its result is the same on every
machine.

The recording is one JSON file (`format` "ifs-llm-replay/1"):
  model    {"spec": {"kind", "name"}, "id", "is_chat"}: the real model that answered
  answers  [{"key", "question", "prompt", "sampling", "answer"}] in the order they were asked
An answer is found by `replay_key(prompt, settings)`: sha256 over the exact prompt
(`Prompt.text()`: chat messages, primer, answer start, stop sequences) and every sampling setting
(seed included), like the answer cache's key (engine.knowledge.answer_key). A question that is not
in the recording raises `LLMError` naming it; nothing is made up.

Recording: `RecordingLLM` wraps the real model named in the recording (a new file: `LLMSpec.name`,
a bundled model), answers recorded questions from the file and asks the real model the rest,
adding each new answer to the file at once (re-read, merged and replaced atomically under a file
lock, so the studio's server process and the test process can record into one file).
`open_llm(LLMSpec(kind="replay", ...))` returns a `RecordingLLM` instead of a `ReplayLLM` when the
environment has `IFS_LLM_REPLAY_RECORD=1`; `tests/fixtures/llm_replay/record.py` runs the tests that
replay answers that way.

A replay backend's `id` is "replay:" + the recorded model's id, so its answers never mix with the
real model's in an answer cache; `is_chat` is the recorded model's (base and chat models see
different prompts).
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable

from engine.llm import LLMError, LLMSpec, Prompt, SamplingSettings, Usage

FORMAT = "ifs-llm-replay/1"
RECORD_ENV = "IFS_LLM_REPLAY_RECORD"


def replay_key(prompt: Prompt, settings: SamplingSettings) -> str:
    """The key of one recorded answer: the exact prompt and every sampling setting."""
    blob = json.dumps({"prompt": prompt.text(), "sampling": settings.to_dict()}, sort_keys=True,
                      ensure_ascii=False)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def question_of(prompt: Prompt, is_chat: bool) -> str:
    """What the model was asked, as a person reads it: the last chat message, or the primer."""
    if is_chat or not prompt.primer:
        return prompt.messages[-1][1] if prompt.messages else ""
    return prompt.primer + prompt.answer_start


def _prompt_from(d: dict) -> Prompt:
    return Prompt(messages=tuple(tuple(m) for m in d["messages"]), primer=d.get("primer", ""),
                  answer_start=d.get("answer_start", ""), stop=tuple(d.get("stop", ())))


def _settings_from(d: dict) -> SamplingSettings:
    return SamplingSettings(**d)


def _stream_pieces(text: str) -> list[str]:
    """The answer cut into word-sized pieces (each with the spaces before it), as a model streams."""
    return re.findall(r"\s*\S+|\s+", text)


class Recording:
    """The recording file: its model header and its answers by key."""

    def __init__(self, path: str | Path, model: dict | None = None, entries: list[dict] | None = None):
        self.path = Path(path)
        self.model = model or {}
        self.entries: list[dict] = list(entries or [])
        self.by_key = {e["key"]: e for e in self.entries}

    @classmethod
    def load(cls, path: str | Path, missing_ok: bool = False) -> "Recording":
        path = Path(path)
        if not path.is_file():
            if missing_ok:
                return cls(path)
            raise LLMError(f"LLM recording not found: {path}. Give the path of a recording "
                           f"(format {FORMAT}), or record one with {RECORD_ENV}=1.")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError) as e:
            raise LLMError(f"{path} is not a readable LLM recording: {e}.") from e
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise LLMError(f"{path} is not an LLM recording of format {FORMAT}.")
        entries = []
        for i, e in enumerate(data.get("answers", [])):
            try:
                prompt, settings = _prompt_from(e["prompt"]), _settings_from(e["sampling"])
                answer = str(e["answer"])
            except (KeyError, TypeError) as exc:
                raise LLMError(f"Answer {i + 1} of {path} is damaged ({exc!r} missing or wrong).") from exc
            # the key is recomputed, so an edited prompt can never answer for the old one
            entries.append(dict(e, key=replay_key(prompt, settings), answer=answer))
        return cls(path, data.get("model") or {}, entries)

    def find(self, prompt: Prompt, settings: SamplingSettings) -> str | None:
        e = self.by_key.get(replay_key(prompt, settings))
        return None if e is None else e["answer"]

    def add(self, prompt: Prompt, settings: SamplingSettings, answer: str, is_chat: bool) -> None:
        key = replay_key(prompt, settings)
        entry = {"key": key, "question": question_of(prompt, is_chat), "prompt": json.loads(prompt.text()),
                 "sampling": settings.to_dict(), "answer": answer}
        if key not in self.by_key:
            self.entries.append(entry)
        else:
            self.entries[self.entries.index(self.by_key[key])] = entry
        self.by_key[key] = entry

    def to_dict(self) -> dict:
        return {"format": FORMAT, "model": self.model, "answers": self.entries}


class ReplayLLM:
    """Answers from a recording of real answers; a question it does not hold raises LLMError."""

    max_concurrency = 1

    def __init__(self, path: str | Path, pace_s: float = 0.0):
        """pace_s: seconds to wait before each answer (a test that needs an answer to take time,
        e.g. to kill a process mid-run)."""
        self.recording = Recording.load(path)
        model = self.recording.model
        if "id" not in model or "is_chat" not in model:
            raise LLMError(f"{path} does not say which model answered (model.id, model.is_chat).")
        self.path = Path(path)
        self.id = f"replay:{model['id']}"
        self.is_chat = bool(model["is_chat"])
        self.pace_s = pace_s
        self.usage = Usage()
        self._lock = threading.Lock()

    def generate(self, prompt: Prompt, settings: SamplingSettings,
                 on_text: Callable[[str], None] | None = None) -> str:
        t0 = time.perf_counter()
        text = self.recording.find(prompt, settings)
        if text is None:
            q = " ".join(question_of(prompt, self.is_chat).split())
            raise LLMError(f"No recorded answer in {self.path.name} for the question {q[:300]!r} "
                           f"(seed {settings.seed}, max_tokens {settings.max_tokens}); record it "
                           f"with {RECORD_ENV}=1.")
        if self.pace_s:
            time.sleep(self.pace_s)
        for piece in _stream_pieces(text):
            if on_text:
                on_text(piece)
        with self._lock:
            self.usage.add(0, len(_stream_pieces(text)), time.perf_counter() - t0)
        return text


class RecordingLLM:
    """The real model behind a recording: recorded questions are replayed, new ones asked and
    added to the file at once."""

    max_concurrency = 1

    def __init__(self, path: str | Path, spec: LLMSpec):
        from engine.llm import open_llm

        self.path = Path(path)
        found = Recording.load(self.path, missing_ok=True)
        real_spec = found.model.get("spec") or {"kind": "bundled", "name": spec.name}
        if real_spec.get("kind") not in ("bundled", "gguf"):
            raise LLMError(f"{self.path} was recorded from {real_spec}; only a bundled or GGUF model "
                           "can record (an endpoint's answers are not reproducible here).")
        self.real = open_llm(LLMSpec(kind=real_spec["kind"], name=real_spec.get("name", spec.name),
                                     path=real_spec.get("path"), n_threads=spec.n_threads))
        self.model = {"spec": real_spec, "id": self.real.id, "is_chat": self.real.is_chat}
        if found.model and found.model.get("id") != self.real.id:
            raise LLMError(f"{self.path} holds answers of {found.model.get('id')}, not of {self.real.id}; "
                           "record into a new file.")
        self.id = f"replay:{self.real.id}"
        self.is_chat = self.real.is_chat
        self.usage = Usage()

    def generate(self, prompt: Prompt, settings: SamplingSettings,
                 on_text: Callable[[str], None] | None = None) -> str:
        t0 = time.perf_counter()
        text = Recording.load(self.path, missing_ok=True).find(prompt, settings)
        if text is not None:
            for piece in _stream_pieces(text):
                if on_text:
                    on_text(piece)
        else:
            text = self.real.generate(prompt, settings, on_text=on_text)
            self._save(prompt, settings, text)
        self.usage.add(0, len(_stream_pieces(text)), time.perf_counter() - t0)
        return text

    def _save(self, prompt: Prompt, settings: SamplingSettings, text: str) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tag = hashlib.sha256(str(self.path.resolve()).encode()).hexdigest()[:16]
        with open(Path(tempfile.gettempdir()) / f"ifs-llm-replay-{tag}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            rec = Recording.load(self.path, missing_ok=True)
            rec.model = self.model
            rec.add(prompt, settings, text, self.is_chat)
            tmp = self.path.with_name(self.path.name + f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps(rec.to_dict(), indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
            os.replace(tmp, self.path)


def open_replay(spec: LLMSpec):
    """The backend of `LLMSpec(kind="replay", path=recording, name=bundled model to record from)`."""
    if not spec.path:
        raise LLMError("kind='replay' needs path= the location of an LLM recording (a .json file).")
    path = Path(spec.path).expanduser()
    if os.environ.get(RECORD_ENV, "").strip().lower() in ("1", "true", "yes", "on"):
        return RecordingLLM(path, spec)
    return ReplayLLM(path)

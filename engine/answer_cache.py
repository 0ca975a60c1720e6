"""Where knowledge answers live between runs (METHOD.md section 1: "every answer is stored as soon
as it arrives, keyed by (model, question text, sampling settings)").

- `AnswerCache`: the protocol (get/put by key); storage.Store has a project-scoped one.
- `JsonlAnswerCache`: JSON lines, appended and fsync'ed one by one (presets, command line).
- `MemoryAnswerCache`: nothing persists (the default of build_knowledge).
- `answer_key`: sha256 over (model id, the exact prompt the model sees, sampling settings).
"""
from __future__ import annotations

import hashlib
import json
import os
import threading
from pathlib import Path
from typing import Protocol

from engine.llm import SamplingSettings


class AnswerCache(Protocol):
    """Where answers live. put() with an existing key replaces that entry."""

    def get(self, key: str) -> str | None: ...

    def put(self, key: str, question: str, raw: str, items: list, meta: dict) -> None: ...


class JsonlAnswerCache:
    """Answers as JSON lines, appended, flushed and fsync'ed one by one: a kill loses at most the
    answer in flight. On load the last line per key wins; a torn last line (killed mid-write) is
    skipped."""

    def __init__(self, path: str | Path, fsync: bool = True):
        self.path = Path(path)
        self.fsync = fsync
        self._lock = threading.Lock()
        self._rows: dict[str, dict] = {}
        if self.path.exists():
            with self.path.open("r", encoding="utf-8", errors="replace") as f:
                for line in f:
                    try:
                        row = json.loads(line)
                        self._rows[row["key"]] = row
                    except (ValueError, KeyError, TypeError):
                        continue
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def get(self, key: str) -> str | None:
        row = self._rows.get(key)
        return None if row is None else row["raw"]

    def put(self, key: str, question: str, raw: str, items: list, meta: dict) -> None:
        row = {"key": key, "question": question, "raw": raw, "items": items, "meta": meta}
        line = json.dumps(row, ensure_ascii=False) + "\n"
        with self._lock:
            with self.path.open("a", encoding="utf-8") as f:
                if f.tell() > 0 and not self._ends_with_newline():
                    f.write("\n")
                f.write(line)
                f.flush()
                if self.fsync:
                    os.fsync(f.fileno())
            self._rows[key] = row

    def _ends_with_newline(self) -> bool:
        with self.path.open("rb") as f:
            f.seek(-1, os.SEEK_END)
            return f.read(1) == b"\n"

    def __len__(self) -> int:
        return len(self._rows)

    def rows(self) -> list[dict]:
        return list(self._rows.values())


def answer_key(model_id: str, prompt_text: str, sampling: SamplingSettings) -> str:
    """The cache key: sha256 over (model id, the exact prompt the model sees, sampling settings)."""
    blob = json.dumps({"model": model_id, "prompt": prompt_text, "sampling": sampling.to_dict()},
                      sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


class MemoryAnswerCache:
    """Answers in a dict: nothing persists."""

    def __init__(self):
        self.rows: dict[str, str] = {}

    def get(self, key):
        return self.rows.get(key)

    def put(self, key, question, raw, items, meta):
        self.rows[key] = raw

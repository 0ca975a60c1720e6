"""GGUF models from the Hugging Face Hub, for a connected machine or a Space.

A model is a (repository, file) pair: one of `CURATED` by its short name, or any repository and
file the user names. The file is fetched once by huggingface_hub (`hf_hub_download`: its own
cache under `HF_HOME`/`HF_HUB_CACHE`, its own progress bar, `HF_ENDPOINT` for a mirror) and then
opened from the cache; a later call only asks the Hub whether the file changed (one HEAD request).
A connection that drops mid-file is resumed by huggingface_hub with a Range request from the
bytes already received (up to 5 times in one call); huggingface_hub 2.x deletes the partial file
when the call itself fails, so a killed process downloads the file again from the start.
Offline (`HF_HUB_OFFLINE=1`, `IFS_OFFLINE=1`, or no connection) a cached file still opens; a file
that is not cached raises `HubModelError` with one sentence saying so.

The curated list (instruct models at Q4_K_M; the sizes are the files'):

| name         | repository                        | file                               | size    |
| qwen2.5-1.5b | Qwen/Qwen2.5-1.5B-Instruct-GGUF   | qwen2.5-1.5b-instruct-q4_k_m.gguf  | 1.1 GB  |
| llama3.2-1b  | bartowski/Llama-3.2-1B-Instruct-GGUF | Llama-3.2-1B-Instruct-Q4_K_M.gguf | 0.8 GB |
| gemma2-2b    | bartowski/gemma-2-2b-it-GGUF      | gemma-2-2b-it-Q4_K_M.gguf          | 1.7 GB  |
| qwen2.5-3b   | Qwen/Qwen2.5-3B-Instruct-GGUF     | qwen2.5-3b-instruct-q4_k_m.gguf    | 2.1 GB  |
| llama3.2-3b  | bartowski/Llama-3.2-3B-Instruct-GGUF | Llama-3.2-3B-Instruct-Q4_K_M.gguf | 2.0 GB |
| glm4-9b      | bartowski/glm-4-9b-chat-GGUF      | glm-4-9b-chat-Q4_K_M.gguf          | 6.3 GB  |

glm4-9b is ChatGLM's successor (GLM-4-9B-Chat, the paper's model family); it needs ~8 GB of memory.
"""
from __future__ import annotations

import os
import re
import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from engine.errors import EngineError


class HubModelError(EngineError, RuntimeError):
    """A Hub model could not be had: the message says why and what to do."""


class DownloadCancelled(HubModelError):
    """The person cancelled a download (``should_stop``); huggingface_hub removed the partial file."""


@dataclass(frozen=True)
class HubModel:
    name: str
    repo: str
    filename: str
    size_gb: float
    note: str = ""


CURATED: dict[str, HubModel] = {m.name: m for m in (
    HubModel("qwen2.5-1.5b", "Qwen/Qwen2.5-1.5B-Instruct-GGUF", "qwen2.5-1.5b-instruct-q4_k_m.gguf", 1.1,
             "1-2B: Qwen2.5 1.5B instruct"),
    HubModel("llama3.2-1b", "bartowski/Llama-3.2-1B-Instruct-GGUF", "Llama-3.2-1B-Instruct-Q4_K_M.gguf", 0.8,
             "1-2B: Llama 3.2 1B instruct"),
    HubModel("gemma2-2b", "bartowski/gemma-2-2b-it-GGUF", "gemma-2-2b-it-Q4_K_M.gguf", 1.7,
             "2B: Gemma 2 instruct"),
    HubModel("qwen2.5-3b", "Qwen/Qwen2.5-3B-Instruct-GGUF", "qwen2.5-3b-instruct-q4_k_m.gguf", 2.1,
             "3-4B: Qwen2.5 3B instruct"),
    HubModel("llama3.2-3b", "bartowski/Llama-3.2-3B-Instruct-GGUF", "Llama-3.2-3B-Instruct-Q4_K_M.gguf", 2.0,
             "3-4B: Llama 3.2 3B instruct"),
    HubModel("glm4-9b", "bartowski/glm-4-9b-chat-GGUF", "glm-4-9b-chat-Q4_K_M.gguf", 6.3,
             "ChatGLM family (GLM-4 9B chat), ~8 GB of memory"),
)}

_REPO = re.compile(r"^[A-Za-z0-9][\w.\-]*/[\w.\-]+$")


def _offline() -> bool:
    return any(os.environ.get(k, "").lower() in ("1", "true", "yes", "on") for k in ("HF_HUB_OFFLINE", "IFS_OFFLINE"))


def _endpoint_reachable(timeout_s: float = 3.0) -> bool:
    """Whether a TCP connection to the Hub endpoint opens within `timeout_s`: asked first, so that
    a machine without a network gets the cached file or the clear error at once, not after
    huggingface_hub's retries (about 25 s)."""
    url = urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    port = url.port or (80 if url.scheme == "http" else 443)
    try:
        with socket.create_connection((url.hostname or "huggingface.co", port), timeout=timeout_s):
            return True
    except OSError:
        return False


def resolve(name_or_repo: str, filename: str | None = None) -> HubModel:
    """A curated model by name, or any `repo` + `filename` (checked for shape only)."""
    key = (name_or_repo or "").strip()
    if filename is None:
        if key in CURATED:
            return CURATED[key]
        raise HubModelError(f"Unknown Hub model {key!r}: choose one of {', '.join(CURATED)}, "
                            f"or give a repository and a .gguf file in it.")
    if not _REPO.match(key):
        raise HubModelError(f"{key!r} is not a Hub repository name (owner/name).")
    fname = filename.strip()
    if not fname.lower().endswith(".gguf") or ".." in fname or fname.startswith("/"):
        raise HubModelError(f"{fname!r} is not a .gguf file name inside the repository.")
    return HubModel(fname.rsplit("/", 1)[-1], key, fname, 0.0)


def parse_choice(text: str) -> HubModel:
    """A curated name ("qwen2.5-3b") or "OWNER/REPO/FILE.gguf" (the file may sit in a folder)."""
    parts = (text or "").strip().split("/", 2)
    return resolve("/".join(parts[:2]), parts[2]) if len(parts) == 3 else resolve(text)


def is_cached(model: HubModel, revision: str | None = None) -> bool:
    """Whether `model`'s file is in the Hub cache (asks no server)."""
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(model.repo, model.filename, revision=revision,
                                   cache_dir=os.environ.get("HF_HUB_CACHE") or None)
    return isinstance(found, str)


def _byte_counter(on_bytes: Callable[[int, int | None], None], should_stop: Callable[[], bool] | None = None):
    """A progress-bar class for huggingface_hub's `tqdm_class` that draws nothing and reports
    `on_bytes(bytes so far, file size)` when it opens and after every chunk (plain HTTP and Xet
    downloads alike: `update_transfer` makes a Xet download use this one bar). When
    `should_stop()` turns true the next chunk raises DownloadCancelled, which ends the download."""
    from huggingface_hub.utils import tqdm as hub_tqdm

    class ByteCounter(hub_tqdm):
        def __init__(self, *args, **kwargs):
            kwargs["disable"] = True
            super().__init__(*args, **kwargs)
            self.done = int(kwargs.get("initial") or 0)
            on_bytes(self.done, self.total)

        def update(self, n=1):
            self.done += int(n or 0)
            on_bytes(self.done, self.total)
            if should_stop is not None and should_stop():
                raise DownloadCancelled("Download cancelled; the partial file was removed.")

        def update_transfer(self, n=1):  # network bytes of a Xet download: the file bytes count
            pass

        def set_transfer_postfix_str(self, *args, **kwargs):
            pass

    return ByteCounter


def hub_model_path(model: HubModel, progress: bool = True, revision: str | None = None,
                   on_bytes: Callable[[int, int | None], None] | None = None,
                   should_stop: Callable[[], bool] | None = None) -> Path:
    """The local path of `model`'s file, downloaded once into the Hub cache (module docstring).

    progress: show huggingface_hub's progress bar while downloading; on_bytes(done, total): called
    instead of the bar as bytes arrive (total: the file's size, None when the server gives none);
    should_stop(): polled after every chunk, True cancels (DownloadCancelled). Raises HubModelError."""
    try:
        from huggingface_hub import hf_hub_download
        from huggingface_hub.errors import (EntryNotFoundError, LocalEntryNotFoundError,
                                            RepositoryNotFoundError, RevisionNotFoundError)
        from huggingface_hub.utils import disable_progress_bars, enable_progress_bars
    except ImportError as e:
        raise HubModelError("Models from the Hub need the package huggingface_hub "
                            "(pip install huggingface_hub).") from e
    where = f"{model.repo}/{model.filename}"
    offline = _offline()
    if progress and on_bytes is None:
        enable_progress_bars()
    else:
        disable_progress_bars()
    try:
        # HF_ENDPOINT and HF_HUB_CACHE are read now, not when huggingface_hub was imported.
        path = hf_hub_download(model.repo, model.filename, revision=revision,
                               local_files_only=offline or not _endpoint_reachable(),
                               endpoint=os.environ.get("HF_ENDPOINT") or None,
                               cache_dir=os.environ.get("HF_HUB_CACHE") or None,
                               tqdm_class=_byte_counter(on_bytes or (lambda d, t: None), should_stop)
                               if (on_bytes or should_stop) else None)
    except LocalEntryNotFoundError as e:
        if offline:
            raise HubModelError(f"{where} is not in the Hub cache and this machine is offline (HF_HUB_OFFLINE "
                                f"or IFS_OFFLINE is set); download it once on a connected machine, or pick "
                                f"a bundled model.") from e
        raise HubModelError(f"{where} is not in the Hub cache and cannot be downloaded now (offline or no "
                            f"connection to {os.environ.get('HF_ENDPOINT', 'the Hub')}); connect once, or "
                            f"pick a bundled model.") from e
    except (RepositoryNotFoundError, RevisionNotFoundError) as e:
        raise HubModelError(f"The Hub has no repository {model.repo!r} (or it is private).") from e
    except EntryNotFoundError as e:
        raise HubModelError(f"The repository {model.repo} has no file {model.filename!r}.") from e
    except OSError as e:  # connection reset mid-download, disk full: the partial file stays for a resume
        raise HubModelError(f"Downloading {where} failed: {e}. Run again to resume.") from e
    finally:
        enable_progress_bars()
    return Path(path)

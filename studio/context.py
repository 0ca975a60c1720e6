"""What every studio panel shares: the settings (from environment variables), the store, and the
registry of running jobs (for cancel buttons).

Per-visitor state lives in ``gr.State`` / ``gr.BrowserState`` (the open project, the visitor id);
this object only holds process-wide resources: one database handle and the cancel flags of the
jobs in flight, keyed by the visitor's session so two visitors never cancel each other's work.
"""
from __future__ import annotations

import os
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path


def _default_db() -> str:
    """$IFS_DB, else the Space's app folder, else the user's data directory (workflow decides)."""
    from engine.workflow import default_store_path

    return str(default_store_path())


@dataclass
class StudioSettings:
    """Every setting of the studio; ``from_env`` reads them from ``IFS_*`` variables (README,
    "Settings" -> "Studio")."""

    db_path: str = field(default_factory=_default_db)
    data_dir: str = ""                    # run outputs (classifiers, exports); default: beside the db
    clip_model: str = "RN50"
    clip_pretrained: str | None = "openai"
    clip_checkpoint: str | None = None
    llm_kind: str = "bundled"             # bundled | gguf | hub | openai | replay
    llm_name: str = "qwen1.5b"            # bundled model: qwen1.5b | smollm2 | gemma3 (engine.llm.BUNDLED)
    llm_path: str | None = None           # gguf file
    llm_base_url: str | None = None       # OpenAI-compatible endpoint
    llm_model: str | None = None
    llm_replay: str | None = None         # recording of real answers (llm_kind "replay")
    host: str = "127.0.0.1"
    port: int = 7860
    max_categories: int = 200
    private_projects: bool = False        # each visitor sees only its own projects (a shared Space)
    hub_any_file: bool | None = None      # visitors may download any Hub repository + file; default:
    #                                       yes in a local studio, no when private_projects (curated only)
    hub_downloads: bool = True            # the studio may download Hub models; off: only files already in the cache

    def __post_init__(self):
        if self.hub_any_file is None:
            self.hub_any_file = not self.private_projects
        if not self.data_dir:
            self.data_dir = str(Path(self.db_path).resolve().parent / "studio-files")

    @classmethod
    def from_env(cls, env: dict | None = None) -> "StudioSettings":
        env = os.environ if env is None else env
        kw: dict = {}
        if env.get("IFS_DB"):
            kw["db_path"] = env["IFS_DB"]
        if env.get("IFS_DATA_DIR"):
            kw["data_dir"] = env["IFS_DATA_DIR"]
        if env.get("IFS_CLIP_MODEL"):
            kw["clip_model"] = env["IFS_CLIP_MODEL"]
        if "IFS_CLIP_PRETRAINED" in env:
            val = env["IFS_CLIP_PRETRAINED"].strip()
            kw["clip_pretrained"] = None if val.lower() in ("", "none", "random") else val
        if env.get("IFS_CLIP_CHECKPOINT"):
            kw["clip_checkpoint"] = env["IFS_CLIP_CHECKPOINT"]
        llm = env.get("IFS_LLM", "").strip()
        if llm:
            kw["llm_kind"] = llm
        for key, name in (("IFS_LLM_NAME", "llm_name"), ("IFS_LLM_PATH", "llm_path"),
                          ("IFS_LLM_BASE_URL", "llm_base_url"), ("IFS_LLM_MODEL", "llm_model"),
                          ("IFS_LLM_REPLAY", "llm_replay")):
            if env.get(key):
                kw[name] = env[key]
        host = env.get("IFS_HOST") or env.get("GRADIO_SERVER_NAME")
        if host:
            kw["host"] = host
        port = env.get("IFS_PORT") or env.get("GRADIO_SERVER_PORT")
        if port:
            kw["port"] = int(port)
        for key, name in (("IFS_PRIVATE_PROJECTS", "private_projects"), ("IFS_HUB_ANY_FILE", "hub_any_file"),
                          ("IFS_HUB_DOWNLOADS", "hub_downloads")):
            flag = _env_flag(env, key)
            if flag is not None:
                kw[name] = flag
        if "private_projects" not in kw and env.get("SPACE_ID"):
            kw["private_projects"] = True
        return cls(**kw)

    def backbone_spec(self):
        from engine.workflow import BackboneSpec

        return BackboneSpec(model=self.clip_model, pretrained=self.clip_pretrained,
                            checkpoint=self.clip_checkpoint)

    def llm_spec(self, kind: str | None = None, name: str | None = None, path: str | None = None,
                 base_url: str | None = None, model: str | None = None):
        from engine.workflow import LLMSpec, hub_llm_spec, hub_model

        kind = kind or self.llm_kind
        if kind == "hub":  # name: a curated Hub model, or OWNER/REPO/FILE.gguf where the operator allows it
            choice = name or self.llm_name
            if not self.hub_any_file and not hub_model(choice).curated:
                raise ValueError("This shared studio downloads only the curated Hub models; pick one of the list.")
            if not self.hub_downloads and not hub_model(choice).cached:
                raise ValueError("This studio does not download models (IFS_HUB_DOWNLOADS=0); pick a Hub "
                                 "model marked downloaded, or a bundled model.")
            return hub_llm_spec(choice)
        default_path = self.llm_replay if kind == "replay" else self.llm_path
        if self.private_projects:
            # a shared studio: a visitor never points the server at a file of its disk or at
            # another host; the GGUF file and the endpoint are the ones the operator configured
            path, base_url = None, None
        return LLMSpec(kind=kind, name=name or self.llm_name,
                       path=path or default_path, base_url=base_url or self.llm_base_url,
                       model=model or self.llm_model)


def _env_flag(env, key: str) -> bool | None:
    """An on/off setting: 1/true/yes/on is on, any other value off, unset or empty None."""
    value = env.get(key)
    if value is None or value == "":
        return None
    return value.strip().lower() in ("1", "true", "yes", "on")


class Jobs:
    """Cancel flags of running jobs, keyed by (session, kind)."""

    def __init__(self):
        self._lock = threading.Lock()
        self._flags: dict[tuple[str, str], threading.Event] = {}

    def start(self, session: str, kind: str) -> threading.Event:
        with self._lock:
            ev = threading.Event()
            self._flags[(session, kind)] = ev
            return ev

    def cancel(self, session: str, kind: str) -> bool:
        with self._lock:
            ev = self._flags.get((session, kind))
        if ev is None:
            return False
        ev.set()
        return True

    def finish(self, session: str, kind: str, ev: threading.Event) -> None:
        with self._lock:
            if self._flags.get((session, kind)) is ev:
                del self._flags[(session, kind)]


@dataclass
class Ctx:
    """Process-wide resources handed to every panel."""

    settings: StudioSettings
    store: object
    jobs: Jobs = field(default_factory=Jobs)

    @classmethod
    def open(cls, settings: StudioSettings) -> "Ctx":
        from engine.workflow import open_store

        Path(settings.data_dir).mkdir(parents=True, exist_ok=True)
        return cls(settings=settings, store=open_store(settings.db_path))

    def tmp_dir(self) -> Path:
        path = Path(self.settings.data_dir) / "tmp"
        path.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(dir=path))

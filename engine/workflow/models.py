"""The models a project runs on, checked without loading them: whether the CLIP weights a
:class:`BackboneSpec` names are here, and which device computes; the language models of the
Hugging Face Hub (engine.hub_models): the curated list, whether one is cached, its download with a
byte count, and the LLMSpec that opens it."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from engine.workflow.base import WorkflowError

OFFLINE_VARIABLES = ("HF_HUB_OFFLINE", "IFS_OFFLINE")


def missing_weights(spec) -> str | None:
    """None when the CLIP weights of ``spec`` are here (or random); else one sentence saying what
    is missing and how to provide it. Never downloads: on a machine that is not offline, weights
    named by a tag may still download when loaded, so they count as present."""
    from engine.clip_backbone import MissingWeightsError, resolve_weights

    offline = any(os.environ.get(k, "").lower() in ("1", "true", "yes", "on") for k in OFFLINE_VARIABLES)
    if spec.pretrained is not None and spec.checkpoint is None and not offline:
        return None
    try:
        resolve_weights(spec)
    except MissingWeightsError as exc:
        return f"CLIP weights missing: {exc}"
    except ValueError as exc:
        return str(exc)
    return None


def device_description() -> tuple[str, str | None]:
    """``("cuda", device name)`` when training and scoring run on a CUDA device, else
    ``("cpu", None)``."""
    from engine.device import pick_device

    dev = pick_device()
    if dev.type == "cuda":
        import torch

        return "cuda", torch.cuda.get_device_name(dev)
    return "cpu", None


@dataclass
class WeightsStatus:
    """Whether the CLIP weights a spec names are ready, in plain words for a person:
    ``ready``; ``message`` (empty when ready); ``can_download`` (the machine is online and the
    weights have a download address)."""

    ready: bool
    message: str = ""
    can_download: bool = False


def _describe(spec) -> str:
    if spec.checkpoint:
        return f"the CLIP model {spec.model} with the weights file {Path(spec.checkpoint).name}"
    return f"the CLIP model {spec.model} with its '{spec.pretrained}' weights"


def weights_status(spec) -> WeightsStatus:
    """Check, without downloading or loading, that ``spec``'s weights are on this machine."""
    from engine.clip_backbone import MissingWeightsError, resolve_weights

    offline = any(os.environ.get(k, "").lower() in ("1", "true", "yes", "on") for k in OFFLINE_VARIABLES)
    what = _describe(spec)
    if spec.pretrained is not None and spec.checkpoint is None and not offline:
        if _tag_weights_cached(spec):
            return WeightsStatus(True)
        return WeightsStatus(False, f"Training and classifying need {what}, which is not on this machine "
                                    "yet. Download it now, or upload a weights file (or give the path of "
                                    "one on this machine).", can_download=True)
    try:
        resolve_weights(spec)
    except (MissingWeightsError, ValueError):
        return WeightsStatus(False, f"Training and classifying need {what}, which is not on this machine "
                                    "(and it cannot download it). Upload the weights file (.pt, .bin or "
                                    ".safetensors), or give the path of one on this machine.")
    return WeightsStatus(True)


def _tag_weights_cached(spec) -> bool:
    """Whether open_clip's download cache already holds the weights of spec's pretrained tag."""
    from open_clip.pretrained import get_pretrained_cfg

    from engine.clip_backbone import _cached_tag_file  # the cache lookup that never downloads

    cfg = get_pretrained_cfg(spec.model, spec.pretrained)
    return bool(cfg) and _cached_tag_file(cfg, spec.cache_dir) is not None


def use_weights_file(spec, path: str | Path, folder: str | Path | None = None):
    """A copy of ``spec`` that loads its weights from ``path`` (copied into ``folder`` first when
    given: an upload's temporary file goes away). The file is loaded once to check that it holds
    weights of this architecture; WorkflowError says what is wrong otherwise."""
    import dataclasses
    import shutil

    from engine.clip_backbone import load_backbone

    src = Path(str(path)).expanduser()
    if not src.is_file():
        raise WorkflowError(f"There is no file at {src}; give the path of a CLIP weights file on this machine.")
    if folder is not None:
        Path(folder).mkdir(parents=True, exist_ok=True)
        dest = Path(folder) / src.name
        if dest.resolve() != src.resolve():
            shutil.copyfile(src, dest)
        src = dest
    new = dataclasses.replace(spec, checkpoint=str(src))
    try:
        load_backbone(new, device="cpu")
    except Exception as exc:  # noqa: BLE001 - any failure to load means the file does not fit
        raise WorkflowError(f"{src.name} does not hold weights of the CLIP model {spec.model} "
                            f"({str(exc).splitlines()[0][:200]}).") from exc
    return new


def download_weights(spec) -> WeightsStatus:
    """Fetch the weights of spec's pretrained tag into open_clip's cache (online machines)."""
    from engine.clip_backbone import MissingWeightsError, resolve_weights

    try:
        resolve_weights(spec)
    except (MissingWeightsError, ValueError) as exc:
        raise WorkflowError(f"The download of {_describe(spec)} failed; upload the weights file instead "
                            f"({type(exc).__name__}).") from exc
    return weights_status(spec)


@dataclass(frozen=True)
class HubChoice:
    """A GGUF language model on the Hugging Face Hub: ``name`` (a curated name, or the file's
    name), ``repo``, ``filename``, ``size_gb`` (0 when not curated), ``note`` (what it is for),
    ``curated``, ``cached`` (its file is in the Hub cache)."""

    name: str
    repo: str
    filename: str
    size_gb: float
    note: str
    curated: bool
    cached: bool

    @property
    def label(self) -> str:
        size = f" ({self.size_gb:g} GB)" if self.size_gb else ""
        note = f" - {self.note}" if self.note else ""
        return f"{self.name}{size}{note}" + (", downloaded" if self.cached else "")


def _choice(model) -> HubChoice:
    from engine.hub_models import CURATED, is_cached

    return HubChoice(model.name, model.repo, model.filename, model.size_gb, model.note,
                     CURATED.get(model.name) == model, is_cached(model))


def hub_models() -> list[HubChoice]:
    """The curated Hub models (engine.hub_models.CURATED), each with whether it is cached."""
    from engine.hub_models import CURATED

    return [_choice(m) for m in CURATED.values()]


def hub_model(choice: str) -> HubChoice:
    """A curated name or ``"OWNER/REPO/FILE.gguf"``; HubModelError (one sentence) for a name that
    is neither. Asks no server."""
    from engine.hub_models import parse_choice

    return _choice(parse_choice(choice))


def download_hub_model(choice: str, on_bytes=None, should_stop=None) -> Path:
    """The local path of a Hub model's file (``choice`` as :func:`hub_model`), downloaded once
    into the Hub cache by huggingface_hub and reused afterwards. ``on_bytes(done, total)`` reports
    the download's bytes; ``should_stop()`` true cancels it (DownloadCancelled, a HubModelError).
    HubModelError says in one sentence what is wrong (offline and not cached, no such repository
    or file)."""
    from engine.hub_models import hub_model_path, parse_choice

    return hub_model_path(parse_choice(choice), progress=False, on_bytes=on_bytes, should_stop=should_stop)


def hub_llm_spec(choice: str, **options):
    """The LLMSpec that opens a Hub model (``choice`` as :func:`hub_model`)."""
    from engine.hub_models import CURATED, parse_choice
    from engine.llm import LLMSpec

    model = parse_choice(choice)
    if CURATED.get(model.name) == model:
        return LLMSpec(kind="hub", name=model.name, **options)
    return LLMSpec(kind="hub", repo=model.repo, filename=model.filename, **options)

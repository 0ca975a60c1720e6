"""The models a project runs on, checked without loading them: whether the CLIP weights a
:class:`BackboneSpec` names are here, and which device computes."""
from __future__ import annotations

import os

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

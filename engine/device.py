"""Which torch device to run on: CUDA when present, else the CPU."""
from __future__ import annotations

import os

import torch

from engine.errors import EngineError


class DeviceError(EngineError, ValueError):
    """A device name torch does not know, or one this machine lacks; one sentence."""


def parse_device(name: str | torch.device) -> torch.device:
    """``torch.device(name)`` with a one-sentence :class:`DeviceError` for a name torch refuses or a
    CUDA device on a machine without CUDA."""
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError, ValueError):
        raise DeviceError(f"Unknown device {str(name)!r}; use 'cpu', 'cuda' or 'cuda:N'.") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise DeviceError(f"Device {str(name)!r} was asked for, but CUDA is not available here; use 'cpu'.")
    return device


def pick_device(prefer: str | None = None) -> torch.device:
    """Return ``prefer`` if given (or $IFS_DEVICE), else CUDA when available, else CPU."""
    prefer = prefer or os.environ.get("IFS_DEVICE")
    if prefer:
        return parse_device(prefer)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")

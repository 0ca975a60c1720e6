"""Which torch device to run on: CUDA when present, else the CPU."""
from __future__ import annotations

import os

import torch


def pick_device(prefer: str | None = None) -> torch.device:
    """Return ``prefer`` if given (or $IFS_DEVICE), else CUDA when available, else CPU."""
    prefer = prefer or os.environ.get("IFS_DEVICE")
    if prefer:
        if prefer.startswith("cuda") and not torch.cuda.is_available():
            raise RuntimeError(f"Device {prefer!r} was asked for, but CUDA is not available here; use 'cpu'.")
        return torch.device(prefer)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")

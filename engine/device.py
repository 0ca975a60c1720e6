"""Which torch device to run on (CUDA when present, else the CPU), and how much memory it has free."""
from __future__ import annotations

import os
from pathlib import Path

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


def free_memory(device: torch.device | str) -> int | None:
    """Bytes that new tensors on ``device`` can still take, or None when it cannot be read.

    CUDA: the driver's free memory plus what torch's caching allocator holds unused. CPU: the
    host's available memory (``/proc/meminfo`` MemAvailable, else psutil), bounded by the
    container's cgroup limit when there is one (a Space's limit is the cgroup's, not the host's).
    """
    device = torch.device(device)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device))
    if device.type != "cpu":
        return None
    host = _meminfo_available()
    if host is None:
        try:
            import psutil
        except ImportError:
            return None
        host = int(psutil.virtual_memory().available)
    room = _cgroup_room()
    return host if room is None else min(host, room)


def _meminfo_available() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _cgroup_room() -> int | None:
    """The cgroup's memory limit minus its usage (cgroup v2, then v1); None without a limit."""
    for limit_file, usage_file in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                                   ("/sys/fs/cgroup/memory/memory.limit_in_bytes",
                                    "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
        try:
            limit = Path(limit_file).read_text().strip()
            usage = int(Path(usage_file).read_text().strip())
        except (OSError, ValueError):
            continue
        if limit == "max" or int(limit) >= 1 << 60:  # v1 writes a huge number for "no limit"
            return None
        return max(0, int(limit) - usage)
    return None

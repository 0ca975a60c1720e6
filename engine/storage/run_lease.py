"""Who is running a training run, and whether that process is still alive.

A run row carries a *lease*: the host name, the process id and that process's start time (so a pid
reused by another program after a crash does not pass for the trainer), and a heartbeat refreshed
while it trains. A run whose row says "running" is *dead* when

- it has no lease (written by an older program, or never claimed), or
- its lease names this host and that process is gone (or the pid now belongs to a process started
  at another time), or
- its lease names another host and its heartbeat is older than ``LEASE_TIMEOUT_S`` (another host's
  processes cannot be checked from here).

A dead run is taken over by the next ``train`` of the same project: it resumes from its last
checkpoint instead of starting again at step 0 (engine.workflow).
"""
from __future__ import annotations

import os
import socket
from datetime import datetime, timezone

LEASE_TIMEOUT_S = 600.0


def _start_time(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (Linux ``/proc``), None where unknown."""
    try:
        with open(f"/proc/{int(pid)}/stat", "rb") as fh:
            stat = fh.read().decode("ascii", "replace")
        return int(stat[stat.rindex(")") + 2:].split()[19])
    except (OSError, ValueError, IndexError):
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    except (OSError, ValueError, OverflowError):
        return False
    return True


def current_lease() -> dict:
    """The lease of this process, heartbeat now."""
    pid = os.getpid()
    return {"host": socket.gethostname(), "pid": pid, "started": _start_time(pid),
            "heartbeat": datetime.now(timezone.utc).isoformat()}


def lease_is_dead(lease: dict | None, timeout_s: float = LEASE_TIMEOUT_S) -> bool:
    """True when the process that holds ``lease`` is gone (see the module)."""
    if not isinstance(lease, dict) or not isinstance(lease.get("pid"), int):
        return True
    if lease.get("host") == socket.gethostname():
        if not _alive(lease["pid"]):
            return True
        started = _start_time(lease["pid"])
        return lease.get("started") is not None and started is not None and started != lease["started"]
    try:
        beat = datetime.fromisoformat(str(lease.get("heartbeat")))
    except ValueError:
        return True
    if beat.tzinfo is None:
        beat = beat.replace(tzinfo=timezone.utc)
    return (datetime.now(timezone.utc) - beat).total_seconds() > timeout_s

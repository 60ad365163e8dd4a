"""Ownership of a run: owner id (the fencing token of every write), host, pid (+ its start time,
against pid reuse), heartbeat. Whether an owner is still there decides what a run is shown as."""
from __future__ import annotations

import os
import socket
import time
import uuid
from dataclasses import dataclass

from .records import OwnerInfo, RunRecord
from .state import RunStatus

HEARTBEAT_S = 1.0
STALE_AFTER_S = 30.0


def _proc_start(pid: int) -> float | None:
    """The process's start time in clock ticks since boot (Linux), to tell a reused pid apart."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read().decode(errors="replace")
        return float(stat.rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


@dataclass(frozen=True)
class Owner:
    id: str
    host: str
    pid: int
    started: float | None

    @classmethod
    def me(cls) -> "Owner":
        pid = os.getpid()
        return cls(uuid.uuid4().hex[:12], socket.gethostname(), pid, _proc_start(pid))


def owner_alive(owner: OwnerInfo | None, now: float | None = None) -> bool:
    """Is the process that holds this lease still there? On this host: its pid (not a reused one,
    not a zombie). On another: a heartbeat fresher than STALE_AFTER_S."""
    if owner is None:
        return False
    now = time.time() if now is None else now
    if owner.host != socket.gethostname():
        return (now - (owner.heartbeat_at or 0)) < STALE_AFTER_S
    pid = owner.pid
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    started = _proc_start(pid)
    if started is not None and owner.started is not None and started != owner.started:
        return False  # the pid was reused by another process
    return not _is_zombie(pid)


def _is_zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().decode(errors="replace").rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return False


def describe_owner(owner: OwnerInfo | None) -> str:
    if owner is None:
        return "nobody"
    age = max(0.0, time.time() - (owner.heartbeat_at or 0))
    return f"pid {owner.pid} on {owner.host} (heartbeat {age:.0f}s ago)"


def shown_status(run: RunRecord, executing_here: bool = False) -> RunStatus:
    """What a run is, as people should see it: a `running` run that nobody (alive) owns is
    `interrupted` — nothing moves it until it is resumed (or a worker takes it)."""
    if run.status == RunStatus.RUNNING and not executing_here and not owner_alive(run.owner):
        return RunStatus.INTERRUPTED
    return run.status

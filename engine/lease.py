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


def this_host() -> str:
    """This machine's host id: SMITHERS_HOST_ID, else the host name. Leases of another host are
    judged by their heartbeat; leases of this one by their pid."""
    return os.environ.get("SMITHERS_HOST_ID") or socket.gethostname()


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
    def me(cls, prefix: str = "") -> "Owner":
        """This process; a worker's id starts with `worker-`."""
        pid = os.getpid()
        return cls(prefix + uuid.uuid4().hex[:12], this_host(), pid, _proc_start(pid))


WORKER_PREFIX = "worker-"  # the owner id of a worker (`smithers worker`) starts with it


def owner_alive(owner: OwnerInfo | None, now: float | None = None) -> bool:
    """Is the process that holds this lease still there? On this host: its pid (not a reused one,
    not a zombie). On another: a heartbeat fresher than STALE_AFTER_S."""
    if owner is None:
        return False
    now = time.time() if now is None else now
    if owner.host != this_host():
        return (now - (owner.heartbeat_at or 0)) < STALE_AFTER_S
    pid = owner.pid
    if not pid or not pid_alive(pid):
        return False
    started = _proc_start(pid)
    return started is None or owner.started is None or started == owner.started  # else: the pid was reused


def pid_alive(pid: int) -> bool:
    """A process of this host that is running (not gone, not a zombie)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
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
    who = f"worker {owner.id}, " if owner.id.startswith(WORKER_PREFIX) else ""
    return f"{who}pid {owner.pid} on {owner.host} (heartbeat {age:.0f}s ago)"


def claimable_owner(owner: OwnerInfo | None, now: float) -> bool:
    """May a worker take over a run held by this lease? Nobody holds it, or its holder is gone:
    on this host its process is gone; on another host its heartbeat is STALE_AFTER_S old."""
    return not owner_alive(owner, now)


def shown_status(run: RunRecord, executing_here: bool = False) -> RunStatus:
    """What a run is, as people should see it: a `running` run that nobody (alive) owns is
    `interrupted` — nothing moves it until it is resumed (or a worker takes it)."""
    if run.status == RunStatus.RUNNING and not executing_here and not owner_alive(run.owner):
        return RunStatus.INTERRUPTED
    return run.status

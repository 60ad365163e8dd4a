"""Ownership of a run: owner id, host, pid (+ its start time, against pid reuse), heartbeat."""
from __future__ import annotations

import os
import socket
import time
import uuid
from dataclasses import dataclass
from typing import Any

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

    def columns(self, now: float) -> dict[str, Any]:
        return {"owner_id": self.id, "owner_host": self.host, "owner_pid": self.pid,
                "owner_started": self.started, "heartbeat_at": now}


def owner_alive(run: dict[str, Any], now: float | None = None) -> bool:
    """Is the process that holds this run's lease still there?"""
    if not run.get("owner_id"):
        return False
    now = time.time() if now is None else now
    if run["owner_host"] != socket.gethostname():
        return (now - (run["heartbeat_at"] or 0)) < STALE_AFTER_S
    pid = run["owner_pid"]
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    started = _proc_start(pid)
    if started is not None and run["owner_started"] is not None and started != run["owner_started"]:
        return False  # the pid was reused by another process
    if _is_zombie(pid):
        return False
    return True


def _is_zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().decode(errors="replace").rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return False


def describe_owner(run: dict[str, Any]) -> str:
    age = time.time() - (run["heartbeat_at"] or 0)
    return f"pid {run['owner_pid']} on {run['owner_host']} (heartbeat {age:.0f}s ago)"

"""`smithers up` / `smithers down`: worker processes of a project, in the background.

The pid file `.smithers/workers.pid` lists their pids (one a line); they all append to the log
`.smithers/workers.log`. A pid counts only while it is a live `smithers worker` process (a pid
reused by something else does not), so a stale pid file is harmless.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from engine.lease import pid_alive
from engine.project import smithers_dir

STOP_WAIT_S = 40.0  # a stopping worker drains for up to its grace period (10 s), then gives up its runs


@dataclass
class Fleet:
    """The background workers of one project."""

    project: Path

    @property
    def pid_file(self) -> Path:
        return smithers_dir(self.project) / "workers.pid"

    @property
    def log_file(self) -> Path:
        return smithers_dir(self.project) / "workers.log"

    def pids(self) -> list[int]:
        """Live worker processes listed in the pid file."""
        try:
            listed = [int(x) for x in self.pid_file.read_text().split()]
        except (OSError, ValueError):
            return []
        return [p for p in listed if is_worker(p)]

    def start(self, n: int, db: str, concurrency: int | None, agent: str | None) -> list[subprocess.Popen[bytes]]:
        """N worker processes in their own sessions (they outlive this command), logging to the log file."""
        smithers_dir(self.project).mkdir(parents=True, exist_ok=True)
        argv = [sys.executable, "-m", "smithers_tui", "--db", db, "worker"]
        if concurrency:
            argv += ["--concurrency", str(concurrency)]
        if agent:
            argv += ["--agent", agent]
        procs = []
        with open(self.log_file, "ab") as log:
            for _ in range(n):
                procs.append(subprocess.Popen(argv, cwd=self.project, stdin=subprocess.DEVNULL, stdout=log,
                                              stderr=subprocess.STDOUT, start_new_session=True,
                                              env={**os.environ, "PYTHONUNBUFFERED": "1"}))
        self.pid_file.write_text("".join(f"{p.pid}\n" for p in procs))
        return procs

    def stop(self, pids: list[int], timeout: float = STOP_WAIT_S) -> list[int]:
        """SIGTERM each (they drain and give their runs up), wait for them; SIGKILL whoever is left.
        Returns the pids that had to be killed."""
        for p in pids:
            _signal(p, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and any(is_worker(p) for p in pids):
            time.sleep(0.05)
        killed = [p for p in pids if is_worker(p)]
        for p in killed:
            _signal(p, signal.SIGKILL)
        self.pid_file.unlink(missing_ok=True)
        return killed

    def log_tail(self, n: int = 1) -> str:
        try:
            lines = [ln for ln in self.log_file.read_text(errors="replace").splitlines() if ln.strip()]
        except OSError:
            return ""
        return " / ".join(lines[-n:])


def is_worker(pid: int) -> bool:
    """A live (not zombie) process running `smithers ... worker`."""
    if not pid_alive(pid):
        return False
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            args = f.read().split(b"\0")
    except OSError:
        return True  # no /proc here: the pid is alive, take it at its word
    return b"worker" in args and any(b"smithers" in a for a in args)


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass

"""Processes an agent step starts: guarded, tagged, recorded, and ended.

Every agent CLI and every `run_shell` command runs under `engine/guard.py`, which makes itself a
child subreaper, holds a *lifeline* pipe to this engine process and kills every descendant when
the command ends, when asked, or when the engine dies (even by kill -9: the pipe's write end,
held only here, closes). Belt and braces for the case where the guard itself is killed:

- each process carries `SMITHERS_PROC_TAG=<run>/<node>/<iteration>` in its environment, which
  survives double forks, setsid() and re-parenting to init;
- the guard's pid and start time are recorded in `.smithers/procs/<run>.json` under the run's
  directory (host-local, like the processes) while it runs.

`end_leftovers(scope)` runs before an agent step starts (so also when a resumed run re-runs an
interrupted step): it ends the recorded guards still alive (checked by start time, so a reused pid
is never hit) and every process whose environment carries the step's tag.

The scope of the running step travels in a context variable (`STEP`), so tools and CLI agents
learn the tag, the sandbox policy and where to report a session id without widening the Agent
interface.
"""

from __future__ import annotations

import contextvars
import json
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

GUARD = str(Path(__file__).with_name("guard.py"))
TAG_VAR = "SMITHERS_PROC_TAG"


@dataclass
class StepScope:
    """What a running agent step lets its agent and tools know about it."""

    run_id: str
    node_id: str
    iteration: int
    workdir: Path  # the run's directory (where .smithers/ lives)
    sandbox: Any = None  # engine.sandbox.Policy
    notes: dict[str, Any] = field(default_factory=dict)  # session ids etc., reported back to the step
    on_note: Callable[[str, Any], None] | None = None

    @property
    def tag(self) -> str:
        return f"{self.run_id}/{self.node_id}/{self.iteration}"

    def note(self, key: str, value: Any) -> None:
        """Report something about the attempt (e.g. the CLI's session id) to the step."""
        if self.notes.get(key) != value:
            self.notes[key] = value
            if self.on_note is not None:
                self.on_note(key, value)


STEP: contextvars.ContextVar[StepScope | None] = contextvars.ContextVar("smithers_step", default=None)


def current() -> StepScope | None:
    return STEP.get()


# -- the lifeline --------------------------------------------------------------------------

_life: tuple[int, int, int] | None = None  # (pid, read fd, write fd)
_life_lock = threading.Lock()


def lifeline() -> int:
    """The read end of this process's lifeline pipe (created once per process; the write end is
    close-on-exec, so no child holds it and EOF means this process is gone)."""
    global _life
    with _life_lock:
        if _life is None or _life[0] != os.getpid():
            r, w = os.pipe()  # both non-inheritable; the read end is passed explicitly
            _life = (os.getpid(), r, w)
        return _life[1]


def guarded(argv: list[str], *, forwards: dict[int, str] | None = None, inner: bool = False) -> list[str]:
    """`argv` run under the guard. `inner`: the guard inside the sandbox (no lifeline: the sandbox
    dies with the outer guard), which serves the `forwards` (port -> unix socket)."""
    cmd = [sys.executable, "-I", "-S", GUARD]
    if not inner:
        cmd += ["--lifeline", str(lifeline())]
    for port, sock in (forwards or {}).items():
        cmd += ["--forward", f"{port}={sock}"]
    return cmd + ["--"] + list(argv)


def spawn_kwargs() -> dict[str, Any]:
    """Keyword arguments for asyncio.create_subprocess_exec of a guarded command."""
    return {"pass_fds": (lifeline(),), "start_new_session": True}


# -- records -------------------------------------------------------------------------------

def start_time(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (identifies it across pid reuse)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
        return int(stat[stat.rfind(b")") + 2:].split()[19])
    except (OSError, ValueError, IndexError):
        return None


def _records_file(scope: StepScope) -> Path:
    return Path(scope.workdir) / ".smithers" / "procs" / f"{scope.run_id}.json"


_rec_lock = threading.Lock()


def _update(path: Path, fn: Callable[[list[dict[str, Any]]], list[dict[str, Any]]]) -> None:
    with _rec_lock:
        try:
            items = json.loads(path.read_text())
        except (OSError, ValueError):
            items = []
        items = fn(items)
        try:
            if items:
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp = path.with_suffix(f".{os.getpid()}.tmp")
                tmp.write_text(json.dumps(items))
                os.replace(tmp, path)
            elif path.exists():
                path.unlink()
        except OSError:
            pass  # a read-only project: the tag scan still finds leftovers


def record(scope: StepScope | None, pid: int, what: str) -> None:
    """Note a running guard of this step (removed by `forget` when it ends)."""
    if scope is None:
        return
    item = {"tag": scope.tag, "pid": pid, "start": start_time(pid), "what": what, "host_pid": os.getpid(),
            "at": time.time()}
    _update(_records_file(scope), lambda items: items + [item])


def forget(scope: StepScope | None, pid: int) -> None:
    if scope is not None:
        _update(_records_file(scope), lambda items: [i for i in items if i.get("pid") != pid])


def tagged(tag: str) -> list[int]:
    """Pids of processes whose environment carries SMITHERS_PROC_TAG=tag."""
    needle = f"{TAG_VAR}={tag}\0".encode()
    me = os.getpid()
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == me:
            continue
        try:
            with open(f"/proc/{name}/environ", "rb") as f:
                env = f.read() + b"\0"
        except OSError:
            continue
        if needle in env:
            found.append(int(name))
    return found


def end_leftovers(scope: StepScope) -> list[int]:
    """End what an earlier attempt of this step left running; returns the pids signalled."""
    ended: list[int] = []
    path = _records_file(scope)

    def sweep(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        keep = []
        for i in items:
            if i.get("tag") != scope.tag:
                keep.append(i)
                continue
            pid = int(i.get("pid", 0))
            if pid and i.get("start") is not None and start_time(pid) == i["start"]:
                _kill(pid, signal.SIGTERM)  # the guard kills its whole tree
                ended.append(pid)
        return keep

    _update(path, sweep)
    for _ in range(50):  # a dying guard may re-parent a child for a moment: sweep until quiet
        pids = tagged(scope.tag)
        if not pids:
            break
        for pid in pids:
            _kill(pid, signal.SIGKILL)
        ended.extend(p for p in pids if p not in ended)
        time.sleep(0.01)
    return ended


def _kill(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass

"""Helpers shared by the tests (imported as `tests.support`; fixtures live in tests/conftest.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from engine import Engine

ROOT = Path(__file__).resolve().parents[1]
PYTHON = sys.executable


def smithers_argv() -> list[str]:
    """How to start the `smithers` command as a subprocess of this interpreter."""
    if (ROOT / "smithers_tui" / "__main__.py").exists():
        return [PYTHON, "-m", "smithers_tui"]
    return [PYTHON, "-c", "from smithers_tui.cli import main; main()"]


def clean_env(**extra: str | None) -> dict[str, str]:
    """The environment for a subprocess: no SMITHERS_* settings leaking in, ROOT importable."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SMITHERS_")}
    env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env["PYTHONUNBUFFERED"] = "1"
    for k, v in extra.items():
        if v is None:
            env.pop(k, None)
        else:
            env[k] = v
    return env


class Smithers:
    """Runs `smithers ARGS` as a real subprocess, by default against one database and in one cwd."""

    def __init__(self, cwd: Path, db: Path | None) -> None:
        self.cwd, self.db = cwd, db

    def argv(self, *args: str, db: Path | None | bool = True) -> list[str]:
        use_db = self.db if db is True else (db or None)
        return [*smithers_argv(), *(["--db", str(use_db)] if use_db else []), *map(str, args)]

    def __call__(self, *args: Any, db: Path | None | bool = True, env: dict[str, str] | None = None,
                 cwd: Path | None = None, timeout: float = 60, input: str | None = None) -> subprocess.CompletedProcess:
        return subprocess.run(self.argv(*args, db=db), cwd=cwd or self.cwd, env=env or clean_env(),
                              capture_output=True, text=True, timeout=timeout, input=input)

    def spawn(self, *args: Any, db: Path | None | bool = True, env: dict[str, str] | None = None,
              cwd: Path | None = None, **kw: Any) -> subprocess.Popen:
        kw.setdefault("stdout", subprocess.PIPE)
        kw.setdefault("stderr", subprocess.PIPE)
        return subprocess.Popen(self.argv(*args, db=db), cwd=cwd or self.cwd, env=env or clean_env(),
                                text=True, **kw)

    def json(self, *args: Any, **kw: Any) -> Any:
        done = self(*args, "--json", **kw)
        assert done.returncode == 0, f"smithers {' '.join(map(str, args))} --json: {done.returncode} {done.stderr}"
        return json.loads(done.stdout)



def dead_pid() -> int:
    """The pid of a process that has ended (and been reaped): an owner that is gone."""
    p = subprocess.Popen([PYTHON, "-c", "pass"])
    p.wait()
    return p.pid


def target_of(wf: Any) -> str:
    """The target recorded for a workflow defined in an (already imported) test module, so that
    resume finds the very same module objects."""
    return f"module:{wf.builder.__module__}:{wf.name}"


async def run_workflow(eng: Engine, wf: Any, input: Any = None, **kw: Any) -> tuple[str, Any]:
    """Start and execute a workflow to its end in this process: (status, executor)."""
    ex = await eng.start(wf, target_of(wf), input, **kw)
    status = await ex.execute()
    return status, ex


async def report(store: Any, run_id: str, frame: int | None = None) -> dict[str, Any]:
    """What `smithers show --json` prints, read in this process (through the engine's façade)."""
    from engine.runtime import Engine

    return (await Engine(store).report(run_id, frame)).json_dict()


async def nodes_of(store: Any, run_id: str) -> dict[tuple[str, int], dict[str, Any]]:
    """(node id, iteration) -> the node as `show --json` reports it."""
    rep = await report(store, run_id)
    return {(n["id"], n["iteration"]): n for n in rep["nodes"]}


async def events_of(store: Any, run_id: str, type: str | None = None) -> list[Any]:
    evs = await store.events(run_id)
    return [e for e in evs if type is None or e.type == type]


def line_of(path: str | Path, marker: str) -> int:
    """The 1-based line of `path` that ends with the comment `marker` (exactly one)."""
    lines = [i for i, text in enumerate(Path(path).read_text().splitlines(), 1) if text.rstrip().endswith(marker)]
    assert len(lines) == 1, f"marker {marker!r} found on lines {lines}"
    return lines[0]


# --- side-effect logs and git, for workflow files written by the tests -------------------------

# Workflow source that defines mark(ctx): every compute step that calls it appends
# "<run> <node>#<iteration>" to side.log beside the workflow file when it really runs.
MARK = """
from pathlib import Path

SIDE = Path(__file__).with_name("side.log")


def mark(ctx, value=None):
    with open(SIDE, "a") as f:
        f.write(f"{ctx.run_id} {ctx.node_id}#{ctx.iteration}\\n")
    return value if value is not None else f"{ctx.node_id} ran"
"""


def ran(folder: Path, run_id: str) -> Any:
    """(node, iteration) -> how many times the step really ran in run `run_id` (from side.log)."""
    from collections import Counter

    path = folder / "side.log"
    out: Counter = Counter()
    if path.exists():
        for line in path.read_text().splitlines():
            rid, key = line.split(" ")
            if rid == run_id:
                nid, it = key.rsplit("#", 1)
                out[(nid, int(it))] += 1
    return out


def done_frames(frames: list[dict]) -> dict[tuple[str, int], int]:
    """(node, iteration) -> the frame that made it done, from `smithers frames --json`; fails if a
    step changes again after the frame that made it done (a committed step must never run again)."""
    done_at: dict[tuple[str, int], int] = {}
    for f in frames:
        for change in f["changes"]:
            text, state = change.split(" ")[:2]
            nid, it = text.rsplit("#", 1)
            key = (nid, int(it))
            if key in done_at:
                assert state == "done", f"{text} went {state} at frame {f['frame']} after done at {done_at[key]}"
            elif state == "done":
                done_at[key] = f["frame"]
    return done_at


def task_outputs(rep: dict) -> dict[tuple[str, int], object]:
    """(node, iteration) -> output, for the task nodes of a `show --json` report."""
    return {(n["id"], n["iteration"]): n["output"] for n in rep["nodes"] if n["kind"] == "task"}


def sh(cwd: Path, *args: str) -> str:
    """git, with an identity given on the command line (CI machines may have none)."""
    done = subprocess.run(["git", "-c", "user.name=Test User", "-c", "user.email=test@example.com", *args],
                          cwd=cwd, capture_output=True, text=True)
    assert done.returncode == 0, f"git {' '.join(args)}: {done.stderr}"
    return done.stdout


def blocks_once(seconds: float = 60) -> str:
    """Workflow source whose middle step blocks for `seconds` on its first execution only (a marker
    file beside the workflow remembers it) and returns "attempt N": for killing and taking over."""
    return f"""
import time
from pathlib import Path
from engine import Sequence, Task, workflow

MARK = Path(__file__).with_name("blocked-once")


def block(ctx):
    if not MARK.exists():
        MARK.write_text("x")
        time.sleep({seconds})
    return f"attempt {{ctx.attempt}}"


@workflow
def blocks(ctx):
    return Sequence(Task("first", value=1), Task("block", run=block), Task("last", value=3))
"""


async def interrupt_when(ex: Any, reached: Any) -> None:
    """Run `ex` until the asyncio.Event `reached` is set by a step, then kill its loop the way a
    crash would (the task is cancelled mid-step; nothing is marked)."""
    import asyncio

    task = asyncio.create_task(ex.execute())
    await asyncio.wait_for(reached.wait(), 10)
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        return
    raise AssertionError("the run ended before it could be interrupted")



def wait_until(predicate: Any, what: str, timeout: float = 180.0, every: float = 0.02) -> Any:
    """Poll `predicate` until it is truthy (a process's effect on the disk or the database). The
    timeout only turns a hang into a failure: it is far above any real wait, loaded machine or not."""
    import time

    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what} after {timeout:.0f} s")
        time.sleep(every)


def stops_after(target: str, marker: Path) -> str:
    """Python source that runs the real `smithers` CLI, but once `target` (module:function) has
    returned, writes `marker` and hangs, so that a test can kill -9 it exactly there."""
    module, func = target.split(":")
    return f"""
import sys, time
from pathlib import Path
import {module} as mod

real = mod.{func}


def stop_after(*args, **kw):
    out = real(*args, **kw)
    Path({str(marker)!r}).write_text("reached")
    time.sleep(3600)
    return out


mod.{func} = stop_after
from smithers_tui.cli import main

sys.argv[0] = "smithers"
main()
"""


def write_source(folder: Path, name: str, source: str) -> Path:
    """Write a workflow file `name` with `source` into `folder`; its path."""
    path = folder / name
    path.write_text(source)
    return path


def git_repo(path: Path, files: dict[str, str], message: str = "init") -> Path:
    """A git repository at `path` on branch main with `files` (relative path -> text) committed."""
    path.mkdir(parents=True, exist_ok=True)
    sh(path, "init", "-q", "-b", "main")
    for rel, text in files.items():
        (path / rel).parent.mkdir(parents=True, exist_ok=True)
        (path / rel).write_text(text)
    sh(path, "add", "-A")
    sh(path, "commit", "-q", "-m", message)
    return path


def newer_database(path: Path) -> Path:
    """A SQLite file written by a newer smithers (schema one past this one's)."""
    import sqlite3

    from engine.store import SCHEMA_VERSION

    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE future (x)")
    conn.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    conn.commit()
    conn.close()
    return path


# --- workers ------------------------------------------------------------------------------------
async def until(store: Any, predicate: Any, what: str, timeout: float = 180.0) -> None:
    """Wait until `await predicate()` holds, looking again each time the database changes (its
    data version moves: another connection committed). `store` must be another connection than
    the writers'. The timeout only turns a hang into a failure."""
    import asyncio
    import time

    deadline = time.monotonic() + timeout
    seen = await store.data_version()
    while not await predicate():
        while (version := await store.data_version()) == seen:
            if time.monotonic() > deadline:
                raise AssertionError(f"gave up waiting for {what} after {timeout:.0f} s")
            await asyncio.sleep(0.02)
        seen = version


class WorkerProc:
    """`smithers worker` as a real subprocess; its log lines are read as they come (a thread), so a
    test can wait for one (`wait_line`) instead of sleeping."""

    def __init__(self, cli: Smithers, *args: str, env: dict[str, str] | None = None, wait: bool = True) -> None:
        import threading

        self.proc = cli.spawn("worker", *args, env=env, stderr=subprocess.STDOUT)
        self.lines: list[str] = []
        self._cond = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        if wait:
            assert self.id

    @property
    def id(self) -> str:
        """Its worker id (waits until it has started and said it)."""
        return self.wait_line("taking runs from").split("worker ", 1)[1].split(" ", 1)[0]

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._cond:
                self.lines.append(line.rstrip("\n"))
                self._cond.notify_all()
        with self._cond:
            self.lines.append("<exit>")
            self._cond.notify_all()

    def wait_line(self, text: str, timeout: float = 120.0) -> str:
        """The first log line holding `text` (waits for it; fails if the worker exits first)."""
        with self._cond:
            ok = self._cond.wait_for(lambda: any(text in ln for ln in self.lines) or "<exit>" in self.lines,
                                     timeout)
            found = next((ln for ln in self.lines if text in ln), None)
        assert ok and found is not None, f"worker never said {text!r}: {self.lines[-5:]}"
        return found

    def kill(self) -> None:
        """kill -9."""
        import signal

        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=60)

    def stop(self) -> int:
        """SIGTERM, as `smithers down` sends: it drains and exits."""
        import signal

        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout=120)
        self._reader.join(timeout=10)
        return code

"""No orphans: kill -9 of the engine ends every agent process (the CLI and a double-forked, setsid
daemon it started); on resume, what an interrupted attempt left is ended before the step re-runs."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from tests.support import clean_env

import pytest

from engine import procs
from engine.sandbox import status

CLI = """#!{python}
import json, os, sys, time
sys.stdin.read()
print(json.dumps({{"type": "system", "subtype": "init", "session_id": "sess-42"}}), flush=True)
if os.path.exists("release"):
    print(json.dumps({{"type": "result", "result": "done", "session_id": "sess-42", "usage": {{}}}}), flush=True)
    sys.exit(0)
if os.fork() == 0:          # a daemon: double fork + setsid, so only the guard can still find it
    os.setsid()
    if os.fork() == 0:
        open("daemon.pid", "w").write(str(os.getpid()))
        time.sleep(600)
    os._exit(0)
time.sleep(600)
"""


def project(tmp_path: Path, sandbox: str = "off") -> tuple[Path, dict[str, str]]:
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "claude").write_text(CLI.format(python=sys.executable))
    (bindir / "claude").chmod(0o755)
    (tmp_path / ".smithers").mkdir()
    (tmp_path / ".smithers" / "config.toml").write_text(f'[agents.coder]\nkind = "claude-code"\nsandbox = "{sandbox}"\n')
    (tmp_path / "wf.py").write_text(textwrap.dedent("""
        from engine import Task, workflow

        @workflow(name="stuck")
        def stuck(ctx):
            return Task("edit", agent="coder", prompt="work", output=None, retries=0)
    """))
    return tmp_path, clean_env(PATH=f"{bindir}{os.pathsep}{os.environ['PATH']}")


def wait_for(cond, what: str, limit: int = 3000) -> None:
    for _ in range(limit):  # bounded: a condition that never holds fails the test
        if cond():
            return
        time.sleep(0.01)
    raise AssertionError(f"gave up waiting for {what}")


def test_smithers_agents_says_which_confinement_applies(tmp_path, smithers):
    p = smithers("agents")
    assert p.returncode == 0 and "OS sandbox: " in p.stdout
    assert ("bubblewrap" in p.stdout) == status()[0]


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.parametrize("sandbox", [
    "off", pytest.param("bwrap", marks=pytest.mark.skipif(not status()[0], reason=f"OS sandbox unavailable: {status()[1]}"))])
def test_kill_9_of_the_engine_leaves_no_agent_process(tmp_path, smithers, sandbox):
    proj, env = project(tmp_path, sandbox)
    p = smithers.spawn("run", "wf.py", "--run-id", "orph-1", env=env, cwd=proj)
    try:
        wait_for(lambda: (proj / "daemon.pid").exists() and (proj / "daemon.pid").read_text(), "the daemon")
        tag = "orph-1/edit/0"
        running = procs.tagged(tag)
        assert len(running) >= 3  # the guard(s), the CLI and its daemon (pids of this host's namespace)
        p.send_signal(signal.SIGKILL)
        p.wait()
        # gone (or zombies awaiting their reaper) within about 2 s
        wait_for(lambda: not procs.tagged(tag) and not any(alive(pid) for pid in running),
                 "every agent process to end", limit=200)
    finally:
        if p.poll() is None:
            p.kill()


def test_resume_ends_leftovers_before_the_step_reruns(tmp_path, smithers):
    proj, env = project(tmp_path)
    p = smithers.spawn("run", "wf.py", "--run-id", "orph-2", env=env, cwd=proj)
    wait_for(lambda: (proj / "daemon.pid").exists() and (proj / "daemon.pid").read_text(), "the daemon")
    # a leftover whose guard is gone too: started by hand with the step's tag, as if re-parented to init
    left = subprocess.Popen(["sleep", "600"], env={**env, procs.TAG_VAR: "orph-2/edit/0"}, start_new_session=True)
    p.send_signal(signal.SIGKILL)
    p.wait()
    (proj / "release").write_text("1")  # the re-run finishes
    r = smithers("resume", "orph-2", env=env, cwd=proj, timeout=120)
    assert r.returncode == 0, r.stderr
    assert left.wait(timeout=10) == -signal.SIGKILL
    assert not procs.tagged("orph-2/edit/0")

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

from engine import procs

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


def project(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "claude").write_text(CLI.format(python=sys.executable))
    (bindir / "claude").chmod(0o755)
    (tmp_path / ".smithers").mkdir()
    (tmp_path / ".smithers" / "config.toml").write_text('[agents.coder]\nkind = "claude-code"\nsandbox = "off"\n')
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


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_kill_9_of_the_engine_leaves_no_agent_process(tmp_path, smithers):
    proj, env = project(tmp_path)
    p = smithers.spawn("run", "wf.py", "--run-id", "orph-1", env=env, cwd=proj)
    try:
        wait_for(lambda: (proj / "daemon.pid").exists() and (proj / "daemon.pid").read_text(), "the daemon")
        daemon = int((proj / "daemon.pid").read_text())
        tag = "orph-1/edit/0"
        assert alive(daemon) and daemon in procs.tagged(tag)
        p.send_signal(signal.SIGKILL)
        p.wait()
        wait_for(lambda: not procs.tagged(tag), "every agent process to end", limit=200)  # 2 s at most
        assert not alive(daemon)
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

"""Hijack from the CLI: a real Claude Code step (scripted endpoint) saves its session; `smithers
hijack RUN NODE` reopens it in the step's worktree (the interactive program replaced by a stand-in
that plays the person) and the run's log records the person's diff."""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path

import pytest

from tests.fakes.openai_server import Reply
from tests.support import clean_env

from engine.agents.cli import ClaudeCodeAgent, find_binary, local_bin_dirs
from engine.agents.hijack import WRAPPER_VAR

ROOT = Path(__file__).resolve().parents[3]


def git(cwd: Path, *args: str) -> None:
    import subprocess

    subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True,
                   env={**clean_env(), "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@x.invalid",
                        "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@x.invalid"})


def test_hijack_reopens_the_session_and_records_the_diff(tmp_path, server, smithers):
    if not find_binary(ClaudeCodeAgent.binary, local_bin_dirs(ROOT)):
        pytest.skip("SKIPPED: the real `claude` is not installed (`make agent-clis` failed or was not run)")
    proj = tmp_path
    (proj / "app.py").write_text("x = 1\n")
    git(proj, "init", "-q", "-b", "main")
    (proj / ".gitignore").write_text(".smithers/\n.worktrees/\n*.db*\n")
    git(proj, "add", "-A")
    git(proj, "commit", "-qm", "init")
    (proj / ".smithers").mkdir(exist_ok=True)
    (proj / ".smithers" / "config.toml").write_text(textwrap.dedent(f"""
        [agents.coder]
        kind = "claude-code"
        model = "fake-model"
        api_base = "{server.url}"
        api_key_env = "SMITHERS_TEST_CLI_KEY"
        max_retries = 0
        max_validation_retries = 0
    """))
    (proj / "wf.py").write_text(textwrap.dedent("""
        from engine import Task, Worktree, workflow

        @workflow(name="edit")
        def edit(ctx):
            return Worktree("wt", Task("edit", agent="coder", prompt="Say done", output=None), keep=True)
    """))
    server.push(Reply.say("done"))
    env = clean_env(SMITHERS_TEST_CLI_KEY="sk-fake-test-key-0123456789")
    p = smithers("run", "wf.py", "--run-id", "hj-1", env=env, timeout=180)
    assert p.returncode == 0, p.stderr

    log = tmp_path / "stand-in.json"
    stand_in = tmp_path / "person.py"
    stand_in.write_text(f"import json, os, sys\n"
                        f"json.dump({{'argv': sys.argv[1:], 'cwd': os.getcwd()}}, open({str(log)!r}, 'w'))\n"
                        "open('by-hand.txt', 'w').write('the person was here\\n')\n")
    p = smithers("hijack", "hj-1", "edit", env={**env, WRAPPER_VAR: f"{sys.executable} {stand_in}"}, timeout=60)
    assert p.returncode == 0, p.stderr
    assert "hijacked edit" in p.stdout and "1 file(s) changed" in p.stdout

    seen = json.loads(log.read_text())
    events = [json.loads(ln) for ln in smithers("logs", "hj-1", "--json", env=env).stdout.splitlines() if ln.strip()]
    session = next(e["data"]["data"] for e in events if e["type"] == "agent" and e["data"].get("kind") == "session")
    assert seen["argv"][0].endswith("claude") and seen["argv"][1:3] == ["--resume", session["id"]]
    assert seen["cwd"] == session["workdir"] and "/.worktrees/" in seen["cwd"]
    hijacked = next(e for e in events if e["type"] == "agent" and e["data"].get("kind") == "hijack")
    assert hijacked["node_id"] == "edit" and "by-hand.txt" in hijacked["data"]["data"]["diff"]
    assert "+the person was here" in hijacked["data"]["data"]["diff"]


def test_hijack_of_a_step_without_a_session_is_bad_input(tmp_path, smithers, write_workflow):
    write_workflow("wf.py", """
        from engine import Task, workflow

        @workflow(name="plain")
        def plain(ctx):
            return Task("calc", value=1)
    """)
    assert smithers("run", "wf.py", "--run-id", "hj-2").returncode == 0
    p = smithers("hijack", "hj-2", "calc")
    assert p.returncode == 4 and "no saved agent session" in p.stderr and len(p.stderr.strip().splitlines()) == 1

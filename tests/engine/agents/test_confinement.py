"""Issue 9 items 9-12 and issue 14's sandbox: what a tool (and the process it starts) cannot do.

Escape attempts run for real: once inside bubblewrap (skipped, saying why, where it cannot run)
and once with the fallback confinement (always).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import threading
import uuid
from pathlib import Path

import pytest

import engine.tools as tools
from engine import procs, sandbox, secrets
from engine.sandbox import Policy
from engine.tools import DEFAULT_TOOLS, ToolContext, call_tool

BWRAP_OK, BWRAP_WHY = sandbox.status()
needs_bwrap = pytest.mark.skipif(not BWRAP_OK, reason=f"OS sandbox unavailable here: {BWRAP_WHY}")
MODES = [pytest.param("bwrap", marks=needs_bwrap, id="bwrap"), pytest.param("off", id="fallback")]

KEY = "sk-ant-LEAKED-0123456789abcdef"


@pytest.fixture
def wd(tmp_path: Path) -> Path:
    d = tmp_path / "work"
    d.mkdir()
    (d / "a.txt").write_text("a\n")
    return d


@pytest.fixture
def scope(wd: Path) -> procs.StepScope:
    return procs.StepScope(f"run-{uuid.uuid4().hex[:8]}", "step", 0, wd.parent)


def ctx(wd: Path, mode: str, scope: procs.StepScope | None = None, **kw) -> ToolContext:
    return ToolContext(wd, sandbox=Policy(mode=mode), scope=scope, **kw)  # type: ignore[arg-type]


async def shell(c: ToolContext, command: str, timeout: float | None = None) -> str:
    ok, out = await call_tool(DEFAULT_TOOLS, "run_shell", {"command": command, **({"timeout": timeout} if timeout
                                                                                 else {})}, c)
    assert ok, out
    return out


# -- item 9: environment from an allowlist; secrets redacted ---------------------------------

async def test_shell_environment_is_an_allowlist(wd, monkeypatch):
    leaks = {"AZURE_OPENAI_KEY": "azure-0123456789", "OPENAI_API_KEY_BACKUP": "sk-backup-0123456789",
             "GH_PAT": "ghp_0123456789abcdef", "DATABASE_URL": "postgres://app:hunter2-pw@db.local/app",
             "SOMETHING_ODD": "not-a-secret-by-name"}
    for k, v in leaks.items():
        monkeypatch.setenv(k, v)
    out = await shell(ctx(wd, "off"), "env")
    assert "PATH=" in out and "HOME=" in out
    for k in leaks:
        assert k not in out  # not even the names: the shell gets only what is allowed


@pytest.mark.parametrize("mode", MODES)
async def test_parent_environ_shows_no_keys(wd, monkeypatch, mode):
    monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)
    # a process started with the key in its environment, as the engine itself may have been
    holder = await asyncio.create_subprocess_exec("sleep", "600", env={**os.environ})
    try:
        out = await shell(ctx(wd, mode), f"cat /proc/$PPID/environ | tr '\\0' '\\n'; "
                                         f"cat /proc/{holder.pid}/environ | tr '\\0' '\\n' | grep ANTHROPIC; true")
    finally:
        holder.kill()
        await holder.wait()
    assert KEY not in out
    if mode == "bwrap":  # other processes' /proc entries do not exist in the sandbox's PID namespace
        assert "ANTHROPIC" not in out
    else:  # readable by the same user outside a sandbox, but never printed: redacted
        assert "[redacted:ANTHROPIC_API_KEY]" in out


def test_redaction_of_known_values(monkeypatch):
    monkeypatch.setenv("MY_SERVICE_TOKEN", "tok-abcdefgh12345")
    monkeypatch.setenv("DATABASE_URL", "postgresql://u:s3cr3t-pass@h:5432/db")
    monkeypatch.setenv("PLAIN", "tok-abcdefgh12345-not-secret-itself")
    secrets.register("configured-secret-value", "settings")
    text = "a tok-abcdefgh12345 b s3cr3t-pass c configured-secret-value"
    assert secrets.redact(text) == ("a [redacted:MY_SERVICE_TOKEN] b [redacted:DATABASE_URL] c "
                                    "[redacted:settings]")
    data = {"x": [text, 1, None], "y": {"z": "s3cr3t-pass"}}
    assert "s3cr3t" not in json.dumps(secrets.redact_data(data))


async def test_tool_results_are_redacted(wd, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    (wd / "leak.txt").write_text(f"key={KEY}\n")
    ok, out = await call_tool(DEFAULT_TOOLS, "read_file", {"path": "leak.txt"}, ToolContext(wd))
    assert ok and KEY not in out and "[redacted:OPENAI_API_KEY]" in out


# -- item 10: grep in linear time, off the event loop ----------------------------------------

async def test_grep_catastrophic_pattern_is_linear(wd):
    (wd / "evil.txt").write_text("a" * 40 + "!\n")  # Python's re backtracks for minutes on this
    ok, out = await call_tool(DEFAULT_TOOLS, "grep", {"pattern": "(a+)+$", "path": "evil.txt"}, ToolContext(wd))
    assert ok and out == "no match for '(a+)+$'"


async def test_grep_backreference_is_refused_with_a_hint(wd):
    ok, out = await call_tool(DEFAULT_TOOLS, "grep", {"pattern": r"(a)\1"}, ToolContext(wd))
    assert not ok and "RE2" in out


async def test_file_tools_run_off_the_event_loop(wd, monkeypatch):
    seen: list[bool] = []
    real = tools.re2.compile

    def spy(*a, **kw):
        seen.append(threading.current_thread() is threading.main_thread())
        return real(*a, **kw)

    monkeypatch.setattr(tools.re2, "compile", spy)
    ok, _ = await call_tool(DEFAULT_TOOLS, "grep", {"pattern": "a"}, ToolContext(wd))
    assert ok and seen == [False]


# -- item 11: nothing under .git is writable --------------------------------------------------

@pytest.mark.parametrize("path", [".git/config", ".git/hooks/pre-commit", "sub/.git/config", ".GIT/config",
                                  "./x/../.git/config", ".git"])
async def test_writes_under_git_refused(wd, path):
    (wd / ".git" / "hooks").mkdir(parents=True)
    (wd / ".git" / "config").write_text("[core]\n")
    (wd / "sub" / ".git").mkdir(parents=True)
    (wd / "sub" / ".git" / "config").write_text("[core]\n")
    ok, out = await call_tool(DEFAULT_TOOLS, "write_file", {"path": path, "content": "[core]\nfsmonitor = x\n"},
                              ToolContext(wd))
    assert not ok and ".git" in out and "refused" in out
    ok, out = await call_tool(DEFAULT_TOOLS, "edit_file", {"path": path, "search": "[core]", "replace": "x"},
                              ToolContext(wd))
    assert not ok
    assert (wd / ".git" / "config").read_text() == "[core]\n" and not (wd / ".git" / "hooks" / "pre-commit").exists()


async def test_git_file_of_a_worktree_and_links_into_git_refused(wd):
    (wd / ".git").write_text("gitdir: /elsewhere\n")  # a worktree's .git is a file
    ok, out = await call_tool(DEFAULT_TOOLS, "write_file", {"path": ".git", "content": "gitdir: /evil\n"},
                              ToolContext(wd))
    assert not ok and (wd / ".git").read_text() == "gitdir: /elsewhere\n"
    (wd / "g").mkdir()
    (wd / "g" / "config").write_text("x")
    (wd / "link").symlink_to(wd / "g")
    os.rename(wd / "g", wd / "g2")  # a dangling link is fine; now a link into a .git folder:
    (wd / "repo" / ".git").mkdir(parents=True)
    (wd / "cfg").symlink_to(wd / "repo" / ".git")
    ok, out = await call_tool(DEFAULT_TOOLS, "write_file", {"path": "cfg/config", "content": "x"}, ToolContext(wd))
    assert not ok and ".git" in out
    ok, out = await call_tool(DEFAULT_TOOLS, "read_file", {"path": ".git"}, ToolContext(wd))
    assert ok and "gitdir" in out  # reading is fine


# -- item 12 and the sandbox: every descendant ends with the command ---------------------------

DAEMON = (f"{sys.executable} -c \"import os,time\nif os.fork()==0:\n os.setsid()\n if os.fork()==0:\n"
          "  open('daemon.started','w').write('1')\n  time.sleep(600)\n os._exit(0)\nos.wait()\"")


@pytest.mark.parametrize("mode", MODES)
async def test_double_forked_setsid_daemon_dies_with_the_call(wd, scope, mode):
    out = await shell(ctx(wd, mode, scope), DAEMON + " && echo forked")
    assert "forked" in out and (wd / "daemon.started").exists()
    assert procs.tagged(scope.tag) == []  # nothing carrying this step's tag is left anywhere


@pytest.mark.parametrize("mode", MODES)
async def test_timeout_kills_the_whole_tree(wd, scope, mode):
    out = await shell(ctx(wd, mode, scope), DAEMON + "; sleep 600", timeout=1)
    assert "timed out" in out and procs.tagged(scope.tag) == []


@needs_bwrap
async def test_sandbox_writes_only_the_worktree(wd, tmp_path):
    outside = tmp_path / "outside.txt"
    (wd / ".git" / "hooks").mkdir(parents=True)
    (wd / ".git" / "config").write_text("[core]\n")
    out = await shell(ctx(wd, "bwrap"), f"echo x > {outside}; echo hook > .git/hooks/post-checkout; "
                                        "git config core.fsmonitor evil 2>&1 | head -1; echo y > inside.txt; "
                                        "echo t > /tmp/t && cat /tmp/t; ls /tmp")
    assert not outside.exists() and not (wd / ".git" / "hooks" / "post-checkout").exists()
    assert (wd / ".git" / "config").read_text() == "[core]\n"
    assert (wd / "inside.txt").read_text() == "y\n" and "t\nt\n" in out  # a private /tmp, empty but for t


@needs_bwrap
async def test_sandbox_has_no_network_but_the_allowed_endpoint(wd):
    from tests.fakes.openai_server import FakeLLMServer

    with FakeLLMServer() as allowed, FakeLLMServer() as other:
        probe = (f"{sys.executable} -c \"import urllib.request,sys\nfor u in sys.argv[1:]:\n try:\n"
                 "  print(u, urllib.request.urlopen(u, timeout=5).status)\n except Exception as e:\n"
                 "  print(u, 'refused', type(e).__name__)\" ")
        urls = f"{allowed.url}/v1/models {other.url}/v1/models"
        out = await shell(ToolContext(wd, sandbox=Policy(mode="bwrap")), probe + urls)
        assert f"{allowed.url}/v1/models refused" in out and f"{other.url}/v1/models refused" in out
        out = await shell(ToolContext(wd, sandbox=Policy(mode="bwrap", network="endpoint", endpoints=[allowed.url])),
                          probe + urls)
        assert f"{allowed.url}/v1/models 200" in out and f"{other.url}/v1/models refused" in out


async def test_fallback_is_said_once_per_step(wd, scope, monkeypatch):
    monkeypatch.setattr(sandbox, "status", lambda: (False, "bubblewrap not found: install it"))
    notes: list[tuple[str, str]] = []
    scope.on_note = lambda k, v: notes.append((k, v))
    scope.sandbox = Policy(mode="auto")
    for _ in range(3):
        await shell(ToolContext(wd, scope=scope), "true")
    assert len(notes) == 1 and notes[0][0] == "sandbox" and "bubblewrap not found" in notes[0][1]


async def test_required_sandbox_refuses_when_unavailable(wd, monkeypatch):
    monkeypatch.setattr(sandbox, "status", lambda: (False, "bubblewrap not found: install it"))
    ok, out = await call_tool(DEFAULT_TOOLS, "run_shell", {"command": "true"}, ctx(wd, "bwrap"))
    assert not ok and "required" in out and "bubblewrap not found" in out


async def test_leftovers_of_a_step_are_ended(wd, scope):
    """A process of an earlier attempt whose guard died too (so nobody ended it) carries the tag."""
    env = {**os.environ, procs.TAG_VAR: scope.tag}
    p = await asyncio.create_subprocess_exec("sleep", "600", env=env, start_new_session=True)
    assert procs.tagged(scope.tag) == [p.pid]
    ended = await asyncio.to_thread(procs.end_leftovers, scope)
    assert p.pid in ended and await p.wait() != 0 and procs.tagged(scope.tag) == []

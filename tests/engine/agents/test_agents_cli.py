"""CLI agents: stand-in scripts for the base behaviour (the real binaries: test_agents_real_cli.py)."""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path

import pytest
from pydantic import BaseModel

from engine.agents import AgentError, AgentUnavailable, ClaudeCodeAgent, CodexAgent, OutputInvalid
from engine import procs
from engine.agents.cli import find_binary, local_bin_dirs


class Summary(BaseModel):
    summary: str
    files_changed: int


def fake_claude(tmp_path: Path, body: str) -> Path:
    """An executable that behaves like `claude -p --output-format stream-json` as scripted by `body`."""
    path = tmp_path / "bin" / "claude"
    path.parent.mkdir(exist_ok=True)
    path.write_text(f"#!{sys.executable}\nFAKE_LOG = {str(tmp_path / 'calls.jsonl')!r}\n" + textwrap.dedent("""
        import json, sys, time, os
        argv = sys.argv[1:]
        prompt = sys.stdin.read()
        with open(FAKE_LOG, "a") as log:
            log.write(json.dumps({"argv": argv, "prompt": prompt}) + "\\n")
        def out(obj):
            print(json.dumps(obj), flush=True)
        def result(text, cost=0.01):
            out({"type": "result", "subtype": "success", "is_error": False, "result": text, "session_id": "s-1",
                 "total_cost_usd": cost, "usage": {"input_tokens": 100, "cache_read_input_tokens": 20,
                 "output_tokens": 30}})
        out({"type": "system", "subtype": "init", "session_id": "s-1"})
    """) + textwrap.dedent(body))
    path.chmod(0o755)
    return path


def calls(log: Path) -> list[dict]:
    return [json.loads(line) for line in log.read_text().splitlines()]


@pytest.fixture
def log(tmp_path, monkeypatch) -> Path:
    path = tmp_path / "calls.jsonl"
    monkeypatch.setenv("FAKE_LOG", str(path))
    return path


async def test_stream_events_usage_and_corrective_resume(tmp_path, log, events):
    exe = fake_claude(tmp_path, """
        if "--resume" in argv:
            result('{"summary": "done", "files_changed": 1}', cost=0.02)
        else:
            out({"type": "assistant", "message": {"content": [{"type": "text", "text": "Editing."},
                 {"type": "tool_use", "id": "t1", "name": "Edit", "input": {"file_path": "a.py"}}]}})
            out({"type": "user", "message": {"content": [{"type": "tool_result", "tool_use_id": "t1",
                 "content": "ok"}]}})
            result("I changed one file.")
    """)
    agent = ClaudeCodeAgent(binary=str(exe), model="sonnet")
    result = await agent.run("Fix it", output=Summary, workdir=tmp_path, emit=events)
    assert result.output == Summary(summary="done", files_changed=1) and result.attempts == 2
    assert result.usage.input_tokens == 240 and result.usage.output_tokens == 60
    assert result.usage.cost_usd == pytest.approx(0.03)
    first, second = calls(log)
    assert first["argv"][:3] == ["-p", "--output-format", "stream-json"]
    assert "--permission-mode" in first["argv"] and "acceptEdits" in first["argv"]
    assert "--dangerously-skip-permissions" not in first["argv"]
    assert "Fix it" in first["prompt"] and "JSON schema" in first["prompt"]
    assert second["argv"][second["argv"].index("--resume") + 1] == "s-1"
    assert "files_changed" in second["prompt"] and "Fix it" not in second["prompt"]
    assert events.kinds()[:4] == ["message", "tool_call", "tool_result", "retry"]
    assert next(e for e in events if e.kind == "tool_call").data["name"] == "Edit"


async def test_still_invalid_after_retries(tmp_path, log, events):
    exe = fake_claude(tmp_path, 'result("no json here")\n')
    with pytest.raises(OutputInvalid) as err:
        await ClaudeCodeAgent(binary=str(exe), max_validation_retries=2).run(
            "x", output=Summary, workdir=tmp_path, emit=events)
    assert "after 3 attempts" in str(err.value) and len(calls(log)) == 3


async def test_idle_timeout_kills_the_process(tmp_path, log, events):
    exe = fake_claude(tmp_path, """
        if os.fork() == 0:  # a child that would outlive a plain kill of the CLI
            time.sleep(60)
        time.sleep(60)
    """)
    scope = procs.StepScope("idle-run", "step", 0, tmp_path)
    token = procs.STEP.set(scope)
    try:
        with pytest.raises(AgentError, match="idle timeout"):
            await ClaudeCodeAgent(binary=str(exe), idle_timeout=0.5).run("x", output=None, workdir=tmp_path,
                                                                          emit=events)
    finally:
        procs.STEP.reset(token)
    assert procs.tagged(scope.tag) == []  # the CLI and its child are gone


async def test_failure_exit_is_one_line(tmp_path, log, events):
    exe = fake_claude(tmp_path, """
        print("Error: Invalid API key · Please run /login", file=sys.stderr)
        sys.exit(1)
    """)
    with pytest.raises(AgentError) as err:
        await ClaudeCodeAgent(binary=str(exe)).run("x", output=None, workdir=tmp_path, emit=events)
    assert "exit 1" in str(err.value) and "Invalid API key" in str(err.value) and "\n" not in str(err.value)


async def test_missing_binary(tmp_path, monkeypatch, events):
    monkeypatch.setenv("PATH", str(tmp_path))
    agent = CodexAgent(search_dirs=[tmp_path / "nowhere"])
    ok, why = agent.available()
    assert not ok and "npm install -g @openai/codex" in why
    with pytest.raises(AgentUnavailable, match="codex"):
        await agent.run("x", output=None, workdir=tmp_path, emit=events)


def test_local_node_modules_bin_is_searched(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    bindir = tmp_path / "tools" / "node_modules" / ".bin"
    bindir.mkdir(parents=True)
    (bindir / "gemini").write_text("#!/bin/sh\n")
    (bindir / "gemini").chmod(0o755)
    assert find_binary("gemini", local_bin_dirs(tmp_path)) == str(bindir / "gemini")


def fake_cli(tmp_path: Path, name: str, body: str) -> Path:
    path = tmp_path / "bin" / name
    path.parent.mkdir(exist_ok=True)
    path.write_text(f"#!{sys.executable}\nimport json, sys, os\nargv = sys.argv[1:]\n" + textwrap.dedent(body))
    path.chmod(0o755)
    return path


async def test_codex_jsonl(tmp_path, events):
    exe = fake_cli(tmp_path, "codex", """
        assert argv[:2] == ["exec", "--json"] and "--skip-git-repo-check" in argv
        for e in [{"type": "thread.started", "thread_id": "th1"},
                  {"type": "item.started", "item": {"id": "1", "type": "command_execution", "command": "ls"}},
                  {"type": "item.completed", "item": {"id": "1", "type": "command_execution", "command": "ls",
                   "aggregated_output": "a.py", "exit_code": 0}},
                  {"type": "item.completed", "item": {"id": "2", "type": "agent_message",
                   "text": '{"summary": "listed", "files_changed": 0}'}},
                  {"type": "turn.completed", "usage": {"input_tokens": 50, "cached_input_tokens": 0,
                   "output_tokens": 5}}]:
            print(json.dumps(e))
    """)
    result = await CodexAgent(binary=str(exe)).run("list", output=Summary, workdir=tmp_path, emit=events)
    assert result.output.summary == "listed" and result.usage.input_tokens == 50
    assert events.kinds() == ["tool_call", "tool_result", "message"]


async def test_error_event_emitted_before_raising(tmp_path, events):
    exe = fake_cli(tmp_path, "codex", "sys.exit(2)\n")
    with pytest.raises(AgentError):
        await CodexAgent(binary=str(exe)).run("x", output=None, workdir=tmp_path, emit=events)
    assert events[-1].kind == "error" and "exit 2" in events[-1].text

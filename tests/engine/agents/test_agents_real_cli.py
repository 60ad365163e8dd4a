"""Every coding-agent CLI, as its real binary (installed by `make agent-clis`), against a scripted
endpoint on 127.0.0.1 speaking the API that CLI uses:

| CLI         | API                            |
|-------------|--------------------------------|
| Claude Code | Anthropic Messages (streamed)  |
| Codex       | OpenAI Responses (streamed)    |
| Gemini CLI  | Gemini streamGenerateContent   |
| Aider       | OpenAI Chat Completions        |
| OpenCode    | OpenAI Chat Completions (SSE)  |
| Pi          | OpenAI Chat Completions (SSE)  |

Per CLI: the edit lands in the worktree, the structured output validates, usage is recorded, events
stream while it runs, the session id is reported (for hijack), a read-only step cannot write, and a
401 and a 500 from the endpoint each end the attempt with one clear line (the CLI's own retry budget
is the project's, so it cannot take long). A CLI that is not installed is skipped, saying so.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from tests.fakes.openai_server import Reply

from engine import procs
from engine.agents import AgentError
from engine.agents.cli import CLI_AGENTS, find_binary, local_bin_dirs
from engine.tools import READ_ONLY_TOOLS

ROOT = Path(__file__).resolve().parents[3]
ANSWER = '{"summary": "added hello.py", "files_changed": 1}'
KEY = "sk-fake-test-key-0123456789"


class Summary(BaseModel):
    summary: str
    files_changed: int


def write_call(kind: str, repo: Path) -> Reply:
    """The scripted model asks the CLI's own file-writing tool to create hello.py."""
    target, body = str(repo / "hello.py"), "print('hello')\n"
    if kind == "aider":  # aider edits from the reply text (its "whole" edit format), one reply a message
        return Reply.say(f"hello.py\n```python\n{body}```\n\n{ANSWER}")
    return Reply.tools({
        "claude-code": ("Write", {"file_path": target, "content": body}),
        "codex": ("exec_command", {"cmd": f"printf \"print('hello')\\n\" > {target}"}),
        "gemini": ("write_file", {"file_path": target, "content": body}),
        "opencode": ("write", {"filePath": target, "content": body}),
        "pi": ("write", {"path": "hello.py", "content": body}),
    }[kind])


def binary_or_skip(kind: str) -> str:
    cls = CLI_AGENTS[kind]
    exe = find_binary(cls.binary, local_bin_dirs(ROOT))
    if not exe:
        pytest.skip(f"SKIPPED: the real `{cls.binary}` is not installed (`make agent-clis` failed or was not run)")
    return exe


@pytest.fixture(autouse=True)
def key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SMITHERS_TEST_CLI_KEY", KEY)


@pytest.fixture(scope="module")
def states(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One managed home per CLI for the module, as a project keeps it (a first start is the slow one)."""
    return tmp_path_factory.mktemp("cli-state")


def make_agent(kind: str, server: Any, states: Path, **kw: Any) -> Any:
    exe = binary_or_skip(kind)
    return CLI_AGENTS[kind](binary=exe, model="fake-model", api_base=server.url, api_key_env="SMITHERS_TEST_CLI_KEY",
                            state_dir=states / kind, timeout=120, idle_timeout=60, max_retries=0,
                            max_validation_retries=1, **kw)


def only_tool_requests(server: Any, kind: str, gate: threading.Event | None = None) -> None:
    """OpenCode asks for a session title first (no tools): answer those without using the script.
    With `gate`: the model's second answer (aider: its only one) waits until the test has seen an
    event, so an agent that only reported at exit would never finish: events must be live."""
    asked = [0]

    def route(rec: Any) -> Reply | None:
        body = rec.body or {}
        if "messages" in body and not body.get("tools") and kind == "opencode":
            return Reply.say("A title")
        asked[0] += 1
        if gate is not None and asked[0] >= (1 if kind == "aider" else 2):
            gate.wait(90)
        return None

    server.route = route


async def run_in_step(agent: Any, repo: Path, **kw: Any) -> tuple[Any, procs.StepScope]:
    scope = procs.StepScope(f"real-{agent.name}", "step", 0, repo.parent)
    token = procs.STEP.set(scope)
    try:
        return await agent.run("Add hello.py", workdir=repo, **kw), scope
    finally:
        procs.STEP.reset(token)


@pytest.mark.parametrize("kind", list(CLI_AGENTS))
async def test_edit_structured_output_usage_and_stream(kind, server, repo, states, events):
    agent = make_agent(kind, server, states)
    gate = threading.Event()
    only_tool_requests(server, kind, gate)
    server.push(write_call(kind, repo), *([] if kind == "aider" else [Reply.say(ANSWER)]))

    def emit(ev: Any) -> None:
        if ev.kind in ("tool_call", "tool_result") or kind == "aider":
            gate.set()  # seen while the CLI still runs: it is waiting for the model's next answer
        events(ev)

    result, scope = await run_in_step(agent, repo, output=Summary, emit=emit)
    assert (repo / "hello.py").read_text() == "print('hello')\n"
    assert result.output == Summary(summary="added hello.py", files_changed=1)
    assert result.usage.input_tokens > 0 and result.usage.output_tokens > 0 and result.usage.agent == agent.name
    kinds = events.kinds()
    if kind != "aider":  # aider has no tools: it edits from the reply
        assert kinds.index("tool_call") < kinds.index("tool_result")
    session = scope.notes.get("session")
    assert session and session["id"] and session["cli"] == kind and session["workdir"] == str(repo)
    calls = server.completions()
    assert calls and all(KEY in " ".join(r.headers.values()) or KEY in r.path for r in calls)  # the key we configured
    assert procs.tagged(scope.tag) == []  # nothing left running
    assert not (repo / ".gitignore").exists() and not list(repo.glob(".aider*"))  # the worktree left as found


@pytest.mark.parametrize("kind", list(CLI_AGENTS))
async def test_read_only_step_cannot_write(kind, server, repo, states, events):
    agent = make_agent(kind, server, states)
    only_tool_requests(server, kind)
    server.push(write_call(kind, repo), *([] if kind == "aider" else [Reply.say(ANSWER)]))
    await run_in_step(agent, repo, output=None, emit=events, tools=list(READ_ONLY_TOOLS))
    assert not (repo / "hello.py").exists()


@pytest.mark.parametrize("kind", list(CLI_AGENTS))
async def test_endpoint_errors_are_one_clear_line(kind, server, repo, states, events):
    agent = make_agent(kind, server, states)
    for status, said in ((401, "invalid x-api-key"), (500, "upstream exploded")):
        server.default = Reply.error(status, text=said)
        server.requests.clear()
        with pytest.raises(AgentError) as err:
            await run_in_step(agent, repo, output=Summary, emit=events)
        line = str(err.value)
        assert "\n" not in line and line.startswith(f"{agent.name}:"), line
        lower = line.lower()  # the endpoint's message, its status, or the CLI's own words for it
        assert said in line or str(status) in line or (
            "key" in lower or "authenticat" in lower if status == 401 else
            any(w in lower for w in ("server", "overloaded", "demand", "internal"))), line
        assert "}" not in line.split(":", 1)[1][-3:] and "\x1b" not in line  # not the tail of a JSON dump
        assert len(server.completions()) <= 3  # the project's retry budget, not the CLI's default


@pytest.mark.parametrize("kind", ["claude-code", "gemini"])
async def test_a_retrying_cli_says_so_while_it_retries(kind, server, repo, states, events):
    """A failing endpoint within the retry budget: the retry is an event (the app shows it live), then
    the answer comes. (Codex, OpenCode and Pi retry without saying so in their output.)"""
    agent = make_agent(kind, server, states)
    agent.max_retries = 1
    server.push(Reply.error(500, text="flaky upstream"), Reply.say("done after a retry"))
    result, _ = await run_in_step(agent, repo, output=None, emit=events)
    assert result.text == "done after a retry"
    retry = next(e for e in events if e.kind == "retry")
    assert retry.data.get("reason") == "provider" and "500" in retry.text + str(retry.data)

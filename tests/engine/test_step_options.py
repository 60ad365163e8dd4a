"""ctx.status / ctx.error, Worktree(continue_on_fail=), and Task(tools=...) for agent steps."""
from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel

from engine import Sequence, Task, Worktree, workflow
from engine.agents.base import Agent, AgentResult, Usage
from engine.tools import DEFAULT_TOOLS, READ_ONLY_TOOLS

SEEN: dict[str, object] = {}


def boom(ctx):
    raise ValueError("no luck")


def report(ctx):
    return {"state": ctx.status("maybe"), "error": ctx.error("maybe"), "never": ctx.status("nope")}


@workflow(name="status-of-a-failure")
def status_wf(ctx):
    return Sequence(Task("maybe", run=boom, retries=0, continue_on_fail=True), Task("report", run=report))


async def test_ctx_status_tells_a_failed_step_from_one_that_never_ran(engine):
    eng, store = engine
    ex = await eng.start(status_wf, "module:tests.engine.test_step_options:status-of-a-failure")
    assert await ex.execute() == "finished"
    out = ex.state.outputs[("report", 0)]
    assert out["state"] == "failed" and out["error"].startswith("ValueError: no luck") and out["never"] is None


@workflow(name="worktree-may-fail")
def worktree_wf(ctx):
    return Sequence(Worktree("wt", Task("inside", value=1), continue_on_fail=True), Task("after", value=2))


async def test_a_worktree_that_cannot_be_made_fails_only_its_part(engine, tmp_path):
    eng, store = engine  # tmp_path is not a git repository: the checkout fails
    ex = await eng.start(worktree_wf, "module:tests.engine.test_step_options:worktree-may-fail", workdir=tmp_path)
    assert await ex.execute() == "finished"
    assert ex.state.nodes[("wt", 0)].state == "failed"
    assert "not inside a git repository" in ex.state.nodes[("wt", 0)].error
    assert ("inside", 0) not in ex.state.outputs and ex.state.outputs[("after", 0)] == 2


class Verdict(BaseModel):
    ok: bool


class Recorder(Agent):
    """An agent that records the tool list the engine hands it."""

    name = "recorder"

    def available(self):
        return True, ""

    async def run(self, prompt, *, output, workdir, emit, tools=None):
        SEEN[prompt] = None if tools is None else sorted(t.name for t in tools)
        return AgentResult(output=output(ok=True), text="{}", usage=Usage(agent=self.name),
                           structured_mode="none", attempts=1)


@workflow(name="tools-per-step")
def tools_wf(ctx):
    agent = Recorder()
    return Sequence(Task("look", agent=agent, prompt="look", output=Verdict, tools="read_only"),
                    Task("edit", agent=agent, prompt="edit", output=Verdict),
                    Task("custom", agent=agent, prompt="custom", output=Verdict, tools=DEFAULT_TOOLS[:1]))


async def test_an_agent_step_gets_the_tools_it_names(engine):
    eng, store = engine
    ex = await eng.start(tools_wf, "module:tests.engine.test_step_options:tools-per-step")
    assert await ex.execute() == "finished"
    assert SEEN["look"] == sorted(t.name for t in READ_ONLY_TOOLS)
    assert not {"write_file", "edit_file", "run_shell"} & set(SEEN["look"])
    assert SEEN["edit"] is None  # the agent's own set
    assert SEEN["custom"] == ["read_file"]


def test_claude_code_is_asked_for_its_read_only_mode():
    from engine.agents.cli import ClaudeCodeAgent, CodexAgent, RunState

    ro, rw = RunState(read_only=True), RunState()
    cmd = ClaudeCodeAgent().command("claude", "p", Path("."), None, ro)
    allowed = cmd[cmd.index("--allowedTools") + 1].split(",")
    assert not {"Write", "Edit", "MultiEdit", "Bash"} & set(allowed) and "acceptEdits" not in cmd
    assert "acceptEdits" in ClaudeCodeAgent().command("claude", "p", Path("."), None, rw)
    assert "read-only" in CodexAgent().command("codex", "p", Path("."), None, ro)
    assert "workspace-write" in CodexAgent().command("codex", "p", Path("."), None, rw)

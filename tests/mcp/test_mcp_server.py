"""`smithers mcp` end to end: the `mcp` SDK's own client against the real server subprocess over
stdio — the contract tool names, writing a workflow (broken: one line with its line number and
nothing saved; good: saved), starting it, reading its events until it waits at its gate,
approving, seeing it finish; bad arguments and bad requests are one clear line, never a traceback."""
from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from mcp import Client
from mcp.client.stdio import StdioServerParameters

from tests.support import Smithers, clean_env

TOOLS = {"list_workflows", "describe_workflow", "validate_workflow", "write_workflow", "start_run", "get_run",
         "list_runs", "get_events", "approve", "deny", "cancel", "resume", "fork", "rewind", "replay",
         "list_frames", "diff"}
MORE = {"signal", "answer"}  # the language's waits (issue 15)

REVIEWED = textwrap.dedent("""
    from pydantic import BaseModel, Field
    from engine import Approval, Sequence, Task, workflow


    class Input(BaseModel):
        topic: str = Field(description="what to write about")


    class Draft(BaseModel):
        title: str
        words: int


    def draft(ctx) -> Draft:
        ctx.log(f"drafting {ctx.input.topic}")
        return Draft(title=ctx.input.topic.title(), words=len(ctx.input.topic.split()))


    @workflow(input=Input)
    def reviewed_draft(ctx):
        \"\"\"Drafts, asks a human, then publishes.\"\"\"
        d = ctx.get("draft")
        return Sequence(
            Task("draft", run=draft, output=Draft),
            Approval("publish", message=f"Publish {d.title if d else 'the draft'}?"),
            Task("published", value={"title": d.title if d else None}),
        )
""").lstrip()


def params(project: Path, elsewhere: bool = False) -> StdioServerParameters:
    """The server as an agent starts it: in the project, or from elsewhere naming it (--project)."""
    if elsewhere:
        return StdioServerParameters(command=sys.executable, args=["-m", "smithers_tui", "mcp", "--project",
                                                                   str(project)], cwd=str(project.parent), env=clean_env())
    return StdioServerParameters(command=sys.executable,
                                 args=["-m", "smithers_tui", "--db", str(project / ".smithers" / "smithers.db"), "mcp"],
                                 cwd=str(project), env=clean_env())


def result(r: Any) -> Any:
    assert not r.is_error, r.content[0].text
    return json.loads(r.content[0].text)


def error(r: Any) -> str:
    assert r.is_error, r.content
    text = r.content[0].text
    assert "Traceback" not in text and "\n" not in text, text
    return text


async def events_until(client: Client, run_id: str, statuses: set[str], since: int = 0) -> tuple[list[dict], dict]:
    """get_events with wait, until the run's status is one of `statuses`."""
    seen: list[dict] = []
    for _ in range(100):
        got = result(await client.call_tool("get_events", {"run_id": run_id, "since": since, "wait": 30}))
        seen += got["events"]
        since = got["next_since"]
        if got["status"] in statuses and not got["more"]:
            return seen, got
    raise AssertionError(f"run {run_id} never reached {statuses}: {seen[-5:]}")


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / ".smithers").mkdir()
    return tmp_path


async def test_an_agent_writes_starts_follows_and_approves_a_workflow(project):
    async with Client(params(project)) as client:
        tools = {t.name: t for t in (await client.list_tools()).tools}
        assert set(tools) == TOOLS | MORE
        assert all(t.description and t.input_schema["type"] == "object" for t in tools.values())
        assert tools["approve"].input_schema["required"] == ["run_id"]

        broken = REVIEWED.replace("words=len(ctx.input.topic.split())", "words=len(ctx.input.topic.split())")
        broken = broken.replace('Approval("publish"', 'Approval(publish_id')
        text = error(await client.call_tool("write_workflow", {"file": "reviewed", "source": broken,
                                                               "sample_input": {"topic": "mcp servers"}}))
        line = next(i for i, t in enumerate(broken.splitlines(), 1) if "publish_id" in t)
        assert text.startswith(f"write_workflow: .smithers/workflows/reviewed.py:{line}:") and "publish_id" in text
        assert not (project / ".smithers" / "workflows" / "reviewed.py").exists()
        text = error(await client.call_tool("write_workflow", {"file": "reviewed", "source": REVIEWED}))
        assert "sample input" in text and "topic: Field required" in text
        assert not (project / ".smithers" / "workflows" / "reviewed.py").exists()

        checked = result(await client.call_tool("validate_workflow", {"source": REVIEWED,
                                                                      "sample_input": {"topic": "x"}}))
        assert checked["valid"] and checked["steps"] == ["draft", "publish", "published"]
        saved = result(await client.call_tool("write_workflow", {"file": "reviewed", "source": REVIEWED,
                                                                 "sample_input": {"topic": "mcp servers"}}))
        assert saved["path"] == ".smithers/workflows/reviewed.py" and saved["workflow"] == "reviewed-draft"
        assert (project / ".smithers" / "workflows" / "reviewed.py").read_text() == REVIEWED
        names = {w["name"]: w for w in result(await client.call_tool("list_workflows", {}))["workflows"]}
        assert names["reviewed-draft"]["input_schema"]["required"] == ["topic"] and "hello" in names
        described = result(await client.call_tool("describe_workflow", {"name": "hello"}))
        assert described["steps"] == ["greetings", "greet", "done"]

        run_id = result(await client.call_tool("start_run", {"workflow": "reviewed-draft",
                                                             "input": {"topic": "durable agents"}}))["run_id"]
        seen, got = await events_until(client, run_id, {"waiting", "finished", "failed"})
        assert got["status"] == "waiting"
        assert got["waiting"] == [{"node_id": "publish", "iteration": 0, "message": "Publish Durable Agents?"}]
        assert any(e["type"] == "log" and e["data"]["message"] == "drafting durable agents" for e in seen)

        decided = result(await client.call_tool("approve", {"run_id": run_id[:8], "note": "ship it"}))
        assert (decided["decision"], decided["node_id"], decided["note"]) == ("approved", "publish", "ship it")
        again = error(await client.call_tool("deny", {"run_id": run_id}))
        assert again.startswith("deny: ") and "already approved" in again

        _, got = await events_until(client, run_id, {"finished", "failed"}, got["next_since"])
        assert got["status"] == "finished"
        report = result(await client.call_tool("get_run", {"run_id": run_id}))
        assert report == Smithers(project, project / ".smithers" / "smithers.db").json("show", run_id)
        assert {n["id"]: n["output"] for n in report["nodes"]}["published"] == {"title": "Durable Agents"}
        frames = result(await client.call_tool("list_frames", {"run_id": run_id}))["frames"]
        assert frames[0]["frame"] == 0 and len(frames) == report["frame"] + 1
        runs = result(await client.call_tool("list_runs", {"status": "finished"}))["runs"]
        assert [r["run_id"] for r in runs] == [run_id]

        fork = result(await client.call_tool("fork", {"run_id": run_id, "frame": 1,
                                                      "input": {"topic": "forked topic"}, "run": True}))
        _, got = await events_until(client, fork["run_id"], {"waiting", "finished", "failed"})
        assert got["status"] == "waiting" and got["waiting"][0]["message"] == "Publish Forked Topic?"
        assert result(await client.call_tool("cancel", {"run_id": fork["run_id"]}))["result"] == "cancelled"

        # resources and the prompt
        assert {str(r.uri) for r in (await client.list_resources()).resources} >= {"smithers://guide",
                                                                                   "smithers://runs"}
        guide = (await client.read_resource("smithers://guide")).contents[0].text
        assert guide.startswith("# Writing Smithers workflows")
        one = json.loads((await client.read_resource(f"smithers://runs/{run_id}")).contents[0].text)
        assert one["run_id"] == run_id and one["status"] == "finished"
        prompt = await client.get_prompt("write_workflow", {"goal": "triage issues"})
        assert "triage issues" in prompt.messages[0].content.text


async def test_bad_arguments_and_requests_are_one_clear_line(project):
    async with Client(params(project, elsewhere=True)) as client:
        for tool, args, words in (
                ("get_run", {}, "run_id: Field required"),
                ("get_run", {"run_id": 7}, "run_id: Input should be a valid string"),
                ("start_run", {"workflow": "hello", "input": "times=3"}, "input: Input should be a valid dictionary"),
                ("get_events", {"run_id": "x", "wait": 900}, "wait: Input should be less than or equal to 60"),
                ("fork", {"run_id": "x", "frame": -2}, "frame: Input should be greater than or equal to 0"),
                ("start_run", {"workflow": "no-such-flow"}, "unknown workflow 'no-such-flow'"),
                ("start_run", {"workflow": "hello", "input": {"times": "many"}}, "times: Input should be a valid"),
                ("get_run", {"run_id": "nope"}, "no run 'nope'"),
                ("write_workflow", {"file": "../escape", "source": "x = 1"}, "not a workflow file name"),
                ("write_workflow", {"file": "nothing", "source": "x = 1\n"}, "no @workflow"),
                ("validate_workflow", {"source": "def broken(:\n"}, "draft.py:1: SyntaxError")):
            text = error(await client.call_tool(tool, args))
            assert text.startswith(tool) and words in text, text
        assert not (project / ".smithers" / "workflows").exists()
        assert Smithers(project, project / ".smithers" / "smithers.db").json("ps") == []


WAITS = textwrap.dedent("""
    from pydantic import BaseModel
    from engine import HumanTask, Sequence, Signal, Task, workflow


    class CI(BaseModel):
        passed: bool


    class Review(BaseModel):
        verdict: str


    @workflow
    def waits(ctx):
        \"\"\"Waits for CI, then for a person's review.\"\"\"
        return Sequence(Signal("ci", output=CI), HumanTask("review", prompt="How is it?", output=Review),
                        Task("end", value="done"))
""").lstrip()


async def test_an_agent_signals_and_answers_a_waiting_run(project):
    async with Client(params(project)) as client:
        assert result(await client.call_tool("write_workflow", {"file": "waits", "source": WAITS}))
        run_id = result(await client.call_tool("start_run", {"workflow": "waits"}))["run_id"]
        seen, _ = await events_until(client, run_id, {"waiting", "running"})
        while not any(e["type"] == "wait_started" for e in seen):
            more, _ = await events_until(client, run_id, {"waiting", "running"}, seen[-1]["seq"])
            seen += more
        text = error(await client.call_tool("signal", {"run_id": run_id, "name": "ci", "data": {"passed": "no?"}}))
        assert "passed" in text
        sent = result(await client.call_tool("signal", {"run_id": run_id, "name": "ci", "data": {"passed": True}}))
        assert sent["matched"] is True
        seen, got = await events_until(client, run_id, {"waiting"}, seen[-1]["seq"])
        text = error(await client.call_tool("answer", {"run_id": run_id, "data": {"nope": 1}}))
        assert "verdict" in text
        result(await client.call_tool("answer", {"run_id": run_id, "data": {"verdict": "fine"}}))
        await events_until(client, run_id, {"finished"}, got["next_since"])
        report = result(await client.call_tool("get_run", {"run_id": run_id}))
        assert {n["id"]: n["output"] for n in report["nodes"]}["review"] == {"verdict": "fine"}

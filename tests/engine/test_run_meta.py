"""What a run records for whoever picks it up later: its agent override, and gate decisions made
while no process runs it."""
from __future__ import annotations

WORKFLOW = """
from pydantic import BaseModel
from engine import Approval, Sequence, Task, workflow


class Note(BaseModel):
    text: str


@workflow
def gated_agents(ctx):
    return Sequence(Task("draft", agent="planner", prompt="draft it", output=Note),
                    Approval("ok", message="go on?"),
                    Task("final", agent="reviewer", prompt="check it", output=Note))
"""


def test_a_run_started_with_an_agent_override_keeps_it_when_resumed_elsewhere(smithers, write_workflow):
    path = write_workflow("gated_agents.py", WORKFLOW)
    env_no_keys = {"ANTHROPIC_API_KEY": None, "OPENAI_API_KEY": None, "GEMINI_API_KEY": None}
    from tests.support import clean_env

    env = clean_env(**env_no_keys)
    assert smithers("run", path, "--run-id", "r", "--agent", "demo", "-q", env=env).returncode == 3
    assert smithers("approve", "r", "--by", "ann", env=env).returncode == 0
    done = smithers("resume", "r", "--json", env=env)  # no --agent here: the run remembers demo
    assert done.returncode == 0, done.stderr
    report = smithers.json("show", "r", env=env)
    final = next(n for n in report["nodes"] if n["id"] == "final")
    assert final["state"] == "done" and "[demo agent]" in final["output"]["text"]


def test_a_decision_is_in_the_event_log_before_any_process_applies_it(smithers, write_workflow):
    path = write_workflow("gated_agents.py", WORKFLOW)
    assert smithers("run", path, "--run-id", "g", "--agent", "demo", "-q").returncode == 3
    assert smithers("deny", "g", "--by", "bo", "--note", "not yet").returncode == 0
    import json

    done = smithers("logs", "g", "--json")  # one JSON object per line, so --follow can stream
    events = [e for e in map(json.loads, done.stdout.splitlines()) if e["type"] == "approval_decided"]
    assert len(events) == 1
    assert events[0]["node_id"] == "ok" and events[0]["data"]["approved"] is False
    assert events[0]["data"]["by"] == "bo" and events[0]["data"]["note"] == "not yet"

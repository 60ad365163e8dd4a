"""DemoAgent builds valid outputs offline; ScriptedAgent replays replies; FallbackAgent chains."""

from __future__ import annotations

import enum
from typing import Literal, Optional

import pytest
from pydantic import BaseModel, Field

from engine.agents import (AgentError, AgentUnavailable, DemoAgent, FallbackAgent, OutputInvalid, ScriptedAgent,
                           Usage)


class Severity(enum.Enum):
    LOW = "low"
    HIGH = "high"


class Finding(BaseModel):
    file: str
    line: int = Field(ge=1)
    severity: Severity
    kind: Literal["bug", "style"]


class Step(BaseModel):
    title: str
    done: bool
    estimate_hours: float
    files: list[str]


class Plan(BaseModel):
    goal: str
    steps: list[Step] = Field(min_length=1)
    findings: list[Finding]
    notes: Optional[str] = None
    meta: dict[str, int]
    parent: Optional["Plan"] = None


async def test_demo_builds_valid_nested_output(tmp_path, events):
    result = await DemoAgent().run("Plan the refactor", output=Plan, workdir=tmp_path, emit=events)
    plan = result.output
    assert isinstance(plan, Plan) and Plan.model_validate(plan.model_dump()) == plan
    assert plan.goal.startswith("[demo agent]")
    step = plan.steps[0]
    assert step.done is True and step.files and step.title.startswith("[demo agent]")
    f = plan.findings[0]
    assert f.severity is Severity.LOW and f.kind == "bug" and f.line >= 1
    assert result.structured_mode == "prompt_schema" and result.usage.cost_usd == 0.0
    assert {e.agent for e in events} == {"demo"}
    assert "token" in events.kinds() and "[demo agent]" in events.text("message")


async def test_demo_plain_text(tmp_path, events):
    result = await DemoAgent().run("Say hi", output=None, workdir=tmp_path, emit=events)
    assert result.output.startswith("[demo agent]") and "Say hi" in result.output
    assert DemoAgent().available() == (True, "")


async def test_scripted_agent_with_correction(tmp_path, events):
    agent = ScriptedAgent(["not json", {"file": "a.py", "line": 3, "severity": "high", "kind": "style"}])
    result = await agent.run("find", output=Finding, workdir=tmp_path, emit=events)
    assert result.output.severity is Severity.HIGH and result.attempts == 2
    assert "JSON schema" in agent.prompts[0] and "not valid JSON" in agent.prompts[1]


async def test_scripted_agent_gives_up(tmp_path, events):
    agent = ScriptedAgent(["{}"] * 2, max_validation_retries=1)
    with pytest.raises(OutputInvalid) as err:
        await agent.run("find", output=Finding, workdir=tmp_path, emit=events)
    assert "file" in err.value.errors


async def test_fallback_moves_on_after_agent_error(tmp_path, events):
    first = ScriptedAgent([AgentError("boom")], name="first")
    second = ScriptedAgent(["ok from second"], name="second")
    result = await FallbackAgent([first, second]).run("x", output=None, workdir=tmp_path, emit=events)
    assert result.output == "ok from second"
    retry = next(e for e in events if e.kind == "retry")
    assert retry.data == {"failed": "first", "next": "second", "error": "boom"}
    assert events.kinds()[0] == "retry"


async def test_fallback_skips_unavailable_and_reports_all(tmp_path, events):
    class Missing(DemoAgent):
        def available(self):
            return False, "binary not found"

    with pytest.raises(AgentError, match="all agents failed: missing: binary not found; s: no scripted reply"):
        await FallbackAgent([Missing(name="missing"), ScriptedAgent([], name="s")]).run(
            "x", output=None, workdir=tmp_path, emit=events)
    assert FallbackAgent([Missing(name="m"), DemoAgent()]).available() == (True, "")
    assert not isinstance(AgentError("x"), AgentUnavailable)


def test_usage_adds_up():
    a = Usage(input_tokens=1, output_tokens=2, cost_usd=0.5, model="m1", agent="a", duration_s=1)
    b = Usage(input_tokens=3, output_tokens=4, cost_usd=0.25, model="m2", agent="a", duration_s=2)
    total = a + b
    assert (total.input_tokens, total.output_tokens, total.cost_usd, total.duration_s) == (4, 6, 0.75, 3)
    assert total.model == "m1,m2" and total.agent == "a" and a.plus(b) == total

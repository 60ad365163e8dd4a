"""plan: one planner step that reads the project and returns a structured plan (no file changes).

Node id: `plan` (agent, planner role) -> Plan.
"""
from __future__ import annotations

from pydantic import BaseModel, Field

from engine import Ctx, Node, Task, workflow

from ._support import not_blank, one_agent_prompt


class PlanStep(BaseModel):
    title: str = Field(description="what this step achieves, in a few words")
    details: str = Field(description="what to do, concretely")
    files: list[str] = Field(default_factory=list, description="files this step touches")


class Plan(BaseModel):
    summary: str = Field(description="the approach, in a few sentences")
    steps: list[PlanStep] = Field(description="ordered steps")
    risks: list[str] = Field(default_factory=list, description="risks and open questions")
    test_strategy: str = Field("", description="how the result will be tested")


class PlanInput(BaseModel):
    goal: str = Field(description="what should be achieved")
    context: str = Field("", description="constraints, links, anything the planner should know")

    _given = not_blank("goal", "say what the plan is for")


def render_plan(plan: Plan) -> str:
    """A plan as Markdown, for prompts and approval messages."""
    lines = [plan.summary.strip(), ""]
    for i, s in enumerate(plan.steps, 1):
        files = f" ({', '.join(s.files)})" if s.files else ""
        lines.append(f"{i}. {s.title}{files}: {s.details.strip()}")
    if plan.risks:
        lines += ["", "Risks: " + "; ".join(plan.risks)]
    if plan.test_strategy:
        lines += ["", "Testing: " + plan.test_strategy.strip()]
    return "\n".join(lines)


def plan_prompt(goal: str, context: str = ""):
    return one_agent_prompt("plan", "goal", goal, context)


def plan_task(id: str, goal: str, context: str = "") -> Task:
    return Task(id, agent="planner", prompt=plan_prompt(goal, context), output=Plan,
                tools="read_only")


@workflow(name="plan", input=PlanInput)
def plan(ctx: Ctx) -> Node:
    """Write a structured plan for a goal (one planner step; no files change)."""
    inp: PlanInput = ctx.input
    return plan_task("plan", inp.goal, inp.context)

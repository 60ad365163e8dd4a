"""research: one agent step that investigates a question in the project and returns a report.

Node id: `research` (agent, planner role) -> Report.
"""
from __future__ import annotations

from pydantic import BaseModel, Field

from engine import Ctx, Node, Task, workflow

from ._support import not_blank, one_agent_prompt


class Finding(BaseModel):
    title: str
    detail: str
    evidence: list[str] = Field(default_factory=list, description="files, lines or commands that show it")


class Report(BaseModel):
    summary: str = Field(description="the answer, in a few sentences")
    findings: list[Finding] = Field(default_factory=list)
    open_questions: list[str] = Field(default_factory=list)
    recommendations: list[str] = Field(default_factory=list)


class ResearchInput(BaseModel):
    question: str = Field(description="what to find out")
    context: str = Field("", description="anything the researcher should know")

    _given = not_blank("question", "say what to research")


def render_report(r: Report) -> str:
    lines = [r.summary.strip()]
    for f in r.findings:
        ev = f" [{'; '.join(f.evidence)}]" if f.evidence else ""
        lines.append(f"- {f.title}: {f.detail.strip()}{ev}")
    if r.open_questions:
        lines.append("Open questions: " + "; ".join(r.open_questions))
    if r.recommendations:
        lines.append("Recommendations: " + "; ".join(r.recommendations))
    return "\n".join(lines)


def research_prompt(question: str, context: str = ""):
    return one_agent_prompt("research", "question", question, context)


def research_task(id: str, question: str, context: str = "") -> Task:
    return Task(id, agent="planner", prompt=research_prompt(question, context), output=Report,
                tools="read_only")


@workflow(name="research", input=ResearchInput)
def research(ctx: Ctx) -> Node:
    """Investigate a question in the project and write a structured report (one agent step)."""
    inp: ResearchInput = ctx.input
    return research_task("research", inp.question, inp.context)

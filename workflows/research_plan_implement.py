"""research-plan-implement: research the goal, plan it, wait for the plan's approval, then run the
implement loop in a worktree with the research and the approved plan in its prompt.

Node ids: `research` (agent) -> `plan` (agent) -> `approve-plan` (Approval; skipped with
approve_plan=false; denying it fails the run) -> the implement loop with prefix `implement`
(`implement`, `implement-rounds`, `implement-implement`, `implement-check`, `implement-review-<lens>`,
`implement-result`).
"""
from __future__ import annotations

from pydantic import BaseModel, Field

from engine import Approval, Ctx, Node, Sequence, workflow

from ._support import not_blank, prompt_text, truncate_middle
from .implement import DEFAULT_REVIEWERS, implement_loop
from .plan import Plan, plan_task, render_plan
from .research import Report, render_report, research_task


class RPIInput(BaseModel):
    goal: str = Field(description="what to achieve")
    test_command: str | None = Field(None, description="shell command that checks the work (default: detected)")
    max_rounds: int = Field(3, ge=1, le=20, description="implement → check → review rounds at most")
    reviewers: list[str] = Field(default_factory=lambda: list(DEFAULT_REVIEWERS), description="review lenses")
    approve_plan: bool = Field(True, description="wait for a human to approve the plan before implementing")

    _given = not_blank("goal", "say what to achieve")


@workflow(name="research-plan-implement", input=RPIInput)
def research_plan_implement(ctx: Ctx) -> Node:
    """Research, plan, approve the plan, then implement it in a worktree with the validation loop."""
    inp: RPIInput = ctx.input
    report: Report | None = ctx.get("research")
    plan: Plan | None = ctx.get("plan")
    found = render_report(report) if report else ""
    gate = work = None
    if plan is not None:
        shown = render_plan(plan)
        if inp.approve_plan:
            gate = Approval("approve-plan", message="Implement this plan?\n" + truncate_middle(shown, 3000))
        task = prompt_text("rpi-task", goal=inp.goal.strip(), research=found, plan=shown)
        work = implement_loop(ctx, "implement", task, test_command=inp.test_command, max_rounds=inp.max_rounds,
                              reviewers=inp.reviewers, title=inp.goal.strip().splitlines()[0][:72])
    return Sequence(
        research_task("research", "What in this project matters for this goal, and how should it be done?\n\n"
                      + inp.goal.strip()),
        plan_task("plan", inp.goal, context=("What research found:\n" + found) if found else ""),
        gate,
        work,
    )

"""improve-test-coverage: the implement loop with a prompt to add tests for untested behaviour.
Node ids: the implement loop's with prefix `coverage` (see workflows.implement)."""
from __future__ import annotations

from pydantic import BaseModel, Field

from engine import Ctx, Node, workflow

from ._support import prompt_text
from .implement import implement_loop


class CoverageInput(BaseModel):
    target: str = Field("the project", description="what to cover: a module, a folder, a feature")
    goal: str = Field("", description="extra direction, e.g. 'focus on error paths'")
    test_command: str | None = Field(None, description="shell command that runs the tests (default: detected)")
    max_rounds: int = Field(3, ge=1, le=20, description="implement → check → review rounds at most")
    reviewers: list[str] = Field(default_factory=lambda: ["tests"], description="review lenses")


@workflow(name="improve-test-coverage", input=CoverageInput)
def improve_test_coverage(ctx: Ctx) -> Node:
    """Add tests for behaviour nothing tests yet, in the implement loop (tests must pass, reviewers approve)."""
    inp: CoverageInput = ctx.input
    return implement_loop(ctx, "coverage", prompt_text("improve-test-coverage", target=inp.target.strip(),
                                                       goal=inp.goal.strip()),
                          test_command=inp.test_command, max_rounds=inp.max_rounds, reviewers=inp.reviewers,
                          title=f"Improve test coverage of {inp.target.strip()}"[:72])

"""debug: the implement loop with a debugging prompt — reproduce, find the root cause, fix, keep a
regression test. Node ids: the implement loop's with prefix `debug` (see workflows.implement)."""
from __future__ import annotations

from pydantic import BaseModel, Field

from engine import Ctx, Node, workflow

from ._support import not_blank, prompt_text
from .implement import DEFAULT_REVIEWERS, implement_loop


class DebugInput(BaseModel):
    problem: str = Field(description="the symptom: what happens, what was expected, error output, how to reproduce")
    test_command: str | None = Field(None, description="shell command that checks the fix (default: detected)")
    max_rounds: int = Field(3, ge=1, le=20, description="implement → check → review rounds at most")
    reviewers: list[str] = Field(default_factory=lambda: list(DEFAULT_REVIEWERS), description="review lenses")

    _given = not_blank("problem", "describe the problem")


@workflow(name="debug", input=DebugInput)
def debug(ctx: Ctx) -> Node:
    """Find the root cause of a bug and fix it with a regression test, in the implement loop."""
    inp: DebugInput = ctx.input
    return implement_loop(ctx, "debug", prompt_text("debug", problem=inp.problem.strip()),
                          test_command=inp.test_command, max_rounds=inp.max_rounds, reviewers=inp.reviewers,
                          title="Debug: " + inp.problem.strip().splitlines()[0][:64])

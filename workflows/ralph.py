"""ralph: the same prompt, again and again, in a worktree — until the agent says it is done, a
condition command passes, or the count runs out. The work is committed on the worktree's branch.

Node ids: `ralph` (Worktree), `ralph-start`, `ralph-loop` (Loop), `ralph-step` (agent, implementer
role, per iteration), `ralph-condition` (compute, per iteration; skipped without until_command),
`ralph-result` (compute: RalphResult).
"""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from engine import Ctx, Loop, Node, Task, TaskCtx, Worktree, workflow
from engine import git as engine_git

from ._support import not_blank, changes_since, current_branch, head_commit, prompt_text, run_command, truncate_middle
from .implement import WorktreeStart


class RalphInput(BaseModel):
    prompt: str = Field(description="the instructions, given again every iteration")
    max_iterations: int = Field(5, ge=1, le=200, description="stop after this many iterations")
    until_command: str | None = Field(None, description="a shell command run after each iteration; stop when it "
                                                        "exits 0 (e.g. the test command)")
    stop_when_done: bool = Field(True, description="stop when the agent reports the whole job done")
    command_timeout: float = Field(600.0, gt=0, description="seconds before until_command is killed")

    _given = not_blank("prompt", "give the instructions to repeat")


class RalphStep(BaseModel):
    summary: str = Field(description="what this iteration did")
    done: bool = Field(description="true only when the whole job is finished")


class Condition(BaseModel):
    command: str
    passed: bool
    exit_code: int | None
    output: str


class RalphResult(BaseModel):
    iterations: int
    stopped_because: Literal["agent_done", "condition_passed", "max_iterations"]
    reason: str
    branch: str | None
    commit: str | None
    changed_files: list[str]
    last_summary: str


def _step_prompt(inp: RalphInput):
    def make(t: TaskCtx) -> str:
        earlier = [i for i in t.iterations("ralph-step") if i < t.iteration]
        previous = ""
        if earlier:
            last: RalphStep = t.get("ralph-step", earlier[-1])
            cond: Condition | None = t.get("ralph-condition", earlier[-1])
            previous = f"## The previous iteration\n\n{last.summary.strip()}"
            if cond is not None:
                previous += (f"\n\n`{cond.command}` did not pass yet (exit {cond.exit_code}):\n```\n"
                             f"{truncate_middle(cond.output, 3000)}\n```")
        return prompt_text("ralph", iteration=len(earlier) + 1, max_iterations=inp.max_iterations,
                           prompt=inp.prompt.strip(), previous=previous)
    return make


def _condition(inp: RalphInput):
    async def condition(t: TaskCtx) -> Condition:
        run = await run_command(inp.until_command or "true", t.workdir, timeout=inp.command_timeout)
        t.log(f"`{inp.until_command}` {'passed' if run.ok else 'did not pass'}", exit_code=run.exit_code)
        return Condition(command=inp.until_command or "", passed=run.ok, exit_code=run.exit_code,
                         output=truncate_middle(run.output, 6000))
    return condition


def _stop_reason(c: Ctx, inp: RalphInput) -> str | None:
    its = c.iterations("ralph-step")
    if not its:
        return None
    step: RalphStep = c.get("ralph-step", its[-1])
    cond: Condition | None = c.get("ralph-condition", its[-1])
    if inp.until_command and cond is not None and cond.passed:
        return "condition_passed"
    if inp.stop_when_done and step.done and not inp.until_command:
        return "agent_done"
    if inp.stop_when_done and step.done and cond is not None and cond.passed:
        return "condition_passed"
    return None


def _result(inp: RalphInput):
    def result(t: TaskCtx) -> RalphResult:
        its = t.iterations("ralph-step")
        why = _stop_reason(t, inp) or "max_iterations"
        began: WorktreeStart | None = t.get("ralph-start")
        last: RalphStep | None = t.get("ralph-step", its[-1]) if its else None
        text = {"agent_done": "the agent reported the job done",
                "condition_passed": f"`{inp.until_command}` passed",
                "max_iterations": f"stopped after {len(its)} iteration(s) (the limit)"}[why]
        engine_git.commit_all(t.workdir, f"ralph: {inp.prompt.strip().splitlines()[0][:60]}\n\n{text}\n")
        files = changes_since(t.workdir, began.commit, limit=1)[1] if began else []
        return RalphResult(iterations=len(its), stopped_because=why, reason=text,  # type: ignore[arg-type]  # why is one of the Literal values
                           branch=current_branch(t.workdir), commit=head_commit(t.workdir), changed_files=files,
                           last_summary=last.summary if last else "")
    return result


def _start(t: TaskCtx) -> WorktreeStart:
    return WorktreeStart(path=str(t.workdir), branch=current_branch(t.workdir), commit=head_commit(t.workdir))


@workflow(name="ralph", input=RalphInput)
def ralph(ctx: Ctx) -> Node:
    """Run the same prompt in a loop (in a worktree) until the agent is done, a command passes, or a count."""
    inp: RalphInput = ctx.input
    return Worktree(
        "ralph",
        Task("ralph-start", run=_start, output=WorktreeStart),
        Loop("ralph-loop",
             Task("ralph-step", agent="implementer", prompt=_step_prompt(inp), output=RalphStep),
             Task("ralph-condition", run=_condition(inp), output=Condition, retries=0,
                  skip_if=not inp.until_command),
             until=lambda c: _stop_reason(c, inp) is not None, max_iterations=inp.max_iterations),
        Task("ralph-result", run=_result(inp), output=RalphResult, retries=0),
    )

"""implement: a validation loop in a git worktree — implement, check, review, again.

Each round: the implementer agent changes files in the worktree; the check runs the project's
test command there as a real subprocess and records passed/failed with its output; when the
check passed, reviewers (one per lens, in parallel) each return approved, feedback and issues
by severity. The loop ends when the check passes and a reviewer approves, or after max_rounds;
each round's failures and feedback go into the next implement prompt. Finally the result step
commits the worktree's changes on its branch and says honestly what happened.

`implement_loop()` builds that subtree; implement, debug, improve-test-coverage,
research-plan-implement and kanban share it. Node ids, for a prefix P:

    P                 the Worktree
    P-start           compute: the commit and branch the worktree started from
    P-rounds          the Loop (one iteration per round)
    P-implement       agent (implementer), per round
    P-check           compute: the test command, per round
    P-review-<lens>   agent (reviewer), per round, skipped when the check failed
    P-result          compute: commits the changes on the branch; LoopResult
"""
from __future__ import annotations

import asyncio
from typing import Literal

from pydantic import BaseModel, Field

from engine import Ctx, Loop, Node, Parallel, Task, TaskCtx, Worktree, workflow
from engine import git as engine_git

from ._support import (not_blank, PROMPTS, changes_since, current_branch, detect_test_command, failure_excerpt, head_commit,
                       prompt_text, run_command, slugify, truncate_middle)

Severity = Literal["critical", "major", "minor", "nit"]
SEVERITY_ORDER = {"critical": 0, "major": 1, "minor": 2, "nit": 3}
DEFAULT_REVIEWERS = ["correctness", "tests"]
LENSES: dict[str, str] = dict(
    line.split(":", 1) for line in PROMPTS["review-lenses"].splitlines() if ":" in line)
LENSES = {k.strip(): v.strip() for k, v in LENSES.items()}


# -- output models ----------------------------------------------------------------------------

class Issue(BaseModel):
    severity: Severity = Field(description="critical, major, minor or nit")
    description: str = Field(description="the problem, in one line")
    file: str | None = Field(None, description="the file, when there is one")
    line: int | None = Field(None, description="the line, when known")


class Review(BaseModel):
    """What one reviewer returns."""

    approved: bool = Field(description="true when the change can go in as it is")
    feedback: str = Field(description="overall feedback the implementer can act on")
    issues: list[Issue] = Field(default_factory=list, description="problems found, each with a severity")


class ImplementResult(BaseModel):
    """What the implementer returns after a round."""

    summary: str = Field(description="what you changed and why")
    files_changed: list[str] = Field(default_factory=list, description="the files you changed")
    notes: str = Field("", description="anything the reviewers or the next round should know")


class WorktreeStart(BaseModel):
    path: str
    branch: str | None
    commit: str


class CheckResult(BaseModel):
    """One round's check: did the test command pass in the worktree, and what changed."""

    round: int
    iteration: int
    implemented: bool = Field(description="false when the implement step of this round failed")
    command: str | None = None
    ran: bool = False
    passed: bool = False
    exit_code: int | None = None
    timed_out: bool = False
    duration_s: float = 0.0
    output: str = ""
    note: str = ""
    changed_files: list[str] = Field(default_factory=list)
    diff: str = ""


class LoopResult(BaseModel):
    """The honest outcome of an implement loop."""

    status: Literal["done", "out_of_rounds", "failed"]
    succeeded: bool
    reason: str
    rounds: int
    max_rounds: int
    passed: bool
    approved: bool
    tests_ran: bool
    test_command: str | None
    test_output: str = ""
    branch: str | None
    base: str | None
    commit: str | None = Field(None, description="the branch head after the result step committed the changes")
    changed_files: list[str] = Field(default_factory=list)
    summary: str = ""
    issues: list[Issue] = Field(default_factory=list)


# -- pieces shared with the review workflow ----------------------------------------------------

def lens_ids(reviewers: list[str]) -> list[str]:
    out: list[str] = []
    for r in reviewers:
        s = slugify(r, "review")
        if s not in out:
            out.append(s)
    return out


def focus_of(lens: str) -> str:
    return LENSES.get(lens, f"{lens.replace('-', ' ')}.")


def describe_check(chk: CheckResult | None) -> str:
    if chk is None:
        return "No check has run yet."
    if not chk.ran:
        return f"No tests were run: {chk.note}"
    state = "passed" if chk.passed else ("timed out" if chk.timed_out else f"failed (exit {chk.exit_code})")
    return f"`{chk.command}` {state}.\n\n```\n{truncate_middle(chk.output, 4000)}\n```"


def describe_reviews(reviews: dict[str, Review | None]) -> str:
    parts = []
    for lens, rv in reviews.items():
        if rv is None:
            parts.append(f"- {lens}: the reviewer did not answer (its step failed)")
            continue
        parts.append(f"- {lens}: {'approved' if rv.approved else 'not approved'} — {rv.feedback.strip()}")
        for iss in sorted(rv.issues, key=lambda i: SEVERITY_ORDER.get(i.severity, 9)):
            where = f" ({iss.file}{':' + str(iss.line) if iss.line else ''})" if iss.file else ""
            parts.append(f"  - [{iss.severity}] {iss.description}{where}")
    return "\n".join(parts)


# -- the loop ----------------------------------------------------------------------------------

def implement_loop(ctx: Ctx, prefix: str, prompt: str, *, test_command: str | None = None, max_rounds: int = 3,
                   reviewers: list[str] | None = None, worktree_path: str | None = None, branch: str | None = None,
                   base: str | None = None, keep: bool = False, title: str | None = None,
                   test_timeout: float = 600.0, agent: str = "implementer", reviewer_agent: str = "reviewer") -> Node:
    """The implement → check → review loop in its own worktree, ids derived from `prefix` (see the module doc).

    `worktree_path` / `branch` / `base` / `keep` are passed to the Worktree (defaults: the engine's
    `.worktrees/<run>/<prefix>` on `smithers/<run>/<prefix>` from HEAD, removed when the run finishes;
    the branch always stays, with the work committed on it by `<prefix>-result`).
    """
    ids = {k: f"{prefix}-{k}" for k in ("start", "rounds", "implement", "check", "result")}
    lenses = lens_ids(reviewers if reviewers is not None else DEFAULT_REVIEWERS)
    review_ids = {lens: f"{prefix}-review-{lens}" for lens in lenses}
    title = title or first_line(prompt)
    shown_command = f"`{test_command}`" if test_command else "the project's tests (the command is detected)"

    def reviews_at(c: Ctx, iteration: int) -> dict[str, Review | None]:
        return {lens: c.get(rid, iteration) for lens, rid in review_ids.items()}

    def approved_at(c: Ctx, iteration: int) -> bool:
        if not review_ids:
            return True  # no reviewers asked for: passing tests are enough
        return any(rv is not None and rv.approved for rv in reviews_at(c, iteration).values())

    def start(t: TaskCtx) -> WorktreeStart:
        return WorktreeStart(path=str(t.workdir), branch=current_branch(t.workdir), commit=head_commit(t.workdir))

    def implement_prompt(t: TaskCtx) -> str:
        earlier = [i for i in t.iterations(ids["check"]) if i < t.iteration]
        if not earlier:
            feedback = prompt_text("implement-first-round")
        else:
            last = t.get(ids["check"], earlier[-1])
            report = ["### Test check", describe_check(last)]
            if last is not None and last.passed:
                report += ["", "### Reviewer feedback", describe_reviews(reviews_at(t, earlier[-1]))]
            if last is not None and not last.implemented:
                report += ["", "The implement step of that round failed before answering."]
            feedback = prompt_text("implement-next-round", report="\n".join(report))
        return prompt_text("implement", title=title, task=prompt, round=len(earlier) + 1, max_rounds=max_rounds,
                           feedback=feedback, test_command=shown_command)

    async def check(t: TaskCtx) -> CheckResult:
        rnd = len([i for i in t.iterations(ids["check"]) if i < t.iteration]) + 1
        began = t.get(ids["start"])
        implemented = t.get(ids["implement"], t.iteration) is not None
        diff, files = "", []
        if began is not None:
            try:
                diff, files = await asyncio.to_thread(changes_since, t.workdir, began.commit)
            except Exception as e:  # a diff is a courtesy for reviewers; the check still runs
                diff = f"[could not compute the diff: {e}]"
        result = CheckResult(round=rnd, iteration=t.iteration, implemented=implemented, changed_files=files,
                             diff=diff)
        if not implemented:
            result.note = "the implement step of this round failed, so nothing was checked"
            t.log(f"round {rnd}: implement failed; not checking")
            return result
        command = test_command or await asyncio.to_thread(detect_test_command, t.workdir)
        result.command = command
        if not command:
            result.passed, result.note = True, "no test command was given and none could be detected"
            t.log(f"round {rnd}: no test command; nothing to run")
            return result
        t.log(f"round {rnd}: running {command}")
        run = await run_command(command, t.workdir, timeout=test_timeout)
        result.ran, result.passed, result.exit_code = True, run.ok, run.exit_code
        result.timed_out, result.duration_s, result.output = run.timed_out, run.duration_s, run.output
        t.log(f"round {rnd}: `{command}` {'passed' if run.ok else 'failed'}", exit_code=run.exit_code)
        return result

    def review_prompt(lens: str):
        def make(t: TaskCtx) -> str:
            chk = t.get(ids["check"], t.iteration)
            return prompt_text("review", lens=lens, focus=focus_of(lens), title=title, task=prompt,
                               check=describe_check(chk), diff=(chk.diff if chk else "") or "(no changes)")
        return make

    def until(c: Ctx) -> bool:
        chk = c.latest(ids["check"])
        if chk is None:
            return False
        if not chk.implemented:
            return True  # an agent that cannot run will not do better next round
        return chk.passed and approved_at(c, chk.iteration)

    def result(t: TaskCtx) -> LoopResult:
        its = t.iterations(ids["check"])
        chk: CheckResult | None = t.get(ids["check"], its[-1]) if its else None
        began = t.get(ids["start"])
        impl = t.get(ids["implement"], its[-1]) if its else None
        reviews = reviews_at(t, its[-1]) if its else {}
        approved = bool(chk and chk.passed and approved_at(t, chk.iteration))
        issues = sorted((i for rv in reviews.values() if rv is not None and not rv.approved for i in rv.issues),
                        key=lambda i: SEVERITY_ORDER.get(i.severity, 9))
        status: str
        if chk is None:
            status, reason = "failed", "no round finished"
        elif not chk.implemented:
            status = "failed"
            reason = (f"the implement agent failed in round {chk.round} (its error is in the run log: "
                      f"`smithers logs {t.run_id}`)")
        elif chk.passed and approved:
            status = "done"
            who = ", ".join(k for k, v in reviews.items() if v is not None and v.approved)
            tests = f"`{chk.command}` passed" if chk.ran else f"no tests ran ({chk.note})"
            reason = (f"{tests} and approved by {who} in round {chk.round}" if who
                      else f"{tests} in round {chk.round} (no reviewers)")
        elif not chk.passed:
            status = "out_of_rounds"
            reason = (f"tests still fail after {len(its)} round(s) of {max_rounds}: "
                      f"{failure_excerpt(chk.output) or chk.note}")
        else:
            status = "out_of_rounds"
            answered = [v for v in reviews.values() if v is not None]
            why = (issues[0].description if issues else answered[0].feedback if answered
                   else "every reviewer step failed")
            reason = f"tests pass but no reviewer approved after {len(its)} round(s) of {max_rounds}: {why}"
        branch_name = current_branch(t.workdir)
        label = {"done": "done", "out_of_rounds": "unfinished (out of rounds)", "failed": "failed"}[status]
        message = f"{title}\n\nsmithers {prefix}: {label} after {len(its)} round(s)\n{reason}\n"
        try:
            engine_git.commit_all(t.workdir, message)
        except Exception as e:  # the files stay in the worktree; say so rather than fail the run
            reason += f" (could not commit the changes on {branch_name}: {e}; they are still in {t.workdir})"
        files: list[str] = []
        if began is not None:
            try:
                files = changes_since(t.workdir, began.commit, limit=1)[1]
            except Exception:
                files = chk.changed_files if chk else []
        if chk is not None and chk.implemented and not files:
            reason += "; no files were changed"
        t.log(f"{prefix}: {status}: {reason}")
        return LoopResult(status=status, succeeded=status == "done", reason=reason, rounds=len(its),  # type: ignore[arg-type]  # status is one of the Literal values
                          max_rounds=max_rounds, passed=bool(chk and chk.passed), approved=approved,
                          tests_ran=bool(chk and chk.ran), test_command=chk.command if chk else test_command,
                          test_output=truncate_middle(chk.output, 3000) if chk else "", branch=branch_name,
                          base=began.commit if began else None, commit=head_commit(t.workdir),
                          changed_files=files, summary=impl.summary if impl else "", issues=issues)

    chk_now = ctx.latest(ids["check"])
    skip_reviews = chk_now is None or not chk_now.implemented or not chk_now.passed
    return Worktree(
        prefix,
        Task(ids["start"], run=start, output=WorktreeStart),
        Loop(ids["rounds"],
             Task(ids["implement"], agent=agent, prompt=implement_prompt, output=ImplementResult,
                  continue_on_fail=True),
             Task(ids["check"], run=check, output=CheckResult, retries=0),
             Parallel(*[Task(rid, agent=reviewer_agent, prompt=review_prompt(lens), output=Review,
                             continue_on_fail=True, skip_if=skip_reviews, tools="read_only")
                        for lens, rid in review_ids.items()]),
             until=until, max_iterations=max_rounds),
        Task(ids["result"], run=result, output=LoopResult, retries=0),
        path=worktree_path, branch=branch, base=base, keep=keep,
    )


def first_line(text: str, width: int = 72) -> str:
    line = next((s.strip().lstrip("#").strip() for s in text.splitlines() if s.strip()), "") or "change"
    return line if len(line) <= width else line[: width - 1] + "…"


# -- the workflow -------------------------------------------------------------------------------

class ImplementInput(BaseModel):
    prompt: str = Field(description="what to implement")
    test_command: str | None = Field(None, description="shell command that checks the work (default: detected, "
                                                       "e.g. pytest when the project has tests)")
    max_rounds: int = Field(3, ge=1, le=20, description="implement → check → review rounds at most")
    reviewers: list[str] = Field(default_factory=lambda: list(DEFAULT_REVIEWERS),
                                 description="review lenses, one reviewer each, in parallel "
                                             "(correctness, tests, security, design, performance or your own)")
    test_timeout: float = Field(600.0, gt=0, description="seconds before the test command is killed")

    _given = not_blank("prompt", "say what to implement")


@workflow(name="implement", input=ImplementInput)
def implement(ctx: Ctx) -> Node:
    """Implement a change in a worktree: implement, run the tests, review; repeat until they pass and a reviewer approves."""
    inp: ImplementInput = ctx.input
    return implement_loop(ctx, "implement", inp.prompt, test_command=inp.test_command, max_rounds=inp.max_rounds,
                          reviewers=inp.reviewers, test_timeout=inp.test_timeout)

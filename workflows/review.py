"""review: parallel reviewers over the current changes (or everything since a ref).

Node ids: `changes` (compute: the diff), `review-<lens>` (agent, reviewer role, one per lens, in
parallel; skipped when there is nothing to review), `verdict` (compute: ReviewVerdict).
"""
from __future__ import annotations

from pydantic import BaseModel, Field

from engine import Ctx, Node, Parallel, Sequence, Task, TaskCtx, workflow

from ._support import GitFailed, changes_since, git, prompt_text, repo_root
from .implement import DEFAULT_REVIEWERS, SEVERITY_ORDER, Issue, Review, focus_of, lens_ids


class ReviewInput(BaseModel):
    ref: str = Field("HEAD", description="review the changes from this branch, tag or commit to the working tree "
                                         "(default HEAD: the uncommitted changes; e.g. main for a whole feature branch)")
    reviewers: list[str] = Field(default_factory=lambda: [*DEFAULT_REVIEWERS, "design"],
                                 description="review lenses, one reviewer each, in parallel")
    context: str = Field("", description="what the change is meant to do, for the reviewers")


class Changes(BaseModel):
    ref: str
    commit: str
    changed_files: list[str]
    diff: str


class ReviewVerdict(BaseModel):
    approved: bool = Field(description="every reviewer that answered approved, and no critical issue")
    reviewed: bool = Field(description="false when there was nothing to review")
    approvals: dict[str, bool | None] = Field(description="lens -> approved (None: the reviewer failed)")
    issues: list[Issue] = Field(description="all issues, most severe first")
    feedback: dict[str, str]
    changed_files: list[str]
    text: str


def collect(ref: str):
    def changes(t: TaskCtx) -> Changes:
        root = repo_root(t.workdir)
        try:
            commit = git(root, "rev-parse", "--verify", f"{ref}^{{commit}}").strip()
        except GitFailed:
            raise RuntimeError(f"unknown ref {ref!r} in {root}: give a branch, tag or commit") from None
        diff, files = changes_since(root, commit)
        t.log(f"{len(files)} file(s) changed since {ref}")
        return Changes(ref=ref, commit=commit, changed_files=files, diff=diff)

    return changes


def reviewer_prompt(lens: str, context: str):
    def make(t: TaskCtx) -> str:
        ch: Changes = t.get("changes")
        task = context.strip() or "(not stated: judge the change on its own merits)"
        return prompt_text("review", lens=lens, focus=focus_of(lens), title=f"changes since {ch.ref}", task=task,
                           check="Not run by this workflow.", diff=ch.diff)
    return make


def verdict_of(lenses: list[str]):
    def verdict(t: TaskCtx) -> ReviewVerdict:
        ch: Changes = t.get("changes")
        reviews: dict[str, Review | None] = {lens: t.get(f"review-{lens}") for lens in lenses}
        if not ch.changed_files:
            return ReviewVerdict(approved=True, reviewed=False, approvals={}, issues=[], feedback={},
                                 changed_files=[], text=f"nothing to review: no changes since {ch.ref}")
        issues = sorted((i for r in reviews.values() if r for i in r.issues),
                        key=lambda i: SEVERITY_ORDER.get(i.severity, 9))
        answered = [r for r in reviews.values() if r is not None]
        approved = bool(answered) and all(r.approved for r in answered) and not any(
            i.severity == "critical" for i in issues)
        lines = [f"{'approved' if approved else 'changes requested'}: {len(ch.changed_files)} file(s), "
                 f"{len(issues)} issue(s)"]
        for lens, r in reviews.items():
            lines.append(f"- {lens}: " + ("failed to answer" if r is None else
                                          f"{'approved' if r.approved else 'not approved'}: {r.feedback.strip()}"))
        for i in issues:
            where = f" ({i.file}{':' + str(i.line) if i.line else ''})" if i.file else ""
            lines.append(f"  [{i.severity}] {i.description}{where}")
        return ReviewVerdict(approved=approved, reviewed=True,
                             approvals={k: (None if r is None else r.approved) for k, r in reviews.items()},
                             issues=issues, feedback={k: r.feedback for k, r in reviews.items() if r is not None},
                             changed_files=ch.changed_files, text="\n".join(lines))

    return verdict


@workflow(name="review", input=ReviewInput)
def review(ctx: Ctx) -> Node:
    """Review the current changes (or everything since a ref) with several reviewers in parallel."""
    inp: ReviewInput = ctx.input
    lenses = lens_ids(inp.reviewers)
    ch: Changes | None = ctx.get("changes")
    nothing = ch is not None and not ch.changed_files
    return Sequence(
        Task("changes", run=collect(inp.ref), output=Changes, retries=0),
        Parallel(*[Task(f"review-{lens}", agent="reviewer", prompt=reviewer_prompt(lens, inp.context), output=Review,
                        continue_on_fail=True, skip_if=nothing, tools="read_only") for lens in lenses]),
        Task("verdict", run=verdict_of(lenses), output=ReviewVerdict, retries=0),
    )


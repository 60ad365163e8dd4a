"""kanban: every ticket in .smithers/tickets/ implemented on its own branch, in parallel, then merged.

Tickets are the `*.md` files under `.smithers/tickets/` (subfolders too; files starting with `_`
or `.` are ignored). The title is the first `# heading` (else the file name); the id (slug) comes
from the path: `tickets/auth/login-form.md` -> `auth-login-form`. An optional front matter block
sets per-ticket options:

    ---
    test_command: python -m pytest -q tests/test_login.py
    title: A title other than the heading
    ---

What happens:
1. `tickets` reads the tickets and records the base branch and commit.
2. Per ticket, in parallel (`max_concurrency` at a time): a worktree `.worktrees/<slug>` on branch
   `ticket/<slug>` from the base commit runs the implement loop (implement -> check -> review, at
   most `max_rounds`); its result step commits the work on the branch, whatever the outcome.
3. With `approve_merge`, an approval gate `approve-merge` (only when some ticket is done).
4. `merge` merges each done ticket's branch into the base branch with git, one by one in ticket
   order; a conflict is reported with its files and that merge is aborted (the branch keeps its work).
5. With `resolve_conflicts`, each conflicted branch goes back to its worktree: the base is merged
   into it, the implementer resolves the conflict markers, the test command re-checks it, and the
   merge is concluded (or aborted, leaving the branch as it was); `merge-resolved` then merges
   the resolved branches into the base.
6. `cleanup` runs the test command once on the merged result and removes the worktrees (branches
   stay; anything uncommitted is committed on its branch first).
7. `summary`: per ticket, its status, rounds, branch, whether it merged, and why.

Node ids, for the app's board (slug as above):

    tickets                             compute: the ticket list            (backlog)
    ticket-<slug>                       Worktree                            (in progress once started)
    ticket-<slug>-start                 compute
    ticket-<slug>-rounds                Loop, one iteration per round
    ticket-<slug>-implement             agent (implementer), per round       (in progress)
    ticket-<slug>-check                 compute: the test command, per round (checking)
    ticket-<slug>-review-<lens>         agent (reviewer), per round          (in review)
    ticket-<slug>-result                compute: LoopResult; status done / out_of_rounds / failed
    approve-merge                       Approval (only with approve_merge)
    merge                               compute: MergeReport                 (merged / conflict)
    ticket-<slug>-resolve               Worktree (resolve_conflicts, conflicted tickets only)
    ticket-<slug>-resolve-start         compute: merges the base into the branch; ResolveStart
    ticket-<slug>-resolve-agent         agent (implementer): resolves the markers
    ticket-<slug>-resolve-check         compute: no markers left, tests pass; ResolveResult
    merge-resolved                      compute: MergeReport for the resolved branches
    cleanup                             compute: post-merge check, worktrees removed; Cleanup
    summary                             compute: KanbanSummary
"""
from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field

from engine import Approval, Branch, Ctx, Node, Parallel, Sequence, Task, TaskCtx, Worktree, workflow
from engine import git as engine_git

from ._support import (GitFailed, current_branch, detect_test_command, failure_excerpt, git, head_commit, prompt_text,
                       repo_root, run_command, slugify, truncate_middle)
from .implement import DEFAULT_REVIEWERS, ImplementResult, LoopResult, implement_loop

TICKETS_DIR = Path(".smithers") / "tickets"


# -- models -------------------------------------------------------------------------------------

class Ticket(BaseModel):
    slug: str
    title: str
    path: str = Field(description="relative to the tickets folder")
    body: str
    test_command: str | None = None


class Board(BaseModel):
    repo: str
    tickets_dir: str
    base_branch: str | None
    base_commit: str
    tickets: list[Ticket]


class TicketMerge(BaseModel):
    slug: str
    branch: str
    merged: bool
    commit: str | None = None
    conflicts: list[str] = Field(default_factory=list)
    message: str


class PostMergeCheck(BaseModel):
    command: str | None
    ran: bool
    passed: bool
    exit_code: int | None = None
    output: str = ""
    note: str = ""


class MergeReport(BaseModel):
    base_branch: str | None
    approved: bool | None = Field(None, description="the merge gate's decision; None when there was no gate")
    merges: list[TicketMerge]


class ResolveStart(BaseModel):
    base: str
    conflicts: list[str] = Field(description="files left with conflict markers by merging the base in")
    error: str = Field("", description="why the base could not be merged in at all")


class ResolveResult(BaseModel):
    resolved: bool
    reason: str
    command: str | None = None
    output: str = ""


class Cleanup(BaseModel):
    post_merge_check: PostMergeCheck | None = Field(None, description="the test command on the merged result")
    worktrees_removed: list[str] = Field(default_factory=list)
    worktrees_kept: list[str] = Field(default_factory=list, description="path: why it was kept")


class TicketSummary(BaseModel):
    slug: str
    title: str
    path: str
    status: Literal["done", "out_of_rounds", "failed", "not_run"]
    rounds: int
    branch: str
    merged: bool
    conflicts: list[str] = Field(default_factory=list, description="files that conflicted on the first merge")
    resolved: bool = Field(False, description="it conflicted, an agent resolved it, and it merged")
    why: str


class KanbanSummary(BaseModel):
    base_branch: str | None
    tickets: list[TicketSummary]
    done: int
    merged: int
    not_done: int
    post_merge_check: PostMergeCheck | None = None
    text: str


class KanbanInput(BaseModel):
    max_concurrency: int = Field(3, ge=1, le=32, description="tickets worked on at once")
    test_command: str | None = Field(None, description="checks each ticket and the merged result (default: "
                                                       "detected); a ticket's front matter may override it")
    max_rounds: int = Field(3, ge=1, le=20, description="implement → check → review rounds per ticket")
    approve_merge: bool = Field(False, description="wait for an approval before merging")
    reviewers: list[str] = Field(default_factory=lambda: list(DEFAULT_REVIEWERS),
                                 description="review lenses per ticket, one reviewer each")
    test_timeout: float = Field(600.0, gt=0, description="seconds before a test command is killed")
    resolve_conflicts: bool = Field(False, description="hand a branch that conflicts to the implementer to "
                                                       "resolve in its worktree, re-check it and merge it again")


# -- reading tickets ----------------------------------------------------------------------------

def parse_ticket(text: str, rel: Path) -> tuple[str, str, dict[str, str]]:
    """(title, body, front matter) of one ticket file."""
    meta: dict[str, str] = {}
    body = text
    if text.startswith("---"):
        lines = text.splitlines(keepends=True)
        end = next((i for i in range(1, len(lines)) if lines[i].strip() == "---"), None)
        if end is not None:
            for line in lines[1:end]:
                s = line.strip()
                if s and not s.startswith("#") and ":" in s:
                    k, v = s.split(":", 1)
                    meta[k.strip().lower()] = v.strip().strip('"').strip("'")
            body = "".join(lines[end + 1:])
    heading = next((s.lstrip("#").strip() for s in body.splitlines() if s.startswith("# ")), None)
    title = meta.get("title") or heading or rel.stem.replace("-", " ").replace("_", " ")
    return title, body.strip() + "\n", meta


def read_tickets(t: TaskCtx) -> Board:
    repo = repo_root(t.workdir)
    folder = t.workdir / TICKETS_DIR
    if not folder.is_dir():
        folder = repo / TICKETS_DIR
    files = sorted(p for p in folder.rglob("*.md")
                   if p.is_file() and not any(part.startswith(("_", ".")) for part in p.relative_to(folder).parts))
    if not files:
        raise RuntimeError(f"no tickets in {folder}: run `smithers init`, or add one *.md file per ticket there")
    tickets: list[Ticket] = []
    seen: set[str] = set()
    for p in files:
        rel = p.relative_to(folder)
        title, body, meta = parse_ticket(p.read_text(encoding="utf-8", errors="replace"), rel)
        slug = base = slugify(rel.with_suffix("").as_posix(), "ticket")
        n = 2
        while slug in seen:
            slug, n = f"{base}-{n}", n + 1
        seen.add(slug)
        tickets.append(Ticket(slug=slug, title=title, path=rel.as_posix(), body=body,
                              test_command=meta.get("test_command") or None))
    board = Board(repo=str(repo), tickets_dir=str(folder), base_branch=current_branch(repo),
                  base_commit=head_commit(repo), tickets=tickets)
    t.log(f"{len(tickets)} ticket(s) on {board.base_branch or 'a detached HEAD'} at {board.base_commit[:10]}: "
          + ", ".join(x.slug for x in tickets))
    return board


# -- the merge ----------------------------------------------------------------------------------

def ticket_paths(board: Board, slug: str) -> tuple[Path, str]:
    return Path(board.repo) / ".worktrees" / slug, f"ticket/{slug}"


def _commit_leftovers(wt: Path, title: str) -> None:
    if wt.is_dir():
        engine_git.commit_all(wt, f"{title}\n\nsmithers kanban: changes left in the worktree\n")


def _merge_one(t: TaskCtx, board: Board, tk: Ticket) -> TicketMerge:
    wt, branch = ticket_paths(board, tk.slug)
    try:
        _commit_leftovers(wt, tk.title)
        mr = engine_git.merge_branch(Path(board.repo), branch, into=board.base_branch)
    except engine_git.GitError as e:
        t.log(f"{tk.slug}: merge failed: {e}")
        return TicketMerge(slug=tk.slug, branch=branch, merged=False, message=f"not merged: {e}")
    t.log(f"{tk.slug}: {mr.message}")
    return TicketMerge(slug=tk.slug, branch=branch, merged=mr.merged, commit=mr.commit,
                       conflicts=list(mr.conflicts), message=mr.message)


def _merge_all(t: TaskCtx, board: Board, allowed: bool, denied_by: str) -> list[TicketMerge]:
    out: list[TicketMerge] = []
    for tk in board.tickets:
        branch = ticket_paths(board, tk.slug)[1]
        res: LoopResult | None = t.get(f"ticket-{tk.slug}-result")
        if res is None:
            out.append(TicketMerge(slug=tk.slug, branch=branch, merged=False, message="the ticket did not run"))
        elif not res.succeeded:
            out.append(TicketMerge(slug=tk.slug, branch=branch, merged=False,
                                   message=f"not merged: the ticket is {res.status.replace('_', ' ')}"))
        elif not allowed:
            out.append(TicketMerge(slug=tk.slug, branch=branch, merged=False, message=f"not merged: {denied_by}"))
        else:
            out.append(_merge_one(t, board, tk))
    return out


def make_merge(inp: KanbanInput):
    def merge(t: TaskCtx) -> MergeReport:
        board: Board = t.get("tickets")
        decision = t.get("approve-merge") if inp.approve_merge else None
        approved = None if decision is None else bool(_field(decision, "approved"))
        who = _field(decision, "by") or "someone"
        note = _field(decision, "note")
        denied = f"the merge was denied by {who}" + (f" ({note})" if note else "")
        return MergeReport(base_branch=board.base_branch, approved=approved,
                           merges=_merge_all(t, board, approved is not False, denied))

    return merge


def _field(obj: object, name: str) -> object:
    if obj is None:
        return None
    return obj.get(name) if isinstance(obj, dict) else getattr(obj, name, None)


# -- resolving conflicts (resolve_conflicts=true) -------------------------------------------------

def _unmerged(wt: Path) -> list[str]:
    return sorted(p for p in git(wt, "diff", "--name-only", "-z", "--diff-filter=U").split("\0") if p)


def _markers(wt: Path, files: list[str]) -> list[str]:
    left = []
    for rel in files:
        p = wt / rel
        if p.is_file():
            text = p.read_text(errors="replace")
            if re.search(r"^(<{7}|>{7})( |$)", text, re.M):
                left.append(rel)
    return left


def make_resolve_start(board: Board, tk: Ticket):
    def resolve_start(t: TaskCtx) -> ResolveStart:
        wt = t.workdir
        base = board.base_branch or board.base_commit
        try:
            if not git(wt, "rev-parse", "-q", "--verify", "MERGE_HEAD", ok=(0, 1)).strip():  # not merging yet
                _commit_leftovers(wt, tk.title)
                git(wt, "merge", "--no-ff", "--no-edit", "-m", f"Merge {base} into ticket/{tk.slug}", base, ok=(0, 1))
            conflicts = _unmerged(wt)
        except (GitFailed, engine_git.GitError) as e:
            t.log(f"{tk.slug}: cannot merge {base} into the branch: {e}")
            return ResolveStart(base=base, conflicts=[], error=str(e))
        t.log(f"{tk.slug}: merging {base} into the branch: "
              + (f"conflicts in {', '.join(conflicts)}" if conflicts else "no conflict"))
        return ResolveStart(base=base, conflicts=conflicts)

    return resolve_start


def make_resolve_prompt(board: Board, tk: Ticket, start_id: str):
    def prompt(t: TaskCtx) -> str:
        rs: ResolveStart = t.get(start_id)
        return prompt_text("resolve-conflict", title=tk.title, branch=f"ticket/{tk.slug}", base=rs.base,
                           files="\n".join(f"- {f}" for f in rs.conflicts), ticket=ticket_prompt(tk).strip())

    return prompt


def make_resolve_check(inp: KanbanInput, board: Board, tk: Ticket, ids: dict[str, str]):
    async def resolve_check(t: TaskCtx) -> ResolveResult:
        wt = t.workdir
        rs: ResolveStart = t.get(ids["start"])
        agent = t.get(ids["agent"])

        async def give_up(reason: str) -> ResolveResult:
            await asyncio.to_thread(git, wt, "merge", "--abort", ok=(0, 128))  # the branch is as it was
            t.log(f"{tk.slug}: not resolved: {reason}")
            return ResolveResult(resolved=False, reason=reason)

        if rs.error:
            return await give_up(f"merging {rs.base} into the branch failed: {rs.error}")
        if not rs.conflicts:
            return ResolveResult(resolved=True, reason=f"{rs.base} merged into the branch without conflict")
        if agent is None:
            return await give_up("the resolving agent failed (its error is in the run log)")
        left = await asyncio.to_thread(_markers, wt, rs.conflicts)
        if left:
            return await give_up(f"conflict markers are left in {', '.join(left)}")
        command = tk.test_command or inp.test_command or await asyncio.to_thread(detect_test_command, wt)
        run = None
        if command:
            run = await run_command(command, wt, timeout=inp.test_timeout)
            if not run.ok:
                return await give_up(f"`{command}` fails after the resolution: {failure_excerpt(run.output)}")
        await asyncio.to_thread(git, wt, "add", "-A")
        await asyncio.to_thread(git, wt, "commit", "-q", "--no-verify", "--no-edit")
        tested = f"`{command}` passes" if command else "no test command to re-check with"
        return ResolveResult(resolved=True, reason=f"conflicts in {', '.join(rs.conflicts)} resolved by the agent; "
                             f"{tested}", command=command, output=truncate_middle(run.output, 3000) if run else "")

    return resolve_check


def resolve_lane(ctx: Ctx, inp: KanbanInput, board: Board, tk: Ticket) -> Node:
    """A conflicted ticket's branch, in its worktree: merge the base in, let the implementer
    resolve the conflicts, re-check with the tests, conclude the merge (or abort it)."""
    prefix = f"ticket-{tk.slug}-resolve"
    ids = {"start": f"{prefix}-start", "agent": f"{prefix}-agent", "check": f"{prefix}-check"}
    branch = ticket_paths(board, tk.slug)[1]
    began: ResolveStart | None = ctx.get(ids["start"])
    return Worktree(
        prefix,
        Task(ids["start"], run=make_resolve_start(board, tk), output=ResolveStart, retries=0),
        Task(ids["agent"], agent="implementer", prompt=make_resolve_prompt(board, tk, ids["start"]),
             output=ImplementResult, continue_on_fail=True,
             skip_if=began is not None and (not began.conflicts or bool(began.error))),
        Task(ids["check"], run=make_resolve_check(inp, board, tk, ids), output=ResolveResult, retries=0),
        path=f".worktrees/{tk.slug}", branch=branch, keep=True,
    )


def merge_resolved(t: TaskCtx) -> MergeReport:
    board: Board = t.get("tickets")
    first: MergeReport = t.get("merge")
    out = []
    for m in first.merges:
        if not m.conflicts:
            continue
        tk = next(x for x in board.tickets if x.slug == m.slug)
        rr: ResolveResult | None = t.get(f"ticket-{tk.slug}-resolve-check")
        if rr is None or not rr.resolved:
            why = rr.reason if rr else "its conflicts were not resolved"
            out.append(TicketMerge(slug=tk.slug, branch=m.branch, merged=False, conflicts=m.conflicts,
                                   message=f"{m.message}; the agent could not resolve them: {why}"))
            continue
        again = _merge_one(t, board, tk)
        again.message = (f"{rr.reason}; {again.message}" if again.merged
                         else f"resolved ({rr.reason}) but merging again failed: {again.message}")
        out.append(again)
    return MergeReport(base_branch=board.base_branch, approved=first.approved, merges=out)


# -- cleanup and the summary ------------------------------------------------------------------------

def final_merges(t: TaskCtx) -> dict[str, TicketMerge]:
    merges = {m.slug: m for m in t.get("merge").merges}
    second: MergeReport | None = t.get("merge-resolved")
    if second is not None:
        merges.update({m.slug: m for m in second.merges})
    return merges


def _remove_worktrees(board: Board) -> tuple[list[str], list[str]]:
    removed, kept = [], []
    repo = Path(board.repo)
    for tk in board.tickets:
        wt, _ = ticket_paths(board, tk.slug)
        if not wt.exists():
            continue
        try:
            if git(wt, "rev-parse", "-q", "--verify", "MERGE_HEAD", ok=(0, 1)).strip():
                git(wt, "merge", "--abort")  # a resolution interrupted half way: the branch stays as it was
            _commit_leftovers(wt, tk.title)
        except (engine_git.GitError, GitFailed) as e:
            kept.append(f"{wt}: its changes could not be committed ({e})")
            continue
        try:
            engine_git.remove_worktree(repo, wt)
            removed.append(str(wt))
        except engine_git.GitError as e:
            kept.append(f"{wt}: {e}")
    parent = repo / ".worktrees"
    if parent.is_dir() and not any(parent.iterdir()):
        parent.rmdir()
    return removed, kept


def make_cleanup(inp: KanbanInput):
    async def cleanup(t: TaskCtx) -> Cleanup:
        board: Board = t.get("tickets")
        check = None
        if any(m.merged for m in final_merges(t).values()):
            repo = Path(board.repo)
            command = inp.test_command or await asyncio.to_thread(detect_test_command, repo)
            if command:
                t.log(f"checking the merged result: {command}")
                run = await run_command(command, repo, timeout=inp.test_timeout)
                check = PostMergeCheck(command=command, ran=True, passed=run.ok, exit_code=run.exit_code,
                                       output=truncate_middle(run.output, 6000))
            else:
                check = PostMergeCheck(command=None, ran=False, passed=False,
                                       note="no test command was given and none could be detected")
        removed, kept = await asyncio.to_thread(_remove_worktrees, board)
        return Cleanup(post_merge_check=check, worktrees_removed=removed, worktrees_kept=kept)

    return cleanup


def summarize(t: TaskCtx) -> KanbanSummary:
    board: Board = t.get("tickets")
    first = {m.slug: m for m in t.get("merge").merges}
    merges = final_merges(t)
    done_cleanup: Cleanup = t.get("cleanup")
    rows: list[TicketSummary] = []
    for tk in board.tickets:
        res: LoopResult | None = t.get(f"ticket-{tk.slug}-result")
        m = merges.get(tk.slug)
        if res is None:
            status, why, rounds = "not_run", "the ticket did not run", 0
        else:
            status, rounds = res.status, res.rounds
            why = res.reason + ("; " + (m.message if res.succeeded else "not merged") if m is not None else "")
        had = first.get(tk.slug)
        rows.append(TicketSummary(slug=tk.slug, title=tk.title, path=tk.path, status=status, rounds=rounds,  # type: ignore[arg-type]  # status is one of the Literal values
                                  branch=f"ticket/{tk.slug}", merged=bool(m and m.merged),
                                  conflicts=list(had.conflicts) if had else [],
                                  resolved=bool(had and had.conflicts and m and m.merged), why=why))
    done = sum(r.status == "done" for r in rows)
    merged = sum(r.merged for r in rows)
    lines = [f"{r.slug}: {r.status.replace('_', ' ')} after {r.rounds} round(s), "
             f"{'merged' if r.merged else 'not merged'} ({r.branch}): {r.why}" for r in rows]
    chk = done_cleanup.post_merge_check
    if chk is not None:
        lines.append("merged result: " + (f"`{chk.command}` passed" if chk.passed else
                                          f"`{chk.command}` FAILED: {failure_excerpt(chk.output)}" if chk.ran
                                          else chk.note))
    lines += [f"worktree kept: {k}" for k in done_cleanup.worktrees_kept]
    head = f"{done} of {len(rows)} ticket(s) done, {merged} merged into {board.base_branch or 'HEAD'}"
    for line in [head, *lines]:
        t.log(line)
    return KanbanSummary(base_branch=board.base_branch, tickets=rows, done=done, merged=merged,
                         not_done=len(rows) - done, post_merge_check=chk, text="\n".join([head, *lines]))


# -- the workflow -------------------------------------------------------------------------------

def ticket_prompt(tk: Ticket) -> str:
    return prompt_text("kanban-ticket", path=tk.path, title=tk.title, body=tk.body.strip())


@workflow(name="kanban", input=KanbanInput)
def kanban(ctx: Ctx) -> Node:
    """Implement every ticket in .smithers/tickets/ on its own branch in parallel, then merge the ones that pass."""
    inp: KanbanInput = ctx.input
    board: Board | None = ctx.get("tickets")
    lanes: list[Node] = []
    done: list[str] = []
    if board is not None:
        for tk in board.tickets:
            path, branch = f".worktrees/{tk.slug}", f"ticket/{tk.slug}"
            lanes.append(implement_loop(
                ctx, f"ticket-{tk.slug}", ticket_prompt(tk), test_command=tk.test_command or inp.test_command,
                max_rounds=inp.max_rounds, reviewers=inp.reviewers, worktree_path=path, branch=branch,
                base=board.base_commit, keep=True, title=tk.title, test_timeout=inp.test_timeout))
            res = ctx.get(f"ticket-{tk.slug}-result")
            if res is not None and res.succeeded:
                done.append(tk.slug)
    base = (board.base_branch if board else None) or "HEAD"
    gate = None
    if inp.approve_merge:
        gate = Branch(bool(done), Approval(
            "approve-merge", on_deny="continue",
            message=f"Merge {len(done)} ticket branch(es) into {base}? " + ", ".join(f"ticket/{s}" for s in done)))
    resolving: Node | None = None
    first: MergeReport | None = ctx.get("merge")
    if inp.resolve_conflicts and board is not None:
        conflicted = [m.slug for m in first.merges if m.conflicts] if first is not None else []
        resolving = Sequence(
            Parallel(*[resolve_lane(ctx, inp, board, tk) for tk in board.tickets if tk.slug in conflicted],
                     max_concurrency=inp.max_concurrency),
            Task("merge-resolved", run=merge_resolved, output=MergeReport, retries=0))
    return Sequence(
        Task("tickets", run=read_tickets, output=Board, retries=0),
        Parallel(*lanes, max_concurrency=inp.max_concurrency),
        gate,
        Task("merge", run=make_merge(inp), output=MergeReport, retries=0),
        resolving,
        Task("cleanup", run=make_cleanup(inp), output=Cleanup, retries=0),
        Task("summary", run=summarize, output=KanbanSummary, retries=0),
    )

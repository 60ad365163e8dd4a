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
   order; a conflict is reported with its files and the merge is aborted (the branch keeps its
   work). Then the test command runs once on the merged result, and the worktrees are removed
   (branches stay). Conflicts are not resolved by an agent: resolve them on the branch and merge.
5. `summary`: per ticket, its status, rounds, branch, whether it merged, and why.

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
    summary                             compute: KanbanSummary
"""
from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field

from engine import Approval, Branch, Ctx, Node, Parallel, Sequence, Task, TaskCtx, workflow
from engine import git as engine_git

from ._support import (current_branch, detect_test_command, failure_excerpt, head_commit, prompt_text, repo_root,
                       run_command, slugify, step, truncate_middle)
from .implement import DEFAULT_REVIEWERS, LoopResult, implement_loop

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
    post_merge_check: PostMergeCheck | None = None
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
    conflicts: list[str] = Field(default_factory=list)
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


def _merge_all(t: TaskCtx, board: Board, allowed: bool, denied_by: str) -> list[TicketMerge]:
    repo = Path(board.repo)
    out: list[TicketMerge] = []
    for tk in board.tickets:
        wt, branch = ticket_paths(board, tk.slug)
        res: LoopResult | None = t.get(f"ticket-{tk.slug}-result")
        if res is None:
            out.append(TicketMerge(slug=tk.slug, branch=branch, merged=False, message="the ticket did not run"))
            continue
        if not res.succeeded:
            out.append(TicketMerge(slug=tk.slug, branch=branch, merged=False,
                                   message=f"not merged: the ticket is {res.status.replace('_', ' ')}"))
            continue
        if not allowed:
            out.append(TicketMerge(slug=tk.slug, branch=branch, merged=False, message=f"not merged: {denied_by}"))
            continue
        try:
            if wt.is_dir():
                engine_git.commit_all(wt, f"{tk.title}\n\nsmithers kanban: changes left in the worktree\n")
            mr = engine_git.merge_branch(repo, branch, into=board.base_branch)
        except engine_git.GitError as e:
            out.append(TicketMerge(slug=tk.slug, branch=branch, merged=False, message=f"not merged: {e}"))
            t.log(f"{tk.slug}: merge failed: {e}")
            continue
        out.append(TicketMerge(slug=tk.slug, branch=branch, merged=mr.merged, commit=mr.commit,
                               conflicts=list(mr.conflicts), message=mr.message))
        t.log(f"{tk.slug}: {mr.message}")
    return out


def _remove_worktrees(t: TaskCtx, board: Board) -> tuple[list[str], list[str]]:
    removed, kept = [], []
    repo = Path(board.repo)
    for tk in board.tickets:
        wt, _ = ticket_paths(board, tk.slug)
        if not wt.exists():
            continue
        try:
            engine_git.commit_all(wt, f"{tk.title}\n\nsmithers kanban: changes left in the worktree\n")
        except engine_git.GitError as e:
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


def make_merge(inp: KanbanInput):
    async def merge(t: TaskCtx) -> MergeReport:
        board: Board = t.get("tickets")
        decision = t.get("approve-merge") if inp.approve_merge else None
        approved = None if decision is None else bool(_field(decision, "approved"))
        allowed = approved is not False
        who = _field(decision, "by") or "someone"
        note = _field(decision, "note")
        denied = f"the merge was denied by {who}" + (f" ({note})" if note else "")
        merges = await asyncio.to_thread(_merge_all, t, board, allowed, denied)
        check = None
        if any(m.merged for m in merges):
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
        removed, kept = await asyncio.to_thread(_remove_worktrees, t, board)
        return MergeReport(base_branch=board.base_branch, approved=approved, merges=merges, post_merge_check=check,
                           worktrees_removed=removed, worktrees_kept=kept)

    return step(merge, inp.test_command, inp.approve_merge, inp.test_timeout)


def _field(obj: object, name: str) -> object:
    if obj is None:
        return None
    return obj.get(name) if isinstance(obj, dict) else getattr(obj, name, None)


# -- the summary --------------------------------------------------------------------------------

def summarize(t: TaskCtx) -> KanbanSummary:
    board: Board = t.get("tickets")
    report: MergeReport = t.get("merge")
    merges = {m.slug: m for m in report.merges}
    rows: list[TicketSummary] = []
    for tk in board.tickets:
        res: LoopResult | None = t.get(f"ticket-{tk.slug}-result")
        m = merges.get(tk.slug)
        merged = bool(m and m.merged)
        if res is None:
            status, why, rounds = "not_run", "the ticket did not run", 0
        else:
            status, rounds = res.status, res.rounds
            why = res.reason
            if m is not None:
                why += "; " + (m.message if res.succeeded else "not merged")
        rows.append(TicketSummary(slug=tk.slug, title=tk.title, path=tk.path, status=status, rounds=rounds,  # type: ignore[arg-type]
                                  branch=f"ticket/{tk.slug}", merged=merged,
                                  conflicts=list(m.conflicts) if m else [], why=why))
    done = sum(r.status == "done" for r in rows)
    merged = sum(r.merged for r in rows)
    lines = [f"{r.slug}: {r.status.replace('_', ' ')} after {r.rounds} round(s), "
             f"{'merged' if r.merged else 'not merged'} ({r.branch}): {r.why}" for r in rows]
    chk = report.post_merge_check
    if chk is not None:
        lines.append("merged result: " + (f"`{chk.command}` passed" if chk.passed else
                                          f"`{chk.command}` FAILED: {failure_excerpt(chk.output)}" if chk.ran
                                          else chk.note))
    lines += [f"worktree kept: {k}" for k in report.worktrees_kept]
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
    return Sequence(
        Task("tickets", run=read_tickets, output=Board, retries=0),
        Parallel(*lanes, max_concurrency=inp.max_concurrency),
        gate,
        Task("merge", run=make_merge(inp), output=MergeReport, retries=0),
        Task("summary", run=summarize, output=KanbanSummary, retries=0),
    )

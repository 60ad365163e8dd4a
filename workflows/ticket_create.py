"""ticket-create: turn a description into ticket files under .smithers/tickets/ for kanban.

Node ids: `draft` (agent, planner role) -> TicketDrafts; `write` (compute) -> CreatedTickets.
Existing tickets are never overwritten: a name already taken gets a -2, -3... suffix.
"""
from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, Field

from engine import Ctx, Node, Sequence, Task, TaskCtx, workflow

from ._support import not_blank, prompt_text, slugify


class TicketDraft(BaseModel):
    title: str = Field(description="short and imperative, e.g. 'Add a --json flag to list'")
    body: str = Field(description="what to change and why, naming the files involved")
    acceptance: list[str] = Field(default_factory=list, description="criteria a test can check")


class TicketDrafts(BaseModel):
    tickets: list[TicketDraft]


class CreatedTickets(BaseModel):
    folder: str
    files: list[str] = Field(description="paths relative to the project")
    text: str


class TicketCreateInput(BaseModel):
    description: str = Field(description="the feature, bug list or plan to split into tickets")
    max_tickets: int = Field(5, ge=1, le=30, description="at most this many tickets")

    _given = not_blank("description", "describe the work to split into tickets")


def ticket_markdown(d: TicketDraft) -> str:
    text = f"# {d.title.strip()}\n\n{d.body.strip()}\n"
    if d.acceptance:
        text += "\n## Acceptance\n\n" + "".join(f"- {a.strip()}\n" for a in d.acceptance)
    return text


def _write(max_tickets: int):
    def write(t: TaskCtx) -> CreatedTickets:
        drafts: TicketDrafts = t.get("draft")
        folder = Path(t.workdir) / ".smithers" / "tickets"
        folder.mkdir(parents=True, exist_ok=True)
        written: list[str] = []
        for d in drafts.tickets[:max_tickets]:
            text = ticket_markdown(d)
            base = slugify(d.title, "ticket")
            path, n = folder / f"{base}.md", 2
            while path.exists() and path.read_text(encoding="utf-8", errors="replace") != text:
                path, n = folder / f"{base}-{n}.md", n + 1
            path.write_text(text, encoding="utf-8")  # the same text again on a retry: nothing duplicated
            rel = path.relative_to(t.workdir).as_posix()
            written.append(rel)
            t.log(f"wrote {rel}")
        lines = [f"{len(written)} ticket(s) in {folder.relative_to(t.workdir).as_posix()}:", *written,
                 "Review and edit them, then `smithers run kanban`."]
        return CreatedTickets(folder=str(folder), files=written, text="\n".join(lines))
    return write


def _draft_prompt(inp: TicketCreateInput):
    def make(t: TaskCtx) -> str:
        return prompt_text("ticket-create", description=inp.description.strip(), max_tickets=inp.max_tickets)
    return make


@workflow(name="ticket-create", input=TicketCreateInput)
def ticket_create(ctx: Ctx) -> Node:
    """Split a description into ticket files under .smithers/tickets/ for the kanban workflow."""
    inp: TicketCreateInput = ctx.input
    return Sequence(
        Task("draft", agent="planner", prompt=_draft_prompt(inp), output=TicketDrafts, tools="read_only"),
        Task("write", run=_write(inp.max_tickets), output=CreatedTickets, retries=0),
    )

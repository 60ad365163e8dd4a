"""Hijack: hand a step's agent session to the person, in that CLI's interactive mode, in the step's
worktree; when the CLI exits, record what the person changed (the diff) in the run's event log as
part of the step. Used by `smithers hijack RUN NODE` and by the app (`H`, which suspends itself
while the CLI runs). Engine-side helpers: engine/agents/hijack.py.
"""

from __future__ import annotations

import getpass
import json
import subprocess
import time
from dataclasses import dataclass
from typing import Any, Callable

from textual.screen import Screen

from engine.agents.base import AgentError
from engine.agents.hijack import Session, open_session, session_events, tree_diff, tree_of
from engine.errors import BadInput


@dataclass
class Outcome:
    session: Session
    exit_code: int
    diff: str

    def line(self) -> str:
        files = sum(1 for ln in self.diff.splitlines() if ln.startswith("diff --git"))
        what = f"{files} file(s) changed" if files else "no files changed"
        return (f"hijacked {self.session.node_id} ({self.session.agent}, session {self.session.session_id}): "
                f"{what}; recorded in the run's log")


async def latest_note(store: Any, run_id: str, node: str, iteration: int | None = None) -> tuple[dict[str, Any], Any]:
    """The latest saved session note of a step and the agent that made it (BadInput otherwise)."""
    from pathlib import Path

    from engine.config import load_settings, resolve_agent

    run = await store.get_run(run_id)
    notes = session_events(await store.events(run_id, types=["agent"]), node, iteration)
    if not notes:
        raise BadInput(f"step {node!r} of run {run_id} has no saved agent session: only agent steps that started "
                       f"can be hijacked (`smithers show {run_id}` lists the steps)")
    note = notes[-1]
    try:
        return note, resolve_agent(note.get("agent") or note.get("cli"), load_settings(Path(run.workdir)))
    except AgentError as e:
        raise BadInput(str(e)) from None


async def find_session(store: Any, run_id: str, node: str, iteration: int | None = None) -> Session:
    """The latest saved CLI session of a step, ready to reopen (BadInput with what to do otherwise)."""
    note, agent = await latest_note(store, run_id, node, iteration)
    try:
        return open_session(run_id, node, note, agent)
    except AgentError as e:
        raise BadInput(str(e)) from None


def run_interactive(session: Session, runner: Callable[..., int] = subprocess.call) -> int:
    """Run the CLI in the foreground on this terminal; returns its exit code."""
    try:
        return runner(session.argv, cwd=str(session.workdir), env=session.env)
    except OSError as e:
        raise BadInput(f"cannot start {session.argv[0]!r}: {e.strerror or e}") from None


async def check_free(store: Any, run_id: str) -> None:
    """A run a live process is executing cannot take a hijack's frame: say so before starting."""
    from engine.lease import describe_owner, owner_alive

    run = await store.get_run(run_id)
    if owner_alive(run.owner):
        raise BadInput(f"run {run_id} is being executed by {describe_owner(run.owner)}: wait for it to stop (or "
                       f"`smithers cancel {run_id}`), then hijack")


async def record(store: Any, session: Session, before: str | None, exit_code: int, by: str | None = None) -> Outcome:
    """Write the person's changes into the run as a frame of its own: one `agent` event of kind
    `hijack` on the step, with the diff (secrets redacted). The run's lease is taken for that one
    commit and given back; the run's status does not change."""
    from engine.frame import Delta
    from engine.lease import Owner
    from engine.secrets import redact_data

    after = tree_of(session.workdir)
    diff = tree_diff(session.workdir, before, after)
    who = by or getpass.getuser()
    data = redact_data({"kind": "hijack", "agent": session.agent,
                        "text": f"hijacked by {who}: {session.cli} session {session.session_id}, exit {exit_code}",
                        "data": {"session": session.session_id, "cli": session.cli, "by": who,
                                 "exit_code": exit_code, "before": before, "after": after, "diff": diff[:200_000]}})
    run = await store.get_run(session.run_id)
    me = Owner.me()
    now = time.time()
    if not await store.take_over(run.id, me, run.owner.id if run.owner else None, {}, now):
        raise BadInput(f"run {run.id} was taken over while you worked; your changes are in {session.workdir} "
                       "but not recorded in the run")
    try:
        delta = Delta()
        delta.event("agent", (session.node_id, session.iteration), **data)
        await store.commit(run.id, me.id, run.frame + 1, delta, now)
    finally:
        await store.release(run.id, me.id)
    return Outcome(session, exit_code, diff)


async def hijack(store: Any, run_id: str, node: str, iteration: int | None = None,
                 runner: Callable[..., int] = subprocess.call) -> Outcome:
    """Find, reopen, wait for the person, record."""
    session = await find_session(store, run_id, node, iteration)
    await check_free(store, run_id)
    before = tree_of(session.workdir)
    code = run_interactive(session, runner)
    return await record(store, session, before, code)


async def hijack_in_app(app: Any, run_id: str, node: str, iteration: int | None = None) -> Outcome | None:
    """The app's `H`. A CLI step: suspend the app, run the CLI on the terminal, come back and record
    (where the app cannot suspend — a headless or web driver — the CLI runs without it giving way).
    A litellm step: a chat that continues the step's conversation with the same tools."""
    from textual.app import SuspendNotSupported

    store = app.host.store
    try:
        await check_free(store, run_id)
        note, agent = await latest_note(store, run_id, node, iteration)
        if note.get("cli") == "litellm":
            app.push_screen(ChatScreen(store, run_id, node, note, agent))
            return None
        session = open_session(run_id, node, note, agent)
    except (BadInput, AgentError) as e:
        app.notify(str(e), severity="error", timeout=8)
        return None
    before = tree_of(session.workdir)
    try:
        with app.suspend():
            code = run_interactive(session)
    except SuspendNotSupported:
        code = run_interactive(session, lambda argv, **kw: subprocess.call(argv, stdin=subprocess.DEVNULL, **kw))
    outcome = await record(store, session, before, code)
    app.notify(outcome.line(), timeout=8)
    return outcome


class ChatScreen(Screen[Outcome]):
    """A chat that continues a litellm step's saved conversation, with the step's tools, in the
    step's working directory. `esc` ends it; what changed is recorded like a CLI hijack."""

    BINDINGS = [("escape", "end", "End and record")]
    DEFAULT_CSS = """
    ChatScreen { layout: vertical; }
    ChatScreen #chat-log { height: 1fr; border: round $primary; }
    ChatScreen #chat-input { dock: bottom; }
    """

    def __init__(self, store: Any, run_id: str, node: str, note: dict[str, Any], agent: Any) -> None:
        super().__init__()
        from pathlib import Path

        self.store, self.run_id, self.node, self.note, self.agent = store, run_id, node, note, agent
        self.workdir = Path(note["workdir"])
        saved = json.loads(Path(note["id"]).read_text())
        self.messages: list[dict[str, Any]] = saved["messages"]
        from engine.tools import DEFAULT_TOOLS

        self.tools = [t for t in DEFAULT_TOOLS if t.name in set(saved.get("tools") or [])]
        self.before = tree_of(self.workdir)
        self.session = Session(run_id, node, int(note.get("iteration") or 0), "litellm", agent.name, note["id"],
                               self.workdir, [], {})
        self.busy = False

    def compose(self) -> Any:
        from textual.widgets import Footer, Input, RichLog

        yield RichLog(id="chat-log", wrap=True, markup=False)
        yield Input(placeholder=f"continue {self.node} with {self.agent.name} (esc ends and records)",
                    id="chat-input")
        yield Footer()

    def on_mount(self) -> None:
        from textual.widgets import RichLog

        log = self.query_one(RichLog)
        for m in self.messages:
            if m.get("role") in ("user", "assistant") and m.get("content"):
                log.write(f"{m['role']}: {m['content']}")
        self.query_one("#chat-input").focus()

    async def on_input_submitted(self, event: Any) -> None:
        text = event.value.strip()
        event.input.value = ""
        if not text or self.busy:
            return
        self.busy = True
        self.messages.append({"role": "user", "content": text})
        from textual.widgets import RichLog

        self.query_one("#chat-log", RichLog).write(f"you: {text}")
        self.run_worker(self._reply(), exclusive=True, group="chat")

    async def _reply(self) -> None:
        from textual.widgets import RichLog

        from engine.secrets import redact

        log = self.query_one(RichLog)

        def emit(ev: Any) -> None:
            if ev.kind in ("message", "tool_call", "tool_result", "retry", "error"):
                log.write(redact(f"{self.agent.name} {ev.kind}: {ev.text}" if ev.kind != "message"
                                 else f"{self.agent.name}: {ev.text}"))

        try:
            await self.agent.converse(self.messages, self.workdir, emit, self.tools)
        except AgentError as e:
            log.write(f"error: {e}")
        finally:
            self.busy = False

    async def action_end(self) -> None:
        from pathlib import Path

        from engine.secrets import redact_data

        Path(self.note["id"]).write_text(json.dumps({"model": getattr(self.agent, "model", ""), "agent": self.agent.name,
                                                     "tools": [t.name for t in self.tools],
                                                     "messages": redact_data(self.messages)}))
        outcome = await record(self.store, self.session, self.before, 0)
        self.app.notify(outcome.line(), timeout=8)
        self.dismiss(outcome)

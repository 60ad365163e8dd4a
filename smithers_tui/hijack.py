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


async def find_session(store: Any, run_id: str, node: str, iteration: int | None = None,
                       settings: Any = None) -> Session:
    """The latest saved CLI session of a step, ready to reopen (BadInput with what to do otherwise)."""
    from engine.config import load_settings, resolve_agent
    from pathlib import Path

    run = await store.get_run(run_id)
    notes = session_events(await store.events(run_id), node, iteration)
    if not notes:
        raise BadInput(f"step {node!r} of run {run_id} has no saved agent session: only coding-agent CLI steps "
                       "that started can be hijacked (`smithers show {run_id}` lists the steps)")
    note = notes[-1]
    settings = settings or load_settings(Path(run["workdir"]))
    try:
        agent = resolve_agent(note.get("agent") or note.get("cli"), settings)
        return open_session(run_id, node, note, agent)
    except AgentError as e:
        raise BadInput(str(e)) from None


def run_interactive(session: Session, runner: Callable[..., int] = subprocess.call) -> int:
    """Run the CLI in the foreground on this terminal; returns its exit code."""
    try:
        return runner(session.argv, cwd=str(session.workdir), env=session.env)
    except OSError as e:
        raise BadInput(f"cannot start {session.argv[0]!r}: {e.strerror or e}") from None


async def record(store: Any, session: Session, before: str | None, exit_code: int, by: str | None = None) -> Outcome:
    """Write the person's changes into the run's event log (one `agent` event of kind `hijack`)."""
    after = tree_of(session.workdir)
    diff = tree_diff(session.workdir, before, after)
    data = {"kind": "hijack", "agent": session.agent, "text": f"hijacked by {by or getpass.getuser()}: "
            f"{session.cli} session {session.session_id}, exit {exit_code}",
            "data": {"session": session.session_id, "cli": session.cli, "by": by or getpass.getuser(),
                     "exit_code": exit_code, "before": before, "after": after, "diff": diff[:200_000]}}
    # TODO(lead): a Store.append_event(run, node, iteration, type, data) would keep this SQL in engine/store/.
    await store.transact([("INSERT INTO events (run_id,frame,at,type,node_id,iteration,data) "
                           "SELECT id, frame, ?, 'agent', ?, ?, ? FROM runs WHERE id=?",
                           [(time.time(), session.node_id, session.iteration, json.dumps(data), session.run_id)])])
    return Outcome(session, exit_code, diff)


async def hijack(store: Any, run_id: str, node: str, iteration: int | None = None,
                 runner: Callable[..., int] = subprocess.call) -> Outcome:
    """Find, reopen, wait for the person, record."""
    session = await find_session(store, run_id, node, iteration)
    before = tree_of(session.workdir)
    code = run_interactive(session, runner)
    return await record(store, session, before, code)


async def hijack_in_app(app: Any, run_id: str, node: str, iteration: int | None = None) -> Outcome | None:
    """The app's `H`: suspend the app, run the CLI on the terminal, come back and record. Where the
    app cannot suspend (a headless or web driver) the CLI runs without the app giving way."""
    from textual.app import SuspendNotSupported

    try:
        session = await find_session(app.host.store, run_id, node, iteration)
    except BadInput as e:
        app.notify(str(e), severity="error", timeout=8)
        return None
    before = tree_of(session.workdir)
    try:
        with app.suspend():
            code = run_interactive(session)
    except SuspendNotSupported:
        code = run_interactive(session, lambda argv, **kw: subprocess.call(argv, stdin=subprocess.DEVNULL, **kw))
    outcome = await record(app.host.store, session, before, code)
    app.notify(outcome.line(), timeout=8)
    return outcome

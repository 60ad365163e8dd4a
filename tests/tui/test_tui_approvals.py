"""Approvals: the prompt when a gate waits, approve and deny in the app (with a note), a decision
made elsewhere closing the prompt (another connection, another process), and the inbox across runs."""
from __future__ import annotations

import dataclasses

import subprocess
import sys
from pathlib import Path

from textual.widgets import DataTable, Input

from engine.approval import decide
from engine.loader import load_target
from smithers_tui.screens.approval import ApprovalScreen
from smithers_tui.screens.inbox import InboxScreen
from smithers_tui.screens.run import RunScreen
from tests.support import clean_env
from tests.tui.helpers import connect, make_app, ready, run_row, seed, target, until


async def gate_row(db: Path, run_id: str) -> dict:
    store = await connect(db)
    try:
        return dataclasses.asdict((await store.approvals(run_id, open_only=False))[0])
    finally:
        await store.close()


async def test_prompt_approves_a_run_nobody_owns_and_resumes_it_here(db: Path, project: Path) -> None:
    await seed(db, project, "w1")  # left waiting, lease released: like `smithers run` exiting 3
    app = make_app(db, project)
    async with app.run_test(size=(120, 36)) as pilot:
        await ready(pilot, app)
        app.open_run("w1")
        await until(pilot, lambda: isinstance(app.screen, ApprovalScreen) and app.screen.loaded, "the prompt")
        assert "Ship it?" in str(app.screen.query_one("#message").render())
        context = str(app.screen.query_one("#context-body").render())
        assert "count[1]" in context and "denying fails the run" in context
        await pilot.press("y")
        await until(pilot, lambda: isinstance(app.screen, RunScreen), "the prompt to close")
        await until(pilot, lambda: app.screen.run and app.screen.run.status == "finished", "the run to finish")
        gate = await gate_row(db, "w1")
        assert gate["decision"] == "approved"
        assert (await run_row(db, "w1"))["owner_id"] is None  # finished: lease released


async def test_deny_with_a_note_fails_the_run(db: Path, project: Path) -> None:
    await seed(db, project, "w1")
    app = make_app(db, project)
    async with app.run_test(size=(120, 36)) as pilot:
        await ready(pilot, app)
        app.open_run("w1")
        await until(pilot, lambda: isinstance(app.screen, ApprovalScreen) and app.screen.loaded, "the prompt")
        await pilot.press("e")
        assert app.screen.query_one("#note", Input).has_focus
        await pilot.press(*"not yet", "enter")
        await pilot.press("n")
        await until(pilot, lambda: isinstance(app.screen, RunScreen) and app.screen.run
                    and app.screen.run.status == "failed", "the run to fail")
        gate = await gate_row(db, "w1")
        assert (gate["decision"], gate["note"]) == ("denied", "not yet")


async def test_a_decision_from_another_connection_closes_the_prompt(db: Path, project: Path) -> None:
    await seed(db, project, "w1")
    app = make_app(db, project)
    async with app.run_test(size=(120, 36)) as pilot:
        await ready(pilot, app)
        app.open_run("w1")
        await until(pilot, lambda: isinstance(app.screen, ApprovalScreen) and app.screen.loaded, "the prompt")
        store = await connect(db)
        try:
            await decide(store, "w1", "ship", 0, True, by="alice", note="from the CLI")
        finally:
            await store.close()
        await until(pilot, lambda: isinstance(app.screen, RunScreen), "the prompt to close")
        assert any("approved elsewhere by alice" in m for m in app.said)


async def test_approve_from_another_process_goes_on_in_the_app(db: Path, project: Path) -> None:
    app = make_app(db, project)
    async with app.run_test(size=(120, 36)) as pilot:
        await ready(pilot, app)
        wf, tgt = load_target(target(project))
        rid = await app.host.start(wf, tgt, {"rounds": 1}, demo=True, run_id="mine")
        app.open_run(rid)
        await until(pilot, lambda: isinstance(app.screen, ApprovalScreen), "the prompt")
        done = subprocess.run([sys.executable, "-m", "smithers_tui", "--db", str(db), "approve", rid, "ship",
                               "--by", "bob"], cwd=project, env=clean_env(), capture_output=True, text=True,
                              timeout=60)
        assert done.returncode == 0, done.stderr
        assert "its owner" in done.stdout  # the app owns the run: the CLI leaves it to the app
        await until(pilot, lambda: isinstance(app.screen, RunScreen), "the prompt to close")
        await until(pilot, lambda: not app.host.executing(rid), "the run to end in the app")
        assert (await run_row(db, rid))["status"] == "finished"


async def test_inbox_lists_gates_across_runs_and_decides(db: Path, project: Path) -> None:
    await seed(db, project, "w1")
    await seed(db, project, "w2", {"rounds": 1})
    app = make_app(db, project)
    async with app.run_test(size=(120, 36)) as pilot:
        await ready(pilot, app)
        await pilot.press("a")
        await until(pilot, lambda: isinstance(app.screen, InboxScreen) and app.screen.loaded, "the inbox")
        t = app.screen.query_one(DataTable)
        assert t.row_count == 2
        assert {g.run_id for g in app.screen.gates} == {"w1", "w2"}
        assert set(app.screen.owners.values()) == {"nobody"}
        first = app.screen.current().run_id
        await pilot.press("y")
        await until(pilot, lambda: t.row_count == 1, "the gate to leave the inbox")
        await until(pilot, lambda: not app.host.executing(first), "the run to finish here")
        assert (await run_row(db, first))["status"] == "finished"
        await pilot.press("enter")
        await until(pilot, lambda: isinstance(app.screen, ApprovalScreen), "the prompt from the inbox")
        await pilot.press("n")
        await until(pilot, lambda: isinstance(app.screen, InboxScreen) and t.row_count == 0, "empty inbox")

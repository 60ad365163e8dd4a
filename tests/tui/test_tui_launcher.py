"""Launcher: workflows with descriptions, a form from the input model with validation messages,
the demo agent offered when no model is configured, the run started here and opened."""
from __future__ import annotations

from pathlib import Path

from textual.widgets import Input, OptionList, Static, Switch

from smithers_tui.screens.approval import ApprovalScreen
from smithers_tui.screens.launcher import LauncherScreen
from smithers_tui.screens.run import RunScreen
from tests.tui.helpers import ready, make_app, run_row, until


async def test_launch_validates_the_form_then_starts_and_opens_the_run(db: Path, project: Path) -> None:
    app = make_app(db, project, agent_override=None)
    async with app.run_test(size=(120, 36)) as pilot:
        await ready(pilot, app)
        app.action_new_run("flow")
        await until(pilot, lambda: isinstance(app.screen, LauncherScreen) and app.screen.loaded, "launcher")
        screen = app.screen
        names = [str(screen.query_one(OptionList).get_option_at_index(i).id)
                 for i in range(screen.query_one(OptionList).option_count)]
        assert "flow" in names and "hello" in names  # project and built-in workflows
        note = str(screen.query_one("#agent-note", Static).render())
        assert "No model is configured" in note
        assert screen.query_one("#demo", Switch).value is True  # the demo agent is offered
        rounds = screen.query_one("#field-rounds", Input)
        rounds.value = "0"
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert "greater than or equal to 1" in str(screen.query_one("#error-rounds", Static).render())
        assert isinstance(app.screen, LauncherScreen)  # nothing started
        rounds.value = "1"
        screen.query_one("#field-topic", Input).value = "launch"
        await pilot.press("ctrl+s")
        await until(pilot, lambda: isinstance(app.screen, (RunScreen, ApprovalScreen)), "the run to open")
        await until(pilot, lambda: isinstance(app.screen, ApprovalScreen), "the gate to ask")
        run_id = app.screen.run_id
        await pilot.press("y")
        await until(pilot, lambda: not app.host.executing(run_id), "the run to end")
        row = await run_row(db, run_id)
        assert row["status"] == "finished"
        assert '"topic":"launch"' in row["input"]
        notes = [n for n in app.host.agents.buffers if n[1] == "notes"]
        assert notes, "the demo agent streamed the notes step"


async def test_workflow_without_input_says_so(db: Path, project: Path) -> None:
    app = make_app(db, project)
    async with app.run_test(size=(120, 36)) as pilot:
        await ready(pilot, app)
        app.action_new_run("quick")
        await until(pilot, lambda: isinstance(app.screen, LauncherScreen) and app.screen.loaded, "launcher")
        assert "takes no input" in str(app.screen.query_one(".empty", Static).render())
        await pilot.press("ctrl+s")
        await until(pilot, lambda: isinstance(app.screen, RunScreen), "the run")
        await until(pilot, lambda: app.screen.report and app.screen.report["status"] == "finished", "finished")

"""Runs (home): the live table, runs of other connections appearing and moving, the filter."""
from __future__ import annotations

from pathlib import Path

from textual.widgets import DataTable, Input

from smithers_tui.screens.launcher import LauncherScreen
from smithers_tui.screens.run import RunScreen
from smithers_tui.screens.runs import RunsScreen
from tests.tui.helpers import make_app, seed, until


def table(app) -> DataTable:
    return app.screen.query_one("#runs", DataTable)


def cell(app, run_id: str, col: str) -> str:
    return str(table(app).get_cell(run_id, col))


async def test_runs_table_shows_every_run_with_its_state(db: Path, project: Path) -> None:
    assert await seed(db, project, "run-wait") == "waiting"
    assert await seed(db, project, "run-quick", name="quick") == "finished"
    app = make_app(db, project)
    async with app.run_test(size=(120, 36)) as pilot:
        await until(pilot, lambda: isinstance(app.screen, RunsScreen) and app.screen.loaded, "runs loaded")
        assert table(app).row_count == 2
        assert cell(app, "run-wait", "status") == "waiting"
        assert cell(app, "run-wait", "gates") == "1"
        assert cell(app, "run-wait", "workflow") == "flow"
        assert cell(app, "run-wait", "progress") == "5/6"  # plan, count x2, lint, test done; ship waits
        assert cell(app, "run-quick", "status") == "finished"
        assert cell(app, "run-quick", "progress") == "1/1"


async def test_runs_started_elsewhere_appear_and_update_live(db: Path, project: Path) -> None:
    app = make_app(db, project)
    async with app.run_test(size=(120, 36)) as pilot:
        await until(pilot, lambda: isinstance(app.screen, RunsScreen) and app.screen.loaded, "runs loaded")
        assert table(app).row_count == 0
        await seed(db, project, "elsewhere")  # another connection writes the run, up to its gate
        await until(pilot, lambda: table(app).row_count == 1, "the run to appear")
        await until(pilot, lambda: cell(app, "elsewhere", "status") == "waiting", "the run to reach its gate")


async def test_filter_narrows_and_escape_clears(db: Path, project: Path) -> None:
    await seed(db, project, "run-wait")
    await seed(db, project, "run-quick", name="quick")
    app = make_app(db, project)
    async with app.run_test(size=(120, 36)) as pilot:
        await until(pilot, lambda: isinstance(app.screen, RunsScreen) and table(app).row_count == 2, "runs")
        await pilot.press("slash")
        assert app.screen.query_one("#filter", Input).has_focus
        await pilot.press(*"quick")
        await until(pilot, lambda: table(app).row_count == 1, "filtered")
        assert str(table(app).get_row_at(0)[3]) == "run-quick"
        await pilot.press("enter")  # keeps the filter, back to the table
        assert table(app).has_focus and table(app).row_count == 1
        await pilot.press("escape")
        assert table(app).row_count == 2


async def test_enter_opens_the_run_and_n_opens_the_launcher(db: Path, project: Path) -> None:
    await seed(db, project, "run-quick", name="quick")
    app = make_app(db, project)
    async with app.run_test(size=(120, 36)) as pilot:
        await until(pilot, lambda: isinstance(app.screen, RunsScreen) and table(app).row_count == 1, "runs")
        await pilot.press("enter")
        await until(pilot, lambda: isinstance(app.screen, RunScreen) and app.screen.loaded, "run screen")
        assert app.screen.run_id == "run-quick"
        await pilot.press("escape")
        assert isinstance(app.screen, RunsScreen)
        await pilot.press("n")
        assert isinstance(app.screen, LauncherScreen)

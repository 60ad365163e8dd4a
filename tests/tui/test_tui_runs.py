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
    return str(table(app).get_cell(run_id, col)).strip()


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
        assert [it.key for it in table(app).shown] == ["run-quick"]
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


async def orphan(db: Path, project: Path, run_id: str) -> None:
    """A run left `running` by a process that is gone (as after kill -9 of its owner)."""
    import socket
    import subprocess

    from engine.lease import Owner
    from engine.loader import load_target
    from engine.runtime import Engine
    from tests.tui.helpers import connect, target

    gone = subprocess.Popen(["true"])
    gone.wait()
    store = await connect(db)
    try:
        eng = Engine(store, owner=Owner("gone-owner", socket.gethostname(), gone.pid, None), agent_override="demo")
        wf, tgt = load_target(target(project, "quick"))
        await eng.start(wf, tgt, None, run_id=run_id, workdir=project)  # started, never executed: its owner died
    finally:
        await store.close()


async def test_a_run_whose_owner_is_gone_shows_interrupted_and_s_resumes_it(db: Path, project: Path) -> None:
    """Issue 9 item 7 / issue 13: never "running" with a clock counting when nobody runs it."""
    await orphan(db, project, "orphan")
    app = make_app(db, project)
    async with app.run_test(size=(120, 36)) as pilot:
        await until(pilot, lambda: isinstance(app.screen, RunsScreen) and app.screen.loaded, "runs loaded")
        assert cell(app, "orphan", "status") == "interrupted"
        assert "s resumes it here" in cell(app, "orphan", "step")
        assert "1 interrupted" in str(app.screen.query_one("#summary").render())
        await pilot.press("enter")
        run = await until(pilot, lambda: isinstance(app.screen, RunScreen) and app.screen.loaded and app.screen,
                          "the run")
        head = str(run.query_one("#run-head").render())
        assert "interrupted" in head and "s resumes it here" in head and "running" not in head
        await pilot.press("s")
        await until(pilot, lambda: run.run is not None and run.run.status == "finished", "resumed here, finished")


async def test_sort_filter_and_columns_are_kept_for_next_time(db: Path, project: Path) -> None:
    await seed(db, project, "run-wait")
    await seed(db, project, "run-quick", name="quick")
    app = make_app(db, project)
    async with app.run_test(size=(120, 36)) as pilot:
        await until(pilot, lambda: isinstance(app.screen, RunsScreen) and table(app).row_count == 2, "runs")
        t = table(app)
        t.sort_by("workflow")
        assert [it.key for it in t.shown] == ["run-wait", "run-quick"]  # flow, quick
        await pilot.press("O")  # reversed
        assert [it.key for it in t.shown] == ["run-quick", "run-wait"]
        await pilot.press("slash", *"quick", "enter")
        await until(pilot, lambda: t.row_count == 1, "filtered")
        await pilot.press("C")
        await until(pilot, lambda: type(app.screen).__name__ == "ColumnsScreen", "the columns")
        sel = app.screen.query_one("SelectionList")
        sel.deselect("started")
        await pilot.press("enter")
        await until(pilot, lambda: "started" not in [k for k, _w in t._layout], "the column hidden")
    prefs = app.prefs
    assert prefs.get("runs.sort") == "workflow" and prefs.get("runs.sort_reverse") is True
    assert prefs.get("runs.filter") == "quick" and prefs.get("runs.hidden") == ["started"]
    again = make_app(db, project, prefs=type(prefs)(prefs.path))  # read back from the file
    async with again.run_test(size=(120, 36)) as pilot:
        await until(pilot, lambda: isinstance(again.screen, RunsScreen) and again.screen.loaded, "runs again")
        t = again.screen.query_one("#runs", DataTable)
        assert [it.key for it in t.shown] == ["run-quick"] and "started" not in [k for k, _w in t._layout]
        assert t.sort_column == "workflow" and t.sort_reverse


async def test_columns_fit_the_terminal_and_never_cut_a_number(db: Path, project: Path) -> None:
    """Issue 13: at 80 columns the least useful columns step aside and `5/6` is whole; the error
    column takes what is left."""
    await seed(db, project, "run-wait")
    app = make_app(db, project)
    async with app.run_test(size=(80, 24)) as pilot:
        await until(pilot, lambda: isinstance(app.screen, RunsScreen) and table(app).row_count == 1, "runs")
        layout = dict(table(app)._layout)
        assert {"glyph", "status", "workflow", "run", "progress", "step"} <= set(layout)
        assert sum(layout.values()) + 2 * len(layout) <= 80
        assert cell(app, "run-wait", "progress") == "5/6"

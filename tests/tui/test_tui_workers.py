"""The app and workers: a run started in the background from the launcher (ctrl+b) is queued, not
run here, and says a worker is needed; the runs list shows which worker runs a run."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from textual.widgets import DataTable

from smithers_tui.screens.launcher import LauncherScreen
from smithers_tui.screens.run import RunScreen
from smithers_tui.screens.runs import RunsScreen
from tests.support import Smithers, WorkerProc, blocks_once
from tests.tui.helpers import make_app, ready, run_row, until


def step_cell(app: Any, run_id: str) -> str:
    screen = app.screen
    assert isinstance(screen, RunsScreen)
    return str(screen.query_one("#runs", DataTable).get_cell(run_id, "step"))


async def test_a_run_started_in_the_background_is_queued_then_shown_with_its_worker(db: Path, project: Path) -> None:
    app = make_app(db, project, agent_override="demo")
    async with app.run_test(size=(140, 36)) as pilot:
        await ready(pilot, app)
        app.action_new_run("quick")
        await until(pilot, lambda: isinstance(app.screen, LauncherScreen) and app.screen.loaded, "launcher")
        await pilot.press("ctrl+b")
        await until(pilot, lambda: isinstance(app.screen, RunScreen), "the run to open")
        run_id = app.screen.run_id
        assert not app.host.executing(run_id)  # not run here
        assert (await run_row(db, run_id))["status"] == "queued"
        assert any("no worker is running" in m for m in app.said)
        await pilot.press("escape")
        await until(pilot, lambda: isinstance(app.screen, RunsScreen) and app.screen.loaded, "the runs list")
        await until(pilot, lambda: step_cell(app, run_id).startswith("waits for a worker"), "the queued run")
        cli = Smithers(project, db)
        worker = WorkerProc(cli)
        try:
            await until(pilot, lambda: _status(app, run_id) == "finished", "the worker to finish it")
            (project / "blocks.py").write_text(blocks_once(seconds=600))
            held = cli("run", project / "blocks.py", "--detach", "-q").stdout.strip()
            await until(pilot, lambda: _status(app, held) == "running" and f"@{worker.id} " in step_cell(app, held),
                        "the list to show the worker running it")
            assert f"{worker.pid}" in step_cell(app, held)
        finally:
            worker.kill()
        assert (await run_row(db, run_id))["status"] == "finished"


def _status(app: Any, run_id: str) -> str | None:
    return next((r.view for r in app.screen.runs if r.id == run_id), None)

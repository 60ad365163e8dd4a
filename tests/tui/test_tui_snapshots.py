"""Snapshots of each screen at 120x36: runs seeded with fixed ids, times through a frozen clock.
Update with `pytest tests/tui/test_tui_snapshots.py --snapshot-update` after a deliberate change."""
from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from smithers_tui.screens.agents import AgentsScreen
from smithers_tui.screens.approval import ApprovalScreen
from smithers_tui.screens.inbox import InboxScreen
from smithers_tui.screens.launcher import LauncherScreen
from smithers_tui.screens.run import RunScreen
from smithers_tui.screens.runs import RunsScreen
from tests.tui.helpers import make_app, seed, until

SIZE = (120, 36)


@pytest.fixture
def seeded(db: Path, project: Path) -> tuple[Path, Path]:
    async def go() -> None:
        await seed(db, project, "run-a")  # waits at its gate
        await seed(db, project, "run-b", name="quick")
        await seed(db, project, "run-c", name="agents")

    asyncio.run(go())
    return db, project


def app_for(seeded: tuple[Path, Path]) -> Any:
    db, project = seeded
    return make_app(db, project)


async def runs_ready(pilot: Any) -> None:
    app = pilot.app
    await until(pilot, lambda: isinstance(app.screen, RunsScreen) and app.screen.loaded)


async def open_run(pilot: Any, run_id: str, prompt: bool = False, gate: bool = False) -> Any:
    """Open a run; for a run waiting at its gate, the prompt comes up: keep it, or put it off."""
    app = pilot.app
    await runs_ready(pilot)
    app.open_run(run_id)
    if prompt or gate:
        await until(pilot, lambda: isinstance(app.screen, ApprovalScreen) and app.screen.loaded)
        if prompt:
            return app.screen
        await pilot.press("escape")
    screen = app.screen
    await until(pilot, lambda: isinstance(screen, RunScreen) and screen.loaded)
    await pilot.pause(0.2)
    return screen


def test_runs_screen(snap_compare: Any, seeded: tuple[Path, Path]) -> None:
    async def before(pilot: Any) -> None:
        await runs_ready(pilot)
        await pilot.pause(0.2)

    assert snap_compare(app_for(seeded), terminal_size=SIZE, run_before=before)


def test_launcher_screen(snap_compare: Any, seeded: tuple[Path, Path]) -> None:
    async def before(pilot: Any) -> None:
        await runs_ready(pilot)
        pilot.app.action_new_run("flow")
        await until(pilot, lambda: isinstance(pilot.app.screen, LauncherScreen) and pilot.app.screen.loaded)
        await pilot.pause(0.2)

    assert snap_compare(app_for(seeded), terminal_size=SIZE, run_before=before)


def test_run_screen(snap_compare: Any, seeded: tuple[Path, Path]) -> None:
    async def before(pilot: Any) -> None:
        screen = await open_run(pilot, "run-a", gate=True)
        screen.query_one("#tree").select_key(("count", 1))
        await pilot.pause(0.3)

    assert snap_compare(app_for(seeded), terminal_size=SIZE, run_before=before)


def test_run_screen_in_the_past(snap_compare: Any, seeded: tuple[Path, Path]) -> None:
    async def before(pilot: Any) -> None:
        screen = await open_run(pilot, "run-a", gate=True)
        await pilot.press("left_square_bracket", "left_square_bracket")
        await until(pilot, lambda: screen.past is not None and screen.report["frame"] == screen.past)
        await pilot.pause(0.3)

    assert snap_compare(app_for(seeded), terminal_size=SIZE, run_before=before)


def test_approval_prompt(snap_compare: Any, seeded: tuple[Path, Path]) -> None:
    async def before(pilot: Any) -> None:
        await open_run(pilot, "run-a", prompt=True)
        await pilot.pause(0.2)

    assert snap_compare(app_for(seeded), terminal_size=SIZE, run_before=before)


def test_inbox_screen(snap_compare: Any, seeded: tuple[Path, Path]) -> None:
    async def before(pilot: Any) -> None:
        await runs_ready(pilot)
        await pilot.press("a")
        await until(pilot, lambda: isinstance(pilot.app.screen, InboxScreen) and pilot.app.screen.loaded)
        await pilot.pause(0.2)

    assert snap_compare(app_for(seeded), terminal_size=SIZE, run_before=before)


def test_help_screen(snap_compare: Any, seeded: tuple[Path, Path]) -> None:
    async def before(pilot: Any) -> None:
        await open_run(pilot, "run-b")
        await pilot.press("question_mark")
        await pilot.pause(0.2)

    assert snap_compare(app_for(seeded), terminal_size=SIZE, run_before=before)


def test_agents_screen(snap_compare: Any, seeded: tuple[Path, Path]) -> None:
    async def before(pilot: Any) -> None:
        await open_run(pilot, "run-c")
        await pilot.press("g")
        app = pilot.app
        await until(pilot, lambda: isinstance(app.screen, AgentsScreen) and app.screen.loaded
                    and len(app.screen.panes) == 2 and all(p.seen for p in app.screen.panes.values()))
        await pilot.pause(0.4)

    assert snap_compare(app_for(seeded), terminal_size=SIZE, run_before=before)

"""Snapshots of every screen at 80x24, 120x36 and 200x50: runs seeded with fixed ids (once per
module, copied into each test's project), times through a frozen clock. Each test waits for what
its screen shows to be loaded (never for a time). Update with
`pytest tests/tui/test_tui_snapshots.py --snapshot-update` after a deliberate change.
(The board and a step's diff are in test_tui_board.py: they need a git repository.)"""
from __future__ import annotations

import asyncio
import shutil
import textwrap
from pathlib import Path
from typing import Any, Callable

import pytest

from smithers_tui.screens.agents import AgentsScreen
from smithers_tui.screens.approval import ApprovalScreen
from smithers_tui.screens.confirm import ConfirmScreen
from smithers_tui.screens.fork import ForkScreen
from smithers_tui.screens.help import HelpScreen
from smithers_tui.screens.inbox import InboxScreen
from smithers_tui.screens.launcher import LauncherScreen
from smithers_tui.screens.lineage import LineageScreen
from smithers_tui.screens.runs import RunsScreen
from smithers_tui.widgets.inspector import Inspector
from tests.tui.helpers import FLOW, make_app, open_run, seed, until

SIZES = [pytest.param((80, 24), id="80x24"), pytest.param((120, 36), id="120x36"),
         pytest.param((200, 50), id="200x50")]


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A project with three runs: run-a waits at its gate, run-b finished one step, run-c two agents."""
    root = tmp_path_factory.mktemp("seeded")
    (root / ".smithers" / "workflows").mkdir(parents=True)
    (root / ".smithers" / "workflows" / "flow.py").write_text(textwrap.dedent(FLOW).lstrip())
    db = root / ".smithers" / "smithers.db"

    async def go() -> None:
        await seed(db, root, "run-a")
        await seed(db, root, "run-b", name="quick")
        await seed(db, root, "run-c", name="agents")

    asyncio.run(go())
    return db


@pytest.fixture
def seeded(template: Path, db: Path, project: Path) -> tuple[Path, Path]:
    shutil.copy(template, db)
    return db, project


def shot(snap_compare: Any, seeded: tuple[Path, Path], size: tuple[int, int],
         before: Callable[[Any], Any]) -> bool:
    db, project = seeded
    return bool(snap_compare(make_app(db, project), terminal_size=size, run_before=before))


async def runs_ready(pilot: Any) -> None:
    app = pilot.app
    await until(pilot, lambda: isinstance(app.screen, RunsScreen) and app.screen.loaded, "the runs")


async def inspected(pilot: Any, screen: Any) -> None:
    """The run screen shows its frame, and the inspector the step selected (or the group)."""
    insp = screen.query_one(Inspector)
    await until(pilot, lambda: screen.loaded and (screen.selected_key() is None
                                                  or insp.shown_for == screen.selected_key()), "the inspector")


@pytest.mark.parametrize("size", SIZES)
def test_runs_screen(snap_compare: Any, seeded: tuple[Path, Path], size: tuple[int, int]) -> None:
    assert shot(snap_compare, seeded, size, runs_ready)


@pytest.mark.parametrize("size", SIZES)
def test_launcher_screen(snap_compare: Any, seeded: tuple[Path, Path], size: tuple[int, int]) -> None:
    async def before(pilot: Any) -> None:
        await runs_ready(pilot)
        pilot.app.action_new_run("flow")
        await until(pilot, lambda: isinstance(pilot.app.screen, LauncherScreen)
                    and pilot.app.screen.checked_for == "flow", "the launcher")

    assert shot(snap_compare, seeded, size, before)


@pytest.mark.parametrize("size", SIZES)
def test_run_screen(snap_compare: Any, seeded: tuple[Path, Path], size: tuple[int, int]) -> None:
    async def before(pilot: Any) -> None:
        screen = await open_run(pilot, pilot.app, "run-a")
        screen.tree.select_key(("count", 1))
        await inspected(pilot, screen)

    assert shot(snap_compare, seeded, size, before)


@pytest.mark.parametrize("size", SIZES)
def test_run_screen_in_the_past(snap_compare: Any, seeded: tuple[Path, Path], size: tuple[int, int]) -> None:
    async def before(pilot: Any) -> None:
        screen = await open_run(pilot, pilot.app, "run-a")
        last = screen.model.last
        await pilot.press("left_square_bracket", "left_square_bracket")
        await until(pilot, lambda: screen.model.view_frame == last - 2, "two frames back")
        await inspected(pilot, screen)

    assert shot(snap_compare, seeded, size, before)


@pytest.mark.parametrize("size", SIZES)
def test_approval_prompt(snap_compare: Any, seeded: tuple[Path, Path], size: tuple[int, int]) -> None:
    async def before(pilot: Any) -> None:
        prompt = await open_run(pilot, pilot.app, "run-a", prompt="keep")
        assert isinstance(prompt, ApprovalScreen) and prompt.loaded

    assert shot(snap_compare, seeded, size, before)


@pytest.mark.parametrize("size", SIZES)
def test_inbox_screen(snap_compare: Any, seeded: tuple[Path, Path], size: tuple[int, int]) -> None:
    async def before(pilot: Any) -> None:
        await runs_ready(pilot)
        await pilot.press("a")
        await until(pilot, lambda: isinstance(pilot.app.screen, InboxScreen) and pilot.app.screen.loaded, "inbox")

    assert shot(snap_compare, seeded, size, before)


@pytest.mark.parametrize("size", SIZES)
def test_help_screen(snap_compare: Any, seeded: tuple[Path, Path], size: tuple[int, int]) -> None:
    async def before(pilot: Any) -> None:
        await open_run(pilot, pilot.app, "run-b")
        await pilot.press("question_mark")
        await until(pilot, lambda: isinstance(pilot.app.screen, HelpScreen), "the keys")

    assert shot(snap_compare, seeded, size, before)


@pytest.mark.parametrize("size", SIZES)
def test_agents_screen(snap_compare: Any, seeded: tuple[Path, Path], size: tuple[int, int]) -> None:
    async def before(pilot: Any) -> None:
        await open_run(pilot, pilot.app, "run-c")
        await pilot.press("g")
        app = pilot.app
        await until(pilot, lambda: isinstance(app.screen, AgentsScreen) and app.screen.loaded
                    and len(app.screen.panes) == 2 and all(p.seen for p in app.screen.panes.values()), "the panes")

    assert shot(snap_compare, seeded, size, before)


@pytest.mark.parametrize("size", SIZES)
def test_fork_dialog(snap_compare: Any, seeded: tuple[Path, Path], size: tuple[int, int]) -> None:
    async def before(pilot: Any) -> None:
        from textual.widgets import TextArea

        screen = await open_run(pilot, pilot.app, "run-a")
        await pilot.press("left_square_bracket")
        await until(pilot, lambda: screen.past is not None, "the past")
        await pilot.press("f")
        fork = await until(pilot, lambda: isinstance(pilot.app.screen, ForkScreen) and pilot.app.screen, "the dialog")
        fork.query_one(TextArea).cursor_blink = False

    assert shot(snap_compare, seeded, size, before)


@pytest.mark.parametrize("size", SIZES)
def test_replay_question(snap_compare: Any, seeded: tuple[Path, Path], size: tuple[int, int]) -> None:
    async def before(pilot: Any) -> None:
        await open_run(pilot, pilot.app, "run-b")
        await pilot.press("R")
        await until(pilot, lambda: isinstance(pilot.app.screen, ConfirmScreen), "the question")

    assert shot(snap_compare, seeded, size, before)


@pytest.mark.parametrize("size", SIZES)
def test_lineage_screen(snap_compare: Any, seeded: tuple[Path, Path], size: tuple[int, int]) -> None:
    async def before(pilot: Any) -> None:
        app = pilot.app
        await until(pilot, lambda: app.host.ready.is_set(), "the database")
        await app.host.replay("run-b", 0)  # branch-1, a replay of run-b: one step, done at once
        await until(pilot, lambda: not app.host.executing("branch-1"), "the replay to end")
        await open_run(pilot, app, "run-b")
        await pilot.press("L")
        await until(pilot, lambda: isinstance(app.screen, LineageScreen)
                    and len(app.screen.query_one("Tree").root.children) == 1, "the lineage")

    assert shot(snap_compare, seeded, size, before)


@pytest.mark.parametrize("size", SIZES)
def test_columns_dialog(snap_compare: Any, seeded: tuple[Path, Path], size: tuple[int, int]) -> None:
    async def before(pilot: Any) -> None:
        await runs_ready(pilot)
        await pilot.press("C")
        await until(pilot, lambda: type(pilot.app.screen).__name__ == "ColumnsScreen", "the columns")

    assert shot(snap_compare, seeded, size, before)

"""Board: the real `kanban` workflow (demo agent, real git, test command `true`) on two tickets;
the cards end in Done, the keys move between cards and `enter` opens the run on a ticket's step."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from smithers_tui.screens.board import COLUMNS, BoardScreen, cards_of
from smithers_tui.screens.run import RunScreen
from tests.tui.helpers import make_app, ready, until

GIT_ENV = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.invalid",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.invalid"}
INPUT = {"test_command": "true", "reviewers": ["correctness"], "max_rounds": 2}


def git_project(project: Path) -> None:
    """The app's project as a git repository with two tickets."""
    tickets = project / ".smithers" / "tickets"
    tickets.mkdir(parents=True, exist_ok=True)
    (tickets / "login.md").write_text("# Login form\n\nAdd a login form.\n")
    (tickets / "logout.md").write_text("# Logout button\n\nAdd a logout button.\n")
    (project / "README.md").write_text("app\n")
    (project / ".gitignore").write_text(".smithers/\n.worktrees/\n")
    for args in (["init", "-q", "-b", "main"], ["add", "-A"], ["commit", "-qm", "start"]):
        subprocess.run(["git", *args], cwd=project, check=True, capture_output=True, env=GIT_ENV)


async def start_kanban(app: Any, run_id: str = "kb-1") -> str:
    import asyncio

    wf, target = (await asyncio.to_thread(app.workflows))["kanban"]
    return await app.host.start(wf, target, INPUT, demo=True, run_id=run_id)


def columns(screen: BoardScreen) -> dict[str, str]:
    return {c.slug: c.column for c in screen.cards}


@pytest.fixture
def kanban_project(project: Path) -> Path:
    git_project(project)
    return project


async def test_cards_move_to_done_and_enter_opens_the_ticket(db: Path, kanban_project: Path) -> None:
    app = make_app(db, kanban_project)
    async with app.run_test(size=(120, 36)) as pilot:
        await ready(pilot, app)
        run_id = await start_kanban(app)
        app.open_run(run_id)
        await until(pilot, lambda: isinstance(app.screen, RunScreen) and app.screen.loaded
                    and app.screen.report["workflow"] == "kanban", "the run screen")
        run = app.screen
        await pilot.press("b")
        await until(pilot, lambda: isinstance(app.screen, BoardScreen) and app.screen.loaded, "the board")
        board = app.screen
        await until(pilot, lambda: columns(board) == {"login": "Done", "logout": "Done"}, "both tickets done")
        await until(pilot, lambda: board.report["status"] == "finished", "the run to finish")
        login = next(c for c in board.cards if c.slug == "login")
        assert login.title == "Login form" and login.round == 1 and login.max_rounds == 2
        assert login.check is True and login.branch == "ticket/login" and login.merged
        head = str(board.query_one("#board-head").render())
        assert "done 2" in head and "to do 0" in head
        shot = app.export_screenshot()
        assert "Login" in shot and "Logout" in shot and "ticket/logout" in shot
        assert board.col == COLUMNS.index("Done") and board.selected == "login"
        await pilot.press("j")
        assert board.selected == "logout"
        await pilot.press("up")
        assert board.selected == "login"
        await pilot.press("l", "left", "h")  # no other column has cards: the selection stays
        assert board.selected == "login" and board.col == 3
        await pilot.press("enter")
        await until(pilot, lambda: isinstance(app.screen, RunScreen) and app.screen is not run and app.screen.loaded,
                    "the run screen on the ticket")
        steps = app.screen
        await until(pilot, lambda: steps.selected_key() == ("ticket-login-result", 0), "the ticket's step selected")
        await pilot.press("escape")
        await until(pilot, lambda: app.screen is board, "back on the board")
        await pilot.press("escape")
        await until(pilot, lambda: app.screen is run, "back on the run")


def test_columns_follow_the_nodes() -> None:
    def rep(*nodes: tuple[str, int, str, Any], status: str = "running") -> dict[str, Any]:
        board = {"tickets": [{"slug": "a", "title": "A"}]}
        return {"input": {"reviewers": ["correctness"], "max_rounds": 3}, "status": status,
                "nodes": [{"id": "tickets", "iteration": 0, "kind": "task", "state": "done", "output": board}]
                + [{"id": i, "iteration": it, "kind": "task", "state": st, "output": out} for i, it, st, out in nodes]}

    def col(*nodes: tuple[str, int, str, Any]) -> str:
        return cards_of(rep(*nodes))[0].column

    assert col() == "To do"
    assert col(("ticket-a", 0, "running", None), ("ticket-a-implement", 0, "running", None)) == "In progress"
    assert col(("ticket-a-implement", 0, "done", {}), ("ticket-a-check", 0, "running", None)) == "In progress"
    assert col(("ticket-a-check", 0, "done", {"passed": False}), ("ticket-a-implement", 1, "running", None)) \
        == "In progress"
    assert col(("ticket-a-check", 0, "done", {"passed": True})) == "Review"
    assert col(("ticket-a-check", 0, "done", {"passed": True}),
               ("ticket-a-review-correctness", 0, "running", None)) == "Review"
    assert col(("ticket-a-result", 0, "done", {"status": "done", "rounds": 1, "max_rounds": 3})) == "Done"
    assert col(("ticket-a-result", 0, "done", {"status": "out_of_rounds", "rounds": 3, "max_rounds": 3})) == "Failed"
    assert col(("ticket-a", 0, "failed", None)) == "Failed"
    card = cards_of(rep(("ticket-a-implement", 1, "running", None), ("ticket-a-check", 0, "done", {"passed": False})))[0]
    assert card.round == 2 and card.check is False and card.focus == ("ticket-a-implement", 1)


def seed_kanban(db: Path, project: Path) -> None:
    """A finished kanban run (kb-1) made through another connection: two tickets done, one out of rounds."""
    import asyncio

    from engine.runtime import Engine
    from smithers_tui.targets import all_workflows
    from tests.tui.helpers import connect

    (project / ".smithers" / "tickets" / "signup.md").write_text(
        "---\ntest_command: \"false\"\n---\n# Sign-up page\n\nAdd a sign-up page.\n")

    async def go() -> None:
        store = await connect(db)
        try:
            eng = Engine(store, max_concurrency=1, agent_override="demo")
            wf, target = all_workflows(project)["kanban"]
            ex = await eng.start(wf, target, INPUT, run_id="kb-1", workdir=project)
            assert await ex.execute() == "finished", ex.error
            await eng.close()
        finally:
            await store.close()

    asyncio.run(go())


def test_board_screen(snap_compare: Any, db: Path, kanban_project: Path) -> None:
    seed_kanban(db, kanban_project)

    async def before(pilot: Any) -> None:
        app = pilot.app
        await ready(pilot, app)
        app.push_screen(BoardScreen("kb-1"))
        await until(pilot, lambda: isinstance(app.screen, BoardScreen) and app.screen.loaded
                    and len(app.screen.cards) == 3)
        await pilot.press("l")  # to the Failed column
        await pilot.pause(0.2)
        assert columns(app.screen) == {"login": "Done", "logout": "Done", "signup": "Failed"}

    assert snap_compare(make_app(db, kanban_project), terminal_size=(120, 36), run_before=before)

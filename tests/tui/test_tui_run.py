"""Run screen: the step tree, the inspector, scrubbing the timeline into the past, fork, rewind,
replay and the lineage between runs."""
from __future__ import annotations

import json
from pathlib import Path

from textual.widgets import SelectionList, TextArea

from smithers_tui.screens.approval import ApprovalScreen
from smithers_tui.screens.confirm import ConfirmScreen
from smithers_tui.screens.fork import ForkScreen
from smithers_tui.screens.lineage import LineageScreen
from smithers_tui.screens.run import RunScreen
from smithers_tui.widgets.inspector import Inspector
from smithers_tui.widgets.step_tree import StepTree
from smithers_tui.widgets.timeline import FrameTimeline
from tests.tui.helpers import ready, make_app, run_row, seed, until


def labels(app) -> list[str]:
    tree = app.screen.query_one(StepTree)
    return [r.label.plain for r in tree._rows]


async def open_run(pilot, app, run_id: str, dismiss_prompt: bool = True) -> RunScreen:
    await ready(pilot, app)
    app.open_run(run_id)
    await until(pilot, lambda: any(isinstance(s, RunScreen) for s in app.screen_stack), "the run screen")
    screen = next(s for s in reversed(app.screen_stack) if isinstance(s, RunScreen))
    await until(pilot, lambda: screen.loaded, "the run to load")
    if dismiss_prompt and screen.prompting is not None:  # a gate waits: its prompt comes up; decide later
        await until(pilot, lambda: isinstance(app.screen, ApprovalScreen), "the approval prompt")
        await pilot.press("escape")
        await until(pilot, lambda: app.screen is screen, "the run screen again")
    return screen


async def test_tree_shows_nesting_states_and_the_inspector_the_step(db: Path, project: Path) -> None:
    await seed(db, project, "r1")
    app = make_app(db, project)
    async with app.run_test(size=(120, 36)) as pilot:
        screen = await open_run(pilot, app, "r1")
        rows = labels(app)
        assert rows[0].startswith("✔ plan")
        assert any("⟳ rounds" in r and "2 iterations" in r for r in rows)
        assert any(r.startswith("✔ count #1") for r in rows)
        assert any("⇉ parallel" in r for r in rows)
        assert any(r.startswith("◆ ◇ ship") and "waiting for approval" in r for r in rows)
        assert any(r.startswith("○ notes") for r in rows)  # not reached yet
        assert "5/6 steps" in str(screen.query_one("#run-head").render())
        tree = screen.query_one(StepTree)
        assert tree.select_key(("count", 1))
        await until(pilot, lambda: '"n": 2' in screen.query_one(Inspector).plain(), "the inspector")
        text = screen.query_one(Inspector).plain()
        assert "Attempts" in text and "node_finished" in text


async def test_scrubbing_shows_the_past_and_end_returns_to_live(db: Path, project: Path) -> None:
    await seed(db, project, "r1")
    app = make_app(db, project)
    async with app.run_test(size=(120, 36)) as pilot:
        screen = await open_run(pilot, app, "r1")
        tl = screen.query_one(FrameTimeline)
        last = tl.last
        assert last > 3 and tl.live
        await pilot.press("left_square_bracket")
        await until(pilot, lambda: screen.past == last - 1 and screen.report["frame"] == last - 1, "one frame back")
        assert screen.has_class("past") and screen.query_one("#past-banner").display
        await pilot.press("home")
        await until(pilot, lambda: screen.report["frame"] == 0, "frame 0")
        assert all(r.startswith(("○", "·")) or "other" in r for r in labels(app) if "plan" in r or "count" in r)
        await pilot.press("right_square_bracket", "right_square_bracket")
        await until(pilot, lambda: screen.report["frame"] == 2, "frame 2")
        assert any(r.startswith("✔ plan") for r in labels(app))
        await pilot.press("end")
        await until(pilot, lambda: screen.past is None and screen.report["frame"] == last, "live again")
        assert not screen.has_class("past")
        tl.focus()
        await pilot.press("left")
        await until(pilot, lambda: screen.past == last - 1, "left on the focused timeline")


async def test_fork_from_a_past_frame_with_changed_input_and_a_reset(db: Path, project: Path) -> None:
    await seed(db, project, "r1")
    app = make_app(db, project)
    async with app.run_test(size=(120, 36)) as pilot:
        screen = await open_run(pilot, app, "r1")
        last = screen.query_one(FrameTimeline).last
        await pilot.press("left_square_bracket")
        await until(pilot, lambda: screen.report["frame"] == last - 1, "scrubbed")
        await pilot.press("f")
        await until(pilot, lambda: isinstance(app.screen, ForkScreen), "the fork modal")
        fork = app.screen
        area = fork.query_one(TextArea)
        assert json.loads(area.text) == {"rounds": 2, "topic": "tests"}
        area.text = '{"rounds": 2, "topic": "forked"}'
        sel = fork.query_one(SelectionList)
        sel.select("plan")
        await pilot.press("ctrl+s")
        await until(pilot, lambda: isinstance(app.screen, (RunScreen, ApprovalScreen))
                    and getattr(app.screen, "run_id", None) == "branch-1", "the fork to open")
        row = await run_row(db, "branch-1")
        assert row["parent_run_id"] == "r1" and row["parent_frame"] == last - 1 and row["kind"] == "fork"
        assert json.loads(row["input"])["topic"] == "forked"
        await until(pilot, lambda: not app.host.executing("branch-1") or isinstance(app.screen, ApprovalScreen),
                    "the fork to reach its gate")


async def test_bad_fork_input_says_why_and_stays(db: Path, project: Path) -> None:
    await seed(db, project, "r1")
    app = make_app(db, project)
    async with app.run_test(size=(120, 36)) as pilot:
        await open_run(pilot, app, "r1")
        await pilot.press("f")
        await until(pilot, lambda: isinstance(app.screen, ForkScreen), "the fork modal")
        app.screen.query_one(TextArea).text = '{"rounds": '
        await pilot.press("ctrl+s")
        assert isinstance(app.screen, ForkScreen)
        assert "not valid JSON" in str(app.screen.query_one("#error").render())
        app.screen.query_one(TextArea).text = '{"rounds": 0}'
        await pilot.press("ctrl+s")  # valid JSON, invalid input: the engine says why, in one line
        await until(pilot, lambda: any("invalid input" in n.message for n in app._notifications), "a notification")
        assert await_nothing_forked(db)


def await_nothing_forked(db: Path) -> bool:
    import sqlite3

    with sqlite3.connect(db) as c:
        return c.execute("SELECT count(*) FROM runs").fetchone()[0] == 1


async def test_rewind_asks_then_takes_over_and_replay_branches(db: Path, project: Path) -> None:
    await seed(db, project, "r1")
    app = make_app(db, project)
    async with app.run_test(size=(120, 36)) as pilot:
        screen = await open_run(pilot, app, "r1")
        await pilot.press("home", "right_square_bracket", "right_square_bracket")
        await until(pilot, lambda: screen.report["frame"] == 2, "frame 2")
        await pilot.press("R")
        await until(pilot, lambda: getattr(app.screen, "run_id", None) == "branch-1", "the replay")
        assert (await run_row(db, "branch-1"))["kind"] == "replay"
        if isinstance(app.screen, ApprovalScreen):
            await pilot.press("escape")
        await pilot.pause()
        app.pop_screen()  # back to r1
        await until(pilot, lambda: app.screen is screen, "back on r1")
        await pilot.press("r")
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen), "the rewind question")
        await pilot.press("y")
        await until(pilot, lambda: getattr(app.screen, "run_id", None) == "branch-2", "the rewind")
        original = await run_row(db, "r1")
        assert original["status"] == "rewound" and original["successor_run_id"] == "branch-2"
        assert (await run_row(db, "branch-2"))["parent_frame"] == 2


async def test_lineage_lists_branches_and_p_opens_the_parent(db: Path, project: Path) -> None:
    await seed(db, project, "r1")
    app = make_app(db, project)
    async with app.run_test(size=(120, 36)) as pilot:
        screen = await open_run(pilot, app, "r1")
        await pilot.press("R")
        await until(pilot, lambda: getattr(app.screen, "run_id", None) == "branch-1", "the replay")
        if isinstance(app.screen, ApprovalScreen):
            await pilot.press("escape")
        child = next(s for s in reversed(app.screen_stack) if isinstance(s, RunScreen))
        await until(pilot, lambda: child.loaded and child.report["run_id"] == "branch-1", "child loaded")
        assert "replay of r1" in str(child.query_one("#run-head").render())
        await pilot.press("L")
        await until(pilot, lambda: isinstance(app.screen, LineageScreen), "lineage")
        tree = app.screen.query_one("Tree")
        await until(pilot, lambda: len(list(tree.root.children)) == 1, "the lineage tree")
        root = tree.root.children[0]
        assert root.data == "r1" and [c.data for c in root.children] == ["branch-1"]
        await pilot.press("escape")
        await pilot.press("p")
        await until(pilot, lambda: isinstance(app.screen, RunScreen) and app.screen.run_id == "r1"
                    and app.screen is not screen, "the parent (its gate was put off: no prompt again)")

"""Run screen: the step tree, the inspector, scrubbing the timeline into the past, fork, rewind,
replay and the lineage between runs."""
from __future__ import annotations

import json
from pathlib import Path

from textual.widgets import TextArea

from smithers_tui.widgets.checklist import CheckList

from smithers_tui.screens.confirm import ConfirmScreen
from smithers_tui.screens.fork import ForkScreen
from smithers_tui.screens.lineage import LineageScreen
from smithers_tui.screens.run import RunScreen
from smithers_tui.widgets.inspector import Inspector
from smithers_tui.widgets.step_tree import StepTree
from smithers_tui.widgets.timeline import FrameTimeline
from tests.tui.helpers import make_app, open_run, run_row, run_shown, seed, until


def labels(app) -> list[str]:
    tree = app.screen.query_one(StepTree)
    return [r.label.plain for r in tree.rows]


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
        await until(pilot, lambda: "n: 2" in screen.query_one(Inspector).plain(), "the inspector")
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
        await until(pilot, lambda: screen.past == last - 1 == screen.model.view_frame == screen.shown_frame_full,
                    "one frame back")
        assert screen.has_class("past") and screen.query_one("#past-banner").display
        await pilot.press("home")
        await until(pilot, lambda: screen.model.view_frame == 0 == screen.shown_frame_full, "frame 0")
        assert all(r.startswith(("○", "·")) or "other" in r for r in labels(app) if "plan" in r or "count" in r)
        await pilot.press("right_square_bracket", "right_square_bracket")
        await until(pilot, lambda: screen.model.view_frame == 2 == screen.shown_frame_full, "frame 2")
        assert any(r.startswith("✔ plan") for r in labels(app))
        await pilot.press("end")
        await until(pilot, lambda: screen.past is None and screen.model.view_frame == last == screen.shown_frame_full,
                    "live again")
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
        await until(pilot, lambda: screen.model.view_frame == last - 1 == screen.shown_frame_full, "scrubbed")
        await pilot.press("f")
        await until(pilot, lambda: isinstance(app.screen, ForkScreen), "the fork modal")
        fork = app.screen
        area = fork.query_one(TextArea)
        assert json.loads(area.text) == {"rounds": 2, "topic": "tests"}
        area.text = '{"rounds": 2, "topic": "forked"}'
        fork.query_one(CheckList).set_checked("plan", True)
        await pilot.press("ctrl+s")
        await run_shown(pilot, app, "branch-1")  # the fork runs up to its gate: its prompt comes up
        row = await run_row(db, "branch-1")
        assert row["parent_run_id"] == "r1" and row["parent_frame"] == last - 1 and row["kind"] == "fork"
        assert json.loads(row["input"])["topic"] == "forked"


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
        await until(pilot, lambda: any("invalid input" in m for m in app.said), "a notification")
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
        await until(pilot, lambda: screen.model.view_frame == 2 == screen.shown_frame_full, "frame 2")
        await pilot.press("R")
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen), "the replay question")
        assert "after frame 2" in str(app.screen.query_one("#message").render())
        await pilot.press("y")
        await run_shown(pilot, app, "branch-1")
        assert (await run_row(db, "branch-1"))["kind"] == "replay"
        assert (await run_row(db, "branch-1"))["parent_frame"] == 2
        screen = await open_run(pilot, app, "r1")  # the replay took r1's place: open it again
        await pilot.press("home", "right_square_bracket", "right_square_bracket")
        await until(pilot, lambda: screen.model.view_frame == 2 == screen.shown_frame_full, "frame 2 again")
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
        await pilot.press("R", "y")
        child = await run_shown(pilot, app, "branch-1")
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
        assert len(app.screen_stack) == 3  # the parent took the child's place: esc goes back to the runs
        await pilot.press("escape")
        assert type(app.screen).__name__ == "RunsScreen"


async def test_the_fork_dialog_lists_steps_in_order_and_previews_what_is_kept_and_run(db: Path, project: Path) -> None:
    """Issue 13: steps in the workflow's order, names whole, and a preview that says what the fork
    keeps, runs again and runs for the first time (a fork at an early frame keeps nothing)."""
    await seed(db, project, "r1")
    app = make_app(db, project)
    async with app.run_test(size=(120, 36)) as pilot:
        screen = await open_run(pilot, app, "r1")
        await pilot.press("home", "right_square_bracket")
        await until(pilot, lambda: screen.model.view_frame == 1 == screen.shown_frame_full, "frame 1")
        done_at_1 = sorted(k[0] for k, r in screen.model.view.items() if r.state == "done")
        await pilot.press("f")
        fork = await until(pilot, lambda: isinstance(app.screen, ForkScreen) and app.screen, "the fork dialog")
        ids = [value for value, _label in fork.query_one(CheckList).items]
        assert ids == [i for i in ["plan", "rounds", "count", "lint", "test", "ship", "notes", "summary"] if i in ids]
        preview = str(fork.query_one("#preview").render())
        assert f"keeps {len(set(done_at_1))} finished step(s)" in preview
        assert "not done at frame 1, so they run: rounds, count" in preview
        await pilot.press("escape")
        await until(pilot, lambda: app.screen is screen, "closed")
        await pilot.press("end", "f")
        fork = await until(pilot, lambda: isinstance(app.screen, ForkScreen) and app.screen, "the fork dialog live")
        fork.query_one(CheckList).set_checked("plan", True)
        await until(pilot, lambda: "runs again: plan" in str(fork.query_one("#preview").render()), "the preview")
        await pilot.press("ctrl+s")
        await run_shown(pilot, app, "branch-1")
        said = next(m for m in app.said if "forked r1" in m)
        assert "carried" in said and "1 carried step(s) run again" in said


async def test_dead_ends_become_actions(db: Path, project: Path) -> None:
    """A cancelled run says f forks it (not a CLI command); a run whose workflow changed offers to
    accept the change and go on, here."""
    await seed(db, project, "c1")
    await seed(db, project, "w1")
    app = make_app(db, project)
    async with app.run_test(size=(120, 36)) as pilot:
        await until(pilot, lambda: app.host.ready.is_set(), "the database")
        assert await app.host.cancel("c1") == "cancelled"
        screen = await open_run(pilot, app, "c1")
        await until(pilot, lambda: screen.run.status == "cancelled", "cancelled")
        assert not screen.check_action("resume", ()) and not screen.check_action("cancel", ())
        screen.action_resume()
        said = await until(pilot, lambda: next((m for m in app.said if "nothing to resume" in m),
                                               None), "the answer")
        assert "press f to fork" in said and "smithers fork" not in said
        titles = [c[0] for c in screen.palette_commands()]
        assert not any("Cancel" in t or "Resume" in t for t in titles) and any(t.startswith("Fork") for t in titles)
        app.pop_screen()
        flow = project / ".smithers" / "workflows" / "flow.py"
        flow.write_text(flow.read_text() + "\n# changed after the run started\n")
        screen = await open_run(pilot, app, "w1")
        await pilot.press("s")
        confirm = await until(pilot, lambda: isinstance(app.screen, ConfirmScreen) and app.screen, "the question")
        assert confirm.purpose == "accept" and "changed since run w1 started" in str(confirm.query_one("#message").render())
        await pilot.press("y")
        await until(pilot, lambda: app.host.executing("w1") or any("with the changed workflow" in m
                                                                   for m in app.said), "resumed")

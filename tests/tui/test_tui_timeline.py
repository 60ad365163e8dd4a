"""The run screen's timeline and tree: keys that move through frames (±1, ±10, failures, gates,
the selected step's changes), the time axis, what changed marked in the tree, search and jumps
in the tree, and the past showing the past only."""
from __future__ import annotations

from pathlib import Path

from engine.approval import decide
from smithers_tui.widgets.inspector import Inspector
from smithers_tui.widgets.timeline import FrameTimeline
from tests.tui.helpers import connect, make_app, open_run, seed, until

FAILING = '''
from engine import Loop, Sequence, Task, workflow


def count(ctx):
    return ctx.iteration


def boom(ctx):
    raise RuntimeError("3 of 120 tests failed: tests/test_parser.py::test_empty_lines")


@workflow(name="failing")
def failing(ctx):
    """Thirty rounds, then a check that fails twice."""
    last = ctx.latest("n")
    return Sequence(Loop("rounds", Task("n", run=count), until=last is not None and last >= 29, max_iterations=40),
                    Task("check", run=boom, retries=1, backoff=0.01))
'''


async def seed_failing(db: Path, project: Path) -> None:

    (project / ".smithers" / "workflows" / "failing.py").write_text(FAILING)
    assert await seed(db, project, "f1", where=str(project / ".smithers" / "workflows" / "failing.py")) == "failed"


async def test_keys_move_by_one_ten_failure_and_step_and_the_tree_marks_what_changed(db: Path, project: Path) -> None:
    await seed_failing(db, project)
    app = make_app(db, project)
    async with app.run_test(size=(120, 36)) as pilot:
        screen = await open_run(pilot, app, "f1")
        model = screen.model
        last = model.last
        assert last > 20
        await pilot.press("left_curly_bracket")  # { : 10 back
        await until(pilot, lambda: model.view_frame == last - 10 == screen.shown_frame_full, "10 back")
        await pilot.press("right_curly_bracket", "right_curly_bracket")  # } twice: clamped at the live frame
        await until(pilot, lambda: screen.past is None, "live again")
        await pilot.press("E")  # the previous failure or retry
        fail = model.find(last, -1, lambda m: bool(m.kinds & {"fail", "retry"}))
        await until(pilot, lambda: model.view_frame == fail == screen.shown_frame_full, "the previous failure")
        assert "check" in model.marks[fail].what
        first_retry = model.find(0, 1, lambda m: "retry" in m.kinds)
        await pilot.press("home", "e")  # from frame 0, the next failure or retry
        await until(pilot, lambda: model.view_frame == first_retry == screen.shown_frame_full, "the first retry")
        rows = [r.label.plain for r in screen.step_tree.rows]
        assert any("check" in r and "◂ changed here" in r for r in rows)  # what the frame shown changed
        assert not any("n #3" in r and "changed here" in r for r in rows)
        await pilot.press("end")
        await until(pilot, lambda: screen.past is None, "live")
        await pilot.press("slash", *"n #3", "enter")  # chosen by a search
        await until(pilot, lambda: screen.chosen == ("n", 3), "n #3 chosen")
        await pilot.press("home", "w")  # the next frame that changed n #3 (it does not exist at frame 0)
        target = model.find(0, 1, lambda m: ("n", 3) in m.keys)
        await until(pilot, lambda: model.view_frame == target == screen.shown_frame_full, "n #3's first change")
        await pilot.press("w")
        target2 = model.find(target, 1, lambda m: ("n", 3) in m.keys)
        await until(pilot, lambda: model.view_frame == target2 == screen.shown_frame_full, "n #3's next change")
        tl = screen.query_one(FrameTimeline)
        assert tl.axis == "frames"
        await pilot.press("m")
        assert tl.axis == "time" and app.prefs.get("timeline.axis") == "time"
        info = tl.info_line(100).plain
        assert f"frame {target2}/{last}" in info and "PAST" in info


async def test_search_jumps_to_matching_steps_and_dot_and_bang_jump(db: Path, project: Path) -> None:
    await seed_failing(db, project)
    app = make_app(db, project)
    async with app.run_test(size=(120, 36)) as pilot:
        screen = await open_run(pilot, app, "f1")
        await pilot.press("slash", *"n #1")
        await until(pilot, lambda: screen.step_tree.selected_row is not None and screen.step_tree.selected_row.name == "n #1",
                    "the first match")
        await pilot.press("enter", "n")  # keep the search, then the next match
        await until(pilot, lambda: screen.step_tree.selected_row.name == "n #10", "the next match")
        await pilot.press("N")
        await until(pilot, lambda: screen.step_tree.selected_row.name == "n #1", "back to the first")
        await pilot.press("exclamation_mark")  # the failed step
        await until(pilot, lambda: screen.selected_key() == ("check", 0), "the failed step")
        text = await until(pilot, lambda: "tests/test_parser.py" in screen.query_one(Inspector).plain()
                           and screen.query_one(Inspector).plain(), "its error in the inspector")
        assert "RuntimeError: 3 of 120 tests failed" in text
        assert "at=" not in text  # times are times, not epoch seconds


async def test_the_past_shows_decisions_made_by_then_only(db: Path, project: Path) -> None:
    """Issue 9 item 5: a gate decided after the frame shown reads as not decided at that frame."""
    await seed(db, project, "w1")
    store = await connect(db)
    try:
        await decide(store, "w1", "ship", 0, True, by="alice", note="ok")
    finally:
        await store.close()
    app = make_app(db, project)
    async with app.run_test(size=(120, 36)) as pilot:
        screen = await open_run(pilot, app, "w1")
        await until(pilot, lambda: screen.run is not None and screen.run.status == "finished"
                    or screen.view == "waiting", "loaded")
        if screen.run.status != "finished":  # nobody ran it: resume here, it takes the decision in
            await pilot.press("s")
            await until(pilot, lambda: screen.run.status == "finished", "finished")
        insp = screen.query_one(Inspector)
        assert screen.step_tree.select_key(("ship", 0))
        await until(pilot, lambda: "approved by alice" in insp.plain(), "the decision, live")
        gate = screen.model.find(screen.model.last + 1, -1, lambda m: "gate" in m.kinds)
        assert gate is not None
        while screen.model.view_frame != gate:
            await pilot.press("left_square_bracket")
            await until(pilot, lambda: screen.past is not None, "the past")
        await until(pilot, lambda: "not decided yet at this frame" in insp.plain(), "no decision at that frame")
        assert "alice" not in insp.plain()


LONG = '''
from engine import Loop, Task, workflow


def count(ctx):
    return ctx.iteration


@workflow(name="long")
def long(ctx):
    """A loop of 260 rounds."""
    last = ctx.latest("n")
    return Loop("rounds", Task("n", run=count), until=last is not None and last >= 259, max_iterations=300)
'''


async def test_a_long_loop_shows_its_latest_iterations_and_the_rest_on_demand(db: Path, project: Path) -> None:

    (project / ".smithers" / "workflows" / "long.py").write_text(LONG)
    assert await seed(db, project, "l1", where=str(project / ".smithers" / "workflows" / "long.py")) == "finished"
    app = make_app(db, project)
    async with app.run_test(size=(120, 36)) as pilot:
        screen = await open_run(pilot, app, "l1")
        names = [r.name for r in screen.step_tree.rows]
        assert "more" in names and "n #259" in names and "n #3" not in names
        assert len(names) < 210  # 200 iterations, the loop, the row for the rest
        await pilot.press("slash", *"n #3 ", "enter")  # a hidden one is found and shown
        await until(pilot, lambda: screen.selected_key() == ("n", 3), "n #3 revealed and selected")
        more = next(r for r in screen.step_tree.rows if r.name == "more")
        screen.step_tree.select_node_of(screen.step_tree._by_path[more.path])
        await pilot.press("enter")
        await until(pilot, lambda: len(screen.step_tree.rows) > 260, "the loop shown whole")

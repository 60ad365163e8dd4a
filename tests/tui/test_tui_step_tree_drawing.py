"""The step tree keeps each row's drawing while the row shows the same: rows moved by rows added
above them are not drawn again, yet each line on screen is exactly what a fresh drawing gives, with
its own line number (the mouse reads it: a click selects the row under it)."""
from __future__ import annotations

from textual.app import App, ComposeResult

from smithers_tui.widgets.step_tree import Row, StepTree


def rows(first: int, last: int) -> list[Row]:
    """A loop group and its iterations first..last, one row each."""
    out = [Row("/l", None, ("l", 0), True, ("group", "running", "⟳ ", "l", f"{last - first + 1} iterations", False), "l")]
    for i in range(first, last + 1):
        out.append(Row(f"/l/step#{i}", "/l", ("step", i), False, ("leaf", "done", "", f"step #{i}", "", False), "step"))
    return out


class TreeApp(App[None]):
    def compose(self) -> ComposeResult:
        yield StepTree(id="tree")


def screen_lines(tree: StepTree) -> list[tuple[str, set[int]]]:
    """Each line as drawn now: its text and the line numbers its segments carry."""
    out = []
    for y in range(tree.size.height):
        strip = tree.render_line(y)
        out.append(("".join(s.text for s in strip), {s.style.meta["line"] for s in strip
                                                     if s.style is not None and "line" in s.style.meta}))
    return out


async def test_moved_rows_are_drawn_as_fresh_ones_with_their_new_line_numbers() -> None:
    app = TreeApp()
    async with app.run_test(size=(60, 12)) as pilot:
        tree = app.query_one(StepTree)
        tree.show(rows(5, 20))
        await pilot.pause()
        tree.move_cursor_to_line(3)
        await pilot.pause()
        before = screen_lines(tree)
        assert "step #7" in before[3][0]
        tree.show(rows(2, 20))  # three rows above: every row below moves down three lines
        await pilot.pause()
        drawn = len(tree._drawn_rows)
        reused = screen_lines(tree)
        assert len(tree._drawn_rows) - drawn <= 5, "rows that only moved were drawn again"
        tree._drawn_rows.clear()
        tree._line_cache.clear()
        fresh = screen_lines(tree)
        assert reused == fresh
        for y, (_text, lines) in enumerate(reused):
            if lines:
                assert lines == {y}, f"line {y} says it is line {lines}"
        assert "step #5" in reused[4][0]  # drawn at line 1 before, now at line 4
        await pilot.click(StepTree, offset=(8, 6))
        await pilot.pause()
        assert tree.selected_row is not None and tree.selected_row.key == ("step", 7)

"""A step's diff (D on the run screen): what the step changed in its worktree, coloured as a diff,
with hunk navigation — n / p next and previous hunk, ] / [ next and previous file, j / k scroll."""
from __future__ import annotations

from typing import Any

from rich.syntax import Syntax
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.widgets import Header, Static

from ..widgets.footer import Footer
from ..base import LETTER_KEYS, AppScreen, background

Key = tuple[str, int]


def hunks(text: str) -> tuple[list[int], list[int]]:
    """Line numbers (0-based) of each hunk header and each file header of a unified diff."""
    hunk_lines, file_lines = [], []
    for i, line in enumerate(text.splitlines()):
        if line.startswith("@@"):
            hunk_lines.append(i)
        elif line.startswith("diff --git"):
            file_lines.append(i)
    return hunk_lines, file_lines


class DiffScreen(AppScreen[None]):
    HELP_TITLE = "Diff"
    DEFAULT_CSS = """
    DiffScreen #diff-head { height: 1; padding: 0 1; background: $panel; }
    DiffScreen #diff-body { height: 1fr; padding: 0 1; }
    """
    BINDINGS = [
        Binding("escape", "back", "Back", id="diff.back"),
        Binding("n", "hunk(1)", "Next hunk", id="diff.next_hunk"),
        Binding("p", "hunk(-1)", "Previous hunk", id="diff.previous_hunk"),
        Binding("right_square_bracket", "file(1)", "Next file", id="diff.next_file"),
        Binding("left_square_bracket", "file(-1)", "Previous file", id="diff.previous_file"),
        Binding("j", "scroll(1)", "Down", show=False, id="diff.down"),
        Binding("k", "scroll(-1)", "Up", show=False, id="diff.up"),
        *LETTER_KEYS,
    ]

    def __init__(self, run_id: str, key: Key) -> None:
        super().__init__()
        self.run_id, self.key = run_id, key
        self.text = ""
        self.hunk_lines: list[int] = []
        self.file_lines: list[int] = []
        self.loaded = False

    def compose(self) -> ComposeResult:
        yield Header(icon="◎")
        yield Static("", id="diff-head")
        with VerticalScroll(id="diff-body"):
            yield Static("loading…", id="diff-text")
        yield Footer()

    def on_mount(self) -> None:
        node = self.key[0] + (f"[{self.key[1]}]" if self.key[1] else "")
        self.sub_title = f"diff of {node}, run {self.run_id}"
        self.query_one("#diff-body").focus()
        self.load()

    @background(group="diff-load", exclusive=True)
    async def load(self) -> None:
        from engine.errors import BadInput

        head = self.query_one("#diff-head", Static)
        body = self.query_one("#diff-text", Static)
        try:
            self.text = await self.app.host.view.diff(self.run_id, self.key[0], self.key[1])
        except BadInput as e:  # the step made no snapshot: it did not run in a worktree
            head.update(Text(f" {e}", style="grey58"))
            body.update("")
            self.loaded = True
            return
        self.hunk_lines, self.file_lines = hunks(self.text)
        head.update(Text.assemble((f" {len(self.file_lines)} file(s), {len(self.hunk_lines)} hunk(s)", "bold"),
                                  ("  ·  n/p hunk  ·  ]/[ file  ·  j/k scroll", "grey58")))
        body.update(Syntax(self.text or "(the step changed no file)", "diff", theme="ansi_dark",
                           background_color="default", line_numbers=False, word_wrap=False))
        self.loaded = True

    def current_line(self) -> int:
        return round(self.query_one("#diff-body", VerticalScroll).scroll_y)

    def go_line(self, line: int) -> None:
        self.query_one("#diff-body", VerticalScroll).scroll_to(y=line, animate=False)

    def jump(self, lines: list[int], step: int, what: str) -> None:
        if not lines:
            self.notify(f"no {what}")
            return
        cur = self.current_line()
        if step > 0:
            target = next((ln for ln in lines if ln > cur), None)
        else:
            target = next((ln for ln in reversed(lines) if ln < cur), None)
        if target is None:
            self.notify(f"no {'next' if step > 0 else 'previous'} {what}", timeout=2)
            return
        self.go_line(target)

    def action_hunk(self, step: int) -> None:
        self.jump(self.hunk_lines, step, "hunk")

    def action_file(self, step: int) -> None:
        self.jump(self.file_lines, step, "file")

    def action_scroll(self, d: int) -> None:
        self.go_line(self.current_line() + d)

    def action_back(self) -> None:
        self.app.pop_screen()

    def palette_commands(self) -> list[Any]:
        return [("Next hunk", "", lambda: self.action_hunk(1), "n"), ("Previous hunk", "", lambda: self.action_hunk(-1), "p"),
                ("Next file", "", lambda: self.action_file(1), "]")]

"""The `/` filter of a list or tree: a one-line input above it. Typing narrows the list as you
type; enter keeps the filter and goes back to the list; esc clears it and goes back."""
from __future__ import annotations

from typing import Any

from textual.binding import Binding
from textual.message import Message
from textual.widgets import Input


class FilterBar(Input):
    DEFAULT_CSS = "FilterBar { dock: top; margin: 0 1; }"
    BINDINGS = [Binding("escape", "clear", "Clear filter", id="filter.clear")]

    class Done(Message):
        """The user left the filter (enter keeps it, esc cleared it)."""

        def __init__(self, bar: "FilterBar") -> None:
            super().__init__()
            self.bar = bar

    def __init__(self, placeholder: str, value: str = "", **kw: Any) -> None:
        super().__init__(value=value, placeholder=f"{placeholder}   (enter keeps it, esc clears)", compact=True, **kw)

    def on_mount(self) -> None:
        self.display = bool(self.value)

    def open(self) -> None:
        self.display = True
        self.focus()

    def action_clear(self) -> None:
        self.value = ""
        self.display = False
        self.post_message(self.Done(self))

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        if not self.value:
            self.display = False
        self.post_message(self.Done(self))

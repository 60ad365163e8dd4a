"""Choose the columns of a list (C): space toggles, enter keeps, esc cancels. The choice is kept
in the user's preferences."""
from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.widgets import Label, SelectionList, Static
from textual.widgets.selection_list import Selection

from ..base import AppModal
from ..widgets.table import Col


class ColumnsScreen(AppModal[set[str] | None]):
    """Returns the set of columns to hide, or None when cancelled."""

    HELP_TITLE = "Columns"
    DEFAULT_CSS = """
    ColumnsScreen { align: center middle; }
    ColumnsScreen #dialog { width: 46; height: auto; max-height: 90%; border: thick $accent; background: $surface;
                            padding: 0 1; }
    ColumnsScreen #title { text-style: bold; padding: 1 0 0 0; }
    ColumnsScreen SelectionList { height: auto; max-height: 20; }
    ColumnsScreen #hint { color: $text-muted; padding: 1 0 0 0; }
    """
    BINDINGS = [Binding("enter", "keep", "Keep", id="columns.keep", priority=True),
                Binding("escape", "cancel", "Cancel", id="columns.cancel")]

    def __init__(self, columns: list[Col], hidden: set[str]) -> None:
        super().__init__()
        self.columns = [c for c in columns if c.label]
        self.hidden = hidden

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Label("Columns shown", id="title")
            yield SelectionList[str](*[Selection(c.label, c.key, c.key not in self.hidden) for c in self.columns])
            yield Static("space shows or hides  ·  enter keeps  ·  esc cancels  (narrow terminals still leave "
                         "out the least useful ones)", id="hint")

    def on_mount(self) -> None:
        self.query_one(SelectionList).focus()

    def action_keep(self) -> None:
        shown = set(self.query_one(SelectionList).selected)
        self.dismiss({c.key for c in self.columns if c.key not in shown})

    def action_cancel(self) -> None:
        self.dismiss(None)

"""Every key of the screen underneath (? or F1), with what it does and its id for [keys] in
.smithers/config.toml."""
from __future__ import annotations

from typing import Any

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import Screen

from .modal import Modal
from textual.widgets import DataTable, Label, Static


class HelpScreen(Modal[None]):
    CSS_PATH = "help.tcss"
    BINDINGS = [Binding("escape,q,f1,question_mark", "close", "Close", id="help.close")]

    def __init__(self, under: Screen[Any]) -> None:
        super().__init__()
        self.under = under
        self.rows = collect(under)

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Label(f"Keys — {getattr(self.under, 'HELP_TITLE', type(self.under).__name__)}", id="title")
            yield DataTable(cursor_type="row", zebra_stripes=True)
            yield Static("Remap any key in .smithers/config.toml:  [keys]  <id> = \"key\"   ·   "
                         "ctrl+p or : opens the command palette   ·   esc closes", id="hint", markup=False)

    def on_mount(self) -> None:
        t = self.query_one(DataTable)
        t.add_columns("key", "does", "id")
        for key, desc, bid in self.rows:
            t.add_row(key, desc, bid)

    def action_close(self) -> None:
        self.dismiss(None)


def collect(screen: Screen[Any]) -> list[tuple[str, str, str]]:
    """(keys, description, binding id) of every binding on a screen, its focused widget and the
    app — shadowed ones too — grouped by binding."""
    app = screen.app
    seen: dict[tuple[Any, str, str], list[Any]] = {}
    order: list[tuple[Any, str, str]] = []
    for namespace, bindings in screen._modal_binding_chain:
        for _key, b in bindings:
            if app._check_action_state(b.action, namespace) is False:
                continue
            k = (namespace, b.action, b.id or b.description)
            if k not in seen:
                seen[k] = [[], b]
                order.append(k)
            seen[k][0].append(app.get_key_display(b))
    rows = []
    for k in order:
        keys, b = seen[k]
        rows.append((" ".join(dict.fromkeys(keys)), b.description or b.action, b.id or ""))
    return rows

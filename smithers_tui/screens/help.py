"""Every key of the screen underneath (? or F1): the screen's own keys first, then the app's, then
those of the list or tree in focus; each with what it does and its id for [keys] in
.smithers/config.toml. `/` filters."""
from __future__ import annotations

from typing import Any

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import Screen
from textual.widgets import Input, Label, Static

from ..base import AppModal
from ..widgets.filter import FilterBar
from ..widgets.table import Col, Item, ListTable

COLUMNS = [Col("key", "key", 5, 16, keep=99), Col("does", "does", 12, None, keep=98, flex=True),
           Col("id", "id (for [keys])", 8, 26, keep=50), Col("where", "where", 5, 8, keep=40)]


class HelpScreen(AppModal[None]):
    CSS_PATH = "help.tcss"
    BINDINGS = [Binding("escape,q,f1,question_mark", "close", "Close", id="help.close"),
                Binding("slash", "filter", "Filter", id="help.filter")]

    def __init__(self, under: Screen[Any]) -> None:
        super().__init__()
        self.under = under
        self.rows = collect(under)

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Label(f"Keys — {getattr(self.under, 'HELP_TITLE', type(self.under).__name__)}", id="title")
            yield FilterBar("filter keys…", id="filter")
            yield ListTable(COLUMNS)
            yield Static("ctrl+q quits from any screen  ·  ctrl+p or : opens the command palette  ·  remap a key in "
                         ".smithers/config.toml: [keys] <id> = \"key\"  ·  esc closes", id="hint", markup=False)

    def on_mount(self) -> None:
        t = self.query_one(ListTable)
        t.show([Item(f"{i}", {"key": k, "does": d, "id": bid, "where": where}, order={"key": i})
                for i, (k, d, bid, where) in enumerate(self.rows)])
        t.focus()

    def action_filter(self) -> None:
        self.query_one(FilterBar).open()

    def on_input_changed(self, event: Input.Changed) -> None:
        if isinstance(event.input, FilterBar):
            self.query_one(ListTable).set_filter(event.value)

    def on_filter_bar_done(self, _event: FilterBar.Done) -> None:
        self.query_one(ListTable).focus()

    def action_close(self) -> None:
        self.dismiss(None)


# Textual's own keys of lists and inputs that are not ours to explain (scrolling a table sideways...)
GENERIC = {"page_left", "page_right", "scroll_left", "scroll_right", "scroll_top", "scroll_bottom", "scroll_home",
           "scroll_end", "cursor_left", "cursor_right", "select_cursor", "toggle_node", "expand_all_nodes",
           "collapse_all_nodes", "help_quit", "command_palette", "focus_next", "focus_previous"}


def collect(screen: Screen[Any]) -> list[tuple[str, str, str, str]]:
    """(keys, what it does, binding id, where) of the screen's keys, then the app's, then the focused
    widget's — one row per binding however many keys it has, Textual's generic keys left out."""
    app = screen.app
    groups: dict[str, list[tuple[Any, Binding]]] = {"screen": [], "app": [], "focus": []}
    for namespace, bindings in screen._modal_binding_chain:
<<<<<<< HEAD
        for _key, b in bindings:
=======
        where = "app" if namespace is app else "screen" if namespace is screen else "focus"
        for _key, b in bindings:
            groups[where].append((namespace, b))
    rows: list[tuple[str, str, str, str]] = []
    seen: dict[tuple[int, str, str], int] = {}
    for where in ("screen", "app", "focus"):
        for namespace, b in groups[where]:
            if b.system or (not b.id and b.action in GENERIC):
                continue
>>>>>>> app
            if app._check_action_state(b.action, namespace) is False:
                continue
            ident = (id(namespace), b.action, b.id or b.description)
            display = app.get_key_display(b)
            if ident in seen:
                k, d, bid, w = rows[seen[ident]]
                if display not in k.split(" "):
                    rows[seen[ident]] = (f"{k} {display}", d, bid, w)
                continue
            seen[ident] = len(rows)
            rows.append((display, b.description or b.action.replace("_", " "), b.id or "", where))
    # Our keys (they have ids) first, screen by app by focus; Textual's own after them, except
    # those that say the same as one of ours (ctrl+q beside q) or only copy text.
    ours = [r for r in rows if r[2]]
    named = {r[1] for r in ours}
    theirs = [r for r in rows if not r[2] and r[1] not in named and r[1] != "Copy selected text"]
    return ours + theirs

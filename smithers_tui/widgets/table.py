"""A list as a table that fits the terminal: columns size to their content and to the width there
is, the least useful ones step aside when it is narrow, one column takes what is left; rows sort
by any column (`o` next column, `O` reverses, or click a header) and filter by words (`/`).

Rows are `Item`s: a key, the cells by column, values to sort by, and the text a filter searches.
`show(items)` updates in place when the shown rows and the layout did not change (cells only),
and keeps the cursor on the same key when they did.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from rich.cells import cell_len
from rich.text import Text
from textual import events
from textual.binding import Binding
from textual.message import Message
from textual.widgets import DataTable

Cell = str | Text


@dataclass(frozen=True)
class Col:
    key: str
    label: str
    min: int  # the narrowest it gets
    max: int | None = None  # the widest it gets (None: as wide as its content)
    keep: int = 50  # when the terminal is narrow, columns with the lowest `keep` step aside first
    flex: bool = False  # takes the width left over (one column per table)
    right: bool = False  # numbers: right-aligned


@dataclass
class Item:
    key: str
    cells: dict[str, Cell]
    order: dict[str, Any] = field(default_factory=dict)  # sort values by column (the cell's text if missing)
    text: str = ""  # what the filter searches, besides the cells


def plain(cell: Cell) -> str:
    return cell.plain if isinstance(cell, Text) else str(cell)


def fit(cell: Cell, width: int, right: bool = False) -> Text:
    """The cell cut to `width` with an ellipsis (never wrapped), aligned."""
    t = cell.copy() if isinstance(cell, Text) else Text(str(cell))
    t.truncate(width, overflow="ellipsis")
    if right:
        t.pad_left(width - cell_len(t.plain))
    return t


def matches(words: list[str], haystack: str) -> bool:
    return all(w in haystack for w in words)


class ListTable(DataTable[Text]):
    """A DataTable of `Item`s with adaptive columns, sorting and a word filter."""

    DEFAULT_CSS = "ListTable { scrollbar-size-vertical: 1; }"
    BINDINGS = [
        Binding("o", "sort_next", "Sort", show=False, id="list.sort"),
        Binding("O", "sort_reverse", "Reverse sort", show=False, id="list.sort_reverse"),
    ]

    class Sorted(Message):
        def __init__(self, table: "ListTable", column: str, reverse: bool) -> None:
            super().__init__()
            self.table, self.column, self.reverse = table, column, reverse

    def __init__(self, columns: list[Col], *, sort: str | None = None, reverse: bool = False, **kw: Any) -> None:
        kw.setdefault("cursor_type", "row")
        kw.setdefault("zebra_stripes", True)
        super().__init__(**kw)
        self.spec = columns
        self.items: list[Item] = []
        self.shown: list[Item] = []
        self.words: list[str] = []
        self.sort_column = sort if sort in {c.key for c in columns} else None
        self.sort_reverse = reverse
        self.hidden: set[str] = set()  # columns the user chose not to see
        self._layout: tuple[tuple[str, int], ...] = ()
        self._cells: dict[str, list[Text]] = {}

    # --- what is shown -------------------------------------------------------------------------
    def show(self, items: list[Item]) -> None:
        self.items = items
        self._refresh_rows()

    def set_hidden(self, hidden: set[str]) -> None:
        self.hidden = set(hidden)
        self._refresh_rows(force=True)

    def set_filter(self, text: str) -> None:
        self.words = text.lower().split()
        self._refresh_rows()

    def sort_by(self, column: str | None, reverse: bool = False) -> None:
        self.sort_column, self.sort_reverse = column, reverse
        self._refresh_rows(force=True)
        if column is not None:
            self.post_message(self.Sorted(self, column, reverse))

    def current_key(self) -> str | None:
        if not self.row_count or self.cursor_row < 0:
            return None
        try:
            return str(self.coordinate_to_cell_key(self.cursor_coordinate).row_key.value)
        except Exception:  # the cursor is past the last row while rows are replaced
            return None

    def _visible_items(self) -> list[Item]:
        rows = self.items
        if self.words:
            rows = [it for it in rows
                    if matches(self.words, " ".join([it.text, *(plain(c) for c in it.cells.values())]).lower())]
        col = self.sort_column
        if col is not None:
            def key(it: Item) -> tuple[int, Any]:
                v = it.order.get(col, plain(it.cells.get(col, "")))
                return (1, "") if v is None else (0, v)  # rows without a value go last either way

            rows = sorted(rows, key=key, reverse=self.sort_reverse)
            if self.sort_reverse:  # keep the rows without a value at the end
                rows = [r for r in rows if key(r)[0] == 0] + [r for r in rows if key(r)[0] == 1]
        return list(rows)

    # --- layout --------------------------------------------------------------------------------
    def layout_for(self, rows: list[Item], width: int) -> tuple[tuple[str, int], ...]:
        """(column key, width) of the columns that fit `width`, in their order."""
        pad = 2 * self.cell_padding
        labels = {c.key: cell_len(self.header(c)) for c in self.spec}
        natural: dict[str, int] = {}
        for c in self.spec:
            widest = max((cell_len(plain(r.cells.get(c.key, ""))) for r in rows), default=0)
            w = max(widest, labels[c.key], c.min)
            natural[c.key] = min(w, c.max) if c.max else w
        # columns with nothing to say in any row (all empty or "-") step aside first
        empty = {c.key for c in self.spec if c.keep < 90 and rows and
                 all(plain(r.cells.get(c.key, "")).strip() in ("", "-") for r in rows)}
        shown = [c for c in self.spec if c.key not in empty and c.key not in self.hidden]
        while len(shown) > 1 and sum(c.min + pad for c in shown) > width:
            shown.remove(min(shown, key=lambda c: c.keep))
        widths = {c.key: (c.min if c.flex else natural[c.key]) for c in shown}
        over = sum(widths.values()) + pad * len(shown) - width
        while over > 0:  # shrink the widest column that can still shrink
            can = [c for c in shown if widths[c.key] > c.min]
            if not can:
                break
            c = max(can, key=lambda c: widths[c.key] - c.min)
            cut = min(over, widths[c.key] - c.min)
            widths[c.key] -= cut
            over -= cut
        flex = next((c for c in shown if c.flex), None)
        if flex is not None and over < 0:
            grow = -over
            if flex.max is None or not natural.get(flex.key):
                widths[flex.key] += grow
            else:
                widths[flex.key] = max(widths[flex.key], min(natural[flex.key], widths[flex.key] + grow))
        return tuple((c.key, widths[c.key]) for c in shown)

    def header(self, c: Col) -> str:
        if c.key == self.sort_column:
            return f"{c.label} {'▲' if not self.sort_reverse else '▼'}"
        return c.label

    def _refresh_rows(self, force: bool = False) -> None:
        rows = self._visible_items()
        width = self.scrollable_content_region.width or self.size.width or 80
        if len(rows) > self.scrollable_content_region.height:
            width -= 1  # the vertical scrollbar
        layout = self.layout_for(rows, max(10, width))
        by_col = {c.key: c for c in self.spec}
        cursor_key = self.current_key()
        cells = {it.key: [fit(it.cells.get(k, ""), w, by_col[k].right) for k, w in layout] for it in rows}
        same_rows = [it.key for it in rows] == [it.key for it in self.shown]
        if force or layout != self._layout:
            self.clear(columns=True)
            for k, w in layout:
                self.add_column(self.header(by_col[k]), key=k, width=w)
            for it in rows:
                self.add_row(*cells[it.key], key=it.key)
        elif same_rows:
            for it in rows:
                old = self._cells.get(it.key)
                for i, (k, _w) in enumerate(layout):
                    if old is None or old[i] != cells[it.key][i]:
                        self.update_cell(it.key, k, cells[it.key][i])
        else:
            self.clear()
            for it in rows:
                self.add_row(*cells[it.key], key=it.key)
        self._layout, self._cells, self.shown = layout, cells, rows
        keys = [it.key for it in rows]
        if cursor_key in keys and not same_rows:
            self.move_cursor(row=keys.index(cursor_key), animate=False)

    def on_resize(self, _event: events.Resize) -> None:
        self._refresh_rows()

    # --- sorting -------------------------------------------------------------------------------
    def action_sort_next(self) -> None:
        keys = [k for k, _w in self._layout]
        if not keys:
            return
        i = keys.index(self.sort_column) + 1 if self.sort_column in keys else 0
        self.sort_by(keys[i] if i < len(keys) else None)

    def action_sort_reverse(self) -> None:
        if self.sort_column is None:
            self.action_sort_next()
            return
        self.sort_by(self.sort_column, not self.sort_reverse)

    def on_data_table_header_selected(self, event: DataTable.HeaderSelected) -> None:
        event.stop()
        col = str(event.column_key.value)
        self.sort_by(col, not self.sort_reverse if col == self.sort_column else False)

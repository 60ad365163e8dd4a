"""Runs (home): every run, live — status, workflow, id, started, duration, steps, current step or
error, waiting gates, tokens and cost. Runs of other processes appear and move too. A run whose
owner is gone shows as `interrupted` (s resumes it), never as running with a clock counting."""
from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import Header, Input, Static

from ..app import StoreChanged
from ..base import LETTER_KEYS, AppScreen, background
from ..widgets.filter import FilterBar
from ..widgets.fmt import ACTIVE_RUN, cost, key_label, run_glyph, tokens
from ..widgets.footer import Footer
from ..widgets.table import Col, Item, ListTable

COLUMNS = [
    Col("glyph", "", 1, 1, keep=100),
    Col("status", "status", 6, 11, keep=90),
    Col("workflow", "workflow", 8, 24, keep=95),
    Col("run", "run", 8, 16, keep=99),
    Col("started", "started", 8, 11, keep=40),
    Col("took", "took", 5, 8, keep=70, right=True),
    Col("progress", "steps", 5, 11, keep=80, right=True),
    Col("step", "current step / error", 12, None, keep=85, flex=True),
    Col("gates", "gates", 5, 5, keep=60, right=True),
    Col("tokens", "tokens", 6, 7, keep=30, right=True),
    Col("cost", "cost", 6, 8, keep=20, right=True),
]

if TYPE_CHECKING:
    from engine.records import RunRecord, RunStats

REFRESH_S = 0.5
REFRESH_MAX_S = 3.0

@dataclass
class RunLine:
    """A run as the list shows it: the record, its statistics, and the status to show."""

    run: RunRecord
    stats: RunStats
    view: str  # the stored status, or interrupted when nobody runs it

    @property
    def id(self) -> str:
        return self.run.id


def shown_db(db: Path | str, project: Path) -> str:
    """The database in the title: a path relative to the project, or a URL without its password."""
    if isinstance(db, Path):
        return str(db.relative_to(project) if db.is_relative_to(project) else db)
    password = urlsplit(db).password
    return db.replace(f":{password}@", "@", 1) if password else db


class RunsScreen(AppScreen[None]):
    AUTO_FOCUS = "#runs"  # focused once the screen is up (never queried before its children exist)
    CSS_PATH = "runs.tcss"
    HELP_TITLE = "Runs"
    BINDINGS = [
        Binding("enter", "open", "Open", id="runs.open"),
        # priority: acted on as it arrives, so keys typed right after it reach the New-run screen
        Binding("n", "new", "New run", id="runs.new", priority=True),
        Binding("slash", "filter", "Filter", id="runs.filter"),
        Binding("escape", "clear_filter", "Clear filter", show=False, id="runs.clear_filter"),
        Binding("j", "cursor(1)", "Down", show=False, id="runs.down"),
        Binding("k", "cursor(-1)", "Up", show=False, id="runs.up"),
        Binding("c", "cancel", "Cancel run", show=False, id="runs.cancel"),
        Binding("s", "resume", "Resume run", show=False, id="runs.resume"),
        Binding("C", "columns", "Columns", show=False, id="runs.columns"),
        *LETTER_KEYS,
    ]

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "new" and isinstance(self.focused, Input):  # typing an `n` into the filter
            return False
        return super().check_action(action, parameters)

    def __init__(self) -> None:
        super().__init__()
        self.runs: list[RunLine] = []
        self.loaded = False
        self._dirty = asyncio.Event()

    def compose(self) -> ComposeResult:
        prefs = self.app.prefs
        yield Header(icon="◎")
        yield FilterBar("filter: workflow, run id, status, step…", value=prefs.get("runs.filter", ""), id="filter")
        yield ListTable(COLUMNS, sort=prefs.get("runs.sort"), reverse=bool(prefs.get("runs.sort_reverse")), id="runs")
        yield Static("", id="summary")
        yield Footer()

    @property
    def table(self) -> ListTable:
        return self.query_one("#runs", ListTable)

    def on_mount(self) -> None:
        self.sub_title = shown_db(self.app.host.db_path, self.app.project)
        self.table.hidden = set(self.app.prefs.get("runs.hidden", []))
        self.table.set_filter(self.query_one(FilterBar).value)
        self.refresher()
        self.set_interval(1.0, self.tick)

    def reload(self) -> None:
        self._dirty.set()

    def on_screen_resume(self) -> None:
        self._dirty.set()

    def on_store_changed(self, _msg: StoreChanged) -> None:
        self._dirty.set()

    def tick(self) -> None:
        """Durations of active runs move on; their owners may have gone."""
        if any(r.view in ACTIVE_RUN for r in self.runs):
            self._dirty.set()

    @background(group="runs-refresh", exclusive=True)
    async def refresher(self) -> None:
        """Read the runs when something changed and this screen is the one shown (a screen underneath
        costs nothing: it reads again when it shows), at most every REFRESH_S and at most a tenth of
        the time, so a run in this same event loop keeps its speed."""
        await self.app.host.ready.wait()
        while True:
            await self._dirty.wait()
            self._dirty.clear()
            if not self.on_top:
                continue  # on_screen_resume sets it again
            t0 = time.perf_counter()
            await self.load()
            await asyncio.sleep(min(REFRESH_MAX_S, max(REFRESH_S, 9 * (time.perf_counter() - t0))))

    async def load(self) -> None:
        from engine.lease import shown_status
        from engine.records import RunStats

        host = self.app.host
        runs = await host.reader.list_runs(limit=500)
        stats = await host.reader.run_stats([r.id for r in runs])
        self.runs = [RunLine(r, stats.get(r.id) or RunStats(), str(shown_status(r, host.executing(r.id))))
                     for r in runs]
        self.render_table()
        self.loaded = True

    def item(self, line: RunLine) -> Item:
        clock = self.app.clock
        r, st, status = line.run, line.stats, line.view
        running = [key_label(*k) for k in st.running]
        step = ", ".join(running[:2]) + (f" +{len(running) - 2}" if len(running) > 2 else "")
        if status == "interrupted":
            step = "no process runs it: s resumes it here"
        elif status == "waiting" and not step:
            step = "gate waiting: enter, then y or n"
        elif status == "failed" and r.error:
            step = " ".join(str(r.error).split())
        elif status == "rewound":
            step = f"→ continued as {r.successor_run_id}"
        elif status == "queued":
            step = "waits for a worker (s runs it here)"
        if r.owner is not None and r.owner.id.startswith("worker-") and status in ACTIVE_RUN:
            step = f"{step} @{r.owner.id} {r.owner.host}:{r.owner.pid}".strip()  # who runs it
        lineage = f" ⑂{r.kind}" if r.kind != "run" else ""
        end = r.finished_at or (None if status in ACTIVE_RUN else r.updated_at)
        style = "red1" if status == "failed" else "orange3" if status == "interrupted" else ""
        return Item(r.id, {
            "glyph": run_glyph(status), "status": Text(status, style="grey70"), "workflow": r.workflow + lineage,
            "run": r.id, "started": clock.stamp(r.created_at), "took": clock.since(r.created_at, end),
            "progress": f"{st.done}/{st.known}", "step": Text(step, style=style),
            "gates": Text(str(st.gates), style="bold yellow") if st.gates else "",
            "tokens": tokens(st.tokens) if st.tokens else "-", "cost": cost(st.cost_usd)},
            order={"started": r.created_at, "took": (end or clock.now()) - r.created_at, "progress": st.done,
                   "gates": st.gates, "tokens": st.tokens, "cost": st.cost_usd},
            text=" ".join([str(r.kind), *running]))

    def render_table(self) -> None:
        if not self.is_mounted or not self.query("#runs"):  # closing
            return
        self.table.show([self.item(r) for r in self.runs])
        self.show_summary()

    def show_summary(self) -> None:
        active = sum(r.view in ACTIVE_RUN for r in self.runs)
        stopped = sum(r.view == "interrupted" for r in self.runs)
        waiting = sum(r.stats.gates for r in self.runs)
        text = self.query_one(FilterBar).value
        shown = f"{len(self.table.shown)} of {len(self.runs)} runs" if text else f"{len(self.runs)} runs"
        self.query_one("#summary", Static).update(Text.assemble(
            (shown, "bold"), f"  ·  {active} active  ·  ",
            (f"{stopped} interrupted  ·  " if stopped else "", "orange3"),
            (f"{waiting} gate(s) waiting", "bold yellow" if waiting else ""),
            (f"  ·  filter: {text}" if text else "", "italic"),
            ("" if self.runs else "  ·  no runs yet: press n to start one")))

    def current_id(self) -> str | None:
        return self.table.current_key()

    # --- filter and sort -----------------------------------------------------------------------
    def action_filter(self) -> None:
        self.query_one(FilterBar).open()

    def action_clear_filter(self) -> None:
        self.query_one(FilterBar).action_clear()

    def on_input_changed(self, event: Input.Changed) -> None:
        if isinstance(event.input, FilterBar):
            self.app.prefs.set("runs.filter", event.value)
            self.table.set_filter(event.value)
            if self.runs:
                self.show_summary()

    def on_filter_bar_done(self, _event: FilterBar.Done) -> None:
        self.table.focus()

    def on_list_table_sorted(self, event: ListTable.Sorted) -> None:
        self.app.prefs.set("runs.sort", event.column)
        self.app.prefs.set("runs.sort_reverse", event.reverse)

    def action_columns(self) -> None:
        from .columns import ColumnsScreen

        def chosen(hidden: set[str] | None) -> None:
            if hidden is not None:
                self.app.prefs.set("runs.hidden", sorted(hidden))
                self.table.set_hidden(hidden)

        self.app.push_screen(ColumnsScreen(COLUMNS, self.table.hidden), chosen)

    # --- actions -------------------------------------------------------------------------------
    def action_cursor(self, d: int) -> None:
        t = self.table
        t.move_cursor(row=max(0, t.cursor_row + d))

    def action_open(self) -> None:
        rid = self.current_id()
        if rid:
            self.app.open_run(rid)

    def on_data_table_row_selected(self, event: ListTable.RowSelected) -> None:
        self.app.open_run(str(event.row_key.value))

    def action_new(self) -> None:
        self.app.action_new_run()

    def action_cancel(self) -> None:
        rid = self.current_id()
        if rid:
            self.cancel_run(rid)

    @background(group="runs-cancel")
    async def cancel_run(self, rid: str) -> None:
        said = await self.app.host.cancel(rid)
        self.notify(f"run {rid}: {said}")

    def action_resume(self) -> None:
        from .actions import resume

        line = next((r for r in self.runs if r.id == self.current_id()), None)
        if line is not None:
            resume(self, line.id, str(line.run.status), self.reload)

    def palette_commands(self) -> list[Any]:
        rid = self.current_id()
        out = [("Filter runs", "type to narrow the list", self.action_filter, "/"),
               ("Choose the columns", "show or hide columns of the list (kept for next time)", self.action_columns, "C"),
               ("Sort runs by the next column", "o again for the next, O reverses", self.table.action_sort_next, "o")]
        line = next((r for r in self.runs if r.id == rid), None)
        if line is not None:
            if line.view in ACTIVE_RUN or line.view in ("interrupted", "queued"):
                out.append((f"Cancel run {rid}", "stop it for good", self.action_cancel, "c"))
            if line.view in ("interrupted", "failed", "queued"):
                out.append((f"Resume run {rid}", "continue it in this app", self.action_resume, "s"))
        return out

"""Runs (home): every run, live — status, workflow, id, started, duration, current step,
waiting gates, progress, tokens and cost. Runs of other processes appear and move too."""
from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header, Input, Static

from ..rows import run_row
from ..widgets.fmt import ACTIVE_RUN, cost, key_label, run_glyph, tokens

COLUMNS = [("", "glyph", 1), ("status", "status", 9), ("workflow", "workflow", 13), ("run", "run", 12),
           ("started", "started", 11), ("took", "took", 7), ("steps", "progress", 7), ("current step", "step", 18),
           ("gates", "gates", 5), ("tokens", "tokens", 6), ("cost", "cost", 7)]



def shown_db(db: Path | str, project: Path) -> str:
    """The database in the title: a path relative to the project, or a URL without its password."""
    if isinstance(db, Path):
        return str(db.relative_to(project) if db.is_relative_to(project) else db)
    password = urlsplit(db).password
    return db.replace(f":{password}@", "@", 1) if password else db


class RunsScreen(Screen[None]):
    CSS_PATH = "runs.tcss"
    HELP_TITLE = "Runs"
    BINDINGS = [
        Binding("enter", "open", "Open", id="runs.open"),
        Binding("n", "new", "New run", id="runs.new"),
        Binding("slash", "filter", "Filter", id="runs.filter"),
        Binding("a", "app.inbox", "Approvals", id="runs.inbox"),
        Binding("escape", "clear_filter", "Clear filter", show=False, id="runs.clear_filter"),
        Binding("j", "cursor(1)", "Down", show=False, id="runs.down"),
        Binding("k", "cursor(-1)", "Up", show=False, id="runs.up"),
        Binding("c", "cancel", "Cancel run", show=False, id="runs.cancel"),
        Binding("s", "resume", "Resume run", show=False, id="runs.resume"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.runs: list[dict[str, Any]] = []
        self.filter = ""
        self.loaded = False

    def compose(self) -> ComposeResult:
        yield Header(icon="◎")
        yield Input(placeholder="filter: workflow, run id, status, step…  (enter keeps it, esc clears)", id="filter")
        yield DataTable(cursor_type="row", zebra_stripes=True, id="runs")
        yield Static("", id="summary")
        yield Footer()

    def on_mount(self) -> None:
        app: Any = self.app
        self.sub_title = shown_db(app.host.db_path, app.project)
        t = self.query_one(DataTable)
        for label, key, width in COLUMNS:
            t.add_column(label, key=key, width=width)
        self.query_one("#filter").display = False
        t.focus()
        self.reload()
        self.set_interval(1.0, self.tick)

    def on_screen_resume(self) -> None:
        self.reload()

    def on_store_changed(self, _msg: Any) -> None:
        self.reload()

    def tick(self) -> None:
        if any(r["status"] in ACTIVE_RUN for r in self.runs):
            self.reload()

    @work(exclusive=True, group="runs-load")
    async def reload(self) -> None:
        await self.app.host.ready.wait()  # type: ignore[attr-defined]
        reader = self.app.host.reader  # type: ignore[attr-defined]
        host = self.app.host  # type: ignore[attr-defined]
        records = await reader.list_runs(limit=500)
        stats = await reader.run_stats(r.id for r in records)
        runs = []
        for rec in records:
            r = run_row(rec, host.executing(rec.id))
            st = stats[rec.id]
            r["_steps"] = (st.done, st.known)
            r["_gates"] = st.gates
            r["_usage"] = (st.tokens, st.cost_usd)
            r["_running"] = [key_label(*k) for k in st.running]
            runs.append(r)
        self.runs = runs
        self.render_table()
        self.loaded = True

    def row_cells(self, r: dict[str, Any]) -> list[Any]:
        clock = self.app.clock  # type: ignore[attr-defined]
        done, known = r["_steps"]
        status = r["status"]
        step = ", ".join(r["_running"][:2]) + (f" +{len(r['_running']) - 2}" if len(r["_running"]) > 2 else "")
        if status == "waiting" and not step:
            step = "gate waiting"
        elif status == "failed" and r.get("error"):
            step = r["error"]
        elif status == "rewound":
            step = f"→ {r['successor_run_id']}"
        elif status == "queued":
            step = "waits for a worker"
        owner = r.get("owner")
        if owner is not None and owner.id.startswith("worker-") and status in ACTIVE_RUN:
            step = f"{step} @{owner.id} {owner.host}:{owner.pid}".strip()  # who runs it
        lineage = f" ⑂{r['kind']}" if r.get("kind") and r["kind"] != "run" else ""
        tok, usd = r["_usage"]
        return [run_glyph(status), Text(status, style="grey70"), r["workflow"] + lineage, r["id"],
                clock.stamp(r["created_at"]), clock.since(r["created_at"], r["finished_at"] or (
                    r["updated_at"] if status not in ACTIVE_RUN else None)),
                f"{done}/{known}", Text(step, style="red1" if status == "failed" else ""),
                Text(str(r["_gates"]), style="bold yellow") if r["_gates"] else "",
                tokens(tok) if tok else "-", cost(usd)]

    def visible(self) -> list[dict[str, Any]]:
        f = self.filter.lower().strip()
        if not f:
            return self.runs
        out = []
        for r in self.runs:
            hay = " ".join([r["id"], r["workflow"], r["status"], r.get("kind") or "", *r["_running"]]).lower()
            if all(part in hay for part in f.split()):
                out.append(r)
        return out

    def render_table(self) -> None:
        if not self.query(DataTable):  # closing
            return
        t = self.query_one(DataTable)
        rows = self.visible()
        current = self.current_id()
        keys = [r["id"] for r in rows]
        if keys == [str(k.value) for k in t.rows]:
            for r in rows:
                for (_, col, _w), cell in zip(COLUMNS, self.row_cells(r)):
                    t.update_cell(r["id"], col, cell)
        else:
            t.clear()
            for r in rows:
                t.add_row(*self.row_cells(r), key=r["id"])
            if current in keys:
                t.move_cursor(row=keys.index(current))
        active = sum(r["status"] in ACTIVE_RUN for r in self.runs)
        waiting = sum(r["_gates"] for r in self.runs)
        shown = f"{len(rows)} of {len(self.runs)} runs" if self.filter else f"{len(self.runs)} runs"
        hint = "" if self.runs else "  ·  no runs yet: press n to start one"
        self.query_one("#summary", Static).update(
            Text.assemble((shown, "bold"), f"  ·  {active} active  ·  ",
                          (f"{waiting} gate(s) waiting", "bold yellow" if waiting else ""),
                          (f"  ·  filter: {self.filter}" if self.filter else "", "italic"), hint))

    def current_id(self) -> str | None:
        t = self.query_one(DataTable)
        if not t.row_count:
            return None
        try:
            return str(t.coordinate_to_cell_key(t.cursor_coordinate).row_key.value)
        except Exception:
            return None

    # --- actions -------------------------------------------------------------------------------
    def action_cursor(self, d: int) -> None:
        t = self.query_one(DataTable)
        t.move_cursor(row=max(0, t.cursor_row + d))

    def action_open(self) -> None:
        rid = self.current_id()
        if rid:
            self.app.open_run(rid)  # type: ignore[attr-defined]

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        self.app.open_run(str(event.row_key.value))  # type: ignore[attr-defined]

    def action_new(self) -> None:
        self.app.action_new_run()  # type: ignore[attr-defined]

    def action_filter(self) -> None:
        box = self.query_one("#filter", Input)
        box.display = True
        box.focus()

    def action_clear_filter(self) -> None:
        box = self.query_one("#filter", Input)
        box.value = ""
        self.filter = ""
        box.display = False
        self.query_one(DataTable).focus()
        self.render_table()

    def on_input_changed(self, event: Input.Changed) -> None:
        if event.input.id == "filter":
            self.filter = event.value
            self.render_table()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if event.input.id == "filter":
            if not event.value:
                event.input.display = False
            self.query_one(DataTable).focus()

    async def action_cancel(self) -> None:
        rid = self.current_id()
        if rid:
            said = await self.app.attempt(self.app.host.cancel(rid))  # type: ignore[attr-defined]
            if said:
                self.notify(f"run {rid}: {said}")

    async def action_resume(self) -> None:
        rid = self.current_id()
        host = self.app.host  # type: ignore[attr-defined]
        if not rid:
            return
        if rid in host.tasks:
            self.notify(f"run {rid} is already running here")
            return
        await self.app.attempt(host.resume(rid))  # type: ignore[attr-defined]
        if rid in host.tasks:
            self.notify(f"run {rid} resumed here")

    def palette_commands(self) -> list[Any]:
        rid = self.current_id()
        out = [("Filter runs", "type to narrow the list", self.action_filter)]
        if rid:
            out += [(f"Cancel run {rid}", "stop it for good", self.action_cancel),
                    (f"Resume run {rid}", "continue it in this app", self.action_resume)]
        return out

"""Approvals inbox: every gate waiting for a decision, across runs. enter opens the prompt,
y / n decide at once, o opens the run."""
from __future__ import annotations

from typing import Any

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header, Static

from ..rows import record_row
from ..widgets.fmt import key_label


class InboxScreen(Screen[None]):
    CSS_PATH = "inbox.tcss"
    HELP_TITLE = "Approvals inbox"
    BINDINGS = [
        Binding("enter", "prompt", "Decide…", id="inbox.prompt"),
        Binding("y", "decide(True)", "Approve", id="inbox.approve"),
        Binding("n", "decide(False)", "Deny", id="inbox.deny"),
        Binding("o", "open_run", "Open run", id="inbox.open_run"),
        Binding("escape", "back", "Back", id="back"),
        Binding("j", "cursor(1)", "Down", show=False, id="inbox.down"),
        Binding("k", "cursor(-1)", "Up", show=False, id="inbox.up"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.gates: list[dict[str, Any]] = []
        self.loaded = False

    def compose(self) -> ComposeResult:
        yield Header(icon="◎")
        yield Static("", id="inbox-head")
        yield DataTable(cursor_type="row", zebra_stripes=True, id="gates")
        yield Footer()

    def on_mount(self) -> None:
        self.sub_title = "approvals inbox"
        t = self.query_one(DataTable)
        t.add_column("run", width=14)
        t.add_column("workflow", width=16)
        t.add_column("gate", width=16)
        t.add_column("waiting since", width=13)
        t.add_column("owner", width=16)
        t.add_column("message")
        t.focus()
        self.reload()

    def on_screen_resume(self) -> None:
        self.reload()

    def on_store_changed(self, _msg: Any) -> None:
        self.reload()

    @work(exclusive=True, group="inbox-load")
    async def reload(self) -> None:
        await self.app.host.ready.wait()  # type: ignore[attr-defined]
        from engine.lease import owner_alive

        reader = self.app.host.reader  # type: ignore[attr-defined]
        gates = [record_row(g) for g in await reader.approvals(open_only=True)]
        runs = {r.id: r for r in await reader.list_runs(limit=2000) if r.status in ("waiting", "running")}
        for g in gates:
            run = runs.get(g["run_id"])
            if self.app.host.executing(g["run_id"]):  # type: ignore[attr-defined]
                g["_owner"] = "this app"
            elif run is not None and run.owner is not None and owner_alive(run.owner):
                g["_owner"] = f"pid {run.owner.pid}"
            else:
                g["_owner"] = "nobody"
        self.gates = gates
        if not self.query(DataTable):  # closing
            return
        clock = self.app.clock  # type: ignore[attr-defined]
        t = self.query_one(DataTable)
        current = t.cursor_row
        t.clear()
        for g in gates:
            t.add_row(g["run_id"], g["workflow"], Text(key_label(g["node_id"], g["iteration"]), style="bold yellow"),
                      clock.stamp(g["requested_at"]), g["_owner"], g["message"], key=f"{g['run_id']}#{g['node_id']}#{g['iteration']}")
        if gates:
            t.move_cursor(row=min(current, len(gates) - 1))
        n = len(gates)
        self.query_one("#inbox-head", Static).update(
            Text.assemble((f" {n} gate{'s' if n != 1 else ''} waiting", "bold yellow" if n else "bold"),
                          ("  ·  y approve  ·  n deny  ·  enter decide with a note  ·  o open the run", "grey58")
                          if n else ("  ·  nothing waits for you", "grey58")))
        self.loaded = True

    def current(self) -> dict[str, Any] | None:
        t = self.query_one(DataTable)
        if not self.gates or t.cursor_row < 0 or t.cursor_row >= len(self.gates):
            return None
        return self.gates[t.cursor_row]

    def action_cursor(self, d: int) -> None:
        t = self.query_one(DataTable)
        t.move_cursor(row=max(0, t.cursor_row + d))

    def on_data_table_row_selected(self, _event: DataTable.RowSelected) -> None:
        self.action_prompt()

    def action_prompt(self) -> None:
        from .approval import prompt_for

        g = self.current()
        if g:
            self.app.push_screen(prompt_for(g["run_id"], g["node_id"], g["iteration"], g.get("mode")),
                                 lambda _r: self.reload())

    async def action_decide(self, approved: bool) -> None:
        g = self.current()
        if g is None:
            return
        if approved and g.get("mode") not in (None, "approve"):  # a choice, a ranking or an answer: the prompt asks
            self.action_prompt()
            return
        app: Any = self.app
        said = await app.attempt(app.host.decide(g["run_id"], g["node_id"], g["iteration"], approved))
        if said:
            self.notify(said)
        self.reload()

    def action_open_run(self) -> None:
        g = self.current()
        if g:
            self.app.open_run(g["run_id"])  # type: ignore[attr-defined]

    def action_back(self) -> None:
        self.app.pop_screen()

    def palette_commands(self) -> list[Any]:
        return [("Approve the selected gate", "", lambda: self.run_worker(self.action_decide(True))),
                ("Deny the selected gate", "", lambda: self.run_worker(self.action_decide(False)))]

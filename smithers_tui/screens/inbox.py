"""Approvals inbox: every gate waiting for a decision, across runs. enter opens the prompt,
y / n decide at once, o opens the run, / filters, o sorts... (see the footer)."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import Header, Input, Static

from ..app import StoreChanged
from ..base import LETTER_KEYS, AppScreen, background
from ..widgets.filter import FilterBar
from ..widgets.fmt import key_label
from ..widgets.footer import Footer
from ..widgets.table import Col, Item, ListTable

if TYPE_CHECKING:
    from engine.records import ApprovalRecord

COLUMNS = [
    Col("run", "run", 8, 16, keep=99),
    Col("workflow", "workflow", 8, 20, keep=80),
    Col("gate", "gate", 6, 24, keep=95),
    Col("since", "waiting since", 8, 13, keep=50),
    Col("owner", "owner", 6, 14, keep=40),
    Col("message", "message", 12, None, keep=90, flex=True),
]


class InboxScreen(AppScreen[None]):
    AUTO_FOCUS = "#gates"  # focused once the screen is up (never queried before its children exist)
    CSS_PATH = "inbox.tcss"
    HELP_TITLE = "Approvals inbox"
    BINDINGS = [
        Binding("enter", "prompt", "Decide…", id="inbox.prompt"),
        Binding("y", "decide(True)", "Approve", id="inbox.approve"),
        Binding("n", "decide(False)", "Deny", id="inbox.deny"),
        Binding("r", "open_run", "Open run", id="inbox.open_run"),
        Binding("slash", "filter", "Filter", id="inbox.filter"),
        Binding("escape", "back", "Back", id="back"),
        Binding("j", "cursor(1)", "Down", show=False, id="inbox.down"),
        Binding("k", "cursor(-1)", "Up", show=False, id="inbox.up"),
        *[b for b in LETTER_KEYS if b.id != "inbox"],
    ]

    def __init__(self) -> None:
        super().__init__()
        self.gates: list[ApprovalRecord] = []
        self.owners: dict[str, str] = {}  # run id -> who runs it: this app, a pid, nobody
        self.loaded = False

    def compose(self) -> ComposeResult:
        yield Header(icon="◎")
        yield Static("", id="inbox-head")
        yield FilterBar("filter: run, workflow, gate, message…", id="filter")
        yield ListTable(COLUMNS, id="gates")
        yield Footer()

    @property
    def table(self) -> ListTable:
        return self.query_one(ListTable)

    def on_mount(self) -> None:
        self.sub_title = "approvals inbox"
        self.reload()

    def on_screen_resume(self) -> None:
        self.reload()

    def on_store_changed(self, _msg: StoreChanged) -> None:
        if self.on_top:
            self.reload()

    @background(group="inbox-load", exclusive=True)
    async def reload(self) -> None:
        from engine.lease import owner_alive

        host = self.app.host
        await host.ready.wait()
        gates = await host.reader.approvals(open_only=True)
        runs = {r.id: r for r in await host.reader.list_runs(limit=2000)}
        owners = {}
        for g in gates:
            run = runs.get(g.run_id)
            if host.executing(g.run_id):
                owners[g.run_id] = "this app"
            elif run is not None and run.owner is not None and owner_alive(run.owner):
                owners[g.run_id] = f"pid {run.owner.pid}"
            else:
                owners[g.run_id] = "nobody"
        self.gates, self.owners = gates, owners
        if not self.query(ListTable):  # closing
            return
        clock = self.app.clock
        self.table.show([Item(gate_key(g), {
            "run": g.run_id, "workflow": g.workflow or "",
            "gate": Text(key_label(g.node_id, g.iteration), style="bold yellow"),
            "since": clock.stamp(g.requested_at), "owner": owners[g.run_id], "message": " ".join(g.message.split())},
            order={"since": g.requested_at}) for g in gates])
        n = len(gates)
        self.query_one("#inbox-head", Static).update(
            Text.assemble((f" {n} gate{'s' if n != 1 else ''} waiting", "bold yellow" if n else "bold"),
                          ("  ·  y approve  ·  n deny  ·  enter decide with a note  ·  r open the run", "grey58")
                          if n else ("  ·  nothing waits for you", "grey58")))
        self.loaded = True

    def current(self) -> ApprovalRecord | None:
        key = self.table.current_key()
        return next((g for g in self.gates if gate_key(g) == key), None)

    def action_cursor(self, d: int) -> None:
        self.table.move_cursor(row=max(0, self.table.cursor_row + d))

    def action_filter(self) -> None:
        self.query_one(FilterBar).open()

    def on_input_changed(self, event: Input.Changed) -> None:
        if isinstance(event.input, FilterBar):
            self.table.set_filter(event.value)

    def on_filter_bar_done(self, _event: FilterBar.Done) -> None:
        self.table.focus()

    def on_data_table_row_selected(self, _event: ListTable.RowSelected) -> None:
        self.action_prompt()

    def action_prompt(self) -> None:
        from .approval import prompt_for

        g = self.current()
        if g:
            def closed(_result: str | None) -> None:
                self.reload()

            self.app.push_screen(prompt_for(g.run_id, g.node_id, g.iteration, g.mode), closed)

    def action_decide(self, approved: bool) -> None:
        g = self.current()
        if g is None:
            return
        if approved and g.mode not in (None, "approve"):  # a choice, a ranking or an answer: the prompt asks
            self.action_prompt()
            return
        self.decide(g, approved)

    @background(group="inbox-decide")
    async def decide(self, g: ApprovalRecord, approved: bool) -> None:
        self.notify(await self.app.host.decide(g.run_id, g.node_id, g.iteration, approved))
        self.reload()

    def action_open_run(self) -> None:
        g = self.current()
        if g:
            self.app.open_run(g.run_id)

    def action_back(self) -> None:
        if self.query_one(FilterBar).value:
            self.query_one(FilterBar).action_clear()
            return
        self.app.pop_screen()

    def palette_commands(self) -> list[Any]:
        return [("Approve the selected gate", "", lambda: self.action_decide(True), "y"),
                ("Deny the selected gate", "", lambda: self.action_decide(False), "n"),
                ("Filter gates", "", self.action_filter, "/")]


def gate_key(g: ApprovalRecord) -> str:
    return f"{g.run_id}#{g.node_id}#{g.iteration}"

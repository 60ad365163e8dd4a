"""The approval prompt: a gate of the shown run waits. Its message, what happened before, what
approving or denying does; y approves, n denies, with an optional note. A decision made
elsewhere (the CLI, another app) closes it."""
from __future__ import annotations

from typing import Any

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from .modal import Modal
from textual.widgets import Button, Input, Label, Static


from ..rows import record_row
from ..widgets.fmt import NODE_STYLE, key_label, short_json

ON_DENY = {"fail": "denying fails the run", "skip": "denying skips the gated part and the run goes on",
           "continue": "denying records the decision and the run goes on"}


class ApprovalScreen(Modal[str]):
    CSS_PATH = "approval.tcss"
    HELP_TITLE = "Approval"
    BINDINGS = [
        Binding("y", "decide(True)", "Approve", id="approval.approve"),
        Binding("n", "decide(False)", "Deny", id="approval.deny"),
        Binding("e", "note", "Note", id="approval.note"),
        Binding("escape", "later", "Later", id="approval.later"),
    ]

    def __init__(self, run_id: str, node: str, iteration: int) -> None:
        super().__init__()
        self.run_id, self.node, self.iteration = run_id, node, iteration
        self.deciding = False
        self.closing = False
        self.loaded = False

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Label(f"◆  Approval needed — {key_label(self.node, self.iteration)} of run {self.run_id}", id="title")
            yield Static("", id="message")
            with VerticalScroll(id="context"):
                yield Static("loading…", id="context-body")
            yield Input(placeholder="optional note kept with the decision (e to type here, enter when done)", id="note")
            with Horizontal(id="buttons"):
                yield Button("Approve  y", variant="success", id="approve")
                yield Button("Deny  n", variant="error", id="deny")
                yield Button("Later  esc", id="later")

    def on_mount(self) -> None:
        self.query_one("#approve").focus()
        self.load()

    @work(exclusive=True, group="approval-load")
    async def load(self) -> None:
        await self.app.host.ready.wait()  # type: ignore[attr-defined]
        reader = self.app.host.reader  # type: ignore[attr-defined]
        gate = await self.gate_row()
        if gate is None:
            self.close("gone")
            return
        if gate["decision"]:
            self.closed_elsewhere(gate)
            return
        rep = await self.app.host.report(self.run_id)  # type: ignore[attr-defined]
        if not self.query("#context-body"):  # closing
            return
        self.query_one("#message", Static).update(Text(gate["message"], style="bold"))
        nodes = {(n["id"], n["iteration"]): n for n in rep["nodes"]}
        rows = list(reversed(await reader.events(
            self.run_id, types=["node_finished", "node_failed", "node_skipped", "approval_decided"], limit=6,
            newest=True)))
        body = Text()
        body.append(f"{rep['workflow']}  ·  run {rep['run_id']}  ·  frame {rep['last_frame']}\n", style="grey58")
        body.append("Before this gate\n", style="bold underline")
        if not rows:
            body.append("  nothing finished yet\n", style="grey50")
        for r in reversed(rows):
            n = nodes.get((r.node_id, r.iteration))
            state = n["state"] if n else "done"
            g, c = NODE_STYLE.get(state, ("?", "white"))
            body.append(f"  {g} ", style=c)
            body.append(key_label(r.node_id or "", r.iteration or 0), style="bold")
            if n is not None and n.get("output") is not None:
                body.append("  " + short_json(n["output"], 70), style="grey62")
            body.append("\n")
        body.append("If you approve\n", style="bold underline")
        me = nodes.get((self.node, self.iteration))
        if me and me["kind"] == "task":
            body.append(f"  step {self.node} runs (it waits for this approval before starting)\n")
        else:
            body.append(f"  the run goes on past {self.node}\n")
        body.append("If you deny\n", style="bold underline")
        body.append(f"  {ON_DENY.get(gate['on_deny'], gate['on_deny'])}\n")
        self.query_one("#context-body", Static).update(body)
        self.loaded = True

    async def gate_row(self) -> dict[str, Any] | None:
        reader = self.app.host.reader  # type: ignore[attr-defined]
        gates = await reader.approvals(self.run_id, open_only=False)
        return next((record_row(g) for g in gates if g.key == (self.node, self.iteration)), None)

    def on_store_changed(self, _msg: Any) -> None:
        if not self.deciding:
            self.check_elsewhere()

    @work(exclusive=True, group="approval-check")
    async def check_elsewhere(self) -> None:
        gate = await self.gate_row()
        if gate and gate["decision"] and not self.deciding and not self.closing:
            self.closed_elsewhere(gate)

    def closed_elsewhere(self, gate: dict[str, Any]) -> None:
        self.notify(f"gate {key_label(self.node, self.iteration)} of run {self.run_id} was {gate['decision']} "
                    f"elsewhere by {gate['decided_by']}" + (f" ({gate['note']})" if gate.get("note") else ""))
        self.close("decided elsewhere")

    def close(self, result: str) -> None:
        """Dismiss once (a decision seen twice must not close the screen underneath)."""
        if not self.closing:
            self.closing = True
            self.dismiss(result)

    def action_note(self) -> None:
        self.query_one("#note", Input).focus()

    def on_input_submitted(self, _event: Input.Submitted) -> None:
        self.query_one("#approve").focus()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "later":
            self.action_later()
        else:
            self.action_decide(event.button.id == "approve")

    def action_later(self) -> None:
        self.close("later")

    def action_decide(self, approved: bool) -> None:
        if not self.deciding:
            self.deciding = True
            self.decide(approved)

    @work(exclusive=True, group="approval-decide")
    async def decide(self, approved: bool) -> None:
        app: Any = self.app
        note = self.query_one("#note", Input).value.strip() or None
        said = await app.attempt(app.host.decide(self.run_id, self.node, self.iteration, approved, note))
        if said:
            self.notify(said)
        self.close("decided")

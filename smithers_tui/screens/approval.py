"""The approval prompt: a gate of the shown run waits. Its message, what happened before, what
approving or denying does; y approves, n denies, with an optional note. A select gate lists its
options (the highlighted one is chosen); a rank gate lists them in the order given (ctrl+up /
ctrl+down move the highlighted one). A decision made elsewhere (the CLI, another app) closes it."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.widgets import Button, Input, Label, OptionList, Static
from textual.widgets.option_list import Option

from ..app import StoreChanged
from ..base import AppModal, background
from ..widgets.fmt import NODE_STYLE, key_label, short_json

if TYPE_CHECKING:
    from engine.records import ApprovalRecord

ON_DENY = {"fail": "denying fails the run", "skip": "denying skips the gated part and the run goes on",
           "continue": "denying records the decision and the run goes on"}


class ApprovalScreen(AppModal[str]):
    AUTO_FOCUS = "#approve"  # focused once the screen is up (never queried before its children exist)
    CSS_PATH = "approval.tcss"
    HELP_TITLE = "Approval"
    BINDINGS = [
        Binding("y", "decide(True)", "Approve", id="approval.approve"),
        Binding("n", "decide(False)", "Deny", id="approval.deny"),
        Binding("e", "note", "Note", id="approval.note"),
        Binding("escape", "later", "Later", id="approval.later"),
        Binding("ctrl+up", "move(-1)", "Rank up", id="approval.rank_up"),
        Binding("ctrl+down", "move(1)", "Rank down", id="approval.rank_down"),
    ]

    def __init__(self, run_id: str, node: str, iteration: int) -> None:
        super().__init__()
        self.run_id, self.node, self.iteration = run_id, node, iteration
        self.deciding = False
        self.closing = False
        self.loaded = False
        self.mode = "approve"
        self.options: list[str] = []  # a select gate's options; a rank gate's, in the order given now

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Label(f"◆  Approval needed — {key_label(self.node, self.iteration)} of run {self.run_id}", id="title")
            yield Static("", id="message")
            yield OptionList(id="options")
            with VerticalScroll(id="context"):
                yield Static("loading…", id="context-body")
            yield Input(placeholder="optional note kept with the decision (e to type here, enter when done)", id="note")
            with Horizontal(id="buttons"):
                yield Button("Approve  y", variant="success", id="approve")
                yield Button("Deny  n", variant="error", id="deny")
                yield Button("Later  esc", id="later")

    def on_mount(self) -> None:
        self.load()

    async def open_gate(self) -> Any:
        """The gate, once the engine is up; None (and the prompt closed, saying why) when it is gone
        or was decided elsewhere meanwhile."""
        await self.app.host.ready.wait()
        gate = await self.gate_row()
        if gate is None:
            self.close("gone")
            return None
        if gate.decision:
            self.closed_elsewhere(gate)
            return None
        return gate

    @background(group="approval-load", exclusive=True)
    async def load(self) -> None:
        host = self.app.host
        gate = await self.open_gate()
        if gate is None:
            return
        rep = await host.view.report(self.run_id)
        done = await host.reader.events(self.run_id, types=["node_finished", "node_failed", "node_skipped",
                                                             "approval_decided"], limit=6, newest=True)
        if not self.is_attached or self.closing:  # closed while reading: nothing left to fill
            return
        self.query_one("#message", Static).update(Text(gate.message, style="bold"))
        self.show_options(gate)
        body = Text()
        body.append(f"{rep.workflow}  ·  run {rep.run_id}  ·  frame {rep.last_frame}\n", style="grey58")
        body.append("Before this gate\n", style="bold underline")
        if not done:
            body.append("  nothing finished yet\n", style="grey50")
        for ev in done:
            n = rep.node((ev.node_id or "", ev.iteration or 0))
            g, c = NODE_STYLE.get(n.state if n else "done", ("?", "white"))
            body.append(f"  {g} ", style=c)
            body.append(key_label(ev.node_id or "", ev.iteration or 0), style="bold")
            if n is not None and n.output is not None:
                body.append("  " + short_json(n.output, 70), style="grey62")
            body.append("\n")
        body.append("If you approve\n", style="bold underline")
        me = rep.node((self.node, self.iteration))
        if self.mode == "select":
            body.append("  the highlighted option is the choice; the run goes on with it\n")
        elif self.mode == "rank":
            body.append("  the order shown is the ranking, best first (ctrl+up / ctrl+down move an option)\n")
        elif me and me.kind == "task":
            body.append(f"  step {self.node} runs (it waits for this approval before starting)\n")
        else:
            body.append(f"  the run goes on past {self.node}\n")
        body.append("If you deny\n", style="bold underline")
        body.append(f"  {ON_DENY.get(gate.on_deny, gate.on_deny)}\n")
        self.query_one("#context-body", Static).update(body)
        self.loaded = True

    def show_options(self, gate: ApprovalRecord) -> None:
        """A select or rank gate: its options, to choose from or to order."""
        self.mode = gate.mode or "approve"
        if self.mode not in ("select", "rank"):
            return
        self.options = gate.options
        ol = self.query_one("#options", OptionList)
        ol.border_title = "choose one" if self.mode == "select" else "best first"
        self.fill_options(0)
        ol.display = True
        self.set_focus(ol)  # now, not after the next refresh: keys pressed meanwhile go to the options

    def fill_options(self, highlight: int) -> None:
        ol = self.query_one("#options", OptionList)
        ol.clear_options()
        marks = [f"{i + 1}. " if self.mode == "rank" else "" for i in range(len(self.options))]
        ol.add_options([Option(f"{m}{o}", id=f"opt-{i}") for i, (m, o) in enumerate(zip(marks, self.options))])
        ol.highlighted = highlight

    def action_move(self, d: int) -> None:
        """Move the highlighted option of a rank gate up or down."""
        if self.mode != "rank":
            return
        i = self.query_one("#options", OptionList).highlighted
        j = (i or 0) + d
        if i is None or not 0 <= j < len(self.options):
            return
        self.options[i], self.options[j] = self.options[j], self.options[i]
        self.fill_options(j)

    def chosen(self) -> dict[str, Any]:
        """What a select or rank decision records beside approved."""
        if self.mode == "select":
            i = self.query_one("#options", OptionList).highlighted
            return {"choice": self.options[i or 0]}
        if self.mode == "rank":
            return {"rank": list(self.options)}
        return {}

    def on_option_list_option_selected(self, _event: OptionList.OptionSelected) -> None:
        if self.mode == "select":  # enter on an option chooses it
            self.action_decide(True)

    async def gate_row(self) -> ApprovalRecord | None:
        gates = await self.app.host.reader.approvals(self.run_id, open_only=False)
        return next((g for g in gates if g.key == (self.node, self.iteration)), None)

    def on_store_changed(self, _msg: StoreChanged) -> None:
        if not self.deciding:
            self.check_elsewhere()

    @background(group="approval-check", exclusive=True)
    async def check_elsewhere(self) -> None:
        gate = await self.gate_row()
        if gate and gate.decision and not self.deciding and not self.closing:
            self.closed_elsewhere(gate)

    def closed_elsewhere(self, gate: ApprovalRecord) -> None:
        self.notify(f"gate {key_label(self.node, self.iteration)} of run {self.run_id} was {gate.decision} "
                    f"elsewhere by {gate.decided_by}" + (f" ({gate.note})" if gate.note else ""))
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

    @background(group="approval-decide", exclusive=True)
    async def decide(self, approved: bool) -> None:
        note = self.query_one("#note", Input).value.strip() or None
        extra = self.chosen() if approved else {}
        try:
            said = await self.app.host.decide(self.run_id, self.node, self.iteration, approved, note, **extra)
        except BaseException:
            self.deciding = False  # the decision failed (said by the app's error handler): the prompt stays
            raise
        self.notify(said)
        self.close("decided")


def prompt_for(run_id: str, node: str, iteration: int, mode: str | None) -> ApprovalScreen:
    """The screen that asks for what a waiting step needs: an answer form or a decision."""
    if mode == "human":
        from .answer import AnswerScreen

        return AnswerScreen(run_id, node, iteration)
    return ApprovalScreen(run_id, node, iteration)

"""The answer form: a human task of the shown run waits for a person's answer. The form is
generated from the task's output model (the New-run form's widget), with a message under each
field that does not fit; ctrl+s answers, ctrl+d declines (the task's on_deny applies), esc later.
An answer given elsewhere (the CLI, the API, another app) closes it."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.widgets import Button, Input, Label, Static

from ..base import background
from ..widgets.fmt import key_label
from ..widgets.input_form import InputForm
from .approval import ApprovalScreen

if TYPE_CHECKING:
    from pydantic import BaseModel


class AnswerScreen(ApprovalScreen):
    CSS_PATH = "answer.tcss"
    HELP_TITLE = "Human task"
    BINDINGS = [
        Binding("ctrl+s", "answer", "Answer", id="answer.submit", priority=True),
        Binding("ctrl+d", "decide(False)", "Decline", id="answer.decline", priority=True),
        Binding("escape", "later", "Later", id="answer.later"),
    ]

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Label(f"✎  An answer is needed — {key_label(self.node, self.iteration)} of run {self.run_id}",
                        id="title")
            yield Static("", id="message")
            with VerticalScroll(id="form-holder"):
                yield Static("loading the form…", id="form-loading")
            yield Input(placeholder="optional note kept with the answer", id="note")
            with Horizontal(id="buttons"):
                yield Button("Answer  ctrl+s", variant="success", id="answer")
                yield Button("Decline  ctrl+d", variant="error", id="deny")
                yield Button("Later  esc", id="later")

    # Textual runs a message's handlers up the class tree: each one here stops the prompt's own.
    @background(group="approval-load", exclusive=True)
    async def load(self) -> None:
        from engine.errors import SmithersError

        host = self.app.host
        gate = await self.open_gate()
        if gate is None:
            return
        try:
            model: type[BaseModel] | None = await host.answer_model(self.run_id, self.node)
        except SmithersError:  # its type cannot be loaded here: the message below says what to do
            model = None
        if not self.is_attached or self.closing:  # closed while reading
            return
        self.query_one("#message", Static).update(Text(gate.message, style="bold"))
        holder = self.query_one("#form-holder", VerticalScroll)
        await holder.remove_children()
        if model is None:
            await holder.mount(Static("the form cannot be made here: answer with `smithers answer "
                                      f"{self.run_id} {self.node} --data JSON`", classes="empty"))
        else:
            form = InputForm(model, id="form")
            await holder.mount(form)
            first = form.query("Input, Select, Switch").first() if form.query("Input, Select, Switch") else None
            if first is not None:
                first.focus()
        self.loaded = True

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.prevent_default()
        if event.button.id == "answer":
            self.action_answer()
        elif event.button.id == "deny":
            self.action_decide(False)
        else:
            self.action_later()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.prevent_default()  # enter in a field does not answer: ctrl+s does

    def action_answer(self) -> None:
        forms = self.query(InputForm)
        if self.deciding or not forms:
            return
        data = forms.first().validated()
        if data is None:
            self.notify("some fields do not fit: see the messages under them", severity="warning")
            return
        self.deciding = True
        self.send(data)

    @background(group="approval-decide", exclusive=True)
    async def send(self, data: dict[str, Any]) -> None:
        note = self.query_one("#note", Input).value.strip() or None
        try:
            said = await self.app.host.answer(self.run_id, self.node, self.iteration, data, note)
        except BaseException:
            self.deciding = False  # refused (e.g. answered meanwhile): the app's error handler says why
            raise
        self.notify(said)
        self.close("answered")

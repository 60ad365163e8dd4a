"""Fork from a frame: edit the input (JSON, merged into the run's input) and choose the steps to
run again. ctrl+s forks, esc cancels."""
from __future__ import annotations

import json
from typing import Any

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from .modal import Modal
from textual.widgets import Button, Label, SelectionList, Static, TextArea


class ForkScreen(Modal[dict[str, Any] | None]):
    CSS_PATH = "fork.tcss"
    HELP_TITLE = "Fork"
    BINDINGS = [
        Binding("ctrl+s", "fork", "Fork", id="fork.submit", priority=True),
        Binding("escape", "cancel", "Cancel", id="fork.cancel"),
    ]

    def __init__(self, run_id: str, frame: int, input: Any, node_ids: list[str]) -> None:
        super().__init__()
        self.run_id, self.frame, self.input, self.node_ids = run_id, frame, input, node_ids

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Label(f"⑂ Fork run {self.run_id} at frame {self.frame}", id="title")
            yield Static("Every output valid at that frame is carried over; steps whose input changed, or that "
                         "you reset, run again. The original run is left alone.", id="explain", markup=False)
            with Horizontal(id="panes"):
                with Vertical(id="input-pane"):
                    yield Label("Input (JSON)")
                    yield TextArea(json.dumps(self.input, indent=2), id="input", soft_wrap=True)
                with Vertical(id="reset-pane"):
                    yield Label("Steps to run again (space toggles)")
                    yield SelectionList[str](*[(n, n) for n in self.node_ids], id="reset")
            yield Static("", id="error")
            with Horizontal(id="buttons"):
                yield Button("Fork  ctrl+s", variant="primary", id="fork")
                yield Button("Cancel  esc", id="cancel")

    def on_mount(self) -> None:
        self.query_one("#input", TextArea).focus()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "fork":
            self.action_fork()
        else:
            self.action_cancel()

    def action_fork(self) -> None:
        text = self.query_one("#input", TextArea).text
        try:
            data = json.loads(text) if text.strip() else None
        except json.JSONDecodeError as e:
            self.query_one("#error", Static).update(f"✖ input is not valid JSON: {e.msg} (line {e.lineno}, "
                                                    f"column {e.colno})")
            return
        reset = list(self.query_one("#reset", SelectionList).selected)
        self.dismiss({"input": data if data != self.input else None, "reset": reset})

    def action_cancel(self) -> None:
        self.dismiss(None)

"""Fork from a frame: edit the input (JSON, merged into the run's input) and choose the steps to
run again, with a preview of what the new run keeps and what it runs. ctrl+s forks, esc cancels."""
from __future__ import annotations

import json
from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.widgets import Button, Label, SelectionList, Static, TextArea
from textual.widgets.selection_list import Selection

from ..base import AppModal


class ForkScreen(AppModal[dict[str, Any] | None]):
    CSS_PATH = "fork.tcss"
    HELP_TITLE = "Fork"
    BINDINGS = [
        Binding("ctrl+s", "fork", "Fork", id="fork.submit", priority=True),
        Binding("escape", "cancel", "Cancel", id="fork.cancel"),
    ]

    def __init__(self, run_id: str, frame: int, input: Any, steps: list[tuple[str, str, bool]],
                 not_started: list[str] | None = None) -> None:
        """`steps`: (node id, what it was at the frame, whether it had finished) in the workflow's order;
        `not_started`: steps of the workflow that had not started at the frame."""
        super().__init__()
        self.run_id, self.frame, self.input, self.steps = run_id, frame, input, steps
        self.not_started = not_started or []

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Label(f"⑂ Fork run {self.run_id} at frame {self.frame}", id="title")
            yield Static("A new run starts from that frame; the original is left alone.", id="explain", markup=False)
            with Horizontal(id="panes"):
                with Vertical(id="input-pane"):
                    yield Label("Input (JSON; changed fields re-run the steps that read them)")
                    yield TextArea(json.dumps(self.input, indent=2), id="input", soft_wrap=True)
                with Vertical(id="reset-pane"):
                    yield Label("Run again  (space toggles: [x] runs again)")
                    yield SelectionList[str](*[Selection(f"{nid}  ({what})", nid) for nid, what, _done in self.steps],
                                             id="reset")
            yield Static("", id="preview")
            yield Static("", id="error")
            with Horizontal(id="buttons"):
                yield Button("Fork  ctrl+s", variant="primary", id="fork")
                yield Button("Cancel  esc", id="cancel")

    def on_mount(self) -> None:
        self.query_one("#input", TextArea).focus()
        self.preview()

    def on_selection_list_selected_changed(self, _event: SelectionList.SelectedChanged[str]) -> None:
        self.preview()

    def on_text_area_changed(self, _event: TextArea.Changed) -> None:
        self.preview()

    def preview(self) -> None:
        """What the fork keeps and what it runs, from the states at the frame and the choices."""
        reset = set(self.query_one("#reset", SelectionList).selected)
        done = [nid for nid, _what, finished in self.steps if finished]
        kept = [n for n in done if n not in reset]
        again = [n for n in done if n in reset]
        first = [nid for nid, _what, _f in self.steps if nid not in done] + self.not_started
        changed = False
        try:
            text = self.query_one("#input", TextArea).text
            changed = bool(text.strip()) and json.loads(text) != self.input
        except json.JSONDecodeError:
            pass
        t = Text()
        t.append(f"keeps {len(kept)} finished step(s)", "green3")
        t.append(" (copied, not run again)" if kept else "")
        if again:
            t.append(f"  ·  runs again: {', '.join(again)}", "yellow")
        if changed:
            t.append("  ·  input changed: steps that read it, and those after them, run again", "yellow")
        if first:
            shown = ", ".join(first[:4]) + (f" +{len(first) - 4}" if len(first) > 4 else "")
            t.append(f"  ·  not done at frame {self.frame}, so they run: {shown}", "dodger_blue1")
        self.query_one("#preview", Static).update(t)

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

"""A list of choices that each read plainly as chosen or not: `☑ name` or `☐ name` (Textual's
SelectionList draws the same X for both, told apart only by colour). space or enter toggles."""
from __future__ import annotations

from typing import Any

from rich.text import Text
from textual.binding import Binding
from textual.message import Message
from textual.widgets import OptionList
from textual.widgets.option_list import Option


class CheckList(OptionList):
    BINDINGS = [Binding("space,enter", "check", "Toggle", id="checklist.toggle")]

    class Changed(Message):
        def __init__(self, checklist: "CheckList") -> None:
            super().__init__()
            self.checklist = checklist

    def __init__(self, items: list[tuple[str, str]], *, checked: set[str] | None = None, **kw: Any) -> None:
        """`items`: (value, label) in the order shown."""
        self.items = items
        self.checked: set[str] = set(checked or ())
        super().__init__(*[self._option(v, label) for v, label in items], **kw)

    def _option(self, value: str, label: str) -> Option:
        on = value in self.checked
        return Option(Text.assemble(("☑ " if on else "☐ ", "bold yellow" if on else "grey58"),
                                    (label, "bold" if on else "")), id=value)

    @property
    def selected(self) -> list[str]:
        return [v for v, _label in self.items if v in self.checked]

    def set_checked(self, value: str, on: bool) -> None:
        if (value in self.checked) == on:
            return
        (self.checked.add if on else self.checked.discard)(value)
        label = dict(self.items)[value]
        self.replace_option_prompt(value, self._option(value, label).prompt)
        self.post_message(self.Changed(self))

    def action_check(self) -> None:
        option = self.highlighted_option
        if option is not None and option.id is not None:
            self.set_checked(option.id, option.id not in self.checked)

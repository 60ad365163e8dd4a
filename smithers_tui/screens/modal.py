"""Modal screens that close once: `dismiss` pops whatever screen is on top, so a second dismiss
(a key pressed twice, a decision seen twice) would close the screen underneath."""
from __future__ import annotations

from typing import Any, TypeVar

from textual.screen import ModalScreen

R = TypeVar("R")


class Modal(ModalScreen[R]):
    _dismissed_once = False

    def dismiss(self, result: Any = None) -> Any:  # type: ignore[override]
        if self._dismissed_once or self.app.screen is not self:
            return None
        self._dismissed_once = True
        return super().dismiss(result)

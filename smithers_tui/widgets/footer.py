"""The footer, rebuilt only when the keys it shows change.

Textual's footer recomposes itself whenever the screen's bindings may have changed (a focus moving,
a reactive that refreshes bindings), which lays the whole screen out again: on a screen that
updates a few times a second while a run goes on, or on tab between agent panes, that is most of
the cost of a repaint. Here it compares what it would show with what it shows, and does nothing
when they are the same."""
from __future__ import annotations

from typing import Any

from textual.screen import Screen
from textual.widgets import Footer as TextualFooter


class Footer(TextualFooter):
    _shown: tuple[Any, ...] | None = None

    def bindings_changed(self, screen: Screen[Any]) -> None:
        shown = tuple((key, b.action, b.description, b.show, enabled, tooltip)
                      for key, (_node, b, enabled, tooltip) in screen.active_bindings.items())
        if shown == self._shown and self._bindings_ready:
            return
        if screen.app.app_focus and self.is_attached and screen is self.screen:
            self._shown = shown  # the footer rebuilds for these keys
        super().bindings_changed(screen)

    def on_resize(self) -> None:
        self.compact = self.size.width < 110  # narrow terminals: keys closer together, more of them shown

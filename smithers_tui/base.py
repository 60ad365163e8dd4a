"""What every screen of the app shares: a typed `app`, and one way engine work runs and fails.

Engine work runs in workers (`background`, i.e. Textual's `@work` that never exits the app on
error). A worker that fails posts `Worker.StateChanged` to the screen that ran it (the message
does not bubble); the base classes forward it to the app's one error handler
(`SmithersApp.worker_failed`), which shows a one-line notification. So no screen wraps engine
calls in try/except to stay alive, and no failure is silent.
"""
from __future__ import annotations

from typing import Any, Callable, Coroutine, ParamSpec, TypeVar

from textual import getters, work
from textual.binding import Binding
from textual.screen import ModalScreen, Screen
from textual.worker import Worker, WorkerState

from .app import SmithersApp

R = TypeVar("R")
T = TypeVar("T")
P = ParamSpec("P")


def background(*, group: str, exclusive: bool = False
               ) -> Callable[[Callable[P, Coroutine[Any, Any, T]]], Callable[P, Worker[T]]]:
    """`@work` for engine work: a failure goes to the app's error handler instead of exiting the app."""
    return work(group=group, exclusive=exclusive, exit_on_error=False)


class AppScreen(Screen[R]):
    """A full screen of the app."""

    app = getters.app(SmithersApp)

    @property
    def on_top(self) -> bool:
        """Is this the screen the user sees? (Textual's `is_current` is also true of the screen
        right under the top one.)"""
        return self.is_attached and self.app.screen is self

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.state is WorkerState.ERROR:
            self.app.worker_failed(event.worker)


# The app's single-letter keys, listed last in the BINDINGS of screens of lists, trees and panes,
# where nothing is typed. Screens with a form (the launcher, the fork dialog, the approval note)
# leave letters to the form: `q` there never quits (ctrl+q does) and `a` never opens the inbox.
LETTER_KEYS = [
    Binding("a", "app.inbox", "Approvals", id="inbox"),
    Binding("q", "app.quit", "Quit", id="quit"),
]


class AppModal(ModalScreen[R]):
    """A modal of the app. It closes once: `dismiss` pops whatever screen is on top, so a second
    dismiss (a key pressed twice, a decision seen twice) would close the screen underneath."""

    _dismissed_once = False

    app = getters.app(SmithersApp)

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.state is WorkerState.ERROR:
            self.app.worker_failed(event.worker)

    def dismiss(self, result: Any = None) -> Any:
        if self._dismissed_once or self.app.screen is not self:
            return None
        self._dismissed_once = True
        return super().dismiss(result)


def failure_line(error: BaseException | None) -> str:
    """A failure as one line: the engine's own errors say what to do; anything else names its type."""
    from engine.errors import SmithersError

    if error is None:
        return "failed"
    if isinstance(error, SmithersError):
        return str(error)
    return f"{type(error).__name__}: {error}"

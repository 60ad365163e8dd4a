"""Actions more than one screen offers, done the same way everywhere: resume a run (or say what
to do instead: fork a finished or cancelled one, accept a changed workflow)."""
from __future__ import annotations

from typing import Any, Callable

from ..base import AppScreen


def resume(screen: AppScreen[Any], run_id: str, status: str, done: Callable[[], None] | None = None) -> None:
    """Resume `run_id` here. A finished or cancelled run cannot go on: say that f forks it. A run whose
    workflow changed since it started asks whether to go on with the new code."""
    if status in ("finished", "cancelled"):
        screen.notify(f"run {run_id} is {status}: nothing to resume — open it and press f to fork it from a frame "
                      "(scrub with [ and ]) to run it again")
        return
    if status == "rewound":
        screen.notify(f"run {run_id} was rewound: its successor goes on (p on the successor opens this one)")
        return
    screen.run_worker(_resume(screen, run_id, False, done), group="resume", exit_on_error=False)


async def _resume(screen: AppScreen[Any], run_id: str, accept_changes: bool, done: Callable[[], None] | None) -> None:
    from engine.errors import SourceChanged

    host = screen.app.host
    if host.executing(run_id):
        screen.notify(f"run {run_id} is already running here")
        return
    try:
        await host.resume(run_id, accept_changes=accept_changes)
    except SourceChanged as e:
        ask_accept(screen, run_id, str(e), done)
        return
    screen.notify(f"run {run_id} resumed here" + (" with the changed workflow" if accept_changes else ""))
    if done is not None:
        done()


def ask_accept(screen: AppScreen[Any], run_id: str, why: str, done: Callable[[], None] | None) -> None:
    from .confirm import ConfirmScreen

    what = why.split(": review the change")[0]
    msg = (f"{what}. Go on with the changed workflow? Finished steps stay finished; what runs from now on uses "
           "the new code.")

    def answered(ok: bool | None) -> None:
        if ok:
            screen.run_worker(_resume(screen, run_id, True, done), group="resume", exit_on_error=False)

    screen.app.push_screen(ConfirmScreen("The workflow changed", msg, yes="Accept changes and resume", no="Not now",
                                         purpose="accept"), answered)

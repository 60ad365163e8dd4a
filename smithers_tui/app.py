"""The Smithers app: the engine hosted in this process (see host.py), runs shown live.

Screens never block: engine work runs in workers (`base.background`) whose failures come to one
handler here (`worker_failed`) and become one-line notifications.
"""
from __future__ import annotations

import asyncio
import gc
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable

from textual import events
from textual.app import App, SystemCommand
from textual.binding import Binding
from textual.message import Message
from textual.screen import Screen
from textual.worker import Worker

from .catalog import Catalog
from .host import Host
from .prefs import Prefs
from .screens.palette import SmithersCommands
from .widgets.fmt import Clock

if TYPE_CHECKING:  # the engine is imported after the first paint (Host.open)
    from engine.dsl import WorkflowDef

log = logging.getLogger("smithers.app")


class StoreChanged(Message):
    """Something was written to the database (by this process or another): each screen reads what
    concerns it, cheaply (new frames since the last it read...). `agents_of` are the runs whose
    agents said something new."""

    def __init__(self, agents_of: set[str]) -> None:
        super().__init__()
        self.agents_of = agents_of


class SmithersApp(App[int]):
    """`smithers` with no command: runs, launcher, run view with time travel, agents, approvals."""

    CSS_PATH = Path(__file__).parent / "app.tcss"  # absolute: subclasses live elsewhere
    TITLE = "Smithers"
    COMMANDS = App.COMMANDS | {SmithersCommands}
    BINDINGS = [
        Binding("question_mark,f1", "help", "Keys", id="help"),
        Binding("ctrl+p", "command_palette", "Commands", show=False, id="palette", priority=True),
        Binding("colon", "command_palette", "Commands", show=False, id="palette.colon"),
    ]

    def __init__(self, db_path: Path | str, *, project: Path | str | None = None, clock: Clock | None = None,
                 agent_override: str | None = None, new_id: Callable[[], str | None] | None = None,
                 keymap: dict[str, str] | None = None, poll: float = 0.2, prefs: Prefs | None = None) -> None:
        super().__init__()
        self.project = Path(project or Path.cwd()).resolve()
        self.clock = clock or Clock()
        self.prefs = prefs or Prefs()
        # a database URL (PostgreSQL) is passed on as it is; a path is a Path
        self.host = Host(db_path if "://" in str(db_path) else Path(db_path), self.project, agent_override,
                         notify=self._notify_line, broadcast=self.broadcast, new_id=new_id, poll=poll)
        self.catalog = Catalog(self.project)
        self._keymap_override = keymap
        self.later: set[tuple[str, str, int]] = set()  # gates the user chose to decide later
        theme = self.prefs.get("theme")
        if isinstance(theme, str) and theme in self.available_themes:
            self.theme = theme

    async def on_event(self, event: events.Event) -> None:
        """A screen may act on keys as they arrive, in the order typed, before Textual routes them
        (`take_key`: the New-run screen, where a terminal delivers `n ↓ ↓ tab` and a sentence at once)."""
        if isinstance(event, events.Key) and not event.is_forwarded:
            take_key = getattr(self.screen, "take_key", None)
            if take_key is not None and await take_key(event):
                return
        await super().on_event(event)

    def on_mount(self) -> None:
        from .screens.runs import RunsScreen

        if self._keymap_override is not None:
            self.set_keymap(self._keymap_override)
        self.theme_changed_signal.subscribe(self, lambda theme: self.prefs.set("theme", theme.name))
        runs = RunsScreen()
        self.push_screen(runs)  # painted at once; it fills in when the database is open
        # the engine (~0.3 s of imports) only once that screen is painted
        runs.call_after_refresh(lambda: self.run_worker(self._boot(), group="boot", exit_on_error=False))

    @staticmethod
    def _import_engine() -> None:
        import engine.project
        import engine.runtime
        import engine.store  # noqa: F401

    async def _boot(self) -> None:
        # imported in a thread: keys typed meanwhile are handled (the loop is not held for ~0.3 s)
        await asyncio.to_thread(self._import_engine)
        from engine.errors import SmithersError

        try:
            await self.host.open()
        except SmithersError as e:  # not a database, a newer schema...: say so; the screens stay empty
            self.notify(str(e), severity="error", timeout=30)
            return
        # What exists now (modules, the first screen) lives as long as the app: keep it out of the
        # cyclic collector, whose full passes otherwise stall key presses while agents stream.
        gc.freeze()
        # The app allocates far more than the engine alone (widgets, renders): collecting the young
        # generation every 700 allocations costs a run in this event loop ~7x the collections it
        # has headless. Every 10,000 keeps the young generation small and the pauses short.
        gc.set_threshold(10_000, 10, 10)
        self.run_worker(self._load_settings, thread=True, group="settings", exit_on_error=False)
        self.run_worker(self.catalog.load, thread=True, group="catalog", exit_on_error=False)  # n opens at once

    def _load_settings(self) -> None:
        from engine.config import ConfigError, load_settings

        try:
            keys = load_settings(self.project).keys
            if keys and self._keymap_override is None:
                self.call_from_thread(self.set_keymap, dict(keys))
        except ConfigError as e:
            self.call_from_thread(self.notify, str(e), severity="error", timeout=10)
        self.host.check_model()

    async def on_unmount(self) -> None:
        await self.host.close()

    def get_system_commands(self, screen: Screen[Any]) -> Iterable[SystemCommand]:
        """Textual's commands (theme, screenshot...) without its "Keys" panel: ours lists every key."""
        for command in super().get_system_commands(screen):
            if command.title != "Keys":
                yield command

    # --- the one error handler ----------------------------------------------------------------
    def worker_failed(self, worker: Worker[Any]) -> None:
        """A worker of any screen failed: one line saying what and what to do, never a crash."""
        from engine.errors import SmithersError

        from .base import failure_line

        error = worker.error
        if error is not None and not isinstance(error, SmithersError):
            log.error("worker %s failed", worker.name, exc_info=error)
        self.notify(failure_line(error), severity="error", timeout=10)

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        """Workers the app itself runs (the palette's decisions) fail the same way."""
        from textual.worker import WorkerState

        if event.state is WorkerState.ERROR and event.worker.node is self:
            self.worker_failed(event.worker)

    def _notify_line(self, message: str, severity: str) -> None:
        if severity == "error":
            self.notify(message, severity="error", timeout=10)
        elif severity == "warning":
            self.notify(message, severity="warning", timeout=6)
        else:
            self.notify(message, timeout=6)

    # --- helpers for screens -------------------------------------------------------------------
    def broadcast(self, run_ids: set[str]) -> None:
        """Tell the screens the user sees that something was written: the top one, and those seen
        through it (under a dialog). A screen further down reads again when it shows (each does so
        on resume); a message to it would also make Textual repaint the whole top screen for it."""
        for screen in reversed(self.screen_stack):
            screen.post_message(StoreChanged(run_ids))
            if screen.styles.background.a == 1:
                break

    def open_run(self, run_id: str, *, replace: bool = False, focus: tuple[str, int] | None = None) -> None:
        """Open a run's screen. From another run's screen (a fork, a parent, a lineage jump) the new
        run takes that screen's place, so `esc` goes back to where the first run was opened from."""
        from .screens.run import RunScreen

        screen = RunScreen(run_id, focus=focus)
        if replace or isinstance(self.screen, RunScreen):
            self.switch_screen(screen)
        else:
            self.push_screen(screen)

    async def workflows(self) -> dict[str, tuple[WorkflowDef, str]]:
        """Built-in and project workflows that load (project files re-read when they change)."""
        return (await asyncio.to_thread(self.catalog.load)).usable()

    # --- actions -------------------------------------------------------------------------------
    def action_new_run(self, workflow: str | None = None) -> None:
        from .screens.launcher import LauncherScreen

        self.push_screen(LauncherScreen(workflow))

    def action_help(self) -> None:
        from .screens.help import HelpScreen

        if isinstance(self.screen, HelpScreen):
            self.screen.dismiss(None)
            return
        self.push_screen(HelpScreen(self.screen))

    def action_inbox(self) -> None:
        from .screens.inbox import InboxScreen

        if not isinstance(self.screen, InboxScreen):
            self.push_screen(InboxScreen())

    async def action_quit(self) -> None:
        from .screens.confirm import ConfirmScreen

        active = sorted(self.host.tasks)
        if isinstance(self.screen, ConfirmScreen) and self.screen.purpose == "quit":
            self.screen.dismiss(True)
            return
        if active:
            names = ", ".join(active[:3]) + (f" and {len(active) - 3} more" if len(active) > 3 else "")
            msg = (f"{len(active)} run(s) active here ({names}). Quit anyway? They stop now and stay "
                   f"resumable: open the app again and press s on a run, or `smithers resume RUN_ID`.")

            async def done(ok: bool | None) -> None:
                if ok:
                    await self.shutdown()

            self.push_screen(ConfirmScreen("Quit Smithers?", msg, yes="Quit", purpose="quit"), done)
            return
        await self.shutdown()

    async def shutdown(self) -> None:
        """Quit: screens and their workers go first, then the host stops runs resumably (on_unmount)."""
        self.workers.cancel_all()
        self.exit(0)


def run_app(db_path: Path | str) -> int:
    """Open the app on a database (created when missing). Returns the exit code."""
    app = SmithersApp(db_path)
    app.run()
    return app.return_code or 0

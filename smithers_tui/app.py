"""The Smithers app: the engine hosted in this process, runs shown live.

`Host` owns the engine side: two connections to the database (the engine's, and a reader the
screens use, whose PRAGMA data_version tells when anything - this process or another - wrote),
the tasks executing runs here, and the follower that reads new events by sequence number and
broadcasts them to every screen as `StoreChanged`. Screens never block: they await the host
from workers and show failures as one-line notifications.
"""
from __future__ import annotations

import asyncio
import gc
import logging
from pathlib import Path
from typing import Any, Awaitable, Callable, TypeVar

from typing import TYPE_CHECKING

from textual.app import App
from textual.binding import Binding
from textual.message import Message

from .screens.palette import SmithersCommands
from .widgets.agent_pane import AgentHub
from .widgets.fmt import Clock, key_label

if TYPE_CHECKING:  # the engine is imported after the first paint (Host.open)
    from engine.events import Event
    from engine.runtime import Engine
    from engine.store import Store

log = logging.getLogger("smithers.app")
T = TypeVar("T")


class StoreChanged(Message):
    """Something was written to the database: `events` are the new stored events (maybe none,
    e.g. a decision recorded by another process)."""

    def __init__(self, events: list[Event]) -> None:
        super().__init__()
        self.events = events
        self.run_ids = {e.run_id for e in events}


class Host:
    """The engine, hosted in the app's event loop."""

    def __init__(self, app: "SmithersApp", db_path: Path | str, project: Path, agent_override: str | None,
                 new_id: Callable[[], str | None] | None = None, poll: float = 0.2) -> None:
        self.app, self.db_path, self.project = app, db_path, project
        self.agent_override = agent_override
        self.new_id = new_id or (lambda: None)
        self.poll = poll
        self.store: Store | None = None
        self.reader: Store | None = None
        self.engine: Engine | None = None
        self.view: Engine | None = None  # reports, outlines and frames, read on the reader
        self._demo: Engine | None = None
        self.tasks: dict[str, asyncio.Task[Any]] = {}
        self.run_engine: dict[str, Engine] = {}
        self.demo_runs: set[str] = set()
        self.local_runs: set[str] = set()  # runs executed (at some point) by this app
        self.quiet_end: set[str] = set()
        self.model_configured: bool | None = None
        self.model_hint = ""
        self.agents = AgentHub()
        self.last_seq = 0
        self._closed = False
        self._follower: asyncio.Task[None] | None = None
        self.ready = asyncio.Event()

    async def open(self) -> None:
        from engine.project import durability
        from engine.runtime import Engine
        from engine.store import Store

        self.store = await Store.open(self.db_path, durability=durability(self.project))
        # the screens read through their own read-only connection: reads never wait behind commits
        self.reader = await Store.open(self.db_path, readonly=True)
        self.engine = Engine(self.store, agent_override=self.agent_override)
        self.view = Engine(self.reader)
        self.engine.bus.subscribe(self._on_bus)
        self.last_seq = await self.reader.last_event_seq()
        await self.reader.changed()
        self._follower = asyncio.create_task(self._follow(), name="smithers follower")
        self.ready.set()

    # --- live events -------------------------------------------------------------------------
    def _on_bus(self, ev: Event) -> None:
        """Agent output of steps running here, as it happens (tokens are never stored)."""
        if ev.type == "agent" and (ev.seq == 0 or ev.data.get("kind") == "prompt"):
            self.agents.feed(ev)

    async def _follow(self) -> None:
        """Read what was written (here or by another process) by sequence number; tell every screen."""
        assert self.reader is not None
        while not self._closed:
            await asyncio.sleep(self.poll)
            try:
                if not await self.reader.changed():
                    continue
                while True:
                    evs = await self.reader.events(after=self.last_seq, limit=5000)
                    if evs:
                        self.last_seq = evs[-1].seq
                    for ev in evs:  # agents of runs executed here come live from the bus instead
                        if ev.type == "agent" and ev.run_id not in self.local_runs:
                            self.agents.feed(ev)
                    self.app.broadcast(evs)
                    if len(evs) < 5000:
                        break
            except asyncio.CancelledError:
                raise
            except Exception as e:  # a transient database error must not stop following
                log.warning("follower: %s", e)

    # --- engines -------------------------------------------------------------------------------
    def engine_for(self, demo: bool) -> Engine:
        assert self.engine is not None and self.store is not None
        if not demo or self.agent_override == "demo":
            return self.engine
        if self._demo is None:
            from engine.runtime import Engine

            self._demo = Engine(self.store, agent_override="demo")
            self._demo.bus = self.engine.bus
        return self._demo

    def wants_demo(self, run_id: str) -> bool:
        return run_id in self.demo_runs or self.model_configured is False

    def check_model(self) -> None:
        """Is an agent model configured? (run in a thread: reads settings)"""
        from engine.agents.base import AgentUnavailable
        from engine.config import ConfigError, load_settings, resolve_agent

        try:
            agent = resolve_agent("default", load_settings(self.project))
            ok, why = agent.available()
            self.model_configured = ok
            self.model_hint = (f"agent steps use {getattr(agent, 'model', None) or agent.name}" if ok else why)
        except (AgentUnavailable, ConfigError) as e:
            self.model_configured, self.model_hint = False, str(e)

    def executing(self, run_id: str) -> bool:
        return run_id in self.tasks

    def execute(self, eng: Engine, ex: Any) -> None:
        self.run_engine[ex.run_id] = eng
        self.local_runs.add(ex.run_id)
        self.tasks[ex.run_id] = asyncio.create_task(self._execute(ex), name=f"run {ex.run_id}")

    async def _execute(self, ex: Any) -> None:
        from engine.errors import SmithersError

        rid = ex.run_id
        try:
            status = await ex.execute(stop_when_waiting=False)
            if status == "finished" and ex.continued_as and not self._closed:  # ContinueAsNew: go on with the next
                eng = self.run_engine.get(rid, self.engine)
                assert eng is not None
                if rid in self.demo_runs:
                    self.demo_runs.add(ex.continued_as)
                self.execute(eng, await eng.resume(ex.continued_as, nested=True))
                self.app.notify(f"run {rid} continued as {ex.continued_as}", timeout=6)
                return
            if rid not in self.quiet_end and not self._closed:
                sev = "information" if status == "finished" else "warning" if status == "cancelled" else "error"
                msg = f"run {rid} {status}"
                if status == "failed" and ex.error:
                    msg += f": {ex.error}"
                self.app.notify(msg, severity=sev, timeout=6)  # type: ignore[arg-type]
        except asyncio.CancelledError:
            raise
        except SmithersError as e:
            self.app.notify(f"run {rid}: {e}", severity="error", timeout=10)
        except Exception as e:
            log.exception("run %s", rid)
            self.app.notify(f"run {rid} stopped: {type(e).__name__}: {e}; `smithers resume {rid}` continues it",
                            severity="error", timeout=10)
        finally:
            self.tasks.pop(rid, None)
            self.run_engine.pop(rid, None)

    # --- what the screens ask for --------------------------------------------------------------
    async def start(self, wf: Any, target: str, data: Any, *, demo: bool, run_id: str | None = None) -> str:
        eng = self.engine_for(demo)
        ex = await eng.start(wf, target, data, run_id=run_id or self.new_id(), workdir=self.project)
        if demo:
            self.demo_runs.add(ex.run_id)
        self.execute(eng, ex)
        return ex.run_id

    async def queue(self, wf: Any, target: str, data: Any, *, demo: bool) -> Any:
        """A detached run: queued for a worker (engine.runtime.Queued: its id, how many workers run)."""
        q = await self.engine_for(demo).queue(wf, target, data, run_id=self.new_id(), workdir=self.project)
        if demo:
            self.demo_runs.add(q.run_id)
        return q

    async def resume(self, run_id: str) -> None:
        if run_id in self.tasks:
            return
        eng = self.engine_for(self.wants_demo(run_id))
        ex = await eng.resume(run_id)
        self.execute(eng, ex)

    async def decide(self, run_id: str, node: str, iteration: int, approved: bool, note: str | None = None, *,
                     choice: str | None = None, rank: list[str] | None = None) -> str:
        assert self.engine is not None
        eng = self.run_engine.get(run_id, self.engine)
        d = await eng.decide(run_id, node, iteration, approved, note=note or None,
                             resume=run_id not in self.tasks, choice=choice, rank=rank)
        return await self._decided(eng, run_id, d, f"gate {key_label(node, iteration)}")

    async def answer(self, run_id: str, node: str, iteration: int, data: Any, note: str | None = None) -> str:
        """Answer a human task (the data must fit its model)."""
        assert self.engine is not None
        eng = self.run_engine.get(run_id, self.engine)
        d = await eng.answer(run_id, node, iteration, data, note=note or None, resume=run_id not in self.tasks)
        return await self._decided(eng, run_id, d, f"human task {key_label(node, iteration)}")

    async def answer_model(self, run_id: str, node: str) -> Any:
        """The model of a human task's answer (the form is generated from it)."""
        assert self.engine is not None
        return await self.engine.answer_model(run_id, node)

    async def _decided(self, eng: Engine, run_id: str, d: Any, what: str) -> str:
        assert self.store is not None
        said = f"{what} of run {run_id} {d.gate.decision}"
        if d.executor is not None:
            self.execute(eng, d.executor)
            return f"{said}; continuing the run here"
        run = await self.store.get_run(run_id)
        if run_id not in self.tasks and d.owner_alive and run.owner is not None:
            return f"{said}; its owner (pid {run.owner.pid} on {run.owner.host}) goes on with it"
        return said

    async def cancel(self, run_id: str) -> str:
        assert self.engine is not None
        return await self.run_engine.get(run_id, self.engine).cancel(run_id)

    async def fork(self, run_id: str, frame: int | None, *, input: Any = None, reset: Any = ()) -> dict[str, Any]:
        assert self.engine is not None
        info = await self.engine.fork(run_id, frame, input=input, reset=reset, new_id=self.new_id())
        return await self._continue(run_id, info)

    async def rewind(self, run_id: str, frame: int) -> dict[str, Any]:
        assert self.engine is not None
        self.quiet_end.add(run_id)
        info = await self.run_engine.get(run_id, self.engine).rewind(run_id, frame, new_id=self.new_id())
        return await self._continue(run_id, info)

    async def replay(self, run_id: str, frame: int) -> dict[str, Any]:
        assert self.engine is not None
        info = await self.engine.replay(run_id, frame, new_id=self.new_id())
        return await self._continue(run_id, info)

    async def _continue(self, parent: str, info: Any) -> dict[str, Any]:
        if parent in self.demo_runs:
            self.demo_runs.add(info.run_id)
        await self.resume(info.run_id)
        return dict(info.model_dump())

    async def report(self, run_id: str, frame: int | None = None) -> dict[str, Any]:
        """What `show --json` prints (as of a frame: the past only), read on the reader."""
        assert self.view is not None
        rep = await self.view.report(run_id, frame)
        if run_id in self.tasks and frame is None and rep.status == "interrupted":
            rep.status = "running"
        return rep.json_dict()

    async def close(self) -> None:
        """Stop runs executing here, leaving them resumable; close both connections."""
        if self._closed:
            return
        self._closed = True
        if self._follower:
            self._follower.cancel()
        for eng in {e for e in (self.engine, self._demo) if e is not None}:
            try:
                await eng.close()
            except Exception as e:
                log.warning("engine close: %s", e)
        for t in list(self.tasks.values()):
            t.cancel()
        if self.tasks:
            await asyncio.gather(*self.tasks.values(), return_exceptions=True)
        for s in (self.store, self.reader):
            if s is not None:
                await s.close()


class SmithersApp(App[int]):
    """`smithers` with no command: runs, launcher, run view with time travel, agents, approvals."""

    CSS_PATH = "app.tcss"
    TITLE = "Smithers"
    COMMANDS = App.COMMANDS | {SmithersCommands}
    BINDINGS = [
        Binding("q", "quit", "Quit", id="quit"),
        Binding("question_mark,f1", "help", "Keys", id="help"),
        Binding("ctrl+p", "command_palette", "Commands", show=False, id="palette", priority=True),
        Binding("colon", "command_palette", "Commands", show=False, id="palette.colon"),
        Binding("a", "inbox", "Approvals", show=False, id="inbox"),
    ]

    def __init__(self, db_path: Path | str, *, project: Path | str | None = None, clock: Clock | None = None,
                 agent_override: str | None = None, new_id: Callable[[], str | None] | None = None,
                 keymap: dict[str, str] | None = None, poll: float = 0.2) -> None:
        super().__init__()
        self.project = Path(project or Path.cwd()).resolve()
        self.clock = clock or Clock()
        # a database URL (PostgreSQL) is passed on as it is; a path is a Path
        self.host = Host(self, db_path if "://" in str(db_path) else Path(db_path), self.project, agent_override,
                         new_id, poll)
        self._keymap_override = keymap
        self._workflows: dict[str, tuple[Any, str]] | None = None
        self._wf_cache: dict[str, Any] = {}
        self.later: set[tuple[str, str, int]] = set()  # gates the user chose to decide later

    def on_mount(self) -> None:
        from .screens.runs import RunsScreen

        if self._keymap_override is not None:
            self.set_keymap(self._keymap_override)
        self.push_screen(RunsScreen())  # painted at once; it fills in when the database is open
        self.run_worker(self._boot(), group="boot")

    async def _boot(self) -> None:
        from engine.errors import SmithersError

        try:
            await self.host.open()
        except SmithersError as e:
            self.notify(str(e), severity="error", timeout=30)
            return
        # What exists now (modules, the first screen) lives as long as the app: keep it out of the
        # cyclic collector, whose full passes otherwise stall key presses while agents stream.
        gc.freeze()
        self.run_worker(self._load_settings, thread=True, group="settings", exit_on_error=False)

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

    # --- helpers for screens -------------------------------------------------------------------
    def broadcast(self, events: list["Event"]) -> None:
        for screen in self.screen_stack:
            screen.post_message(StoreChanged(events))

    async def attempt(self, work: Awaitable[T]) -> T | None:
        """Await engine work; a failure becomes a one-line notification, never a crash."""
        from engine.errors import SmithersError

        try:
            return await work
        except SmithersError as e:
            self.notify(str(e), severity="error", timeout=10)
        except Exception as e:
            log.exception("app action")
            self.notify(f"{type(e).__name__}: {e}", severity="error", timeout=10)
        return None

    def open_run(self, run_id: str, *, replace: bool = False) -> None:
        from .screens.run import RunScreen

        if replace:
            self.switch_screen(RunScreen(run_id))
        else:
            self.push_screen(RunScreen(run_id))

    def workflows(self) -> dict[str, tuple[Any, str]]:
        """Built-in and project workflows (imports them: call from a thread). Cached."""
        if self._workflows is None:
            from .targets import all_workflows

            self._workflows = all_workflows(self.project)
        return self._workflows

    def workflow_for(self, target: str) -> Any:
        """The workflow a run recorded (loads its module: call from a thread). Cached per target."""
        if target not in self._wf_cache:
            from engine.loader import load_target

            self._wf_cache[target] = load_target(target)[0]
        return self._wf_cache[target]

    def workflow_names(self) -> list[tuple[str, str]]:
        return [(name, wf.description) for name, (wf, _t) in sorted(self.workflows().items())]

    async def decide_from_palette(self, run_id: str, node: str, iteration: int, approved: bool) -> None:
        said = await self.attempt(self.host.decide(run_id, node, iteration, approved))
        if said:
            self.notify(said)

    # --- actions -------------------------------------------------------------------------------
    def action_new_run(self, workflow: str | None = None) -> None:
        from .screens.launcher import LauncherScreen

        self.push_screen(LauncherScreen(workflow))

    def action_help(self) -> None:
        from .screens.help import HelpScreen

        if isinstance(self.screen, HelpScreen):
            self.pop_screen()
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
                   f"resumable: `smithers resume RUN_ID`, or open the app again and resume them.")

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

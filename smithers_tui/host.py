"""The engine, hosted in the app's event loop.

`Host` owns the engine side of the app: one Engine on its own connection (the per-run agent
override lives in each run's meta, so demo runs and model runs share it), a second connection the
screens read through (its PRAGMA data_version tells when anything - this process or another -
wrote), the tasks executing runs here, and the follower that reads new events by sequence number
and hands them to the app, which tells every screen (`StoreChanged`).
"""
from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from .widgets.agent_pane import AgentHub
from .widgets.fmt import key_label

if TYPE_CHECKING:  # the engine is imported after the first paint (Host.open)
    from engine.dsl import WorkflowDef
    from engine.events import Event
    from engine.run import RunExecutor
    from engine.runtime import Engine
    from engine.store import Store

log = logging.getLogger("smithers.app")

Notify = Callable[[str, str], None]  # message, severity
Broadcast = Callable[[set[str]], None]  # the runs with new events (none: something else changed)


class Host:
    """Starts, resumes, decides, cancels, forks, rewinds and replays runs for the screens."""

    def __init__(self, db_path: Path, project: Path, agent_override: str | None, *, notify: Notify,
                 broadcast: Broadcast, new_id: Callable[[], str | None] | None = None, poll: float = 0.2) -> None:
        self.db_path, self.project = db_path, project
        self.agent_override = agent_override
        self.notify, self.broadcast = notify, broadcast
        self.new_id = new_id or (lambda: None)
        self.poll = poll
        self._store: Store | None = None
        self._reader: Store | None = None
        self._engine: Engine | None = None
        self.tasks: dict[str, asyncio.Task[Any]] = {}
        self.local_runs: set[str] = set()  # runs executed (at some point) by this app
        self.quiet_end: set[str] = set()
        self.model_configured: bool | None = None
        self.model_hint = ""
        self.agents = AgentHub()
        self.last_seq = 0
        self._closed = False
        self._follower: asyncio.Task[None] | None = None
        self.ready = asyncio.Event()

    @property
    def reader(self) -> Store:
        """The connection screens read through (open once `ready` is set)."""
        assert self._reader is not None, "the database is not open yet: await host.ready first"
        return self._reader

    @property
    def engine(self) -> Engine:
        assert self._engine is not None, "the database is not open yet: await host.ready first"
        return self._engine

    async def open(self) -> None:
        from engine.runtime import Engine
        from engine.store import Store
        from engine.store.shared import open_shared

        self._store = await Store.open(self.db_path)
        self._reader = await open_shared(self.db_path)  # a 2nd Store.open would drop the 1st one's file locks
        self._engine = Engine(self._store, agent_override=self.agent_override)
        self._engine.bus.subscribe(self._on_bus)
        self.last_seq = await self._reader.last_event_seq()
        await self._reader.changed()
        self._follower = asyncio.create_task(self._follow(), name="smithers follower")
        self.ready.set()

    # --- live events -------------------------------------------------------------------------
    def _on_bus(self, ev: Event) -> None:
        """Agent output of steps running here, as it happens (tokens are never stored)."""
        if ev.type == "agent" and (ev.seq == 0 or ev.data.get("kind") == "prompt"):
            self.agents.feed(ev)

    async def _follow(self) -> None:
        """Notice what was written (here or by another process): which runs have new events, and
        the agent output of runs executed elsewhere (the ones executed here come from the bus).
        Only the heads of events are read — a run committing thousands of frames a second costs
        the app a small read every poll, not one parsed event each."""
        reader = self.reader
        while not self._closed:
            await asyncio.sleep(self.poll)
            try:
                if not await reader.changed():
                    continue
                heads = await reader.fetchall("SELECT seq, run_id, type FROM events WHERE seq>? ORDER BY seq",
                                              (self.last_seq,))
                if heads:
                    first, self.last_seq = self.last_seq, heads[-1]["seq"]
                    remote = {h["run_id"] for h in heads if h["type"] == "agent" and h["run_id"] not in self.local_runs}
                    if remote:
                        for ev in await reader.events(after=first, limit=len(heads)):
                            if ev.type == "agent" and ev.run_id in remote:
                                self.agents.feed(ev)
                self.broadcast({h["run_id"] for h in heads})
            except asyncio.CancelledError:
                raise
            except Exception as e:  # a transient database error (disk busy, locked) must not stop following
                log.warning("follower: %s", e)

    # --- models --------------------------------------------------------------------------------
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

    # --- executing -----------------------------------------------------------------------------
    def executing(self, run_id: str) -> bool:
        return run_id in self.tasks

    def execute(self, ex: RunExecutor) -> None:
        self.local_runs.add(ex.run_id)
        self.tasks[ex.run_id] = asyncio.create_task(self._execute(ex), name=f"run {ex.run_id}")

    async def _execute(self, ex: RunExecutor) -> None:
        from engine.errors import SmithersError

        rid = ex.run_id
        try:
            status = await ex.execute(stop_when_waiting=False)
            if rid not in self.quiet_end and not self._closed:
                sev = "information" if status == "finished" else "warning" if status == "cancelled" else "error"
                msg = f"run {rid} {status}"
                if status == "failed" and ex.error:
                    msg += f": {ex.error}"
                self.notify(msg, sev)
        except asyncio.CancelledError:
            raise
        except SmithersError as e:
            self.notify(f"run {rid}: {e}", "error")
        except Exception as e:  # the app outlives a run that crashed: say so, keep it resumable
            log.exception("run %s", rid)
            self.notify(f"run {rid} stopped: {type(e).__name__}: {e}; s on its screen resumes it", "error")
        finally:
            self.tasks.pop(rid, None)

    # --- what the screens ask for --------------------------------------------------------------
    async def start(self, wf: WorkflowDef, target: str, data: Any, *, demo: bool, run_id: str | None = None) -> str:
        ex = await self.engine.start(wf, target, data, run_id=run_id or self.new_id(), workdir=self.project,
                                     agent_override="demo" if demo else None)
        self.execute(ex)
        return ex.run_id

    async def resume(self, run_id: str, *, accept_changes: bool = False) -> None:
        if run_id in self.tasks:
            return
        ex = await self.engine.resume(run_id, accept_changes=accept_changes)
        self.execute(ex)

    async def decide(self, run_id: str, node: str, iteration: int, approved: bool, note: str | None = None) -> str:
        """Record a decision; a run nobody runs goes on here, one another live process owns is left to it."""
        from engine.lease import owner_alive

        row = await self.engine.decide(run_id, node, iteration, approved, note=note or None)
        said = f"gate {key_label(node, iteration)} of run {run_id} {row['decision']}"
        if run_id in self.tasks:
            return said
        run = await self.reader.get_run(run_id)
        if run["status"] not in ("waiting", "running"):
            return said
        if run["owner_id"] and owner_alive(run):
            return f"{said}; its owner (pid {run['owner_pid']} on {run['owner_host']}) goes on with it"
        await self.resume(run_id)
        return f"{said}; continuing the run here"

    async def cancel(self, run_id: str) -> str:
        return await self.engine.cancel(run_id)

    async def fork(self, run_id: str, frame: int | None, *, input: Any = None, reset: Any = ()) -> dict[str, Any]:
        info = await self.engine.fork(run_id, frame, input=input, reset=reset, new_id=self.new_id())
        await self.resume(info["run_id"])
        return info

    async def rewind(self, run_id: str, frame: int) -> dict[str, Any]:
        self.quiet_end.add(run_id)
        info = await self.engine.rewind(run_id, frame, new_id=self.new_id())
        await self.resume(info["run_id"])
        return info

    async def replay(self, run_id: str, frame: int) -> dict[str, Any]:
        info = await self.engine.replay(run_id, frame, new_id=self.new_id())
        await self.resume(info["run_id"])
        return info

    async def close(self) -> None:
        """Stop runs executing here, leaving them resumable; close both connections."""
        if self._closed:
            return
        self._closed = True
        if self._follower:
            self._follower.cancel()
        if self._engine is not None:
            try:
                await self._engine.close()
            except Exception as e:  # closing goes on: the connections must still be closed
                log.warning("engine close: %s", e)
        for t in list(self.tasks.values()):
            t.cancel()
        if self.tasks:
            await asyncio.gather(*self.tasks.values(), return_exceptions=True)
        for s in (self._store, self._reader):
            if s is not None:
                await s.close()

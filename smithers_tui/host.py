"""The engine, hosted in the app's event loop.

`Host` owns the engine side of the app: one Engine on its own connection (the per-run agent
override lives in each run's meta, so demo runs and model runs share it), a second, read-only
connection the screens read through (`view`, the same façade over it: reports, outlines, frames,
runs, lineage, diffs; reads never wait behind commits), the tasks executing runs here, and the
follower that notices what was written (here or by another process) and tells the app, which
tells every screen (`StoreChanged`).
"""
from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Protocol

from .widgets.agent_pane import AgentHub
from .widgets.fmt import key_label

if TYPE_CHECKING:  # the engine is imported after the first paint (Host.open)
    from engine.dsl import WorkflowDef
    from engine.events import Event
    from pydantic import BaseModel

    from engine.runtime import Decided, Engine, Queued, RunExecutor
    from engine.store import Store

log = logging.getLogger("smithers.app")

class Forked(Protocol):
    """What a fork, rewind or replay made, as the screens read it (engine.timetravel.ForkInfo)."""

    run_id: str
    carried: int
    rerun: list[str]
    input_changed: bool


Notify = Callable[[str, str], None]  # message, severity
Broadcast = Callable[[set[str]], None]  # something was written; the runs whose agents spoke


class Host:
    """Starts, resumes, decides, cancels, forks, rewinds and replays runs for the screens."""

    def __init__(self, db_path: Path | str, project: Path, agent_override: str | None, *, notify: Notify,
                 broadcast: Broadcast, new_id: Callable[[], str | None] | None = None, poll: float = 0.2) -> None:
        self.db_path, self.project = db_path, project
        self.agent_override = agent_override
        self.notify, self.broadcast = notify, broadcast
        self.new_id = new_id or (lambda: None)
        self.poll = poll
        self._store: Store | None = None
        self._reader: Store | None = None
        self._engine: Engine | None = None
        self._view: Engine | None = None
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
    def store(self) -> Store:
        """The engine's own connection (the one that writes)."""
        assert self._store is not None, "the database is not open yet: await host.ready first"
        return self._store

    @property
    def engine(self) -> Engine:
        assert self._engine is not None, "the database is not open yet: await host.ready first"
        return self._engine

    @property
    def view(self) -> Engine:
        """The engine's façade over the read-only connection: what the screens show."""
        assert self._view is not None, "the database is not open yet: await host.ready first"
        return self._view

    async def open(self) -> None:
        from engine.project import durability
        from engine.runtime import Engine
        from engine.store import Store

        self._store = await Store.open(self.db_path, durability=durability(self.project))
        self._reader = await Store.open(self.db_path, readonly=True)  # reads never wait behind commits
        self._engine = Engine(self._store, agent_override=self.agent_override)
        self._view = Engine(self._reader)
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
        """Notice what was written (here or by another process) and tell the app; feed the agent
        panes what agents of runs executed elsewhere said (those executed here come from the bus).
        Only agent events are read: a run committing thousands of frames a second costs the app one
        small read per poll, and each screen reads what concerns it."""
        reader = self.reader
        while not self._closed:
            await asyncio.sleep(self.poll)
            try:
                if not await reader.changed():
                    continue
                upto = await reader.last_event_seq()
                runs: set[str] = set()
                for ev in await reader.events(after=self.last_seq, types=["agent"], limit=20000):
                    if ev.seq <= upto and ev.run_id not in self.local_runs:
                        self.agents.feed(ev)
                        runs.add(ev.run_id)
                self.last_seq = upto
                self.broadcast(runs)
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
            if status == "finished" and ex.continued_as and not self._closed:  # ContinueAsNew: go on with the next
                self.execute(await self.engine.resume(ex.continued_as, nested=True))
                self.notify(f"run {rid} continued as {ex.continued_as}", "information")
                return
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

    async def queue(self, wf: WorkflowDef, target: str, data: Any, *, demo: bool) -> Queued:
        """A detached run: queued for a worker (its id, how many workers run)."""
        return await self.engine.queue(wf, target, data, run_id=self.new_id(), workdir=self.project,
                                       agent_override="demo" if demo else None)

    async def resume(self, run_id: str, *, accept_changes: bool = False) -> None:
        if run_id in self.tasks:
            return
        ex = await self.engine.resume(run_id, accept_changes=accept_changes)
        self.execute(ex)

    async def decide(self, run_id: str, node: str, iteration: int, approved: bool, note: str | None = None, *,
                     choice: str | None = None, rank: list[str] | None = None) -> str:
        """Record a decision (a select gate's `choice`, a rank gate's `rank`); a run nobody runs goes on
        here, one another live process owns is left to it."""
        d = await self.engine.decide(run_id, node, iteration, approved, note=note or None,
                                     resume=run_id not in self.tasks, choice=choice, rank=rank)
        return await self._decided(run_id, d, f"gate {key_label(node, iteration)}")

    async def answer(self, run_id: str, node: str, iteration: int, data: Any, note: str | None = None) -> str:
        """Answer a human task (the data must fit its model)."""
        d = await self.engine.answer(run_id, node, iteration, data, note=note or None,
                                     resume=run_id not in self.tasks)
        return await self._decided(run_id, d, f"human task {key_label(node, iteration)}")

    async def answer_model(self, run_id: str, node: str) -> type[BaseModel]:
        """The model of a human task's answer (the form is generated from it)."""
        return await self.engine.answer_model(run_id, node)

    async def _decided(self, run_id: str, d: Decided, what: str) -> str:
        said = f"{what} of run {run_id} {d.gate.decision}"
        if d.executor is not None:
            self.execute(d.executor)
            return f"{said}; continuing the run here"
        if run_id not in self.tasks and d.owner_alive:
            run = await self.reader.get_run(run_id)
            if run.owner is not None:
                return f"{said}; its owner (pid {run.owner.pid} on {run.owner.host}) goes on with it"
        return said

    async def cancel(self, run_id: str) -> str:
        return await self.engine.cancel(run_id)

    async def fork(self, run_id: str, frame: int | None, *, input: Any = None, reset: Any = ()) -> Forked:
        info = await self.engine.fork(run_id, frame, input=input, reset=reset, new_id=self.new_id())
        await self.resume(info.run_id)
        return info

    async def rewind(self, run_id: str, frame: int) -> Forked:
        self.quiet_end.add(run_id)
        info = await self.engine.rewind(run_id, frame, new_id=self.new_id())
        await self.resume(info.run_id)
        return info

    async def replay(self, run_id: str, frame: int) -> Forked:
        info = await self.engine.replay(run_id, frame, new_id=self.new_id())
        await self.resume(info.run_id)
        return info

    async def close(self) -> None:
        """Stop runs executing here, leaving them resumable; close both connections."""
        if self._closed:
            return
        self._closed = True
        if self._follower:
            self._follower.cancel()
        for eng in (self._engine, self._view):
            if eng is not None:
                try:
                    await eng.close()
                except Exception as e:  # closing goes on: the connections must still be closed
                    log.warning("engine close: %s", e)
        for t in list(self.tasks.values()):
            t.cancel()
        if self.tasks:
            await asyncio.gather(*self.tasks.values(), return_exceptions=True)
        for s in (self._store, self._reader):
            if s is not None:
                await s.close()

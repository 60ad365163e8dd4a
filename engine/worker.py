"""Worker: a process that executes runs it did not start — queued runs, runs whose owner died,
runs whose gate was decided while nobody owned them (the rule is `Store.claim_runs`).

A worker registers itself (`smithers status` lists it), then loops: claim as many runs as it has
room for, execute each in its own task, and wait until something may have changed — the store
wakes it (a run queued, a decision, a lease given up: SQLite's data version, PostgreSQL's
NOTIFY), one of its runs ends, or SWEEP_S passes (a killed owner says nothing: its runs are found
by looking). A run is leased to exactly one worker; the lease's fencing token keeps a worker that
lost it from writing anything.

Stopping (SIGTERM, `smithers down`): no new claims, no new steps; steps in flight may finish for
GRACE_S, then they are interrupted as a crash would interrupt them. Every lease is given up, so
every run stays resumable — another worker (or the next `smithers up`) takes it at once.
"""
from __future__ import annotations

import asyncio
import time
from typing import Any, Callable

from .errors import LeaseLost, SmithersError
from .lease import HEARTBEAT_S, WORKER_PREFIX, Owner, owner_alive
from .records import WorkerRecord
from .run import RunExecutor
from .runtime import Engine
from .store import Store

SWEEP_S = 0.5  # look for runs whose owner died this often, woken or not
GRACE_S = 10.0  # a stopping worker lets the steps in flight finish for this long
DEFAULT_CONCURRENCY = 4


class Worker:
    """Executes claimed runs, at most `concurrency` at once, in this process."""

    def __init__(self, store: Store, *, concurrency: int = DEFAULT_CONCURRENCY, poll: float = 0.1,
                 agent_override: str | None = None, settings: Any = None,
                 log: Callable[[str], None] | None = None, grace: float = GRACE_S) -> None:
        self.store = store
        self.owner = Owner.me(WORKER_PREFIX)
        self.engine = Engine(store, owner=self.owner, poll_interval=poll, agent_override=agent_override,
                             settings=settings)
        self.concurrency = concurrency
        self.poll = poll
        self.grace = grace
        self.log = log or (lambda line: None)
        self.running: dict[str, asyncio.Task[None]] = {}
        self.executors: dict[str, RunExecutor] = {}
        self.executed: list[str] = []  # run ids this worker took, in order (tests, logs)
        self._wake = asyncio.Event()
        self._stop = asyncio.Event()
        self._force = False

    @property
    def id(self) -> str:
        return self.owner.id

    def record(self, now: float) -> WorkerRecord:
        o = self.owner
        return WorkerRecord(o.id, o.host, o.pid, o.started, self.concurrency, now, now)

    # --- the loop --------------------------------------------------------------------------------
    async def run(self) -> None:
        """Until stop() is called: claim, execute, wait to be woken. Then drain and deregister."""
        await self.store.register_worker(self.record(time.time()))
        await self._prune()
        sub = await self.store.subscribe(self.poll)
        helpers = [asyncio.create_task(self._relay(sub)), asyncio.create_task(self._beat())]
        self.log(f"worker {self.id} on {self.owner.host} pid {self.owner.pid}: taking runs from {self.store.where} "
                 f"({self.concurrency} at a time)")
        try:
            while not self._stop.is_set():
                self._wake.clear()
                await self._fill()
                try:
                    await asyncio.wait_for(self._wake.wait(), SWEEP_S)
                except asyncio.TimeoutError:
                    pass
        finally:
            sub.close()
            await self._drain()
            for t in helpers:
                t.cancel()
            await asyncio.gather(*helpers, return_exceptions=True)
            try:
                await self.store.unregister_worker(self.id)
            except SmithersError as e:
                self.log(f"worker {self.id}: could not deregister ({e}); `smithers status` shows it as gone")
            self.log(f"worker {self.id} stopped")

    def stop(self, *, force: bool = False) -> None:
        """Stop claiming and starting steps; let steps in flight finish (force: interrupt them now).
        Runs stay resumable."""
        self._force = self._force or force
        self._stop.set()
        self._wake.set()
        for ex in list(self.executors.values()):
            ex.request_stop() if self._force else ex.request_drain()

    async def _fill(self) -> None:
        room = self.concurrency - len(self.running)
        if room <= 0:
            return
        try:
            claimed = await self.engine.claim(room)
        except SmithersError as e:  # the database is away for longer than a reconnect: try again later
            self.log(f"worker {self.id}: cannot claim runs now: {e}")
            return
        except Exception as e:  # a bug: say it, and go on with the next wake-up
            self.log(f"worker {self.id}: claiming failed: {type(e).__name__}: {e}")
            return
        for ex in claimed:
            self.log(f"run {ex.run_id} ({ex.run.workflow}) taken at frame {ex.frame}")
            self.executed.append(ex.run_id)
            self.executors[ex.run_id] = ex
            if self._stop.is_set():  # claimed while stopping: it gives the run straight back
                ex.request_drain()
            self.running[ex.run_id] = asyncio.create_task(self._execute(ex), name=f"run {ex.run_id}")

    async def _execute(self, ex: RunExecutor) -> None:
        try:
            status, last = await self.engine.execute(ex, stop_when_waiting=True)  # and what it continued as
            self.log(f"run {last.run_id} {status}" + (f": {last.error}" if status == "failed" and last.error else ""))
        except LeaseLost as e:
            self.log(f"run {ex.run_id}: {e}")
        except SmithersError as e:
            self.log(f"run {ex.run_id} stopped: {e}")
        except asyncio.CancelledError:
            raise
        except Exception as e:  # a bug: the run stays resumable (its lease was given up)
            self.log(f"run {ex.run_id} stopped: {type(e).__name__}: {e}")
        finally:
            self.running.pop(ex.run_id, None)
            self.executors.pop(ex.run_id, None)
            self._wake.set()

    async def _relay(self, sub: Any) -> None:
        while True:
            if await sub.wait() is not None:
                self._wake.set()

    async def _beat(self) -> None:
        """The registry entry stays fresh; if someone pruned it (took this worker for dead), it comes back."""
        while True:
            await asyncio.sleep(HEARTBEAT_S)
            try:
                if not await self.store.worker_heartbeat(self.id, time.time()):
                    await self.store.register_worker(self.record(time.time()))
            except SmithersError:
                pass  # the next beat tries again

    async def _prune(self) -> None:
        """Registry entries of workers that died without a word go (their runs are claimed anyway)."""
        now = time.time()
        for w in await self.store.workers():
            if w.id != self.id and not owner_alive(w.as_owner(), now):
                await self.store.unregister_worker(w.id)

    async def _drain(self) -> None:
        if not self.running:
            return
        self.log(f"worker {self.id}: stopping; {len(self.running)} run(s) finish their steps in flight")
        _, pending = await asyncio.wait(list(self.running.values()), timeout=self.grace)
        if pending:
            self.log(f"worker {self.id}: interrupting {len(pending)} run(s) after {self.grace:g} s")
            for ex in list(self.executors.values()):
                ex.request_stop()
            await asyncio.wait(pending, timeout=30)
        await self.engine.close()

"""The Store interface: the only door to the database. Every implementation (SQLite, the
embedded default; PostgreSQL for many workers on many hosts) returns the typed records of
`engine.records` and passes the same conformance suite (tests/store/).

Rules every implementation keeps:
- One commit = one frame = one transaction: `commit()` writes a transition's node rows, outputs,
  attempts, approvals, events and frame together, or nothing.
- Writes of a run are fenced by its owner id: a commit or heartbeat from a process that no longer
  holds the lease writes nothing (`LeaseLost`).
- Writers wait for each other; they never fail because another process is writing.
- Reads never write, and a read that spans tables sees one consistent snapshot.
- Every change of ownership bumps the run's lease token (`RunRecord.lease`, the fencing token):
  writes that carry a token write nothing unless it is still the run's.
- Which runs a worker may take is decided in one place, `claim_runs`.
"""
from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any, Iterable, Sequence

from ..errors import BadInput
from ..events import Event
from ..frame import Delta
from ..records import (ApprovalRecord, AttemptRecord, CacheEntry, FrameRecord, FrameState, NewRun, OutputRecord,
                       ReportData, RunRecord, RunStats, SignalRecord, Totals, WaitRecord, Wake, WorkerRecord)
from ..state import Key, NodeRecord, RunState

if TYPE_CHECKING:
    from ..lease import Owner
    from ..timetravel import ForkPlan


class Subscription:
    """Wake-ups for one consumer (a worker's loop, an engine's watcher): `wait()` returns what
    changed, or None after `timeout` with nothing new. Wake-ups that arrive between two waits are
    kept and merged, never lost."""

    def __init__(self, store: "Store", poll: float) -> None:
        self.store, self.poll = store, poll
        self._event = asyncio.Event()
        self._runs: set[str] | None = set()

    def notify(self, runs: Iterable[str] | None) -> None:
        if runs is None or self._runs is None:
            self._runs = None
        else:
            self._runs.update(runs)
        self._event.set()

    async def wait(self, timeout: float | None = None) -> Wake | None:
        if not self._event.is_set():
            try:
                await asyncio.wait_for(self._event.wait(), timeout)
            except asyncio.TimeoutError:
                return None
        self._event.clear()
        runs, self._runs = self._runs, set()
        return Wake(None if runs is None else frozenset(runs))

    def close(self) -> None:
        self.store._unsubscribe(self)


class Store(ABC):
    """Async access to one database, used by one event loop."""

    #: what to call this database in messages (a path, or a URL without its password)
    where: str = ""
    _subs: list[Subscription]
    _watcher: "asyncio.Task[None] | None" = None

    # --- lifecycle -----------------------------------------------------------------------------
    @classmethod
    async def open(cls, where: Any, *, create: bool = True, readonly: bool = False,
                   durability: str = "full", inline: bool = False) -> "Store":
        """The store for a path or URL (see engine.store.open_store)."""
        from . import open_store

        return await open_store(where, create=create, readonly=readonly, durability=durability, inline=inline)

    @abstractmethod
    async def close(self) -> None: ...

    async def __aenter__(self) -> "Store":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    @abstractmethod
    async def data_version(self) -> int:
        """A number that changes whenever another connection commits: compare it with the last one
        you saw to know whether to look again. Cheap enough to poll a few times a second."""

    async def changed(self) -> bool:
        """Has another connection committed since this Store's last call? (one consumer per Store)"""
        v = await self.data_version()
        seen = getattr(self, "_seen_version", None)
        self._seen_version = v
        return v != seen

    # --- wake-ups ------------------------------------------------------------------------------
    async def subscribe(self, poll: float = 0.25) -> Subscription:
        """Wake-ups when another process writes what may concern a worker or a run's owner: a run
        queued, a decision recorded, a cancel requested, a lease given up. This implementation
        polls `data_version` every `poll` seconds (the smallest any subscriber asked for) and
        cannot tell which runs changed; a store with notifications (PostgreSQL's LISTEN/NOTIFY)
        overrides `_watch` and names them."""
        if not hasattr(self, "_subs"):
            self._subs = []
        sub = Subscription(self, poll)
        self._subs.append(sub)
        if self._watcher is None or self._watcher.done():
            self._watcher = asyncio.create_task(self._watch(), name=f"store watcher {self.where}")
        return sub

    def _unsubscribe(self, sub: Subscription) -> None:
        if sub in getattr(self, "_subs", ()):
            self._subs.remove(sub)
        if not getattr(self, "_subs", None) and self._watcher is not None:
            self._watcher.cancel()
            self._watcher = None

    def _wake(self, runs: Iterable[str] | None) -> None:
        runs = None if runs is None else list(runs)
        for sub in list(getattr(self, "_subs", ())):
            sub.notify(runs)

    async def _watch(self) -> None:
        """Poll data_version; wake every subscriber when it moves (and once at the start: what was
        written before the first poll is not missed)."""
        seen = await self.data_version()
        self._wake(None)
        while getattr(self, "_subs", None):
            await asyncio.sleep(min(s.poll for s in self._subs))
            try:
                version = await self.data_version()
            except Exception:  # a transient database error: the next poll tries again
                continue
            if version != seen:
                seen = version
                self._wake(None)

    async def _stop_watching(self) -> None:
        """Called by close(): subscriptions end."""
        self._subs = []
        if self._watcher is not None:
            self._watcher.cancel()
            try:
                await self._watcher
            except BaseException:
                pass
            self._watcher = None

    # --- runs ----------------------------------------------------------------------------------
    @abstractmethod
    async def get_run(self, run_id: str) -> RunRecord:
        """The run, or RunNotFound saying how to find one."""

    @abstractmethod
    async def run_exists(self, run_id: str) -> bool: ...

    @abstractmethod
    async def find_run(self, prefix: str) -> str:
        """A run id from an unambiguous prefix (RunNotFound otherwise)."""

    @abstractmethod
    async def list_runs(self, status: str | None = None, limit: int = 500) -> list[RunRecord]:
        """Newest first. `status` filters on the stored status."""

    @abstractmethod
    async def child_runs(self, run_id: str) -> list[RunRecord]:
        """Forks, rewinds and replays made from this run, oldest first."""

    @abstractmethod
    async def run_stats(self, run_ids: Iterable[str]) -> dict[str, RunStats]:
        """Steps done of known, steps running, open gates and usage, per run."""

    @abstractmethod
    async def totals(self) -> Totals:
        """Counts over every run (for metrics), read in one snapshot."""

    # --- writing a run -------------------------------------------------------------------------
    @abstractmethod
    async def create_run(self, run: NewRun, owner: "Owner | None", now: float) -> None:
        """The run row, its frame 0 and keyframe, and its run_started event (BadInput if the id exists).
        With an owner the run is leased to it; without, it waits for one (queued)."""

    @abstractmethod
    async def take_over(self, run_id: str, owner: "Owner", expect_owner: str | None, changes: dict[str, Any],
                        now: float) -> int | None:
        """Lease the run to `owner` if its owner id is still `expect_owner` (atomic); apply `changes`
        (run columns) in the same write. Returns the new lease token (the fencing token every write
        of this lease carries), or None if someone else got there first."""

    @abstractmethod
    async def commit(self, run_id: str, owner_id: str, frame: int, delta: Delta, now: float,
                     keyframe: dict[str, Any] | None = None, *, token: int | None = None) -> int:
        """Write one frame. Returns the sequence number of its last event (its events are numbered
        up to it, in order). Raises LeaseLost (writing nothing) when `owner_id` no longer holds the run
        or, with a `token`, when the lease was taken again since (even by the same owner id).
        A delta that gives the lease up (`owner_id` None) wakes subscribers: a worker may take it."""

    @abstractmethod
    async def heartbeat(self, run_id: str, owner_id: str, now: float, *, token: int | None = None) -> bool:
        """Refresh the lease; False if this owner (with this token) lost it."""

    @abstractmethod
    async def release(self, run_id: str, owner_id: str, *, token: int | None = None) -> None:
        """Give the lease up (the run stays as it is, resumable; a worker may take it)."""

    @abstractmethod
    async def request_cancel(self, run_id: str) -> None:
        """Ask the run's owner, wherever it is, to cancel it (it is woken)."""

    @abstractmethod
    async def cancel_requested(self, run_id: str) -> bool: ...

    @abstractmethod
    async def insert_fork(self, plan: "ForkPlan", now: float) -> None:
        """A fork, rewind or replay in one transaction: the new run, every node and output carried
        from the parent's frame, its frame 0; for a rewind the parent marked rewound."""

    # --- reading a run -------------------------------------------------------------------------
    @abstractmethod
    async def load_state(self, run_id: str) -> RunState:
        """The run's latest nodes and outputs."""

    @abstractmethod
    async def state_at(self, run_id: str, frame: int) -> FrameState:
        """The run exactly as of frame N (nodes, outputs, status)."""

    @abstractmethod
    async def outputs_at(self, run_id: str, frame: int, node: Key | None = None) -> dict[Key, OutputRecord]:
        """Every output written at a frame <= N (or that of one node), with what it depended on."""

    @abstractmethod
    async def report_data(self, run_id: str, frame: int | None = None) -> ReportData:
        """The run, its nodes and outputs (latest, or as of a frame), attempts and approvals, read
        in one read transaction."""

    @abstractmethod
    async def node_records(self, run_id: str, node_id: str) -> dict[int, NodeRecord]:
        """Every iteration of one node, latest records."""

    @abstractmethod
    async def frames(self, run_id: str, since: int = 0) -> list[FrameRecord]:
        """Frames number >= since, in order."""

    @abstractmethod
    async def events(self, run_id: str | None = None, after: int = 0, limit: int = 10000, *,
                     node: Key | None = None, types: Sequence[str] | None = None,
                     newest: bool = False) -> list[Event]:
        """Stored events with seq > after, in order (of one run, one node, some types); with newest,
        the last `limit` of them (still in order)."""

    @abstractmethod
    async def last_event_seq(self) -> int: ...

    @abstractmethod
    async def attempts(self, run_id: str, node: Key | None = None) -> list[AttemptRecord]:
        """Every attempt of the run (or of one node), in the order they started."""

    # --- approvals -----------------------------------------------------------------------------
    @abstractmethod
    async def approvals(self, run_id: str | None = None, open_only: bool = True) -> list[ApprovalRecord]:
        """Gates (of one run or all); open_only: undecided gates of runs that are running or waiting."""

    @abstractmethod
    async def decide(self, run_id: str, node_id: str, iteration: int, approved: bool, by: str,
                     note: str | None, now: float, *, answer: Any = None,
                     decision: str | None = None) -> tuple[bool, ApprovalRecord]:
        """Record a decision once: (True, gate) for the first writer, (False, the gate as decided)
        after. The decision is in the event log at once. `answer` is a choice, a ranking or a human
        task's answer; `decision` overrides the word recorded (`answered`, `timed_out`)."""

    @abstractmethod
    async def decided_unapplied(self, run_id: str) -> list[ApprovalRecord]:
        """Decisions recorded that the run has not acted on yet."""

    # --- signals -------------------------------------------------------------------------------
    @abstractmethod
    async def send_signal(self, run_id: str, name: str, payload: Any, by: str | None, now: float) -> SignalRecord:
        """Record a signal for a run that is queued, running or waiting (checked in the same
        transaction: BadInput, writing nothing, for a run that has ended). In the event log at once."""

    @abstractmethod
    async def signals(self, run_id: str, pending_only: bool = False) -> list[SignalRecord]:
        """Signals sent to the run, oldest first; pending_only: those no step has taken yet."""

    async def _signal_sent(self, run_id: str, run: Any, record: SignalRecord | None) -> SignalRecord:
        """After a signal's write transaction: its record, or why nothing was sent (an unknown run, or
        `run` (its row) in a status that takes no signals)."""
        if run is None:
            await self.get_run(run_id)  # raises the not-found error
        if record is None:
            raise BadInput(f"run {run_id} is {run['status']}: it takes no more signals (only queued, running or "
                           "waiting runs do); nothing was sent")
        return record

    # --- waits, timers and the cache -----------------------------------------------------------
    @abstractmethod
    async def open_waits(self, run_id: str | None = None) -> list[WaitRecord]:
        """Steps in a durable wait (signals, timers, parked sub-workflows) of runs that are running or
        waiting."""

    @abstractmethod
    async def wakeable_runs(self, now: float, limit: int = 100) -> list[RunRecord]:
        """Waiting runs something could move on now: a timer or timeout came due (wake_at <= now), a
        signal is pending, or a decision or answer is recorded but not applied. Owners are not
        checked here: whoever claims a run checks its lease."""

    @abstractmethod
    async def cache_get(self, node_id: str, key: str, version: str) -> CacheEntry | None:
        """The cached output of a step (node id, key, version), or None."""

    @abstractmethod
    async def usage_by_node(self, run_id: str) -> dict[Key, tuple[int, float]]:
        """Tokens (in + out) and USD per step, summed over its attempts (for budgets)."""

    # --- workers -------------------------------------------------------------------------------
    @abstractmethod
    async def claim_runs(self, owner: "Owner", limit: int, now: float) -> list[RunRecord]:
        """THE rule of which runs a worker may take, applied atomically (each run goes to exactly one
        claimant however many workers ask at once). Leases up to `limit` of them to `owner`, oldest
        first, and returns them as they are now (status `running`, lease token bumped, the same
        transaction). A worker may claim:

        - a `queued` run (started detached, or a fork): nobody has run it yet;
        - a `running` run whose owner is gone: nobody holds its lease, or its holder's process is
          gone from this host, or its holder on another host has not beaten for STALE_AFTER_S
          (`lease.claimable_owner`);
        - a `waiting` run nobody (alive) holds that something can move on now: a decision or an
          answer recorded but not applied, a signal pending, or a timer or timeout come due
          (`wake_at` <= now) — what `wakeable_runs` lists, with the lease judged here.

        Further reasons to wake a run are added here, to this one method of each store, and
        nowhere else."""

    @abstractmethod
    async def register_worker(self, worker: WorkerRecord) -> None:
        """Enter a worker in the registry (or refresh its entry)."""

    @abstractmethod
    async def worker_heartbeat(self, worker_id: str, now: float) -> bool:
        """The worker is alive; False if its entry is gone (pruned as dead: register again)."""

    @abstractmethod
    async def unregister_worker(self, worker_id: str) -> None: ...

    @abstractmethod
    async def workers(self) -> list[WorkerRecord]:
        """Every registered worker, each with the active runs it holds, oldest first (dead ones
        included: judge with `lease.owner_alive(w.as_owner())`)."""

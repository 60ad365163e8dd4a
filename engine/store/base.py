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
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any, Iterable, Sequence

from ..events import Event
from ..frame import Delta
from ..records import (ApprovalRecord, AttemptRecord, CacheEntry, FrameRecord, FrameState, NewRun, OutputRecord,
                       ReportData, RunRecord, RunStats, SignalRecord, Totals, WaitRecord)
from ..state import Key, NodeRecord, RunState

if TYPE_CHECKING:
    from ..lease import Owner
    from ..timetravel import ForkPlan


class Store(ABC):
    """Async access to one database, used by one event loop."""

    #: what to call this database in messages (a path, or a URL without its password)
    where: str = ""

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
                        now: float) -> bool:
        """Lease the run to `owner` if its owner id is still `expect_owner` (atomic); apply `changes`
        (run columns) in the same write. False if someone else got there first."""

    @abstractmethod
    async def commit(self, run_id: str, owner_id: str, frame: int, delta: Delta, now: float,
                     keyframe: dict[str, Any] | None = None) -> int:
        """Write one frame. Returns the sequence number of its last event (its events are numbered
        up to it, in order). Raises LeaseLost (writing nothing) when `owner_id` no longer holds the run."""

    @abstractmethod
    async def heartbeat(self, run_id: str, owner_id: str, now: float) -> bool:
        """Refresh the lease; False if this owner lost it."""

    @abstractmethod
    async def release(self, run_id: str, owner_id: str) -> None:
        """Give the lease up (the run stays as it is, resumable)."""

    @abstractmethod
    async def request_cancel(self, run_id: str) -> None:
        """Ask the run's owner, wherever it is, to cancel it."""

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
    async def outputs_at(self, run_id: str, frame: int) -> dict[Key, OutputRecord]:
        """Every output written at a frame <= N, with what it depended on."""

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
    async def attempts(self, run_id: str) -> list[AttemptRecord]:
        """Every attempt of the run, in the order they started."""

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

"""Typed records: what the Store returns and takes. Everything above the store speaks these,
never rows or SQL. JSON columns are decoded here, once."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .frame import FrameDelta
from .state import Key, NodeRecord, RunKind, RunStatus


@dataclass(frozen=True, slots=True)
class OwnerInfo:
    """Who holds a run's lease: an owner id (the fencing token of its writes), host, pid."""

    id: str
    host: str | None
    pid: int | None
    started: float | None  # the process's start time (against pid reuse)
    heartbeat_at: float | None


@dataclass(slots=True)
class RunRecord:
    id: str
    workflow: str
    target: str  # how to load it again: module:MOD:NAME or file:PATH:NAME
    source_path: str | None
    source_hash: str | None
    input: Any
    status: RunStatus
    error: str | None
    workdir: str
    kind: RunKind
    parent_run_id: str | None
    parent_frame: int | None
    successor_run_id: str | None
    owner: OwnerInfo | None
    cancel_requested: bool
    frame: int
    created_at: float
    updated_at: float
    finished_at: float | None
    meta: dict[str, Any] = field(default_factory=dict)
    result: Any = None  # what the run produced: the output of its last step (a sub-workflow's output)
    wake_at: float | None = None  # a waiting run's next timer or timeout
    lease: int = 0  # the fencing token: bumped at every take-over; writes carry the one they hold

    @property
    def parent_step(self) -> Key | None:
        """For a sub-workflow's run: the step of its parent run that started it."""
        v = self.meta.get("parent_step")
        return (v[0], int(v[1])) if v else None

    @property
    def max_concurrency(self) -> int | None:
        v = self.meta.get("max_concurrency")
        return int(v) if v else None

    @property
    def agent_override(self) -> str | None:
        v = self.meta.get("agent_override")
        return str(v) if v else None


@dataclass(slots=True)
class NewRun:
    """What creating a run records (frame 0)."""

    id: str
    workflow: str
    target: str
    source_path: str | None
    source_hash: str | None
    input: Any
    workdir: str
    status: RunStatus = RunStatus.RUNNING
    kind: RunKind = RunKind.RUN
    meta: dict[str, Any] = field(default_factory=dict)
    parent_run_id: str | None = None
    parent_frame: int | None = None


@dataclass(slots=True)
class OutputRecord:
    value: Any
    type: str | None
    deps: dict[str, Any] | None  # fingerprint, input read?, outputs read (for forks)
    frame: int


@dataclass(slots=True)
class AttemptRecord:
    run_id: str
    node_id: str
    iteration: int
    attempt: int
    started_at: float
    finished_at: float | None = None
    outcome: str | None = None
    error: str | None = None
    agent: str | None = None
    model: str | None = None
    tokens_in: int | None = None
    tokens_out: int | None = None
    cost_usd: float | None = None
    commit_sha: str | None = None
    structured_mode: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # anything else a step runner records (session id...)

    @property
    def key(self) -> Key:
        return (self.node_id, self.iteration)


ATTEMPT_COLUMNS = ("run_id", "node_id", "iteration", "attempt", "started_at", "finished_at", "outcome", "error",
                   "agent", "model", "tokens_in", "tokens_out", "cost_usd", "commit_sha", "structured_mode")


def attempt_from(values: dict[str, Any]) -> AttemptRecord:
    """An AttemptRecord from a dict of fields; unknown fields go to `extra`."""
    known = {k: v for k, v in values.items() if k in ATTEMPT_COLUMNS}
    extra = {k: v for k, v in values.items() if k not in ATTEMPT_COLUMNS and k != "extra"}
    extra.update(values.get("extra") or {})
    return AttemptRecord(**known, extra=extra)


@dataclass(slots=True)
class FrameRecord:
    frame: int
    at: float
    delta: FrameDelta


@dataclass(slots=True)
class FrameState:
    """A run as of one frame: node records, output values, the run's status then."""

    frame: int
    nodes: dict[Key, NodeRecord]
    outputs: dict[Key, Any]
    status: str

    def __iter__(self) -> Any:
        """`nodes, outputs, status = state_at(...)`"""
        return iter((self.nodes, self.outputs, self.status))


@dataclass(slots=True)
class ApprovalRecord:
    run_id: str
    node_id: str
    iteration: int
    message: str
    on_deny: str
    requested_at: float
    frame: int
    decision: str | None  # approved | denied | None while it waits
    decided_by: str | None
    note: str | None
    decided_at: float | None
    applied: bool
    workflow: str | None = None
    mode: str = "approve"  # approve | select | rank | human (a HumanTask)
    request: dict[str, Any] = field(default_factory=dict)  # options, allowed, output (model), due
    answer: Any = None  # the choice, the ranking, or a human task's answer

    @property
    def key(self) -> Key:
        return (self.node_id, self.iteration)

    @property
    def options(self) -> list[str]:
        return list(self.request.get("options") or [])

    @property
    def allowed(self) -> list[str] | None:
        return self.request.get("allowed")


@dataclass(slots=True)
class SignalRecord:
    """A signal sent to a run: kept until a Signal step with its name takes it (first in, first out)."""

    seq: int
    run_id: str
    name: str
    payload: Any
    sent_at: float
    sent_by: str | None
    node_id: str | None = None  # the step that took it
    iteration: int | None = None
    consumed_at: float | None = None
    frame: int | None = None
    error: str | None = None  # refused when taken: it did not fit the step's model

    @property
    def pending(self) -> bool:
        return self.consumed_at is None


@dataclass(slots=True)
class CacheEntry:
    value: Any
    type: str | None
    created_at: float
    run_id: str
    node_id: str
    iteration: int


@dataclass(slots=True)
class WaitRecord:
    """A step in a durable wait (a signal, a timer, a parked sub-workflow) of a run."""

    run_id: str
    node_id: str
    iteration: int
    kind: str
    data: dict[str, Any]


@dataclass(slots=True)
class RunStats:
    """What the runs list shows beside a run: steps done of known, the step running, gates, usage."""

    done: int = 0
    known: int = 0
    running: list[Key] = field(default_factory=list)
    gates: int = 0
    tokens: int = 0
    cost_usd: float = 0.0


@dataclass(slots=True)
class Totals:
    """Counts over the whole database, for /metrics: runs by stored status, steps (task and
    approval nodes) by state, attempts by outcome (None while running), usage, open gates."""

    runs: dict[str, int] = field(default_factory=dict)
    steps: dict[str, int] = field(default_factory=dict)
    attempts: dict[str | None, int] = field(default_factory=dict)
    tokens_in: int = 0
    tokens_out: int = 0
    cost_usd: float = 0.0
    open_gates: int = 0


@dataclass(slots=True)
class ReportData:
    """Everything a run report needs, read in one read transaction (one consistent snapshot)."""

    run: RunRecord
    nodes: dict[Key, NodeRecord]
    outputs: dict[Key, Any]
    status: str
    attempts: list[AttemptRecord]
    approvals: list[ApprovalRecord]
    frame_at: float | None = None  # when the frame shown was written (past views)


@dataclass(slots=True)
class WorkerRecord:
    """A worker process in the registry (`smithers status`): where it runs and what it runs."""

    id: str  # also the owner id of every run it holds
    host: str
    pid: int
    started: float | None  # the process's start time (against pid reuse)
    concurrency: int
    started_at: float
    heartbeat_at: float
    runs: list[str] = field(default_factory=list)  # active runs it holds (filled in when listed)

    def as_owner(self) -> OwnerInfo:
        return OwnerInfo(self.id, self.host, self.pid, self.started, self.heartbeat_at)


@dataclass(frozen=True, slots=True)
class Wake:
    """What woke a subscriber: the runs concerned, or None when anything may have changed."""

    runs: frozenset[str] | None = None

    def concerns(self, run_id: str) -> bool:
        return self.runs is None or run_id in self.runs

"""Typed events: every transition publishes one. Stored with a sequence number (the row id) so
another process can follow them; fanned out in-process to subscribers after the commit."""
from __future__ import annotations

from typing import Any, Callable, Literal

from pydantic import BaseModel, Field

from .state import key_label

EventType = Literal[
    "run_started", "run_resumed", "run_finished", "run_failed", "run_cancelled", "run_waiting",
    "run_forked", "run_rewound", "run_stopped",
    "node_started", "node_finished", "node_failed", "node_retrying", "node_skipped",
    "node_interrupted", "loop_iteration", "loop_finished",
    "approval_requested", "approval_decided",
    "worktree_created", "worktree_finished", "worktree_removed", "snapshot",
    "log", "agent",
    # the durable waits, sub-workflows, error handling, cache and budgets
    "signal_sent", "signal_received", "signal_refused", "wait_started", "wait_timed_out", "timer_fired",
    "subflow_started", "subflow_finished", "failure_caught", "compensation_started", "saga_finished",
    "saga_compensated", "run_continued", "cache_hit", "budget_exceeded",
]


class Event(BaseModel):
    seq: int = 0  # global, increasing; 0 for events not stored (agent token streams)
    run_id: str
    frame: int = 0
    at: float
    type: EventType
    node_id: str | None = None
    iteration: int | None = None
    data: dict[str, Any] = Field(default_factory=dict)

    def line(self) -> str:
        """One human-readable line, for `smithers logs`."""
        import time as _t
        stamp = _t.strftime("%H:%M:%S", _t.localtime(self.at))
        node = f" {key_label(self.node_id, self.iteration or 0)}" if self.node_id else ""
        detail = " ".join(f"{k}={_short(v)}" for k, v in self.data.items())
        return f"{stamp} #{self.frame:<4} {self.type:<18}{node} {detail}".rstrip()


def _short(v: Any) -> str:
    s = v if isinstance(v, str) else repr(v)
    s = s.replace("\n", " ")
    return s if len(s) <= 120 else s[:117] + "..."


Subscriber = Callable[[Event], None]


class EventBus:
    """In-process fan-out. Subscribers are called synchronously in the engine's event loop and
    must not block."""

    def __init__(self) -> None:
        self._subs: list[tuple[str | None, Subscriber]] = []

    @property
    def has_subscribers(self) -> bool:
        return bool(self._subs)

    def subscribe(self, fn: Subscriber, run_id: str | None = None) -> Callable[[], None]:
        item = (run_id, fn)
        self._subs.append(item)
        return lambda: self._subs.remove(item) if item in self._subs else None

    def publish(self, ev: Event) -> None:
        for run_id, fn in list(self._subs):
            if run_id is None or run_id == ev.run_id:
                try:
                    fn(ev)
                except Exception:  # a broken subscriber must never stop the engine
                    pass

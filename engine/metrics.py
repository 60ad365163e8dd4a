"""What /metrics reports: counts over every run, read in one snapshot through the Store, with
`running` runs that nobody alive runs counted as `interrupted` (as `smithers ps` shows them)."""
from __future__ import annotations

from pydantic import BaseModel

from .lease import owner_alive
from .state import RunStatus
from .store import Store


class Metrics(BaseModel):
    runs: dict[str, int]  # shown status -> runs
    steps: dict[str, int]  # node state -> task and approval steps
    attempts: dict[str, int]  # outcome ("running" while in flight) -> attempts
    tokens_in: int
    tokens_out: int
    cost_usd: float
    queue_depth: int  # runs queued for a worker
    waiting_gates: int  # gates waiting for a decision


async def collect(store: Store, executing_here: set[str]) -> Metrics:
    t = await store.totals()
    runs = {str(RunStatus(s)): n for s, n in t.runs.items()}
    if runs.get(RunStatus.RUNNING):
        orphans = [r for r in await store.list_runs(RunStatus.RUNNING, limit=100_000)
                   if r.id not in executing_here and not owner_alive(r.owner)]
        if orphans:
            runs[RunStatus.RUNNING] -= len(orphans)
            runs[RunStatus.INTERRUPTED] = len(orphans)
    for s in RunStatus:  # every status present, zero included: dashboards need no special case
        runs.setdefault(str(s), 0)
    return Metrics(runs=runs, steps=dict(t.steps), attempts={str(k or "running"): n for k, n in t.attempts.items()},
                   tokens_in=t.tokens_in, tokens_out=t.tokens_out, cost_usd=t.cost_usd,
                   queue_depth=runs[RunStatus.QUEUED], waiting_gates=t.open_gates)

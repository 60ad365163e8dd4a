"""Approvals: a gate is a row; a decision is recorded once, from any process."""
from __future__ import annotations

import getpass
import time

from pydantic import BaseModel

from .errors import ApprovalConflict, BadInput
from .records import ApprovalRecord
from .state import RunStatus, key_label
from .store import Store


class Decision(BaseModel):
    """The output of an Approval node: what a workflow branches on via ctx.get(id)."""

    approved: bool
    by: str | None = None
    note: str | None = None
    at: float | None = None


def default_user() -> str:
    try:
        return getpass.getuser()
    except Exception:
        return "someone"


async def find_gate(store: Store, run_id: str, node: str | None, iteration: int | None) -> ApprovalRecord:
    """The open gate to decide: NODE may be left out when exactly one waits. A gate that was
    already decided raises ApprovalConflict saying by whom, whatever happened to the run since."""
    run = await store.get_run(run_id)
    if run.status == RunStatus.REWOUND:
        succ = run.successor_run_id
        raise BadInput(f"run {run_id} was rewound and is read-only: decide its gates in {succ} "
                       f"(`smithers approve {succ}`)")
    if run.status == RunStatus.CANCELLED:
        raise BadInput(f"run {run_id} is cancelled: it has no gate to decide")
    rows = [g for g in await store.approvals(run_id, open_only=False)
            if (node is None or g.node_id == node) and (iteration is None or g.iteration == iteration)]
    gates = [g for g in rows if g.decision is None]
    what = (f"gate {node!r}" if node else "gate") + (f" at iteration {iteration}" if iteration is not None else "")
    if not gates:
        decided = [g for g in rows if g.decision]
        if decided:
            raise ApprovalConflict(_already(run_id, max(decided, key=lambda g: g.decided_at or 0)))
        raise BadInput(f"run {run_id} ({run.status}) has no {what} waiting for a decision: "
                       "`smithers ps --status waiting` lists waiting gates")
    if len(gates) > 1:
        if node is not None:
            its = ", ".join(str(g.iteration) for g in gates)
            raise BadInput(f"gate {node!r} of run {run_id} waits at iterations {its}: choose one with --iteration")
        names = ", ".join(key_label(g.node_id, g.iteration) for g in gates)
        raise BadInput(f"run {run_id} has several gates waiting ({names}): name the one to decide")
    return gates[0]


async def decide(store: Store, run_id: str, node: str | None, iteration: int | None, approved: bool,
                 by: str | None = None, note: str | None = None) -> ApprovalRecord:
    """Record a decision. Raises ApprovalConflict, saying how, when the gate was already decided."""
    gate = await find_gate(store, run_id, node, iteration)
    won, row = await store.decide(run_id, gate.node_id, gate.iteration, approved, by or default_user(), note,
                                  time.time())
    if not won:
        raise ApprovalConflict(_already(run_id, row))
    return row


def _already(run_id: str, row: ApprovalRecord) -> str:
    stamp = time.strftime("%H:%M:%S", time.localtime(row.decided_at)) if row.decided_at else "?"
    return (f"gate {row.node_id!r} of run {run_id} was already {row.decision} by {row.decided_by} at "
            f"{stamp}" + (f" ({row.note})" if row.note else ""))

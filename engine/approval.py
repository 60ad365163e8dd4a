"""Approvals: a gate is a row; a decision is recorded once, from any process. The same rows hold
what else waits for a person: select and rank gates (the choice or ranking is recorded with the
decision) and human tasks (the answer, validated against the task's model)."""
from __future__ import annotations

import getpass
import time
from typing import Any

from pydantic import BaseModel

from .errors import ApprovalConflict, BadInput
from .records import ApprovalRecord
from .state import RunStatus, key_label
from .store import Store


class Decision(BaseModel):
    """The output of an Approval node: what a workflow branches on via ctx.get(id). `choice` is
    the option chosen by a select gate, `ranking` the order given to a rank gate; `timed_out`
    says nobody decided in time (on_timeout decided)."""

    approved: bool
    by: str | None = None
    note: str | None = None
    at: float | None = None
    choice: str | None = None
    ranking: list[str] | None = None
    timed_out: bool = False


def default_user() -> str:
    try:
        return getpass.getuser()
    except Exception:
        return "someone"


async def find_gate(store: Store, run_id: str, node: str | None, iteration: int | None,
                    human: bool = False) -> ApprovalRecord:
    """The open gate to decide (`human`: the human task to answer): NODE may be left out when
    exactly one waits. A gate that was already decided raises ApprovalConflict saying by whom,
    whatever happened to the run since."""
    run = await store.get_run(run_id)
    if run.status == RunStatus.REWOUND:
        succ = run.successor_run_id
        raise BadInput(f"run {run_id} was rewound and is read-only: decide its gates in {succ} "
                       f"(`smithers approve {succ}`)")
    if run.status == RunStatus.CANCELLED:
        raise BadInput(f"run {run_id} is cancelled: it has no gate to decide")
    rows = [g for g in await store.approvals(run_id, open_only=False)
            if (node is None or g.node_id == node) and (iteration is None or g.iteration == iteration)]
    if node is None:  # `approve RUN` decides gates, `answer RUN` answers human tasks
        rows = [g for g in rows if (g.mode == "human") == human]
    gates = [g for g in rows if g.decision is None]
    noun = "human task" if human else "gate"
    what = (f"{noun} {node!r}" if node else noun) + (f" at iteration {iteration}" if iteration is not None else "")
    if not gates:
        decided = [g for g in rows if g.decision]
        if decided:
            raise ApprovalConflict(_already(run_id, max(decided, key=lambda g: g.decided_at or 0)))
        raise BadInput(f"run {run_id} ({run.status}) has no {what} waiting for "
                       + ("an answer" if human else "a decision")
                       + ": `smithers ps --status waiting` lists what waits")
    if len(gates) > 1:
        if node is not None:
            its = ", ".join(str(g.iteration) for g in gates)
            raise BadInput(f"gate {node!r} of run {run_id} waits at iterations {its}: choose one with --iteration")
        names = ", ".join(key_label(g.node_id, g.iteration) for g in gates)
        raise BadInput(f"run {run_id} has several gates waiting ({names}): name the one to decide")
    return gates[0]


async def decide(store: Store, run_id: str, node: str | None, iteration: int | None, approved: bool,
                 by: str | None = None, note: str | None = None, *, choice: str | None = None,
                 rank: list[str] | None = None) -> ApprovalRecord:
    """Record a decision (a select gate's choice, a rank gate's ranking). Raises BadInput, writing
    nothing, for a decision that does not fit the gate or a person it does not allow, and
    ApprovalConflict, saying how, when the gate was already decided."""
    gate = await find_gate(store, run_id, node, iteration)
    by = by or default_user()
    answer = check_decision(run_id, gate, approved, by, choice, rank)
    won, row = await store.decide(run_id, gate.node_id, gate.iteration, approved, by, note, time.time(), answer=answer)
    if not won:
        raise ApprovalConflict(_already(run_id, row))
    return row


def check_decision(run_id: str, gate: ApprovalRecord, approved: bool, by: str, choice: str | None,
                   rank: list[str] | None) -> Any:
    """What a decision records beside approved/denied (the choice, the ranking), or BadInput."""
    name = key_label(gate.node_id, gate.iteration)
    check_allowed(run_id, gate, by)
    if gate.mode == "human":
        if approved or choice is not None or rank is not None:
            raise BadInput(f"{name!r} of run {run_id} is a human task: answer it with "
                           f"`smithers answer {run_id} {gate.node_id} --data JSON` (deny declines it)")
        return None
    if gate.mode == "approve":
        if choice is not None or rank is not None:
            raise BadInput(f"gate {name!r} of run {run_id} approves or denies: --choice and --rank are for select "
                           "and rank gates")
        return None
    options = gate.options
    listed = ", ".join(options)
    if gate.mode == "select":
        if rank is not None:
            raise BadInput(f"gate {name!r} of run {run_id} asks for one choice, not a ranking: --choice one of {listed}")
        if not approved:
            if choice is not None:
                raise BadInput(f"a denial of gate {name!r} chooses nothing: leave out --choice")
            return None
        if choice is None:
            raise BadInput(f"gate {name!r} of run {run_id} asks to choose one of {listed}: "
                           f"`smithers approve {run_id} {gate.node_id} --choice {options[0]}`")
        if choice not in options:
            raise BadInput(f"{choice!r} is not an option of gate {name!r}: choose one of {listed}")
        return choice
    if choice is not None:
        raise BadInput(f"gate {name!r} of run {run_id} asks for a ranking, not a choice: --rank {','.join(options)}")
    if not approved:
        if rank is not None:
            raise BadInput(f"a denial of gate {name!r} ranks nothing: leave out --rank")
        return None
    if rank is None:
        raise BadInput(f"gate {name!r} of run {run_id} asks to order {listed}: "
                       f"`smithers approve {run_id} {gate.node_id} --rank {','.join(options)}` (best first)")
    if sorted(rank) != sorted(options) or len(set(rank)) != len(rank):
        raise BadInput(f"--rank {','.join(rank)} is not an order of all the options of gate {name!r}: give each of "
                       f"{listed} once, best first")
    return list(rank)


def check_allowed(run_id: str, gate: ApprovalRecord, by: str) -> None:
    allowed = gate.allowed
    if allowed and by not in allowed:
        raise BadInput(f"only {', '.join(allowed)} may decide {key_label(gate.node_id, gate.iteration)!r} of run "
                       f"{run_id}; you are {by!r} (--by NAME to decide as someone else)")


def _already(run_id: str, row: ApprovalRecord) -> str:
    stamp = time.strftime("%H:%M:%S", time.localtime(row.decided_at)) if row.decided_at else "?"
    return (f"gate {row.node_id!r} of run {run_id} was already {row.decision} by {row.decided_by} at "
            f"{stamp}" + (f" ({row.note})" if row.note else ""))

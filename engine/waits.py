"""Durable waits, moved on by the executor that runs the run: a pending signal is taken by the
Signal step waiting for its name (first in, first out; a payload that does not fit the step's
model is refused and the step goes on waiting), a timer fires when its saved due time comes, a
wait with a timeout applies its `on_timeout`. A gate or human task that times out records the
timeout as its decision through the Store (first writer wins), so a person deciding at the same
moment and the timeout never both count.

Nothing polls: the run's `wake_at` column holds its next due time (for a worker to find), the
process that runs it sleeps until then, and a signal or decision from another process is noticed
through the database's data version (see Engine._watch).
"""
from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ValidationError

from .context import type_name
from .dsl import Node, Signal, Subflow, Timer
from .errors import one_line_validation
from .state import DONE, FAILED, SKIPPED, WAITING, WAITING_APPROVAL, Key, NodeRecord

if TYPE_CHECKING:
    from .render import Plan
    from .run import RunExecutor


class TimerFired(BaseModel):
    """The output of a Timer: when it was due and when it fired (epoch seconds)."""

    due: float
    fired_at: float


def person_waits_only(plan: "Plan", ex: "RunExecutor") -> bool:
    """Does every wait of this plan need a person (a gate, a human task, a sub-workflow parked on
    one)? Then a foreground `smithers run` stops (exit 3) instead of sleeping in the process."""
    for key, node in plan.waits:
        rec = ex.state.nodes.get(key)
        if rec is None:
            return False
        if rec.state == WAITING_APPROVAL or type(node) is Subflow:
            continue
        return False
    return plan.continue_as is None


def next_due(plan: "Plan", ex: "RunExecutor") -> float | None:
    dues = [rec.data["due"] for key, _ in plan.waits
            if (rec := ex.state.nodes.get(key)) is not None and rec.data and rec.data.get("due") is not None
            and rec.state in (WAITING, WAITING_APPROVAL)]
    return min(dues) if dues else None


async def settle(ex: "RunExecutor", plan: "Plan") -> bool:
    """Move on every wait of the plan that can move; True when something did (render again)."""
    now = time.time()
    moved = False
    signal_waits = [(k, n) for k, n in plan.waits if isinstance(n, Signal) and ex.state.nodes[k].state == WAITING]
    if signal_waits and (ex.signals_stale or any(k not in ex.signal_seen for k, _ in signal_waits)):
        ex.signals_stale = False  # read again when another process writes, or a new wait begins
        ex.signal_seen.update(k for k, _ in signal_waits)
        moved |= await _take_signals(ex, signal_waits)
    for key, node in plan.waits:
        rec = ex.state.nodes.get(key)
        if rec is None or rec.state not in (WAITING, WAITING_APPROVAL) or not rec.data:
            continue
        due = rec.data.get("due")
        if due is None or due > now:
            continue
        if type(node) is Timer:
            fired = {"due": due, "fired_at": now}
            ex.set_node(key, "timer", DONE, {**rec.data, "fired_at": now})
            ex.put_output(key, fired, type_name(TimerFired))
            ex.delta.event("timer_fired", key, due=due, late=round(max(0.0, now - due), 3))
        elif type(node) is Signal:
            _time_out(ex, key, rec, node.on_timeout, f"no signal {node.name!r} within {node.timeout:g}s")
        else:
            await _time_out_gate(ex, key, node, now)
        moved = True
    return moved


async def _take_signals(ex: "RunExecutor", waits: list[tuple[Key, Signal]]) -> bool:
    pending = [s for s in await ex.store.signals(ex.run_id, pending_only=True) if s.seq not in ex.taken]
    moved = False
    for key, node in sorted(waits, key=lambda kn: ((ex.state.nodes[kn[0]].data or {}).get("since", 0), kn[0])):
        while True:
            sig = next((s for s in pending if s.name == node.name), None)
            if sig is None:
                break
            pending.remove(sig)
            ex.taken.add(sig.seq)
            try:
                value, tname = validate(node.output, sig.payload)
            except ValidationError as e:
                name = node.output.__name__ if node.output is not None else "its model"
                err = f"payload does not fit {name}: {one_line_validation(e)}"
                ex.delta.signals.append({"seq": sig.seq, "key": None, "error": err})
                ex.delta.event("signal_refused", key, name=sig.name, seq=sig.seq, error=err)
                continue
            rec = ex.state.nodes[key]
            ex.delta.signals.append({"seq": sig.seq, "key": key})
            ex.set_node(key, "signal", DONE, {**(rec.data or {}), "signal": sig.seq, "sent_by": sig.sent_by,
                                              "sent_at": sig.sent_at})
            ex.put_output(key, value, tname)
            ex.delta.event("signal_received", key, name=sig.name, seq=sig.seq, by=sig.sent_by)
            moved = True
            break
    return moved


def validate(model: type[BaseModel] | None, payload: Any) -> tuple[Any, str | None]:
    """A payload as the JSON value stored for it (validated against `model` when there is one)."""
    if model is None:
        return payload, None
    return model.model_validate(payload).model_dump(mode="json"), type_name(model)


def _time_out(ex: "RunExecutor", key: Key, rec: NodeRecord, on_timeout: str, why: str) -> None:
    ex.delta.event("wait_timed_out", key, on_timeout=on_timeout, error=why)
    if on_timeout == "skip":
        ex.set_node(key, rec.kind, SKIPPED, {**(rec.data or {}), "timed_out": True}, error=why)
    else:
        ex.set_node(key, rec.kind, FAILED, {**(rec.data or {}), "timed_out": True},
                    error=f"{why} (on_timeout='fail')")


async def _time_out_gate(ex: "RunExecutor", key: Key, node: Node, now: float) -> None:
    """Record the timeout as the gate's decision, once; whoever decided first is applied."""
    timeout = getattr(node, "timeout", None) or 0
    won, row = await ex.store.decide(ex.run_id, key[0], key[1], False, "timeout",
                                     f"no decision within {timeout:g}s", now, decision="timed_out")
    ex.apply_decision(row)

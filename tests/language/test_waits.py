"""Durable waits through the real Engine on a real SQLite file: Signal (taken first in first out,
kept when sent early, refused when it does not fit, timeouts), Timer (the due time is saved: a
restart sleeps only what is left), HumanTask (a typed answer recorded once), and Approval in
select and rank modes with timeout, on_timeout and allowed."""

from __future__ import annotations

import asyncio
import datetime as dt
import time

import pytest
from pydantic import BaseModel

from engine import (Approval, Branch, HumanTask, Parallel, Sequence, Signal, Task, Timer, workflow)
from engine.errors import ApprovalConflict, BadInput
from engine.runtime import Engine
from engine.store import Store
from tests.support import interrupt_when, nodes_of, report, target_of


class CI(BaseModel):
    status: str
    build: int


class Plan(BaseModel):
    title: str
    steps: int


seen: dict[str, object] = {}


def after(ctx):
    seen[ctx.run_id] = ctx.get("ci")
    return ctx.get("ci").build if ctx.get("ci") else None


@workflow
def waits_for_ci(ctx):
    return Sequence(Task("before", value=1), Signal("ci", name="ci-done", output=CI), Task("after", run=after))


async def start(eng, wf, data=None, **kw):
    return await eng.start(wf, target_of(wf), data, **kw)


# --- Signal ---------------------------------------------------------------------------------------
async def test_a_run_waits_for_a_signal_costing_nothing_and_another_process_delivers_it(engine, watch, db_path):
    eng, store = engine
    ex = await start(eng, waits_for_ci)
    task = asyncio.create_task(ex.execute())  # a foreground run sleeps through a signal wait
    await watch.until("run_waiting", run_id=ex.run_id)
    run = await store.get_run(ex.run_id)
    assert run.status == "waiting" and run.owner is not None  # still owned: the process waits in-process
    node = (await nodes_of(store, ex.run_id))[("ci", 0)]
    assert (node["state"], node["kind"], node["wait"]["name"]) == ("waiting", "signal", "ci-done")
    frames_before = run.frame

    other = await Store.open(db_path)  # another process sends it
    try:
        sent = await Engine(other).signal(ex.run_id, "ci-done", {"status": "green", "build": 42}, by="ci-bot")
    finally:
        await other.close()
    assert (sent.matched, sent.waiting, sent.owner_alive, sent.executor) == (True, True, True, None)
    assert await asyncio.wait_for(task, 30) == "finished"
    assert isinstance(seen[ex.run_id], CI) and seen[ex.run_id].build == 42
    nodes = await nodes_of(store, ex.run_id)
    assert nodes[("ci", 0)]["output"] == {"status": "green", "build": 42}
    assert nodes[("ci", 0)]["wait"]["sent_by"] == "ci-bot"
    (sig,) = await store.signals(ex.run_id)
    assert (sig.node_id, sig.iteration, sig.pending) == ("ci", 0, False)
    assert ex.frame - frames_before <= 4  # nothing polled while it waited: no frames but the transitions


async def test_a_payload_that_does_not_fit_is_refused_naming_the_field_and_consumes_nothing(engine, watch):
    eng, store = engine
    ex = await start(eng, waits_for_ci)
    task = asyncio.create_task(ex.execute())
    await watch.until("run_waiting", run_id=ex.run_id)
    events_before = len(await store.events(ex.run_id))
    with pytest.raises(BadInput, match=r"does not fit CI: build: Field required; nothing was sent"):
        await eng.signal(ex.run_id, "ci-done", {"status": "red"})
    with pytest.raises(BadInput, match="status: Input should be a valid string"):
        await eng.signal(ex.run_id, "ci-done", {"status": 3, "build": 1})
    assert await store.signals(ex.run_id) == [] and len(await store.events(ex.run_id)) == events_before
    assert (await nodes_of(store, ex.run_id))[("ci", 0)]["state"] == "waiting"
    await eng.signal(ex.run_id, "ci-done", {"status": "green", "build": 7})
    assert await asyncio.wait_for(task, 30) == "finished"


@workflow
def two_waits(ctx):
    first = ctx.get("gate")
    return Sequence(
        Task("gate", value="open"),
        # built only once "gate" has an output: a signal sent before it exists is kept for it
        Signal("a1", name="tick", output=CI) if first else None,
        Signal("a2", name="tick") if first else None,
        Task("sum", run=lambda c: [c.get("a1").build, c.get("a2")]),
    )


async def test_signals_sent_before_the_step_are_kept_and_taken_first_in_first_out(engine):
    eng, store = engine
    ex = await start(eng, two_waits)
    await store.send_signal(ex.run_id, "tick", {"status": "bad"}, "x", time.time())  # does not fit a1: refused then
    await store.send_signal(ex.run_id, "tick", {"status": "ok", "build": 1}, "x", time.time())
    await store.send_signal(ex.run_id, "tick", "second", "x", time.time())
    await store.send_signal(ex.run_id, "other", 1, "x", time.time())  # a live run accepts any name
    assert await asyncio.wait_for(ex.execute(), 30) == "finished"
    nodes = await nodes_of(store, ex.run_id)
    assert nodes[("sum", 0)]["output"] == [1, "second"]
    refused, a1, a2, other = await store.signals(ex.run_id)
    assert "does not fit CI" in refused.error and refused.node_id is None
    assert (a1.node_id, a2.node_id, other.pending) == ("a1", "a2", True)
    assert [e.data["seq"] for e in await store.events(ex.run_id, types=["signal_refused"])] == [refused.seq]


async def test_a_signal_to_a_finished_run_or_an_unknown_run_is_refused(engine):
    eng, store = engine

    @workflow
    def quick(ctx):
        return Task("a", value=1)

    ex = await start(eng, quick)
    assert await ex.execute() == "finished"
    with pytest.raises(BadInput, match="is finished: it takes no more signals"):
        await eng.signal(ex.run_id, "x", {})
    with pytest.raises(BadInput, match="no run 'nope'"):
        await eng.signal("nope", "x", {})
    assert await store.signals(ex.run_id) == []


@workflow
def impatient(ctx):
    return Sequence(Parallel(Signal("fast", timeout=0.05, on_timeout="skip"), Signal("slow", timeout=0.1)),
                    Task("never", value=1))


async def test_signal_timeouts_skip_or_fail(engine):
    eng, store = engine
    ex = await start(eng, impatient)
    assert await asyncio.wait_for(ex.execute(), 30) == "failed"
    nodes = await nodes_of(store, ex.run_id)
    assert nodes[("fast", 0)]["state"] == "skipped" and nodes[("fast", 0)]["wait"]["timed_out"]
    assert nodes[("slow", 0)]["state"] == "failed"
    assert nodes[("slow", 0)]["error"] == "no signal 'slow' within 0.1s (on_timeout='fail')"
    assert ("never", 0) not in nodes
    assert (await store.get_run(ex.run_id)).error.startswith("step 'slow' failed: no signal 'slow'")


# --- Timer ----------------------------------------------------------------------------------------
@workflow
def naps(ctx):
    return Sequence(Timer("nap", seconds=0.3), Timer("past", until=dt.datetime(2020, 1, 1)),
                    Timer("soon", until=lambda now: now + dt.timedelta(seconds=0.05)), Task("after", value="woke"))


async def test_a_timer_sleeps_in_the_process_and_records_when_it_was_due_and_fired(engine):
    eng, store = engine
    ex = await start(eng, naps)
    t0 = time.time()
    assert await asyncio.wait_for(ex.execute(), 30) == "finished"
    nodes = await nodes_of(store, ex.run_id)
    nap = nodes[("nap", 0)]["output"]
    assert nap["fired_at"] >= nap["due"] >= t0 + 0.3
    assert nodes[("past", 0)]["output"]["due"] == dt.datetime(2020, 1, 1).timestamp()
    assert nodes[("soon", 0)]["output"]["fired_at"] >= nodes[("soon", 0)]["output"]["due"]
    assert (await store.get_run(ex.run_id)).wake_at is None


STOP: dict[str, asyncio.Event] = {}


@workflow
def long_nap(ctx):
    return Sequence(Timer("nap", seconds=0.5), Task("after", value=1))


async def test_a_restart_sleeps_only_what_is_left_of_a_timer(engine, watch):
    eng, store = engine
    ex = await start(eng, long_nap)
    reached = asyncio.Event()
    eng.bus.subscribe(lambda ev: reached.set() if ev.type == "run_waiting" else None, ex.run_id)
    await interrupt_when(ex, reached)  # killed while sleeping
    run = await store.get_run(ex.run_id)
    due = (await nodes_of(store, ex.run_id))[("nap", 0)]["wait"]["due"]
    assert run.status == "waiting" and run.wake_at == due  # a worker finds it by wake_at
    assert [r.id for r in await store.wakeable_runs(due + 1)] == [ex.run_id]
    assert await store.wakeable_runs(due - 0.25) == []
    ex2 = await eng.resume(ex.run_id)
    assert await asyncio.wait_for(ex2.execute(), 30) == "finished"
    out = (await nodes_of(store, ex.run_id))[("nap", 0)]["output"]
    assert out["due"] == due and out["fired_at"] >= due


# --- HumanTask ------------------------------------------------------------------------------------
@workflow
def ask_plan(ctx):
    return Sequence(HumanTask("plan", prompt="What should we build?", output=Plan, allowed=["ann", "bob"]),
                    Task("use", run=lambda c: c.output("plan").title.upper()))


async def test_a_human_task_waits_then_takes_a_typed_answer_recorded_once(engine):
    eng, store = engine
    ex = await start(eng, ask_plan)
    assert await ex.execute() == "waiting"  # a person must answer: the foreground stops (exit 3)
    rep = await report(store, ex.run_id)
    (gate,) = rep["approvals"]
    assert (gate["mode"], gate["message"], gate["decision"]) == ("human", "What should we build?", None)
    assert gate["schema"]["properties"]["steps"]["type"] == "integer"
    with pytest.raises(BadInput, match=r"does not fit Plan: steps: Input should be a valid integer.*nothing was written"):
        await eng.answer(ex.run_id, "plan", None, {"title": "x", "steps": "many"}, by="ann")
    with pytest.raises(BadInput, match="only ann, bob may decide 'plan'"):
        await eng.answer(ex.run_id, "plan", None, {"title": "x", "steps": 1}, by="eve")
    with pytest.raises(BadInput, match="is a human task: answer it"):
        await eng.decide(ex.run_id, "plan", None, True, by="ann")
    assert (await store.approvals(ex.run_id))[0].decision is None
    assert await store.events(ex.run_id, types=["approval_decided"]) == []

    done = await eng.answer(ex.run_id, "plan", None, {"title": "parser", "steps": 3}, by="bob", resume=True)
    assert done.executor is not None and done.gate.answer == {"title": "parser", "steps": 3}
    assert await done.executor.execute() == "finished"
    nodes = await nodes_of(store, ex.run_id)
    assert nodes[("plan", 0)]["output"] == {"title": "parser", "steps": 3}
    assert nodes[("use", 0)]["output"] == "PARSER"
    with pytest.raises(BadInput, match="already answered by bob.*nothing was written"):
        await eng.answer(ex.run_id, "plan", None, {"title": "y", "steps": 1}, by="ann")
    with pytest.raises(BadInput, match="has no human task 'use' waiting"):
        await eng.answer(ex.run_id, "use", None, {"title": "y", "steps": 1}, by="ann")


# --- Approval select / rank ------------------------------------------------------------------------
@workflow
def choose(ctx):
    pick = ctx.get("pick")
    return Sequence(
        Approval("pick", message="Which plan?", mode="select", options=["A", "B", "C"], allowed=["ann"]),
        Approval("order", message="Order them", mode="rank", options=["A", "B", "C"]),
        Branch(pick is not None and pick.choice == "B", Task("went-b", value=True), Task("went-other", value=True)),
    )


async def test_select_and_rank_gates_record_the_choice_and_the_ranking_as_the_output(engine):
    eng, store = engine
    ex = await start(eng, choose)
    assert await ex.execute() == "waiting"
    with pytest.raises(BadInput, match="asks to choose one of A, B, C: `smithers approve .* pick --choice A`"):
        await eng.decide(ex.run_id, "pick", None, True, by="ann")
    with pytest.raises(BadInput, match="'D' is not an option of gate 'pick': choose one of A, B, C"):
        await eng.decide(ex.run_id, "pick", None, True, by="ann", choice="D")
    with pytest.raises(BadInput, match="only ann may decide"):
        await eng.decide(ex.run_id, "pick", None, True, by="bob", choice="B")
    assert (await store.approvals(ex.run_id))[0].decision is None
    d = await eng.decide(ex.run_id, "pick", None, True, by="ann", choice="B", resume=True)
    assert await d.executor.execute() == "waiting"
    with pytest.raises(BadInput, match="not an order of all the options"):
        await eng.decide(ex.run_id, "order", None, True, rank=["C", "A"])
    with pytest.raises(BadInput, match="asks for a ranking, not a choice"):
        await eng.decide(ex.run_id, "order", None, True, choice="C")
    d = await eng.decide(ex.run_id, "order", None, True, by="bob", rank=["C", "A", "B"], resume=True)
    assert await d.executor.execute() == "finished"
    nodes = await nodes_of(store, ex.run_id)
    assert nodes[("pick", 0)]["output"]["choice"] == "B" and nodes[("pick", 0)]["output"]["by"] == "ann"
    assert nodes[("order", 0)]["output"]["ranking"] == ["C", "A", "B"]
    assert ("went-b", 0) in nodes and ("went-other", 0) not in nodes
    with pytest.raises(ApprovalConflict, match="already approved by ann"):
        await eng.decide(ex.run_id, "pick", None, True, by="ann", choice="A")


@workflow
def timeouts(ctx):
    return Parallel(
        Approval("sel", message="pick", mode="select", options=["X", "Y"], timeout=0.05, on_timeout="approve"),
        Approval("rnk", message="order", mode="rank", options=["P", "Q"], timeout=0.05, on_timeout="approve"),
        Approval("skipme", message="?", timeout=0.05, on_timeout="skip"),
        Approval("denyme", message="?", timeout=0.05, on_timeout="deny", on_deny="continue"),
        HumanTask("ask", prompt="?", output=Plan, timeout=0.05, on_timeout="skip"),
    )


async def test_gate_timeouts_decide_for_nobody_once(engine):
    eng, store = engine
    ex = await start(eng, timeouts)
    assert await ex.execute() == "waiting"  # people are asked: the foreground stops; the timeout is a due time
    run = await store.get_run(ex.run_id)
    assert run.wake_at is not None and [r.id for r in await store.wakeable_runs(run.wake_at)] == [ex.run_id]
    ex2 = await eng.resume(ex.run_id)
    assert await asyncio.wait_for(ex2.execute(stop_when_waiting=False), 30) == "finished"  # as the app runs it
    nodes = await nodes_of(store, ex.run_id)
    sel, rnk = nodes[("sel", 0)]["output"], nodes[("rnk", 0)]["output"]
    assert (sel["approved"], sel["choice"], sel["timed_out"], sel["by"]) == (True, "X", True, "timeout")
    assert rnk["ranking"] == ["P", "Q"]
    assert nodes[("skipme", 0)]["state"] == "skipped" and nodes[("denyme", 0)]["state"] == "done"
    assert nodes[("denyme", 0)]["output"]["approved"] is False
    assert nodes[("ask", 0)]["state"] == "skipped"
    assert {g.decision for g in await store.approvals(ex.run_id, open_only=False)} == {"timed_out"}
    assert len(await store.events(ex.run_id, types=["wait_timed_out"])) == 5

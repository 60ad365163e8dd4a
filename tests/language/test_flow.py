"""Sub-workflows, error handling and unbounded loops through the real Engine: Subflow (a child run
with lineage; its result is the step's output; parked when it waits for a person; resuming the
child continues its parent; cancel propagates; a failed child fails the step), TryCatchFinally,
Saga (compensations in reverse, durably) and ContinueAsNew (a chain of fresh runs)."""

from __future__ import annotations

import asyncio

import pytest
from pydantic import BaseModel

from engine import (Approval, ContinueAsNew, Loop, Saga, Sequence, Signal, Subflow, Task, TryCatchFinally,
                    workflow)
from tests.support import interrupt_when, nodes_of, report, target_of


class Numbers(BaseModel):
    n: int = 2


def double(ctx):
    return ctx.input.n * 2


@workflow(input=Numbers)
def child(ctx):
    return Sequence(Task("double", run=double), Task("plus-one", run=lambda c: c.output("double") + 1))


@workflow
def parent(ctx):
    return Sequence(Task("first", value=5), Subflow("sub", child, input={"n": ctx.get("first") or 0}),
                    Subflow("by-name", "child", input=Numbers(n=1)),
                    Task("after", run=lambda c: [c.output("sub"), c.output("by-name")]))


async def start(eng, wf, data=None, **kw):
    return await eng.start(wf, target_of(wf), data, **kw)


async def test_a_subflow_is_a_child_run_with_lineage_and_its_result_is_the_steps_output(engine):
    eng, store = engine
    ex = await start(eng, parent)
    assert await ex.execute() == "finished"
    nodes = await nodes_of(store, ex.run_id)
    assert nodes[("sub", 0)]["output"] == 11 and nodes[("by-name", 0)]["output"] == 3
    assert nodes[("after", 0)]["output"] == [11, 3]
    child_id = nodes[("sub", 0)]["child_run_id"]
    assert child_id == f"{ex.run_id}.sub"
    kid = await store.get_run(child_id)
    assert (kid.kind, kid.parent_run_id, kid.parent_step, kid.status, kid.result) == (
        "subflow", ex.run_id, ("sub", 0), "finished", 11)
    assert kid.input == {"n": 5}
    assert (await report(store, child_id))["parent_step"] == ["sub", 0]
    lineage = await eng.lineage(ex.run_id)
    assert {c.run_id for c in lineage.children} == {child_id, f"{ex.run_id}.by-name"}
    assert (await report(store, ex.run_id))["result"] == [11, 3]


@workflow(input=Numbers)
def gated_child(ctx):
    return Sequence(Task("prep", run=double), Approval("ok", message="child ok?"), Task("done", value="child done"))


@workflow
def gated_parent(ctx):
    return Sequence(Subflow("sub", gated_child, input={"n": 4}), Task("after", run=lambda c: c.output("sub") + "!"))


async def test_a_child_waiting_for_a_person_parks_its_parent_and_deciding_it_continues_both(engine):
    eng, store = engine
    ex = await start(eng, gated_parent)
    assert await ex.execute() == "waiting"  # the foreground stops: only a person can move it on
    kid_id = f"{ex.run_id}.sub"
    parent_run, kid = await store.get_run(ex.run_id), await store.get_run(kid_id)
    assert (parent_run.status, kid.status, parent_run.owner, kid.owner) == ("waiting", "waiting", None, None)
    sub = (await nodes_of(store, ex.run_id))[("sub", 0)]
    assert (sub["state"], sub["child_run_id"], sub["attempts"]) == ("waiting", kid_id, 0)
    assert (await nodes_of(store, kid_id))[("prep", 0)]["output"] == 8

    d = await eng.decide(kid_id, "ok", None, True, by="ann", resume=True)  # resuming the child runs its parent
    assert d.executor.run_id == ex.run_id
    assert await d.executor.execute() == "finished"
    assert (await store.get_run(kid_id)).status == "finished"
    nodes = await nodes_of(store, ex.run_id)
    assert nodes[("after", 0)]["output"] == "child done!" and nodes[("sub", 0)]["attempts"] == 1
    assert [a.outcome for a in await store.attempts(ex.run_id) if a.node_id == "sub"] == ["done"]


@workflow
def waits_signal_child(ctx):
    return Sequence(Signal("go"), Task("done", value="ok"))


@workflow
def cancels(ctx):
    return Sequence(Subflow("sub", waits_signal_child), Task("after", value=1))


async def test_cancelling_the_parent_cancels_the_child_and_cancelling_the_child_fails_the_step(engine, watch):
    eng, store = engine
    ex = await start(eng, cancels)
    task = asyncio.create_task(ex.execute())
    await watch.until("wait_started", node="go")
    assert await eng.cancel(ex.run_id) == "cancelling"
    assert await asyncio.wait_for(task, 30) == "cancelled"
    assert (await store.get_run(f"{ex.run_id}.sub")).status == "cancelled"

    ex = await start(eng, cancels)
    task = asyncio.create_task(ex.execute())
    await watch.until("wait_started", node="go", run_id=f"{ex.run_id}.sub")
    await eng.cancel(f"{ex.run_id}.sub")
    assert await asyncio.wait_for(task, 30) == "failed"
    rep = await report(store, ex.run_id)
    assert rep["error"] == f"step 'sub' failed: sub-workflow run {ex.run_id}.sub was cancelled"


def boom(ctx):
    raise RuntimeError("child broke")


@workflow
def failing_child(ctx):
    return Task("boom", run=boom, retries=0)


@workflow
def fails(ctx):
    return Sequence(Subflow("sub", failing_child), Task("after", value=1))


async def test_a_failed_child_fails_the_step_with_its_reason(engine):
    eng, store = engine
    ex = await start(eng, fails)
    assert await ex.execute() == "failed"
    run = await store.get_run(ex.run_id)
    assert "sub-workflow run" in run.error and "child broke" in run.error
    assert (await store.get_run(f"{ex.run_id}.sub")).status == "failed"


# --- TryCatchFinally ------------------------------------------------------------------------------
log: list[str] = []


def step(name, fail=False):
    def fn(ctx):
        log.append(f"{ctx.run_id}:{name}")
        if fail:
            raise RuntimeError(f"{name} failed")
        return name

    return fn


@workflow
def try_catch(ctx):
    return Sequence(
        TryCatchFinally(
            try_=Sequence(Task("t1", run=step("t1")), Task("t2", run=step("t2", fail=True), retries=0),
                          Task("t3", run=step("t3"))),
            catch=Task("handle", run=lambda c: f"caught: {c.error('t2')}"),
            finally_=Task("cleanup", run=step("cleanup")), id="guarded"),
        Task("after", run=step("after")))


@workflow
def try_only(ctx):
    return Sequence(TryCatchFinally(try_=Task("t", run=step("t", fail=True), retries=0),
                                    finally_=Task("cleanup", run=step("cleanup"))),
                    Task("after", run=step("after")))


@workflow
def catch_fails(ctx):
    return TryCatchFinally(try_=Task("t", run=step("t", fail=True), retries=0),
                           catch=Task("handle", run=step("handle", fail=True), retries=0),
                           finally_=Task("cleanup", run=step("cleanup")))


async def test_try_catch_finally(engine):
    eng, store = engine
    ex = await start(eng, try_catch)
    assert await ex.execute() == "finished"
    nodes = await nodes_of(store, ex.run_id)
    assert nodes[("handle", 0)]["output"].startswith("caught: RuntimeError: t2 failed (at ")
    assert nodes[("t2", 0)]["state"] == "failed" and nodes[("t2", 0)]["caught"] == "guarded"
    assert ("t3", 0) not in nodes
    assert [x.split(":")[1] for x in log if x.startswith(ex.run_id)] == ["t1", "t2", "cleanup", "after"]
    assert (await report(store, ex.run_id))["result"] == "after"

    ex = await start(eng, try_only)  # no catch: finally runs, then the failure goes on
    assert await ex.execute() == "failed"
    assert [x.split(":")[1] for x in log if x.startswith(ex.run_id)] == ["t", "cleanup"]
    assert "caught" not in (await nodes_of(store, ex.run_id))[("t", 0)]

    ex = await start(eng, catch_fails)
    assert await ex.execute() == "failed"
    assert [x.split(":")[1] for x in log if x.startswith(ex.run_id)] == ["t", "handle", "cleanup"]
    assert (await store.get_run(ex.run_id)).error.startswith("step 'handle' failed: RuntimeError: handle failed")


# --- Saga -----------------------------------------------------------------------------------------
COMPENSATING: dict[str, asyncio.Event] = {}


async def slow_undo(ctx):
    log.append(f"{ctx.run_id}:undo-b-start")
    ev = COMPENSATING.get("reached")
    if ev is not None and not ev.is_set():
        ev.set()
        await asyncio.sleep(60)  # killed here the first time
    log.append(f"{ctx.run_id}:undo-b")
    return "b undone"


def saga_of(fail_at: str, cont: bool = False):
    @workflow(name=f"saga-{fail_at}-{cont}")
    def wf(ctx):
        return Sequence(
            Saga("order", [
                (Task("a", run=step("a", fail=fail_at == "a"), retries=0), Task("undo-a", run=step("undo-a"))),
                (Task("b", run=step("b", fail=fail_at == "b"), retries=0), Task("undo-b", run=slow_undo)),
                (Task("c", run=step("c", fail=fail_at == "c"), retries=0), None),
                (Task("d", run=step("d", fail=fail_at == "d"), retries=0), Task("undo-d", run=step("undo-d"))),
            ], continue_on_fail=cont),
            Task("after", run=step("after")))

    return wf


saga_ok, saga_d, saga_d_cont = saga_of("none"), saga_of("d"), saga_of("d", True)


async def test_a_saga_compensates_what_finished_in_reverse_then_fails(engine):
    eng, store = engine
    ex = await start(eng, saga_ok)
    assert await ex.execute() == "finished"
    assert (await nodes_of(store, ex.run_id))[("order", 0)]["saga"]["phase"] == "done"

    ex = await start(eng, saga_d)
    assert await ex.execute() == "failed"
    assert [x.split(":")[1] for x in log if x.startswith(ex.run_id)] == [
        "a", "b", "c", "d", "undo-b-start", "undo-b", "undo-a"]
    run = await store.get_run(ex.run_id)
    assert run.error.startswith("step 'order' failed: saga 'order': step 'd' failed (RuntimeError: d failed")
    assert run.error.endswith("; compensated: undo-b, undo-a")
    ex2 = await eng.resume(ex.run_id)  # a compensated saga stays failed: nothing runs again
    assert await ex2.execute() == "failed"
    assert len([x for x in log if x.startswith(ex.run_id)]) == 7

    ex = await start(eng, saga_d_cont)
    assert await ex.execute() == "finished"
    assert log[-1] == f"{ex.run_id}:after"


async def test_a_crash_while_compensating_goes_on_compensating_after_resume(engine):
    eng, store = engine
    COMPENSATING["reached"] = asyncio.Event()
    ex = await start(eng, saga_d)
    await interrupt_when(ex, COMPENSATING["reached"])
    assert (await nodes_of(store, ex.run_id))[("order", 0)]["saga"]["phase"] == "compensating"
    ex2 = await eng.resume(ex.run_id)
    assert await ex2.execute() == "failed"
    mine = [x.split(":")[1] for x in log if x.startswith(ex.run_id)]
    assert mine == ["a", "b", "c", "d", "undo-b-start", "undo-b-start", "undo-b", "undo-a"]  # only undo-b was in flight
    assert "compensated: undo-b, undo-a" in (await store.get_run(ex.run_id)).error


# --- ContinueAsNew --------------------------------------------------------------------------------
class Counter(BaseModel):
    n: int = 0
    total: int = 0


@workflow(input=Counter)
def counting(ctx):
    i = ctx.input
    body = Loop("rounds", Task("add", run=lambda c: c.iteration + 1), max_iterations=3)
    total = i.total + sum(ctx.get("add", k) for k in ctx.iterations("add"))
    if i.n < 2:
        return Sequence(body, ContinueAsNew(Counter(n=i.n + 1, total=total)))
    return Sequence(body, Task("total", value=total))


async def test_continue_as_new_hands_the_state_to_a_fresh_run_until_done(engine):
    eng, store = engine
    ex = await start(eng, counting)
    status, last = await eng.execute(ex)
    assert status == "finished" and last.run_id != ex.run_id
    chain = [await store.get_run(ex.run_id)]
    while chain[-1].successor_run_id:
        chain.append(await store.get_run(chain[-1].successor_run_id))
    assert [r.input for r in chain] == [{"n": 0, "total": 0}, {"n": 1, "total": 6}, {"n": 2, "total": 12}]
    assert [r.kind for r in chain] == ["run", "continue", "continue"]
    assert all(r.status == "finished" for r in chain) and chain[-1].id == last.run_id
    assert chain[0].result == {"continued_as": chain[1].id} and chain[-1].result == 18
    assert chain[1].parent_run_id == ex.run_id
    # each run holds only its own rounds: nothing grows without bound
    assert {k for k in (await nodes_of(store, last.run_id))} == {("rounds", 0), ("add", 0), ("add", 1), ("add", 2),
                                                                  ("total", 0)}


async def test_continue_as_new_with_input_that_does_not_fit_fails_the_step(engine):
    eng, store = engine

    @workflow(input=Counter)
    def bad(ctx):
        return ContinueAsNew({"n": "lots"})

    ex = await start(eng, bad)
    assert await ex.execute() == "failed"
    assert "does not fit 'bad': n: Input should be a valid integer" in (await store.get_run(ex.run_id)).error
    assert (await store.get_run(ex.run_id)).successor_run_id is None


def test_node_constructors_refuse_bad_arguments():
    from engine import Approval as A, Budget, Cache, HumanTask, Retry, Timer

    with pytest.raises(TypeError, match="needs at least two distinct"):
        A("a", message="m", mode="select", options=["x"])
    with pytest.raises(TypeError, match="options go with mode='select'"):
        A("a", message="m", options=["x", "y"])
    with pytest.raises(TypeError, match="exactly one of until= or seconds="):
        Timer("t")
    with pytest.raises(TypeError, match="output is the pydantic model"):
        HumanTask("h", prompt="p", output=dict)
    with pytest.raises(TypeError, match="retries stay bounded"):
        Retry.exponential(retries=10**6)
    with pytest.raises(TypeError, match="a budget needs an id"):
        Sequence(Task("a", value=1), budget=Budget(usd=1))
    with pytest.raises(TypeError, match="needs tokens= or usd="):
        Budget()
    with pytest.raises(TypeError, match="only a step that runs"):
        Task("a", value=1, cache=Cache("k"))
    with pytest.raises(TypeError, match="not both"):
        Task("a", run=double, retries=3, retry=Retry.fixed(1))
    with pytest.raises(TypeError, match="timeout is a number of seconds"):
        Signal("s", timeout=-1)
    with pytest.raises(TypeError, match=r"\(action, compensation\) pairs"):
        Saga("s", [("x", None)])

"""The runtime loop through the real Engine: retries with backoff, bounded retries, timeouts,
continue_on_fail, cancel, and resume (of a failed run, and of a run whose loop died mid-step);
errors that name the user's line; a newer schema left alone; attempts cut short."""

from __future__ import annotations

import asyncio
import json
import threading
from collections import Counter

import pytest
from pydantic import BaseModel

from engine import Loop, Parallel, Sequence, Task, workflow
from engine.errors import BadInput, LeaseHeld, SchemaTooNew
from engine.runtime import Engine
from engine.store import Store
from tests.support import events_of, interrupt_when, line_of, newer_database, nodes_of, report, run_workflow, target_of

# Module-level state for the workflows that get resumed: resume loads the workflow again from the
# recorded target (`module:test_runtime:NAME`), i.e. this very module.
CALLS: Counter = Counter()
FLAKY = {"fail": True}
GATE: dict = {}


@pytest.fixture(autouse=True)
def fresh_state():
    CALLS.clear()
    FLAKY["fail"] = True
    GATE.clear()
    yield


def failing(times: int, exc: type[Exception] = RuntimeError):
    """An async step that fails its first `times` attempts, then returns its attempt number."""

    async def step(ctx):
        CALLS[ctx.node_id] += 1
        if ctx.attempt <= times:
            raise exc(f"attempt {ctx.attempt} broke")
        return ctx.attempt

    return step


# --- retries -----------------------------------------------------------------------------------
async def test_retries_back_off_exponentially_then_succeed(engine):
    eng, store = engine

    @workflow
    def wf(ctx):
        return Task("flaky", run=failing(3), retries=3, backoff=0.01)

    status, ex = await run_workflow(eng, wf)
    assert status == "finished"
    node = (await nodes_of(store, ex.run_id))[("flaky", 0)]
    assert (node["state"], node["attempts"], node["output"]) == ("done", 4, 4)
    retrying = await events_of(store, ex.run_id, "node_retrying")
    assert [e.data["attempt"] for e in retrying] == [1, 2, 3]
    assert [e.data["delay"] for e in retrying] == [0.01, 0.02, 0.04]
    assert all("attempt" in e.data["error"] and "broke" in e.data["error"] for e in retrying)
    attempts = [a for a in await store.attempts(ex.run_id) if a.node_id == "flaky"]
    assert [a.outcome for a in sorted(attempts, key=lambda a: a.attempt)] == ["failed"] * 3 + ["done"]


async def test_retries_are_bounded(engine):
    eng, store = engine

    @workflow
    def wf(ctx):
        return Sequence(Task("never", run=failing(99), retries=2, backoff=0.001), Task("after", value=1))

    status, ex = await run_workflow(eng, wf)
    assert status == "failed"
    assert CALLS["never"] == 3
    rep = await report(store, ex.run_id)
    nodes = {n["id"]: n for n in rep["nodes"]}
    assert (nodes["never"]["state"], nodes["never"]["attempts"]) == ("failed", 3)
    assert "attempt 3 broke" in nodes["never"]["error"]
    assert "after" not in nodes
    assert "'never'" in rep["error"] and "attempt 3 broke" in rep["error"]
    assert len(await events_of(store, ex.run_id, "node_retrying")) == 2


async def test_retries_default_is_bounded(engine):
    eng, _ = engine

    @workflow
    def wf(ctx):
        return Task("never", run=failing(99), backoff=0.001)

    status, _ = await run_workflow(eng, wf)
    assert status == "failed"
    assert 1 <= CALLS["never"] <= 5


async def test_retries_zero_means_one_attempt(engine):
    eng, _ = engine

    @workflow
    def wf(ctx):
        return Task("once", run=failing(1), retries=0)

    status, _ = await run_workflow(eng, wf)
    assert status == "failed"
    assert CALLS["once"] == 1


async def test_a_step_error_names_the_user_code_line(engine):
    eng, store = engine

    def boom(ctx):
        raise KeyError("missing-key")

    @workflow
    def wf(ctx):
        return Task("boom", run=boom, retries=0)

    status, ex = await run_workflow(eng, wf)
    assert status == "failed"
    err = (await nodes_of(store, ex.run_id))[("boom", 0)]["error"]
    assert err.startswith("KeyError") and "missing-key" in err and __file__ in err


# --- timeouts ----------------------------------------------------------------------------------
async def test_a_step_longer_than_its_timeout_fails_with_timed_out(engine):
    eng, store = engine

    async def slow(ctx):
        CALLS["slow"] += 1
        await asyncio.sleep(30)

    @workflow
    def wf(ctx):
        return Task("slow", run=slow, timeout=0.05, retries=0)

    status, ex = await asyncio.wait_for(run_workflow(eng, wf), 10)
    assert status == "failed"
    node = (await nodes_of(store, ex.run_id))[("slow", 0)]
    assert node["state"] == "failed" and "timed out" in node["error"]
    assert CALLS["slow"] == 1


async def test_a_timed_out_step_is_retried(engine):
    eng, store = engine

    async def slow_first(ctx):
        CALLS["slow"] += 1
        if ctx.attempt == 1:
            await asyncio.sleep(30)
        return "second"

    @workflow
    def wf(ctx):
        return Task("slow", run=slow_first, timeout=0.05, retries=1, backoff=0.001)

    status, ex = await asyncio.wait_for(run_workflow(eng, wf), 10)
    assert status == "finished"
    assert CALLS["slow"] == 2
    retrying = await events_of(store, ex.run_id, "node_retrying")
    assert len(retrying) == 1 and "timed out" in retrying[0].data["error"]


async def test_a_sync_step_longer_than_its_timeout_fails(engine):
    eng, store = engine
    release = threading.Event()

    def slow(ctx):
        release.wait(5)

    @workflow
    def wf(ctx):
        return Task("slow", run=slow, timeout=0.05, retries=0)

    try:
        status, ex = await asyncio.wait_for(run_workflow(eng, wf), 10)
    finally:
        release.set()
    assert status == "failed"
    assert "timed out" in (await nodes_of(store, ex.run_id))[("slow", 0)]["error"]


# --- continue_on_fail --------------------------------------------------------------------------
async def test_continue_on_fail_lets_the_run_go_on(engine):
    eng, store = engine
    seen: list = []

    async def after(ctx):
        seen.append(ctx.get("bad"))
        return "after"

    @workflow
    def wf(ctx):
        return Sequence(Task("bad", run=failing(99), retries=0, continue_on_fail=True), Task("after", run=after))

    status, ex = await run_workflow(eng, wf)
    assert status == "finished"
    assert seen == [None]
    nodes = await nodes_of(store, ex.run_id)
    assert nodes[("bad", 0)]["state"] == "failed" and nodes[("after", 0)]["state"] == "done"


async def test_a_failure_in_one_parallel_branch_fails_the_run_after_the_others_stop(engine):
    eng, store = engine
    release = asyncio.Event()

    async def slow(ctx):
        await release.wait()
        return "slow"

    async def bad(ctx):
        release.set()
        raise RuntimeError("bad branch")

    @workflow
    def wf(ctx):
        return Sequence(Parallel(Task("slow", run=slow), Task("bad", run=bad, retries=0)), Task("after", value=1))

    status, ex = await asyncio.wait_for(run_workflow(eng, wf), 10)
    assert status == "failed"
    nodes = await nodes_of(store, ex.run_id)
    assert nodes[("slow", 0)]["state"] == "done"  # in flight when the other failed: finished, kept
    assert nodes[("bad", 0)]["state"] == "failed"
    assert ("after", 0) not in nodes


# --- cancel ------------------------------------------------------------------------------------
async def test_cancel_stops_a_running_step_and_the_run(engine):
    eng, store = engine
    started = asyncio.Event()

    async def long(ctx):
        started.set()
        await asyncio.sleep(30)

    @workflow
    def wf(ctx):
        return Sequence(Task("first", value=1), Task("long", run=long), Task("after", value=2))

    ex = await eng.start(wf, target_of(wf))
    task = asyncio.create_task(ex.execute())
    await asyncio.wait_for(started.wait(), 10)
    assert await eng.cancel(ex.run_id) in ("cancelling", "cancelled")
    assert await asyncio.wait_for(task, 10) == "cancelled"
    rep = await report(store, ex.run_id)
    assert rep["status"] == "cancelled"
    nodes = {n["id"]: n for n in rep["nodes"]}
    assert nodes["long"]["state"] == "cancelled" and nodes["first"]["state"] == "done"
    assert "after" not in nodes
    assert rep["owner"] is None
    with pytest.raises(BadInput):
        await eng.cancel(ex.run_id)
    with pytest.raises(BadInput):
        await eng.resume(ex.run_id)


async def test_cancel_of_a_run_nobody_owns_marks_it_cancelled(engine):
    eng, store = engine
    started = asyncio.Event()

    async def long(ctx):
        started.set()
        await asyncio.sleep(30)

    @workflow
    def wf(ctx):
        return Task("long", run=long)

    ex = await eng.start(wf, target_of(wf))
    task = asyncio.create_task(ex.execute())
    await asyncio.wait_for(started.wait(), 10)
    task.cancel()  # the loop dies: the lease is released, the step stays "running"
    with pytest.raises(asyncio.CancelledError):
        await task
    assert (await store.get_run(ex.run_id)).owner is None
    assert await eng.cancel(ex.run_id) == "cancelled"
    rep = await report(store, ex.run_id)
    assert rep["status"] == "cancelled"
    assert {n["id"]: n["state"] for n in rep["nodes"]}["long"] == "cancelled"


# --- resume ------------------------------------------------------------------------------------
async def flaky_step(ctx):
    CALLS[ctx.node_id] += 1
    if FLAKY["fail"]:
        raise RuntimeError("not yet")
    return "fixed"


async def plain_step(ctx):
    CALLS[ctx.node_id] += 1
    return ctx.node_id


@workflow(name="resumable")
def resumable(ctx):
    return Sequence(
        Task("a", run=plain_step),
        Parallel(Task("b", run=plain_step), Task("c", run=flaky_step, retries=0)),
        Task("d", run=plain_step),
    )


async def test_resume_of_a_finished_run_is_refused(engine):
    eng, _ = engine
    FLAKY["fail"] = False
    status, ex = await run_workflow(eng, resumable)
    assert status == "finished"
    with pytest.raises(BadInput, match="finished"):
        await eng.resume(ex.run_id)


async def gated_step(ctx):
    CALLS[ctx.node_id] += 1
    GATE.setdefault("started", asyncio.Event()).set()
    if ctx.attempt == 1 and ctx.iteration == 0:
        await asyncio.sleep(30)
    return f"attempt {ctx.attempt}"


@workflow(name="interrupted")
def interrupted(ctx):
    return Loop("l", Task("s", run=plain_step), Task("g", run=gated_step), max_iterations=2)


async def test_resume_after_the_loop_died_reruns_only_the_step_in_flight(engine):
    eng, store = engine
    GATE["started"] = asyncio.Event()
    ex = await eng.start(interrupted, target_of(interrupted))
    await interrupt_when(ex, GATE["started"])
    assert dict(CALLS) == {"s": 1, "g": 1}
    ex2 = await eng.resume(ex.run_id)
    assert await asyncio.wait_for(ex2.execute(), 10) == "finished"
    assert dict(CALLS) == {"s": 2, "g": 3}  # s#0 once, s#1 once; g#0 twice (in flight), g#1 once
    nodes = await nodes_of(store, ex.run_id)
    assert nodes[("g", 0)]["attempts"] == 2 and nodes[("g", 0)]["output"] == "attempt 2"
    assert nodes[("s", 0)]["attempts"] == 1
    assert [e.node_id for e in await events_of(store, ex.run_id, "node_interrupted")] == ["g"]


async def test_resume_is_refused_while_another_live_owner_holds_the_run(engine):
    eng, store = engine
    GATE["started"] = asyncio.Event()
    ex = await eng.start(interrupted, target_of(interrupted))
    task = asyncio.create_task(ex.execute())
    try:
        await asyncio.wait_for(GATE["started"].wait(), 10)
        other = Engine(store)  # another owner id, same (live) pid
        with pytest.raises(LeaseHeld, match=str(eng.owner.pid)):
            await other.resume(ex.run_id)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


# --- errors and recovery --------------------------------------------------------------------------
class Point(BaseModel):
    x: int
    y: int


async def test_resume_of_a_failed_run_retries_its_failed_steps(engine):
    """engine/runtime.py:130-133 Engine.resume: `run.update(changes)` sets run["status"] = "running" just
    before `ex.recover(was_failed=run["status"] == RUN_FAILED)`, so was_failed is always False:
    failed steps stay failed and the resumed run fails again at once without running anything.
    Fix: `was_failed = run["status"] == RUN_FAILED` before `run.update(changes)`."""
    eng, store = engine
    status, ex = await run_workflow(eng, resumable)
    assert status == "failed"
    FLAKY["fail"] = False
    ex2 = await eng.resume(ex.run_id)
    assert await ex2.execute() == "finished"
    assert dict(CALLS) == {"a": 1, "b": 1, "c": 2, "d": 1}
    rep = await report(store, ex.run_id)
    assert rep["status"] == "finished" and rep["error"] is None


async def test_a_workflow_body_error_names_the_workflow_line_not_the_library(engine):
    """engine/run.py:175-178 RunExecutor._build: the location is the LAST traceback frame outside
    engine/ (`if src and fs.filename == src or not fs.filename.startswith(ENGINE_DIR)`), so an
    exception raised inside a library the body calls (json, pydantic...) names e.g.
    .../json/decoder.py:353 instead of the workflow's line. Fix: prefer the last frame whose file is
    the workflow's source (fall back to the last non-engine, non-stdlib/site-packages frame)."""
    eng, store = engine

    @workflow
    def libraise(ctx):
        json.loads("{not json")  # @lib-raise
        return Task("a", value=1)

    status, ex = await run_workflow(eng, libraise)
    assert status == "failed"
    err = (await report(store, ex.run_id))["error"]
    assert f"{__file__}:{line_of(__file__, '# @lib-raise')}" in err


async def test_a_step_error_names_the_step_line_not_the_library(engine):
    """engine/attempt.py:33-36 error_line: same rule as _build (last frame not in engine/, asyncio or
    concurrent), so a step failing inside json/pydantic/requests names the library's file.
    Fix: prefer the last frame in the step's own file (r.node.run.__code__.co_filename), else the
    last frame outside the standard library and site-packages."""
    eng, store = engine

    def step(ctx):
        return json.loads("{not json")  # @step-lib-raise

    @workflow
    def wf(ctx):
        return Task("a", run=step, retries=0)

    status, ex = await run_workflow(eng, wf)
    assert status == "failed"
    err = (await nodes_of(store, ex.run_id))[("a", 0)]["error"]
    assert f"{__file__}:{line_of(__file__, '# @step-lib-raise')}" in err


async def test_continue_on_fail_also_covers_a_static_value_that_does_not_fit(engine):
    """engine/render.py:199-202 Walker.task: a static `value=` that fails its output model goes through
    self.fail(), which sets self.failed and returns S_FAILED whatever continue_on_fail says, so the
    run fails although the step asked to continue. Fix: when task.continue_on_fail, record the
    failure (node failed + node_failed event) but return S_DONE and do not set self.failed."""
    eng, store = engine

    @workflow
    def wf(ctx):
        return Sequence(Task("a", value={"x": 1}, output=Point, continue_on_fail=True), Task("b", value=2))

    status, ex = await run_workflow(eng, wf)
    assert status == "finished"
    nodes = await nodes_of(store, ex.run_id)
    assert nodes[("a", 0)]["state"] == "failed" and nodes[("b", 0)]["output"] == 2


async def test_a_cancelled_run_leaves_no_node_running(engine):
    """engine/run.py:501 RunExecutor._finish_cancel: only PENDING/WAITING_APPROVAL nodes and RUNNING
    *tasks* become cancelled; a Loop (or Worktree) record stays "running" forever in a cancelled run,
    so `show` reports a cancelled run with a running loop. Fix: also mark RUNNING loop/worktree
    records cancelled (every non-final state)."""
    eng, store = engine
    started = asyncio.Event()

    async def long(ctx):
        started.set()
        await asyncio.sleep(30)

    @workflow
    def wf(ctx):
        return Loop("l", Task("a", run=long))

    ex = await eng.start(wf, target_of(wf))
    task = asyncio.create_task(ex.execute())
    await asyncio.wait_for(started.wait(), 10)
    await eng.cancel(ex.run_id)
    assert await asyncio.wait_for(task, 10) == "cancelled"
    states = {n["id"]: n["state"] for n in (await report(store, ex.run_id))["nodes"]}
    assert "running" not in states.values(), states


async def test_a_database_from_a_newer_schema_is_not_modified(tmp_path):
    """engine/store/sqlite.py:82-84 Store.open: `PRAGMA journal_mode=WAL` runs (and rewrites the file
    header, creating -wal/-shm files) before `PRAGMA user_version` is read, so a database from a
    newer smithers is modified before being refused (the CLI contract says bad input writes
    nothing). Fix: read user_version first (a plain read), refuse if too new, then set WAL."""
    path = newer_database(tmp_path / "newer.db")
    before = path.read_bytes()
    with pytest.raises(SchemaTooNew):
        await Store.open(path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["newer.db"]


async def gated_once(ctx):
    CALLS[ctx.node_id] += 1
    GATE["started"].set()
    if ctx.attempt == 1:
        await asyncio.sleep(30)
    return f"attempt {ctx.attempt}"


@workflow(name="cut-short")
def cut_short(ctx):
    return Task("g", run=gated_once)


async def test_an_attempt_in_flight_at_a_crash_is_recorded_as_interrupted(engine):
    """engine/run.py:73-76 RunExecutor.recover: the node goes back to pending with error
    "interrupted", but its attempt row is left with outcome NULL and finished_at NULL forever
    (DESIGN: "attempts that were running are marked interrupted"). Fix: in recover, for each
    RUNNING task add an attempts row update (same key, attempt=rec.attempts) with
    outcome="interrupted", finished_at=now."""
    eng, store = engine
    GATE["started"] = asyncio.Event()
    ex = await eng.start(cut_short, target_of(cut_short))
    await interrupt_when(ex, GATE["started"])
    ex2 = await eng.resume(ex.run_id)
    assert await asyncio.wait_for(ex2.execute(), 10) == "finished"
    attempts = sorted(await store.attempts(ex.run_id), key=lambda a: a.attempt)
    assert [(a.attempt, a.outcome) for a in attempts] == [(1, "interrupted"), (2, "done")]
    assert attempts[0].finished_at is not None

"""A worker in this process, on a real SQLite file: it executes queued runs, continues a run once its
gate is decided, stops gracefully (steps in flight finish, the run stays resumable), honours a
cancel asked while nobody ran the run, and fails with the reason a run whose workflow it cannot load."""
from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from engine import Approval, Sequence, Task, workflow
from engine.lease import Owner
from engine.runtime import Engine
from engine.state import RunStatus
from engine.store import Store
from engine.worker import Worker
from tests.support import dead_pid, target_of, until

STEP_STARTED: asyncio.Event | None = None
STEP_RELEASE: asyncio.Event | None = None


async def slow(ctx):
    assert STEP_STARTED is not None and STEP_RELEASE is not None
    STEP_STARTED.set()
    await STEP_RELEASE.wait()
    return "slow done"


@workflow
def two_steps(ctx):
    return Sequence(Task("a", value=1), Task("b", run=lambda c: c.output("a") + 1))


@workflow
def gated(ctx):
    return Sequence(Task("before", value=1), Approval("ok", message="go on?"), Task("after", value=2))


@workflow
def held(ctx):
    return Sequence(Task("slow", run=slow), Task("next", run=lambda c: 3))


class Running:
    """A worker executing in the background of this test; `until(pred)` waits on its store's wake-ups."""

    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        self.task = asyncio.create_task(worker.run())

    async def stop(self, force: bool = False) -> None:
        self.worker.stop(force=force)
        await asyncio.wait_for(self.task, 60)


@pytest.fixture
async def reader(db_path: Path):
    """A second connection, as another process has: it sees the worker's commits."""
    store = await Store.open(db_path, readonly=True)
    yield store
    await store.close()


async def test_a_worker_executes_queued_runs_each_once(engine, reader):
    eng, store = engine
    ids = [(await eng.queue(two_steps, target_of(two_steps), run_id=f"q{i}")).run_id for i in range(6)]
    assert [r.status for r in await store.list_runs()] == [RunStatus.QUEUED] * 6
    w = Running(Worker(store, concurrency=2, poll=0.02))
    try:
        await until(reader, lambda: _all_finished(reader, ids), "every queued run to finish")
    finally:
        await w.stop()
    assert sorted(w.worker.executed) == ids
    for rid in ids:
        rep = await eng.report(rid)
        assert {n.id: n.output for n in rep.nodes} == {"a": 1, "b": 2}
        assert rep.owner is None  # given up when it finished
        resumed = [e for e in await store.events(rid) if e.type == "run_resumed"]
        assert [e.data["owner"] for e in resumed] == [w.worker.id]


async def _all_finished(store, ids: list[str]) -> bool:
    return sorted(r.id for r in await store.list_runs(RunStatus.FINISHED)) == ids


async def test_a_decision_from_elsewhere_continues_the_run_without_resume(engine, db_path):
    eng, store = engine
    q = await eng.queue(gated, target_of(gated), run_id="g1")
    assert q.workers == 0  # none yet: the CLI says how to start one
    w = Running(Worker(store, poll=0.02))
    other = await type(store).open(db_path)  # another process decides
    try:
        await until(other, lambda: _is(other, "g1", RunStatus.WAITING), "the run to wait at its gate")
        assert (await other.get_run("g1")).owner is None  # nobody holds a waiting run
        assert len(await Engine(other).workers()) == 1
        await Engine(other).decide("g1", None, None, True, by="ann")
        await until(other, lambda: _is(other, "g1", RunStatus.FINISHED), "the run to finish")
    finally:
        await w.stop()
        await other.close()
    assert w.worker.executed == ["g1", "g1"]  # taken when queued, taken again when decided


async def _is(store, run_id: str, status: RunStatus) -> bool:
    return (await store.get_run(run_id)).status == status


async def test_stopping_lets_the_step_in_flight_finish_and_leaves_the_run_resumable(engine, reader):
    global STEP_STARTED, STEP_RELEASE
    STEP_STARTED, STEP_RELEASE = asyncio.Event(), asyncio.Event()
    eng, store = engine
    await eng.queue(held, target_of(held), run_id="h1")
    w = Running(Worker(store, poll=0.02, grace=60))
    await asyncio.wait_for(STEP_STARTED.wait(), 60)
    w.worker.stop()  # graceful: `slow` may finish, `next` must not start
    STEP_RELEASE.set()
    await asyncio.wait_for(w.task, 60)
    run = await store.get_run("h1")
    rep = await eng.report("h1")
    assert run.status == RunStatus.RUNNING and run.owner is None  # nobody holds it: resumable, claimable
    assert {n.id: n.state for n in rep.nodes} == {"slow": "done"}
    assert await store.workers() == []  # deregistered
    again = Running(Worker(store, poll=0.02))  # the next worker goes on from there
    try:
        await until(reader, lambda: _is(reader, "h1", RunStatus.FINISHED), "another worker to finish it")
    finally:
        await again.stop()
    assert [a.attempt for a in await store.attempts("h1") if a.node_id == "slow"] == [1]


async def test_a_cancel_asked_while_the_owner_was_gone_is_carried_out(engine, reader):
    eng, store = engine
    ex = await eng.start(two_steps, target_of(two_steps), run_id="c1")
    gone = Owner("gone-owner", ex.run.owner.host, dead_pid(), None)  # as if its process had died mid-run
    assert await store.take_over("c1", gone, eng.owner.id, {}, time.time())
    await store.request_cancel("c1")
    w = Running(Worker(store, poll=0.02))
    try:
        await until(reader, lambda: _is(reader, "c1", RunStatus.CANCELLED), "the worker to cancel it")
    finally:
        await w.stop()
    assert {n.output for n in (await eng.report("c1")).nodes} <= {None}  # nothing ran


@pytest.mark.parametrize("edit, reason", [
    ("this is not python\n", "failed to load: NameError"),
    ("from engine import Task, workflow\n\n@workflow\ndef gone(ctx):\n    return Task('a', value=2)\n",
     "changed since run x1 started"),
])
async def test_a_run_whose_workflow_cannot_be_loaded_fails_with_the_reason(engine, reader, tmp_path: Path, edit,
                                                                        reason):
    eng, store = engine
    src = tmp_path / "gone.py"
    src.write_text("from engine import Task, workflow\n\n@workflow\ndef gone(ctx):\n    return Task('a', value=1)\n")
    from engine.loader import load_target

    wf, target = load_target(str(src))
    await eng.queue(wf, target, run_id="x1")
    src.write_text(edit)
    w = Running(Worker(store, poll=0.02))
    try:
        await until(reader, lambda: _is(reader, "x1", RunStatus.FAILED), "the worker to fail it")
    finally:
        await w.stop()
    run = await store.get_run("x1")
    assert reason in run.error and run.owner is None
    assert (await eng.report("x1")).nodes == []  # nothing ran

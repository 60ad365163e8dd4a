"""What workers need from every Store (parametrized over implementations in conftest.py): the one
claim rule, atomic claims, lease tokens that fence a lost lease, the worker registry, wake-ups."""
from __future__ import annotations

import asyncio
import os
import time

import pytest

from engine.errors import LeaseLost
from engine.frame import Delta
from engine.lease import STALE_AFTER_S, Owner, this_host
from engine.records import WorkerRecord
from engine.state import WAITING_APPROVAL, NodeRecord, RunKind, RunStatus
from tests.store.test_conformance import ME, started, step
from tests.support import dead_pid

WORKER = Owner("worker-aaaaaaaa", this_host(), os.getpid(), None)


async def queued(store, run_id: str) -> None:
    await started(store, run_id, owner=None, status=RunStatus.QUEUED)


async def owned_by(store, run_id: str, owner: Owner, *, heartbeat: float | None = None) -> None:
    """A running run whose lease is held by `owner`, last beaten at `heartbeat`."""
    await started(store, run_id)
    assert await store.take_over(run_id, owner, ME.id, {}, heartbeat or time.time())


async def claimed(store, limit: int = 100) -> list[str]:
    return [r.id for r in await store.claim_runs(WORKER, limit, time.time())]


async def test_queued_runs_are_claimed_oldest_first_and_once(make_store):
    store = await make_store()
    for rid in ("q1", "q2", "q3"):
        await queued(store, rid)
    first = await store.claim_runs(WORKER, 2, time.time())
    assert [r.id for r in first] == ["q1", "q2"]
    assert all(r.status == RunStatus.RUNNING and r.owner and r.owner.id == WORKER.id and r.lease == 1 for r in first)
    assert await claimed(store) == ["q3"]
    assert await claimed(store) == []
    assert (await store.get_run("q1")).owner.pid == os.getpid()


async def test_runs_whose_owner_is_gone_are_claimed_and_no_others(make_store):
    store = await make_store()
    now = time.time()
    here_dead = Owner("gone-here", this_host(), dead_pid(), None)
    here_alive = Owner("alive-here", this_host(), os.getpid(), None)
    await owned_by(store, "dead-pid", here_dead)
    await owned_by(store, "live-pid", here_alive)
    await owned_by(store, "stale-there", Owner("o-stale", "another-host", 1, None), heartbeat=now - STALE_AFTER_S - 5)
    await owned_by(store, "fresh-there", Owner("o-fresh", "another-host", 1, None), heartbeat=now - 1)
    await started(store, "released")
    await store.release("released", ME.id)
    for rid, status in (("done", RunStatus.FINISHED), ("broken", RunStatus.FAILED), ("stopped", RunStatus.CANCELLED)):
        await started(store, rid)
        await store.commit(rid, ME.id, 1, Delta(run={"status": status, "owner_id": None}), time.time())
    assert sorted(await claimed(store)) == ["dead-pid", "released", "stale-there"]
    after = await store.get_run("stale-there")
    assert after.owner.id == WORKER.id and after.lease == 3 and after.status == RunStatus.RUNNING


async def waiting_gate(store, run_id: str) -> None:
    await started(store, run_id)
    d = Delta()
    d.nodes[("g", 0)] = NodeRecord("approval", WAITING_APPROVAL, 0, None, {"message": "ok?", "on_deny": "fail"})
    d.approvals.append({"key": ("g", 0), "message": "ok?", "on_deny": "fail"})
    d.run.update(status=RunStatus.WAITING, owner_id=None, heartbeat_at=None)
    await store.commit(run_id, ME.id, 1, d, time.time())


async def test_a_waiting_run_is_claimed_once_decided_and_not_before(make_store):
    store = await make_store()
    await waiting_gate(store, "w1")
    assert await claimed(store) == []  # nothing to do until someone decides
    other = await make_store()  # the decision comes from another process
    won, _ = await other.decide("w1", "g", 0, True, "ann", None, time.time())
    assert won
    (run,) = await store.claim_runs(WORKER, 5, time.time())
    assert (run.id, run.status, run.owner.id) == ("w1", RunStatus.RUNNING, WORKER.id)
    assert [a.key for a in await store.decided_unapplied("w1")] == [("g", 0)]
    d = Delta(approvals=[{"key": ("g", 0), "message": "ok?", "on_deny": "fail", "applied": True}],
              run={"status": RunStatus.WAITING, "owner_id": None})
    await store.commit("w1", WORKER.id, 2, d, time.time(), token=run.lease)
    assert await claimed(store) == []  # applied: nothing left to act on


async def test_concurrent_claims_give_each_run_to_exactly_one_worker(make_store):
    first = await make_store()
    for i in range(30):
        await queued(first, f"r{i:02d}")
    stores = [first] + [await make_store() for _ in range(3)]
    got: dict[str, list[str]] = {}

    async def worker(n: int, store) -> None:
        me = Owner(f"worker-{n}", this_host(), os.getpid(), None)
        while True:
            runs = await store.claim_runs(me, 3, time.time())
            if not runs:
                return
            got.setdefault(me.id, []).extend(r.id for r in runs)

    await asyncio.gather(*(worker(n, s) for n, s in enumerate(stores)))
    everything = [rid for ids in got.values() for rid in ids]
    assert sorted(everything) == [f"r{i:02d}" for i in range(30)]  # every run, none twice
    for wid, ids in got.items():
        for rid in ids:
            assert (await first.get_run(rid)).owner.id == wid


async def test_a_lease_taken_again_fences_the_old_token(make_store):
    store = await make_store()
    await started(store)  # leased to ME with token 1
    assert (await store.get_run("r1")).lease == 1
    again = await store.take_over("r1", ME, ME.id, {}, time.time())  # the same owner id takes it once more
    assert again == 2
    d = Delta()
    step(d, "a", 1)
    with pytest.raises(LeaseLost):
        await store.commit("r1", ME.id, 1, d, time.time(), token=1)
    assert (await store.get_run("r1")).frame == 0 and (await store.load_state("r1")).outputs == {}
    assert not await store.heartbeat("r1", ME.id, time.time(), token=1)
    await store.release("r1", ME.id, token=1)
    assert (await store.get_run("r1")).owner.id == ME.id  # the stale token released nothing
    await store.commit("r1", ME.id, 1, d, time.time(), token=2)
    assert (await store.load_state("r1")).outputs == {("a", 0): 1}
    assert await store.heartbeat("r1", ME.id, time.time(), token=2)


async def test_the_worker_registry_lists_workers_and_what_each_holds(make_store):
    store = await make_store()
    now = time.time()
    w1 = WorkerRecord("worker-one", this_host(), os.getpid(), None, 4, now, now)
    w2 = WorkerRecord("worker-two", "another-host", 4242, None, 2, now + 1, now + 1)
    await store.register_worker(w1)
    await store.register_worker(w2)
    await queued(store, "q1")
    await queued(store, "q2")
    await store.claim_runs(Owner(w1.id, w1.host, w1.pid, None), 1, time.time())
    listed = await store.workers()
    assert [(w.id, w.host, w.pid, w.concurrency, w.runs) for w in listed] == [
        ("worker-one", this_host(), os.getpid(), 4, ["q1"]), ("worker-two", "another-host", 4242, 2, [])]
    assert await store.worker_heartbeat("worker-two", now + 5)
    assert [w.heartbeat_at for w in await store.workers()] == [now, now + 5]
    await store.unregister_worker("worker-two")
    assert not await store.worker_heartbeat("worker-two", now + 6)
    assert [w.id for w in await store.workers()] == ["worker-one"]


async def test_subscribers_wake_for_queued_runs_decisions_cancels_and_released_leases(make_store):
    store = await make_store()
    sub = await store.subscribe(poll=0.02)
    other = await make_store()  # another process writes

    async def woken_for(run_id: str) -> None:
        while True:  # a wake-up may name other runs first (or, polling, none in particular)
            wake = await sub.wait(timeout=30)
            assert wake is not None, f"no wake-up for {run_id}"
            if wake.concerns(run_id):
                return

    try:
        await queued(other, "q1")  # a run to claim
        await woken_for("q1")
        await waiting_gate(other, "w1")  # its owner gives the lease up to wait for a human
        await woken_for("w1")
        await other.decide("w1", "g", 0, True, "ann", None, time.time())  # a decision to apply
        await woken_for("w1")
        await started(other, "c1")
        await other.request_cancel("c1")  # its owner must stop it
        await woken_for("c1")
        await other.release("c1", ME.id)  # a run nobody runs
        await woken_for("c1")
    finally:
        sub.close()


async def test_a_waiting_run_nobody_holds_is_claimed_once_its_timer_is_due_or_a_signal_arrives(make_store):
    store = await make_store()
    now = time.time()
    for rid, wake in (("due", now - 1), ("later", now + 3600), ("sig", None)):  # a timer due, one not, a signal wait
        await started(store, rid)
        await store.commit(rid, ME.id, 1, Delta(run={"status": RunStatus.WAITING, "owner_id": None,
                                                     "heartbeat_at": None, "wake_at": wake}), now)
    assert await claimed(store) == ["due"]
    other = await make_store()
    await other.send_signal("sig", "go", {"x": 1}, "ann", time.time())
    assert await claimed(store) == ["sig"]
    assert (await store.get_run("later")).owner is None  # it sleeps, held by nobody, until it is due


async def test_a_sub_workflows_run_is_never_claimed_by_itself(make_store):
    store = await make_store()
    await started(store, "parent")
    await started(store, "child", kind=RunKind.SUBFLOW, parent_run_id="parent", parent_frame=0)
    await store.release("child", ME.id)  # both orphaned: the parent's Subflow step drives the child
    await store.release("parent", ME.id)
    assert await claimed(store) == ["parent"]

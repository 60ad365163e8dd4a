"""The Store contract, the same for every implementation (parametrized in conftest.py): runs,
frames, leases, approvals, forks, reports and events, through the interface only."""
from __future__ import annotations

import asyncio
import time

import pytest

from engine.errors import BadInput, LeaseLost, RunNotFound
from engine.frame import Delta, keyframe
from engine.lease import Owner
from engine.records import NewRun, OutputRecord
from engine.state import DONE, RUNNING, WAITING_APPROVAL, NodeRecord, RunKind, RunStatus
from engine.timetravel import ForkPlan

ME = Owner("me-000000001", "host-a", 111, 1.0)
OTHER = Owner("other-000001", "host-b", 222, 2.0)


def new_run(run_id: str = "r1", **kw: object) -> NewRun:
    base = dict(id=run_id, workflow="wf", target="module:m:wf", source_path=None, source_hash=None,
                input={"x": 1}, workdir="/tmp", meta={"max_concurrency": 4})
    base.update(kw)
    return NewRun(**base)  # type: ignore[arg-type]


async def started(store, run_id: str = "r1", owner: Owner | None = ME, **kw: object) -> None:
    await store.create_run(new_run(run_id, **kw), owner, time.time())


def step(delta: Delta, name: str, value: object, it: int = 0) -> None:
    key = (name, it)
    delta.nodes[key] = NodeRecord("task", DONE, 1, None, None)
    delta.outputs[key] = (value, None, {"fp": "x", "input": False, "reads": []})
    delta.attempts.append({"run_id": "r1", "node_id": name, "iteration": it, "attempt": 1, "started_at": 1.0,
                           "finished_at": 2.0, "outcome": "done", "tokens_in": 10, "tokens_out": 5,
                           "cost_usd": 0.5, "session_id": "s-1"})
    delta.event("node_finished", key, attempt=1)


# --- runs ----------------------------------------------------------------------------------------
async def test_a_run_reads_back_as_it_was_created(make_store):
    store = await make_store()
    await started(store, "0101-abc", input={"x": 1, "text": "é ✓"})
    run = await store.get_run("0101-abc")
    assert (run.id, run.workflow, run.status, run.kind, run.frame) == ("0101-abc", "wf", RunStatus.RUNNING,
                                                                      RunKind.RUN, 0)
    assert run.input == {"x": 1, "text": "é ✓"} and run.meta == {"max_concurrency": 4}
    assert run.owner is not None and (run.owner.id, run.owner.host, run.owner.pid) == (ME.id, "host-a", 111)
    assert await store.run_exists("0101-abc") and not await store.run_exists("0101")
    assert await store.find_run("0101-a") == "0101-abc"
    frames = await store.frames("0101-abc")
    assert [f.frame for f in frames] == [0]
    assert [e.type for e in await store.events("0101-abc")] == ["run_started"]


async def test_unknown_ambiguous_and_absurd_run_ids_are_one_line_errors(make_store):
    store = await make_store()
    await started(store, "0101-aaa")
    await started(store, "0101-aab")
    with pytest.raises(RunNotFound, match="ambiguous"):
        await store.find_run("0101-aa")
    with pytest.raises(RunNotFound, match="did you mean"):
        await store.get_run("0101-a")
    for bad in ("nope", "x" * 100_000, "%", "_", "0101-a%"):
        with pytest.raises(RunNotFound) as e:
            await store.find_run(bad)
        assert "\n" not in str(e.value) and len(str(e.value)) < 400


async def test_a_run_id_cannot_be_created_twice(make_store):
    store = await make_store()
    await started(store)
    with pytest.raises(BadInput, match="already exists"):
        await started(store)
    assert len(await store.list_runs()) == 1


async def test_list_runs_newest_first_by_status_and_children(make_store):
    store = await make_store()
    await started(store, "a")
    await started(store, "b", owner=None, status=RunStatus.QUEUED)
    await started(store, "c", parent_run_id="a", parent_frame=0, kind=RunKind.FORK)
    assert [r.id for r in await store.list_runs()] == ["c", "b", "a"]
    assert [r.id for r in await store.list_runs(RunStatus.QUEUED)] == ["b"]
    assert [r.id for r in await store.child_runs("a")] == ["c"]
    assert (await store.get_run("b")).owner is None


# --- frames ----------------------------------------------------------------------------------------
async def test_a_commit_is_one_frame_with_its_nodes_outputs_attempts_and_events(make_store):
    store = await make_store()
    await started(store)
    d = Delta()
    step(d, "a", {"n": 1})
    d.nodes[("b", 0)] = NodeRecord("task", RUNNING, 1, None, None)
    d.event("node_started", ("b", 0), attempt=1)
    last = await store.commit("r1", ME.id, 1, d, time.time())
    events = await store.events("r1")
    assert [e.type for e in events] == ["run_started", "node_finished", "node_started"]
    assert events[-1].seq == last and events[-2].seq == last - 1
    assert (await store.get_run("r1")).frame == 1
    state = await store.load_state("r1")
    assert state.outputs == {("a", 0): {"n": 1}}
    assert state.nodes[("b", 0)].state == RUNNING
    frames = await store.frames("r1")
    assert [f.frame for f in frames] == [0, 1]
    assert set(frames[1].delta.nodes) == {("a", 0), ("b", 0)} and frames[1].delta.outputs == [("a", 0)]
    (attempt,) = await store.attempts("r1")
    assert (attempt.outcome, attempt.tokens_in, attempt.cost_usd, attempt.extra) == ("done", 10, 0.5,
                                                                                    {"session_id": "s-1"})
    outs = await store.outputs_at("r1", 1)
    assert outs == {("a", 0): OutputRecord({"n": 1}, None, {"fp": "x", "input": False, "reads": []}, 1)}
    assert await store.outputs_at("r1", 0) == {}


async def test_attempts_and_outputs_of_one_node(make_store):
    store = await make_store()
    await started(store)
    d = Delta()
    step(d, "a", {"n": 1})
    step(d, "b", {"n": 2})
    await store.commit("r1", ME.id, 1, d, time.time())
    assert {a.key for a in await store.attempts("r1")} == {("a", 0), ("b", 0)}
    assert [a.key for a in await store.attempts("r1", node=("b", 0))] == [("b", 0)]
    assert await store.attempts("r1", node=("b", 1)) == []
    assert await store.outputs_at("r1", 1, node=("b", 0)) == {("b", 0): (await store.outputs_at("r1", 1))[("b", 0)]}
    assert await store.outputs_at("r1", 0, node=("b", 0)) == {}
    assert await store.outputs_at("r1", 1, node=("c", 0)) == {}


async def test_every_frame_rebuilds_exactly_across_keyframes(make_store):
    store = await make_store()
    await started(store)
    nodes: dict = {}
    seen = []
    for f in range(1, 40):
        d = Delta()
        rec = NodeRecord("task", DONE if f % 2 else RUNNING, f, None, {"f": f})
        d.nodes[(f"n{f % 7}", f % 3)] = rec
        nodes[(f"n{f % 7}", f % 3)] = rec
        d.run["status"] = RunStatus.WAITING if f == 39 else RunStatus.RUNNING
        kf = keyframe(nodes, d.run["status"]) if f % 10 == 0 else None
        await store.commit("r1", ME.id, f, d, time.time(), kf)
        seen.append(dict(nodes))
    for f, expect in enumerate(seen, 1):
        at = await store.state_at("r1", f)
        assert at.nodes == expect, f
    assert (await store.state_at("r1", 39)).status == RunStatus.WAITING
    assert (await store.state_at("r1", 0)).nodes == {}


async def test_a_commit_by_an_owner_that_lost_the_lease_writes_nothing(make_store):
    store = await make_store()
    await started(store)
    assert await store.take_over("r1", OTHER, ME.id, {}, time.time())
    d = Delta()
    step(d, "a", 1)
    with pytest.raises(LeaseLost, match="pid 222 on host-b"):
        await store.commit("r1", ME.id, 1, d, time.time())
    assert (await store.get_run("r1")).frame == 0
    assert await store.load_state("r1") == await store.load_state("r1") and (await store.load_state("r1")).nodes == {}
    assert [e.type for e in await store.events("r1")] == ["run_started"]
    assert not await store.heartbeat("r1", ME.id, time.time())
    assert await store.heartbeat("r1", OTHER.id, time.time())


async def test_take_over_is_atomic_and_conditional(make_store):
    store = await make_store()
    await started(store)
    results = await asyncio.gather(*(store.take_over("r1", Owner(f"o{i}", "h", i, None), ME.id, {}, time.time())
                                     for i in range(5)))
    assert results.count(None) == 4 and [r for r in results if r is not None] == [2]  # the new lease token
    await store.release("r1", "nobody-in-particular")  # not the owner: nothing changes
    assert (await store.get_run("r1")).owner is not None
    winner = (await store.get_run("r1")).owner
    await store.release("r1", winner.id)
    assert (await store.get_run("r1")).owner is None
    assert await store.take_over("r1", ME, None, {"status": RunStatus.RUNNING, "cancel_requested": 0}, time.time())


async def test_cancel_requests_reach_the_owner(make_store):
    store = await make_store()
    await started(store)
    assert not await store.cancel_requested("r1")
    other = await make_store()  # another connection, as another process would have
    await other.request_cancel("r1")
    assert await store.cancel_requested("r1")


async def test_data_version_moves_when_another_connection_commits(make_store):
    store = await make_store()
    other = await make_store()
    await started(store)
    seen = await other.data_version()
    assert await other.data_version() == seen  # nothing new
    await store.commit("r1", ME.id, 1, Delta(run={"status": RunStatus.WAITING}), time.time())
    assert await other.data_version() != seen


# --- approvals -------------------------------------------------------------------------------------
async def gate(store) -> None:
    await started(store)
    d = Delta()
    d.nodes[("g", 0)] = NodeRecord("approval", WAITING_APPROVAL, 0, None, {"message": "ship?", "on_deny": "fail"})
    d.approvals.append({"key": ("g", 0), "message": "ship?", "on_deny": "fail"})
    d.run["status"] = RunStatus.WAITING
    await store.commit("r1", ME.id, 1, d, time.time())


async def test_a_decision_is_recorded_once_and_logged_at_once(make_store):
    store = await make_store()
    await gate(store)
    (open_gate,) = await store.approvals(open_only=True)
    assert (open_gate.run_id, open_gate.key, open_gate.message, open_gate.decision) == ("r1", ("g", 0), "ship?", None)
    other = await make_store()
    results = await asyncio.gather(store.decide("r1", "g", 0, True, "ann", "ok", time.time()),
                                   other.decide("r1", "g", 0, False, "bob", "no", time.time()))
    assert sorted(won for won, _ in results) == [False, True]
    winner = next(g for won, g in results if won)
    loser = next(g for won, g in results if not won)
    assert loser.decision == winner.decision and loser.decided_by == winner.decided_by
    assert [e.type for e in await store.events("r1", types=["approval_decided"])] == ["approval_decided"]
    assert await store.approvals(open_only=True) == []
    (pending,) = await store.decided_unapplied("r1")
    assert pending.decision == winner.decision
    d = Delta(approvals=[{"key": ("g", 0), "message": "ship?", "on_deny": "fail", "applied": True}])
    await store.commit("r1", ME.id, 2, d, time.time())
    assert await store.decided_unapplied("r1") == []


# --- forks -----------------------------------------------------------------------------------------
def plan(parent, new_id: str, kind: RunKind) -> ForkPlan:
    return ForkPlan(run=new_run(new_id, kind=kind, status=RunStatus.QUEUED, parent_run_id=parent.id, parent_frame=1),
                    parent=parent, frame=1, kind=kind,
                    nodes={("a", 0): NodeRecord("task", DONE, 1, None, None)},
                    outputs={("a", 0): OutputRecord({"n": 1}, None, None, 1)})


async def test_a_fork_carries_nodes_and_outputs_in_one_write(make_store):
    store = await make_store()
    await started(store)
    d = Delta()
    step(d, "a", {"n": 1})
    await store.commit("r1", ME.id, 1, d, time.time())
    await store.release("r1", ME.id)
    parent = await store.get_run("r1")
    await store.insert_fork(plan(parent, "f1", RunKind.FORK), time.time())
    fork = await store.get_run("f1")
    assert (fork.status, fork.parent_run_id, fork.parent_frame, fork.kind, fork.owner) == (
        RunStatus.QUEUED, "r1", 1, RunKind.FORK, None)
    assert (await store.load_state("f1")).outputs == {("a", 0): {"n": 1}}
    assert (await store.state_at("f1", 0)).nodes == {("a", 0): NodeRecord("task", DONE, 1, None, None)}
    assert (await store.frames("f1"))[0].delta.fork["from_run"] == "r1"
    assert [e.type for e in await store.events("f1")] == ["run_forked"]
    assert (await store.get_run("r1")).status == RunStatus.RUNNING  # a fork leaves its parent alone


async def test_of_two_rewinds_of_one_run_one_wins(make_store):
    store = await make_store()
    await started(store)
    parent = await store.get_run("r1")
    other = await make_store()
    results = await asyncio.gather(store.insert_fork(plan(parent, "w1", RunKind.REWIND), time.time()),
                                   other.insert_fork(plan(parent, "w2", RunKind.REWIND), time.time()),
                                   return_exceptions=True)
    assert sum(r is None for r in results) == 1
    assert all(isinstance(r, BadInput) for r in results if r is not None)
    after = await store.get_run("r1")
    assert after.status == RunStatus.REWOUND and after.successor_run_id in ("w1", "w2")
    assert {await store.run_exists(x) for x in ("w1", "w2")} == {True, False}


# --- reading ---------------------------------------------------------------------------------------
async def test_report_data_and_run_stats(make_store):
    store = await make_store()
    await gate(store)
    d = Delta()
    step(d, "a", 5)
    d.nodes[("b", 0)] = NodeRecord("task", RUNNING, 1, None, None)
    await store.commit("r1", ME.id, 2, d, time.time())
    data = await store.report_data("r1")
    assert (data.run.id, data.status, set(data.nodes)) == ("r1", RunStatus.WAITING, {("g", 0), ("a", 0), ("b", 0)})
    assert data.outputs == {("a", 0): 5} and len(data.attempts) == 1 and len(data.approvals) == 1
    past = await store.report_data("r1", 1)
    assert set(past.nodes) == {("g", 0)} and past.outputs == {} and past.status == RunStatus.WAITING
    assert past.frame_at is not None
    stats = (await store.run_stats(["r1", "nobody"]))["r1"]
    assert (stats.done, stats.known, stats.running, stats.gates, stats.tokens, stats.cost_usd) == (
        1, 3, [("b", 0)], 1, 15, 0.5)
    with pytest.raises(RunNotFound):
        await store.report_data("missing")


async def test_events_by_node_type_and_newest(make_store):
    store = await make_store()
    await started(store)
    for f in range(1, 6):
        d = Delta()
        d.event("log", ("a", 0), message=f"m{f}")
        d.event("log", ("b", 0), message=f"b{f}")
        await store.commit("r1", ME.id, f, d, time.time())
    a = await store.events("r1", node=("a", 0))
    assert [e.data["message"] for e in a] == [f"m{f}" for f in range(1, 6)]
    newest = await store.events("r1", node=("b", 0), limit=2, newest=True)
    assert [e.data["message"] for e in newest] == ["b4", "b5"]
    after = await store.events("r1", after=a[2].seq)
    assert all(e.seq > a[2].seq for e in after) and len(after) == 5
    assert await store.last_event_seq() == max(e.seq for e in await store.events())
    assert [e.type for e in await store.events("r1", types=["run_started"])] == ["run_started"]


async def test_an_interrupted_attempt_is_recorded_from_its_running_node(make_store):
    store = await make_store()
    await started(store)
    d = Delta()
    d.nodes[("a", 0)] = NodeRecord("task", RUNNING, 1, None, None)
    await store.commit("r1", ME.id, 1, d, time.time())
    d = Delta(interrupted=[("a", 0)])
    d.nodes[("a", 0)] = NodeRecord("task", "pending", 1, "interrupted", None)
    await store.commit("r1", ME.id, 2, d, time.time())
    (attempt,) = await store.attempts("r1")
    assert (attempt.node_id, attempt.attempt, attempt.outcome) == ("a", 1, "interrupted")
    assert attempt.finished_at is not None and attempt.started_at <= attempt.finished_at
    assert (await store.node_records("r1", "a"))[0].error == "interrupted"


async def test_a_read_only_store_reads_and_refuses_writes(make_store):
    store = await make_store()
    await started(store)
    reader = await make_store(readonly=True)
    assert (await reader.get_run("r1")).id == "r1"
    with pytest.raises(BadInput, match="read-only"):
        await reader.create_run(new_run("r2"), ME, time.time())
    assert not await store.run_exists("r2")


# --- signals ---------------------------------------------------------------------------------------
async def test_signals_are_kept_in_order_until_a_commit_takes_them_once(make_store):
    store = await make_store()
    await started(store)
    other = await make_store()  # another process sends
    first = await other.send_signal("r1", "ci", {"ok": True}, "hook", time.time())
    second = await other.send_signal("r1", "ci", {"ok": False}, None, time.time())
    await other.send_signal("r1", "deploy", 1, None, time.time())
    assert first.seq < second.seq and first.pending and first.payload == {"ok": True} and first.sent_by == "hook"
    assert [s.name for s in await store.signals("r1", pending_only=True)] == ["ci", "ci", "deploy"]
    assert [e.type for e in await store.events("r1", types=["signal_sent"])] == ["signal_sent"] * 3
    d = Delta(signals=[{"seq": first.seq, "key": ("wait", 0)}, {"seq": second.seq, "key": None, "error": "bad"}])
    await store.commit("r1", ME.id, 1, d, time.time())
    taken, refused, kept = await store.signals("r1")
    assert (taken.node_id, taken.iteration, taken.frame, taken.error, taken.pending) == ("wait", 0, 1, None, False)
    assert (refused.node_id, refused.error, refused.pending) == (None, "bad", False)
    assert kept.pending and [s.name for s in await store.signals("r1", pending_only=True)] == ["deploy"]
    # taking it again (a stale process) changes nothing
    await store.commit("r1", ME.id, 2, Delta(signals=[{"seq": first.seq, "key": ("other", 0)}]), time.time())
    assert (await store.signals("r1"))[0].node_id == "wait"


@pytest.mark.parametrize("status", [RunStatus.FINISHED, RunStatus.FAILED, RunStatus.CANCELLED])
async def test_a_signal_to_a_run_that_ended_is_refused_and_writes_nothing(make_store, status):
    store = await make_store()
    await started(store)
    await store.commit("r1", ME.id, 1, Delta(run={"status": status}), time.time())
    with pytest.raises(BadInput, match=f"is {status}: it takes no more signals"):
        await store.send_signal("r1", "ci", {}, None, time.time())
    with pytest.raises(RunNotFound):
        await store.send_signal("nope", "ci", {}, None, time.time())
    assert await store.signals("r1") == [] and await store.events("r1", types=["signal_sent"]) == []


# --- answers, waits, timers, the cache, continued runs ---------------------------------------------
async def test_an_answer_is_recorded_once_with_its_mode_and_request(make_store):
    store = await make_store()
    await started(store)
    d = Delta()
    d.nodes[("pick", 0)] = NodeRecord("approval", WAITING_APPROVAL, 0, None, {"message": "which?"})
    d.approvals.append({"key": ("pick", 0), "message": "which?", "on_deny": "fail", "mode": "select",
                        "request": {"options": ["A", "B"], "allowed": ["ann"]}})
    await store.commit("r1", ME.id, 1, d, time.time())
    (g,) = await store.approvals("r1")
    assert (g.mode, g.options, g.allowed, g.answer) == ("select", ["A", "B"], ["ann"], None)
    won, row = await store.decide("r1", "pick", 0, True, "ann", None, time.time(), answer="B")
    assert won and (row.decision, row.answer) == ("approved", "B")
    again, row2 = await store.decide("r1", "pick", 0, True, "bob", None, time.time(), answer="A",
                                     decision="timed_out")
    assert not again and (row2.decided_by, row2.answer, row2.decision) == ("ann", "B", "approved")
    (ev,) = await store.events("r1", types=["approval_decided"])
    assert ev.data["answer"] == "B"


async def test_open_waits_wake_at_and_wakeable_runs(make_store):
    store = await make_store()
    await started(store, "t")  # a timer due soon
    await started(store, "s")  # waits on a signal
    await started(store, "later")  # a timer far away
    now = time.time()
    for rid, kind, data, wake in (("t", "timer", {"due": now - 1}, now - 1), ("s", "signal", {"name": "go"}, None),
                                  ("later", "timer", {"due": now + 3600}, now + 3600)):
        d = Delta(run={"status": RunStatus.WAITING, "wake_at": wake, "owner_id": None})
        d.nodes[("w", 0)] = NodeRecord(kind, "waiting", 0, None, data)
        await store.commit(rid, ME.id, 1, d, now)
    assert {(w.run_id, w.kind) for w in await store.open_waits()} == {("t", "timer"), ("s", "signal"),
                                                                      ("later", "timer")}
    assert [w.data for w in await store.open_waits("s")] == [{"name": "go"}]
    assert (await store.get_run("t")).wake_at == now - 1
    assert {r.id for r in await store.wakeable_runs(now)} == {"t"}
    await store.send_signal("s", "go", {}, None, now)
    assert {r.id for r in await store.wakeable_runs(now)} == {"t", "s"}
    assert {r.id for r in await store.wakeable_runs(now + 7200)} == {"t", "s", "later"}


async def test_cache_entries_are_found_by_node_key_and_version(make_store):
    store = await make_store()
    await started(store)
    d = Delta(cache=[{"node_id": "sum", "key": "k1", "version": 2, "value": {"n": 1}, "type": "m:T", "iteration": 0}])
    await store.commit("r1", ME.id, 1, d, time.time())
    other = await make_store()
    hit = await other.cache_get("sum", "k1", "2")
    assert hit is not None and (hit.value, hit.type, hit.run_id, hit.iteration) == ({"n": 1}, "m:T", "r1", 0)
    assert await other.cache_get("sum", "k1", "1") is None and await other.cache_get("other", "k1", "2") is None


async def test_usage_by_node_sums_the_attempts(make_store):
    store = await make_store()
    await started(store)
    d = Delta()
    step(d, "a", 1)
    d.attempts.append({"run_id": "r1", "node_id": "a", "iteration": 0, "attempt": 2, "started_at": 3.0,
                       "tokens_in": 1, "tokens_out": 2, "cost_usd": 0.25})
    await store.commit("r1", ME.id, 1, d, time.time())
    assert await store.usage_by_node("r1") == {("a", 0): (18, 0.75)}


async def test_a_successor_run_is_made_in_the_same_commit_that_ends_its_predecessor(make_store):
    store = await make_store()
    await started(store)
    d = Delta(run={"status": RunStatus.FINISHED, "successor_run_id": "r2", "result": {"continued_as": "r2"},
                   "owner_id": None})
    d.new_runs.append((new_run("r2", kind=RunKind.CONTINUE, parent_run_id="r1", parent_frame=1, input={"x": 2}), ME))
    d.event("run_continued", None, successor="r2")
    last = await store.commit("r1", ME.id, 1, d, time.time())
    old, new = await store.get_run("r1"), await store.get_run("r2")
    assert (old.status, old.successor_run_id, old.result) == (RunStatus.FINISHED, "r2", {"continued_as": "r2"})
    assert (new.kind, new.parent_run_id, new.input, new.owner.id) == (RunKind.CONTINUE, "r1", {"x": 2}, ME.id)
    assert [f.frame for f in await store.frames("r2")] == [0]
    assert (await store.events("r1"))[-1].seq == last  # the frame's own events are numbered last


async def test_totals_count_every_run_step_attempt_and_gate(make_store):
    store = await make_store()
    assert (await store.totals()).runs == {}
    await gate(store)
    d = Delta()
    step(d, "a", 5)
    d.nodes[("b", 0)] = NodeRecord("task", RUNNING, 1, None, None)
    await store.commit("r1", ME.id, 2, d, time.time())
    await started(store, "r2", owner=None, status=RunStatus.QUEUED)
    t = await store.totals()
    assert t.runs == {"waiting": 1, "queued": 1}
    assert t.steps == {"waiting_approval": 1, "done": 1, "running": 1}
    assert t.attempts == {"done": 1}
    assert (t.tokens_in, t.tokens_out, t.cost_usd, t.open_gates) == (10, 5, 0.5, 1)

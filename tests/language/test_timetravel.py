"""Time travel across the new steps: every frame of a run that uses them all rebuilds exactly as it
was live; a fork from before a signal waits again while a fork from after it carries the payload;
a rewind across a human task; a fork from the middle of a saga's compensation goes on
compensating; a fork of a parent with a sub-workflow carries a finished child's result and
starts an unfinished one again as its own child."""

from __future__ import annotations

import asyncio
import copy

from pydantic import BaseModel

from engine import (Approval, Cache, HumanTask, Loop, Parallel, Saga, Sequence, Signal, Subflow, Task, Timer,
                    TryCatchFinally, workflow)
from tests.support import nodes_of, target_of


class Go(BaseModel):
    n: int


class Answer(BaseModel):
    word: str


def boom(ctx):
    raise RuntimeError("no")


@workflow
def small(ctx):
    return Task("x", run=lambda c: "child result")


@workflow
def everything(ctx):
    return Sequence(
        Parallel(Signal("sig", output=Go), Timer("nap", seconds=0.01), Subflow("sub", small),
                 Task("cached", run=lambda c: 1, cache=Cache("everything-cached"))),
        Loop("rounds", Approval("pick", message="?", mode="select", options=["a", "b"], timeout=0.01,
                                on_timeout="approve"), max_iterations=2),
        TryCatchFinally(Task("bad", run=boom, retries=0), catch=Task("caught", value=1), finally_=Task("fin", value=2)),
        Saga("saga", [(Task("s1", value=1), Task("u1", value=0)), (Task("s2", run=boom, retries=0), None)],
             continue_on_fail=True),
        HumanTask("ask", prompt="a word?", output=Answer, timeout=0.01, on_timeout="skip"),
        Task("end", value="done"),
    )


async def test_every_frame_of_a_run_using_every_new_step_rebuilds_exactly(engine, watch):
    eng, store = engine
    snapshots: list = []
    eng.on_commit = lambda run_id, frame, state: snapshots.append(
        (run_id, frame, copy.deepcopy({k: r.as_list() for k, r in state.nodes.items()}), copy.deepcopy(state.outputs)))
    ex = await eng.start(everything, target_of(everything), None)
    task = asyncio.create_task(ex.execute(stop_when_waiting=False))
    await watch.until("wait_started", node="sig")
    await eng.signal(ex.run_id, "sig", {"n": 1})
    assert await asyncio.wait_for(task, 30) == "finished"
    mine = [s for s in snapshots if s[0] == ex.run_id]
    assert [s[1] for s in mine] == list(range(1, ex.frame + 1))
    kinds = {r[0] for r in mine[-1][2].values()}
    assert kinds >= {"signal", "timer", "subflow", "task", "approval", "loop", "saga", "human"}
    for _, frame, live_nodes, live_outputs in mine:
        nodes, outputs, _ = await store.state_at(ex.run_id, frame)
        assert {k: r.as_list() for k, r in nodes.items()} == live_nodes, f"frame {frame}"
        assert outputs == live_outputs, f"frame {frame}"
    # the child run's frames too
    kid = [s for s in snapshots if s[0] == f"{ex.run_id}.sub"]
    assert kid
    for _, frame, live_nodes, _ in kid:
        nodes, _, _ = await store.state_at(f"{ex.run_id}.sub", frame)
        assert {k: r.as_list() for k, r in nodes.items()} == live_nodes


@workflow
def signalled(ctx):
    return Sequence(Task("before", value=1), Signal("go", output=Go), Task("after", run=lambda c: c.output("go").n * 10))


async def test_a_fork_from_before_a_signal_waits_again_and_from_after_it_carries_the_payload(engine, watch):
    eng, store = engine
    ex = await eng.start(signalled, target_of(signalled), None)
    task = asyncio.create_task(ex.execute())
    await watch.until("wait_started", node="go")
    await eng.signal(ex.run_id, "go", {"n": 4})
    assert await asyncio.wait_for(task, 30) == "finished"
    frames = await store.frames(ex.run_id)
    waiting = next(f.frame for f in frames if ("go", 0) in f.delta.nodes and f.delta.nodes[("go", 0)].state == "waiting")
    taken = next(f.frame for f in frames if ("go", 0) in f.delta.outputs)

    before = await eng.fork(ex.run_id, waiting, new_id="before")
    assert "go#0" not in [k for k in before.rerun] and before.carried == 1  # only "before"'s output
    fx = await eng.resume("before")
    ftask = asyncio.create_task(fx.execute())
    await watch.until("wait_started", node="go", run_id="before")  # it waits again: the parent's signal is not its
    assert (await nodes_of(store, "before"))[("go", 0)]["state"] == "waiting"
    await eng.signal("before", "go", {"n": 7})
    assert await asyncio.wait_for(ftask, 30) == "finished"
    assert (await nodes_of(store, "before"))[("after", 0)]["output"] == 70

    after = await eng.fork(ex.run_id, taken, new_id="after")
    assert after.carried == 2
    assert await (await eng.resume("after")).execute() == "finished"
    nodes = await nodes_of(store, "after")
    assert nodes[("go", 0)]["output"] == {"n": 4} and nodes[("after", 0)]["output"] == 40
    assert await store.signals("after") == []  # carried as an output, not sent again


@workflow
def asks(ctx):
    return Sequence(HumanTask("ask", prompt="word?", output=Answer), Task("echo", run=lambda c: c.output("ask").word))


async def test_a_rewind_to_before_an_answer_asks_again_and_after_it_keeps_the_answer(engine):
    eng, store = engine
    ex = await eng.start(asks, target_of(asks), None)
    assert await ex.execute() == "waiting"
    d = await eng.answer(ex.run_id, "ask", None, {"word": "hi"}, by="ann", resume=True)
    assert await d.executor.execute() == "finished"
    frames = await store.frames(ex.run_id)
    asked = next(f.frame for f in frames if ("ask", 0) in f.delta.nodes)
    answered = next(f.frame for f in frames if ("ask", 0) in f.delta.outputs)
    info = await eng.rewind(ex.run_id, asked, new_id="again")
    assert (await store.get_run(ex.run_id)).status == "rewound"
    assert await (await eng.resume(info.run_id)).execute() == "waiting"
    (gate,) = await store.approvals("again")
    assert (gate.mode, gate.decision) == ("human", None)
    kept = await eng.fork("again", None, new_id="unused")  # (a fork of a waiting run: still asks)
    assert kept.carried == 0
    later = await eng.fork(ex.run_id, answered, new_id="kept")
    assert await (await eng.resume(later.run_id)).execute() == "finished"
    assert (await nodes_of(store, "kept"))[("echo", 0)]["output"] == "hi"


undone: list[str] = []


def undo_b(ctx):
    undone.append(ctx.run_id)
    return "b undone"


@workflow
def compensates(ctx):
    return Saga("order", [(Task("a", value="A"), Task("undo-a", value="a undone")),
                          (Task("b", value="B"), Task("undo-b", run=undo_b)),
                          (Task("c", run=boom, retries=0), None)])


async def test_a_fork_from_the_middle_of_compensating_goes_on_compensating(engine):
    eng, store = engine
    ex = await eng.start(compensates, target_of(compensates), None)
    assert await ex.execute() == "failed"
    frames = await store.frames(ex.run_id)
    mid = next(f.frame for f in frames if ("undo-b", 0) in f.delta.outputs)
    info = await eng.fork(ex.run_id, mid, new_id="mid")
    assert "c#0" not in info.rerun
    assert await (await eng.resume("mid")).execute() == "failed"
    nodes = await nodes_of(store, "mid")
    assert nodes[("c", 0)]["state"] == "failed" and nodes[("c", 0)]["caught"] == "order"
    assert nodes[("undo-a", 0)]["output"] == "a undone"
    assert nodes[("order", 0)]["saga"]["compensated"] == ["undo-b", "undo-a"]
    assert undone == [ex.run_id]  # undo-b was done at that frame: carried, not run again


@workflow
def parent_of_two(ctx):
    return Sequence(Subflow("one", small), Signal("wait"), Subflow("two", small))


async def test_a_fork_of_a_parent_carries_a_finished_childs_result_and_starts_the_others_as_its_own(engine, watch):
    eng, store = engine
    ex = await eng.start(parent_of_two, target_of(parent_of_two), None)
    task = asyncio.create_task(ex.execute())
    await watch.until("wait_started", node="wait")
    mid = (await store.get_run(ex.run_id)).frame
    await eng.signal(ex.run_id, "wait", None)
    assert await asyncio.wait_for(task, 30) == "finished"
    info = await eng.fork(ex.run_id, mid, new_id="pf")
    fx = await eng.resume("pf")
    ftask = asyncio.create_task(fx.execute())
    await watch.until("wait_started", node="wait", run_id="pf")
    await eng.signal("pf", "wait", None)
    assert await asyncio.wait_for(ftask, 30) == "finished"
    nodes = await nodes_of(store, "pf")
    assert nodes[("one", 0)]["child_run_id"] == f"{ex.run_id}.one"  # carried: the original's child
    assert nodes[("two", 0)]["child_run_id"] == "pf.two"  # started again as the fork's own child
    assert not await store.run_exists("pf.one") and info.carried == 1

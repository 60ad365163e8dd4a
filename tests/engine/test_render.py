"""Render and plan semantics, through the real Engine on a real SQLite file: what runs, in what
order, how many at once, which branch, how loops iterate, skips, static values, output models,
and the errors a broken workflow body gets."""

from __future__ import annotations

import asyncio

import pytest
from pydantic import BaseModel

from engine import Branch, Loop, OutputMissing, Parallel, Sequence, Task, workflow
from engine.runtime import Engine
from tests.support import events_of, line_of, nodes_of, report, run_workflow


class Point(BaseModel):
    x: int
    y: int


def recorder(log: list, value=None):
    """An async compute step that appends (id, iteration) to `log` and returns `value` (or its id)."""

    async def step(ctx):
        log.append((ctx.node_id, ctx.iteration))
        return ctx.node_id if value is None else value

    return step


class Peak:
    """Counts steps running at the same moment."""

    def __init__(self) -> None:
        self.now = 0
        self.peak = 0
        self.done = 0

    async def __call__(self, ctx):
        self.now += 1
        self.peak = max(self.peak, self.now)
        await asyncio.sleep(0.01)
        self.now -= 1
        self.done += 1
        return ctx.node_id


# --- sequence, parallel, concurrency -----------------------------------------------------------
async def test_sequence_runs_children_in_order_each_seeing_the_previous_output(engine):
    eng, store = engine
    log: list = []

    async def b(ctx):
        log.append(("b", ctx.output("a")))
        return ctx.output("a") + "b"

    @workflow
    def seq(ctx):
        return Sequence(Task("a", run=recorder(log, "a")), Task("b", run=b), Task("c", run=recorder(log)))

    status, ex = await run_workflow(eng, seq)
    assert status == "finished"
    assert log == [("a", 0), ("b", "a"), ("c", 0)]
    nodes = await nodes_of(store, ex.run_id)
    assert nodes[("b", 0)]["output"] == "ab"
    assert all(n["state"] == "done" and n["attempts"] == 1 for n in nodes.values())


async def test_sequence_does_not_start_a_step_before_the_previous_one_finished(engine):
    eng, _ = engine
    peak = Peak()

    @workflow
    def seq(ctx):
        return Sequence(*[Task(f"s{i}", run=peak) for i in range(4)])

    status, _ = await run_workflow(eng, seq)
    assert status == "finished"
    assert (peak.peak, peak.done) == (1, 4)


@pytest.mark.parametrize("limit", [1, 3])
async def test_parallel_max_concurrency_bounds_steps_running_at_once(engine, limit):
    eng, store = engine
    peak = Peak()

    @workflow
    def fan(ctx):
        return Parallel(*[Task(f"p{i}", run=peak) for i in range(8)], max_concurrency=limit)

    status, ex = await run_workflow(eng, fan)
    assert status == "finished"
    assert peak.done == 8
    assert peak.peak == limit
    assert len(await nodes_of(store, ex.run_id)) == 8


async def test_parallel_without_limit_runs_up_to_the_engine_concurrency(engine):
    _, store = engine
    eng = Engine(store, max_concurrency=2)
    peak = Peak()

    @workflow
    def fan(ctx):
        return Parallel(*[Task(f"p{i}", run=peak) for i in range(6)])

    try:
        status, _ = await run_workflow(eng, fan)
    finally:
        await eng.close()
    assert status == "finished"
    assert (peak.peak, peak.done) == (2, 6)


async def test_run_max_concurrency_overrides_the_engine_default(engine):
    eng, _ = engine  # max_concurrency=4
    peak = Peak()

    @workflow
    def fan(ctx):
        return Parallel(*[Task(f"p{i}", run=peak) for i in range(6)])

    status, _ = await run_workflow(eng, fan, max_concurrency=3)
    assert status == "finished"
    assert (peak.peak, peak.done) == (3, 6)


async def test_parallel_limit_counts_a_sequence_child_as_one(engine):
    eng, _ = engine
    peak = Peak()

    @workflow
    def fan(ctx):
        return Parallel(*[Sequence(Task(f"a{i}", run=peak), Task(f"b{i}", run=peak)) for i in range(4)],
                        max_concurrency=2)

    status, _ = await run_workflow(eng, fan)
    assert status == "finished"
    assert (peak.peak, peak.done) == (2, 8)


# --- branch ------------------------------------------------------------------------------------
@pytest.mark.parametrize("flag, ran", [(True, "yes"), (False, "no")])
async def test_branch_runs_then_or_else(engine, flag, ran):
    eng, store = engine
    log: list = []

    @workflow
    def br(ctx):
        return Sequence(Task("flag", value=flag),
                        Branch(ctx.get("flag"), then=Task("yes", run=recorder(log)), else_=Task("no", run=recorder(log))))

    status, ex = await run_workflow(eng, br)
    assert status == "finished"
    assert log == [(ran, 0)]
    nodes = await nodes_of(store, ex.run_id)
    assert (ran, 0) in nodes and ({"yes", "no"} - {ran}).pop() not in {k[0] for k in nodes}


async def test_branch_without_else_is_done_when_false(engine):
    eng, _ = engine
    log: list = []

    @workflow
    def br(ctx):
        return Sequence(Branch(False, then=Task("never", run=recorder(log))), Task("after", run=recorder(log)))

    status, _ = await run_workflow(eng, br)
    assert status == "finished"
    assert log == [("after", 0)]


# --- loops -------------------------------------------------------------------------------------
async def test_loop_repeats_until_its_condition_holds(engine):
    eng, store = engine
    log: list = []

    async def count(ctx):
        log.append(ctx.iteration)
        return (ctx.latest("count") or 0) + 1

    @workflow
    def lp(ctx):
        return Sequence(Loop("l", Task("count", run=count), until=(ctx.latest("count") or 0) >= 3, max_iterations=10),
                        Task("after", run=recorder(log, "x")))

    status, ex = await run_workflow(eng, lp)
    assert status == "finished"
    assert log == [0, 1, 2, ("after", 0)]
    nodes = await nodes_of(store, ex.run_id)
    assert [nodes[("count", i)]["output"] for i in range(3)] == [1, 2, 3]
    finished = await events_of(store, ex.run_id, "loop_finished")
    assert [e.data.get("reason") for e in finished] == ["until"]


async def test_loop_until_may_be_a_callable_of_ctx(engine):
    eng, _ = engine
    log: list = []

    @workflow
    def lp(ctx):
        return Loop("l", Task("t", run=recorder(log, 1)), until=lambda c: len(c.iterations("t")) >= 2,
                    max_iterations=10)

    status, _ = await run_workflow(eng, lp)
    assert status == "finished"
    assert log == [("t", 0), ("t", 1)]


async def test_loop_body_runs_at_least_once_even_if_until_already_holds(engine):
    eng, _ = engine
    log: list = []

    @workflow
    def lp(ctx):
        return Loop("l", Task("t", run=recorder(log)), until=True, max_iterations=5)

    status, _ = await run_workflow(eng, lp)
    assert status == "finished"
    assert log == [("t", 0)]


async def test_loop_max_iterations_return_last_finishes_the_run(engine):
    eng, store = engine
    log: list = []

    @workflow
    def lp(ctx):
        return Sequence(Loop("l", Task("t", run=recorder(log)), until=False, max_iterations=3),
                        Task("after", run=recorder(log)))

    status, ex = await run_workflow(eng, lp)
    assert status == "finished"
    assert log == [("t", 0), ("t", 1), ("t", 2), ("after", 0)]
    finished = await events_of(store, ex.run_id, "loop_finished")
    assert [(e.data["iterations"], e.data["reason"]) for e in finished] == [(3, "max_iterations")]


async def test_loop_max_iterations_fail_fails_the_run_and_stops_there(engine):
    eng, store = engine
    log: list = []

    @workflow
    def lp(ctx):
        return Sequence(Loop("l", Task("t", run=recorder(log)), until=False, max_iterations=2, on_max="fail"),
                        Task("after", run=recorder(log)))

    status, ex = await run_workflow(eng, lp)
    assert status == "failed"
    assert log == [("t", 0), ("t", 1)]
    rep = await report(store, ex.run_id)
    assert "never held" in rep["error"] and "'l'" in rep["error"]
    assert {n["id"]: n["state"] for n in rep["nodes"]}["l"] == "failed"


async def test_nested_loops_give_every_inner_step_a_distinct_iteration(engine):
    eng, store = engine
    log: list = []

    @workflow
    def lp(ctx):
        return Loop("outer",
                    Task("a", run=recorder(log)),
                    Loop("inner", Task("b", run=recorder(log)), until=False, max_iterations=2),
                    until=False, max_iterations=3)

    status, ex = await run_workflow(eng, lp)
    assert status == "finished"
    a_its = [it for nid, it in log if nid == "a"]
    b_its = [it for nid, it in log if nid == "b"]
    assert a_its == [0, 1, 2]
    assert len(b_its) == 6 and len(set(b_its)) == 6 and b_its == sorted(b_its)
    nodes = await nodes_of(store, ex.run_id)
    assert {it for (nid, it) in nodes if nid == "b"} == set(b_its)
    # each inner round ran inside its own outer round: a#k before the two b's of round k
    order = [nid for nid, _ in log]
    assert order == ["a", "b", "b"] * 3


async def test_steps_in_a_loop_see_the_iteration_and_earlier_rounds(engine):
    eng, store = engine

    async def step(ctx):
        prev = ctx.get("t", ctx.iteration - 1) if ctx.iteration else None
        return {"it": ctx.iteration, "prev": prev["it"] if prev else None, "seen": ctx.iterations("t")}

    @workflow
    def lp(ctx):
        return Loop("l", Task("t", run=step), max_iterations=3)

    status, ex = await run_workflow(eng, lp)
    assert status == "finished"
    nodes = await nodes_of(store, ex.run_id)
    assert [nodes[("t", i)]["output"] for i in range(3)] == [
        {"it": 0, "prev": None, "seen": []}, {"it": 1, "prev": 0, "seen": [0]}, {"it": 2, "prev": 1, "seen": [0, 1]}]


# --- skip_if, static values, output models -----------------------------------------------------
async def test_skip_if_skips_without_running(engine):
    eng, store = engine
    log: list = []

    @workflow
    def sk(ctx):
        return Sequence(Task("s", run=recorder(log), skip_if=True), Task("t", run=recorder(log)))

    status, ex = await run_workflow(eng, sk)
    assert status == "finished"
    assert log == [("t", 0)]
    nodes = await nodes_of(store, ex.run_id)
    assert nodes[("s", 0)]["state"] == "skipped" and nodes[("s", 0)]["output"] is None
    assert [e.node_id for e in await events_of(store, ex.run_id, "node_skipped")] == ["s"]


async def test_static_value_is_an_output_without_running_anything(engine):
    eng, store = engine
    seen: list = []

    async def reader(ctx):
        seen.append(ctx.output("v"))
        return None

    @workflow
    def st(ctx):
        return Sequence(Task("v", value={"k": [1, 2]}), Task("r", run=reader))

    status, ex = await run_workflow(eng, st)
    assert status == "finished"
    assert seen == [{"k": [1, 2]}]
    nodes = await nodes_of(store, ex.run_id)
    assert nodes[("v", 0)]["output"] == {"k": [1, 2]} and nodes[("v", 0)]["state"] == "done"
    assert nodes[("v", 0)]["attempts"] == 0


async def test_outputs_read_back_as_their_model(engine):
    eng, store = engine
    seen: dict = {}

    async def make(ctx):
        return {"x": 1, "y": "2"}  # a dict, coerced by the model

    def make_sync(ctx):
        return Point(x=ctx.iteration, y=10)

    async def reader(ctx):
        seen["output"] = ctx.output("p")
        seen["latest"] = ctx.latest("q")
        seen["iterations"] = ctx.iterations("q")
        seen["first"] = ctx.get("q", 0)
        seen["missing"] = ctx.get("nothing")
        seen["missing_it"] = ctx.get("p", 7)
        try:
            ctx.output("nothing")
        except OutputMissing as e:
            seen["error"] = str(e)
        try:
            ctx.output("p", 3)
        except OutputMissing as e:
            seen["error_it"] = str(e)
        return "ok"

    @workflow
    def models(ctx):
        return Sequence(Task("p", run=make, output=Point),
                        Loop("l", Task("q", run=make_sync, output=Point), max_iterations=2),
                        Task("r", run=reader))

    status, ex = await run_workflow(eng, models)
    assert status == "finished", (await report(store, ex.run_id))["error"]
    assert seen["output"] == Point(x=1, y=2) and isinstance(seen["output"], Point)
    assert isinstance(seen["latest"], Point) and seen["latest"].x == 1
    assert seen["iterations"] == [0, 1]
    assert seen["first"] == Point(x=0, y=10)
    assert seen["missing"] is None and seen["missing_it"] is None
    assert "nothing" in seen["error"] and "ctx.get" in seen["error"]
    assert "'p'" in seen["error_it"] and "3" in seen["error_it"]
    nodes = await nodes_of(store, ex.run_id)
    assert nodes[("p", 0)]["output"] == {"x": 1, "y": 2}  # stored as JSON


async def test_outputs_read_in_the_workflow_body_are_model_instances(engine):
    eng, _ = engine
    seen: list = []

    @workflow
    def body(ctx):
        p = ctx.get("p")
        if p is not None:
            seen.append(p)
        return Sequence(Task("p", value={"x": 3, "y": 4}, output=Point),
                        Task("after", value=p.x if p is not None else 0))

    status, _ = await run_workflow(eng, body)
    assert status == "finished"
    assert seen and all(isinstance(p, Point) and p.x == 3 for p in seen)


async def test_output_that_does_not_fit_its_model_fails_the_step(engine):
    eng, store = engine

    async def bad(ctx):
        return {"x": "not a number"}

    @workflow
    def wf(ctx):
        return Task("p", run=bad, output=Point, retries=0)

    status, ex = await run_workflow(eng, wf)
    assert status == "failed"
    node = (await nodes_of(store, ex.run_id))[("p", 0)]
    assert node["state"] == "failed" and node["output"] is None
    assert "Point" in node["error"]


async def test_static_value_that_does_not_fit_its_model_fails_the_run(engine):
    eng, store = engine

    @workflow
    def wf(ctx):
        return Task("p", value={"x": 1}, output=Point)

    status, ex = await run_workflow(eng, wf)
    assert status == "failed"
    rep = await report(store, ex.run_id)
    assert "Point" in rep["error"] and "y" in rep["error"]


async def test_output_that_is_not_json_fails_the_step(engine):
    eng, store = engine

    async def bad(ctx):
        return object()

    @workflow
    def wf(ctx):
        return Task("o", run=bad, retries=0)

    status, ex = await run_workflow(eng, wf)
    assert status == "failed"
    assert "JSON" in (await nodes_of(store, ex.run_id))[("o", 0)]["error"]


# --- broken workflow bodies --------------------------------------------------------------------
async def test_duplicate_ids_fail_the_run_naming_both_places(engine):
    eng, store = engine

    @workflow
    def dup(ctx):
        return Sequence(
            Task("same", value=1),  # @dup-first
            Task("same", value=2),  # @dup-second
        )

    status, ex = await run_workflow(eng, dup)
    assert status == "failed"
    err = (await report(store, ex.run_id))["error"]
    assert "duplicate" in err and "'same'" in err
    assert f"{__file__}:{line_of(__file__, '# @dup-first')}" in err
    assert f"{__file__}:{line_of(__file__, '# @dup-second')}" in err
    assert "\n" not in err


async def test_duplicate_ids_that_appear_later_fail_the_run_without_running_more(engine):
    eng, store = engine
    log: list = []

    @workflow
    def dup(ctx):
        later = [Task("x", run=recorder(log)), Task("x", run=recorder(log))] if ctx.get("first") else []
        return Sequence(Task("first", run=recorder(log)), *later)

    status, ex = await run_workflow(eng, dup)
    assert status == "failed"
    assert log == [("first", 0)]
    assert "duplicate" in (await report(store, ex.run_id))["error"]


async def test_a_workflow_body_that_raises_fails_the_run_naming_its_line(engine):
    eng, store = engine

    @workflow
    def broken(ctx):
        if ctx.get("a") is not None:
            raise ValueError("the body broke")  # @body-raise
        return Task("a", value=1)

    status, ex = await run_workflow(eng, broken)
    assert status == "failed"
    err = (await report(store, ex.run_id))["error"]
    assert "the body broke" in err and "ValueError" in err
    assert f"{__file__}:{line_of(__file__, '# @body-raise')}" in err


async def test_a_workflow_body_reading_a_missing_output_gets_a_clear_error(engine):
    eng, store = engine

    @workflow
    def broken(ctx):
        ctx.output("not-there")  # @missing-output
        return Task("a", value=1)

    status, ex = await run_workflow(eng, broken)
    assert status == "failed"
    err = (await report(store, ex.run_id))["error"]
    assert "not-there" in err and "ctx.get" in err
    assert f"{__file__}:{line_of(__file__, '# @missing-output')}" in err


async def test_a_workflow_body_returning_no_step_fails_the_run(engine):
    eng, store = engine

    @workflow
    def nothing(ctx):
        return None

    status, ex = await run_workflow(eng, nothing)
    assert status == "failed"
    assert "not a step" in (await report(store, ex.run_id))["error"]


def test_node_constructors_refuse_bad_arguments():
    with pytest.raises(TypeError):
        Task("a")
    with pytest.raises(TypeError):
        Task("a", run=lambda c: 1, value=2)
    with pytest.raises(TypeError):
        Task("a#1", value=1)
    with pytest.raises(TypeError):
        Loop("l", Task("a", value=1), max_iterations=0)
    with pytest.raises(TypeError):
        Parallel(Task("a", value=1), max_concurrency=0)
    with pytest.raises(TypeError):
        Sequence("not a step")

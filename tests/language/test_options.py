"""Task options through the real Engine: the cache (reused across runs by node id, key and version;
recorded as a hit; a bumped version, an expired ttl or a changed model runs the step), retry
policies (fixed, linear, exponential with a maximum delay and jitter; bounded), and budgets on a
task, a subtree and a run, spent by a real litellm agent against the fake model server."""

from __future__ import annotations

from collections import Counter

import pytest
from pydantic import BaseModel

from engine import Budget, Cache, Parallel, Retry, Sequence, Subflow, Task, workflow
from engine.runtime import Engine
from tests.fakes.openai_server import FakeLLMServer, Reply
from tests.support import events_of, nodes_of, report, run_workflow

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")  # litellm's own pydantic use

calls: Counter = Counter()


class Summary(BaseModel):
    text: str


def summarize(ctx):
    calls[ctx.input["url"]] += 1
    return {"text": f"summary of {ctx.input['url']}"}


def cached_wf(version: str = "1", ttl: float | None = None):
    @workflow(name=f"cached-{version}-{ttl}")
    def wf(ctx):
        return Task("sum", run=summarize, output=Summary,
                    cache=Cache(key=f"sum:{ctx.input['url']}", version=version, ttl=ttl))

    return wf


async def test_a_cached_output_is_reused_across_runs_and_recorded_as_a_hit(engine):
    eng, store = engine
    wf = cached_wf()
    _, first = await run_workflow(eng, wf, {"url": "a"})
    _, second = await run_workflow(eng, wf, {"url": "a"})
    _, other = await run_workflow(eng, wf, {"url": "b"})
    assert calls["a"] == 1 and calls["b"] == 1
    n2 = (await nodes_of(store, second.run_id))[("sum", 0)]
    assert n2["output"] == {"text": "summary of a"} and n2["cache"] == "hit"
    assert "cache" not in (await nodes_of(store, first.run_id))[("sum", 0)]
    (attempt,) = await store.attempts(second.run_id)
    assert attempt.extra == {"cache": "hit", "cache_key": "sum:a", "cached_from": f"{first.run_id}:sum"}
    (hit,) = await events_of(store, second.run_id, "cache_hit")
    assert hit.data["from"] == f"{first.run_id}:sum"
    _, bumped = await run_workflow(eng, cached_wf(version="2"), {"url": "a"})
    assert calls["a"] == 2  # a new version runs the step again
    assert "cache" not in (await nodes_of(store, bumped.run_id))[("sum", 0)]


async def test_an_expired_or_unfitting_cache_entry_runs_the_step(engine):
    eng, store = engine
    await run_workflow(eng, cached_wf(version="t", ttl=60), {"url": "c"})
    await run_workflow(eng, cached_wf(version="t", ttl=1e-9), {"url": "c"})  # older than its ttl
    assert calls["c"] == 2

    class Other(BaseModel):
        words: int

    @workflow
    def changed(ctx):
        return Task("sum", run=lambda c: {"words": 2}, output=Other, cache=Cache(key="sum:c", version="t"))

    _, ex = await run_workflow(eng, changed, {"url": "c"})
    assert (await nodes_of(store, ex.run_id))[("sum", 0)]["output"] == {"words": 2}


# --- retries --------------------------------------------------------------------------------------
failures: Counter = Counter()


def flaky(times: int):
    def fn(ctx):
        failures[(ctx.run_id, ctx.node_id)] += 1
        if ctx.attempt <= times:
            raise RuntimeError(f"attempt {ctx.attempt}")
        return ctx.attempt

    return fn


@workflow
def retrying(ctx):
    return Parallel(
        Task("fixed", run=flaky(3), retry=Retry.fixed(0.01, retries=3)),
        Task("linear", run=flaky(3), retry=Retry.linear(0.01, retries=3)),
        Task("expo", run=flaky(4), retry=Retry.exponential(0.01, factor=3, retries=4, max_delay=0.2)),
        Task("jitter", run=flaky(3), retry=Retry.exponential(0.02, retries=3, jitter=0.5)),
        Task("default", run=flaky(5)),  # bounded by default: 2 retries
        Task("none", run=flaky(1), retry=Retry.none(), continue_on_fail=True),
    )


async def test_retry_policies_delay_as_configured_and_stay_bounded(engine):
    eng, store = engine
    status, ex = await run_workflow(eng, retrying)
    assert status == "failed"  # "default" gave up after 3 attempts
    delays: dict[str, list[float]] = {}
    for ev in await events_of(store, ex.run_id, "node_retrying"):
        delays.setdefault(ev.node_id, []).append(ev.data["delay"])
    assert delays["fixed"] == [0.01, 0.01, 0.01]
    assert delays["linear"] == [0.01, 0.02, 0.03]
    assert delays["expo"] == [0.01, 0.03, 0.09, 0.2]  # 0.27 capped at max_delay
    assert all(0.5 * base <= d <= 1.5 * base for d, base in zip(delays["jitter"], [0.02, 0.04, 0.08]))
    assert len(delays["default"]) == 2 and "none" not in delays
    nodes = await nodes_of(store, ex.run_id)
    assert (nodes[("expo", 0)]["output"], nodes[("default", 0)]["state"], nodes[("default", 0)]["attempts"]) == (
        5, "failed", 3)
    assert failures[(ex.run_id, "none")] == 1 and nodes[("none", 0)]["state"] == "failed"


# --- budgets --------------------------------------------------------------------------------------
@pytest.fixture
def llm():
    with FakeLLMServer() as server:
        server.route = lambda req: Reply.say("ok")  # 11 tokens in, 7 out: 18 a call
        yield server


def model(server):
    from engine.agents import LLMAgent

    return LLMAgent("openai/fake-model", api_base=server.openai_base, api_key="sk-fake", retry_backoff=0.001,
                    timeout=10)


def budgeted(server):
    agent = model(server)

    @workflow(budget=Budget(tokens=200))
    def wf(ctx):
        return Sequence(
            Task("solo", agent=agent, prompt="one", budget=Budget(tokens=10)),
            Sequence(*[Task(f"s{i}", agent=agent, prompt=f"step {i}", continue_on_fail=True) for i in range(4)],
                     id="scope", budget=Budget(tokens=40)),
            Task("free", run=lambda c: "compute steps cost nothing"),
        )

    return wf


async def test_budgets_on_a_task_a_subtree_and_a_run(engine, llm):
    eng, store = engine
    status, ex = await run_workflow(eng, budgeted(llm))
    assert status == "finished"
    nodes = await nodes_of(store, ex.run_id)
    assert nodes[("solo", 0)]["state"] == "done" and nodes[("solo", 0)]["usage"]["tokens_in"] == 11
    # the scope: 18 + 18 = 36 < 40, then 54 >= 40 after the third: the fourth does not start
    assert [nodes[(f"s{i}", 0)]["state"] for i in range(4)] == ["done", "done", "done", "failed"]
    assert nodes[("s3", 0)]["error"] == "the budget of 'scope' is spent (54 of 40 tokens spent): the step did not start"
    assert nodes[("s3", 0)]["attempts"] == 0 and nodes[("free", 0)]["state"] == "done"
    rep = await report(store, ex.run_id)
    budgets = {b["scope"]: b for b in rep["budgets"]}
    assert (budgets["<run>"]["tokens"], budgets["<run>"]["spent_tokens"]) == (200, 72)
    assert (budgets["scope"]["tokens"], budgets["scope"]["spent_tokens"]) == (40, 54)
    assert budgets["solo"]["spent_tokens"] == 18
    (ev,) = await events_of(store, ex.run_id, "budget_exceeded")
    assert ev.node_id == "s3" and ev.data["scope"] == "scope"


def run_budget_wf(server):
    agent = model(server)

    @workflow
    def wf(ctx):
        return Sequence(*[Task(f"a{i}", agent=agent, prompt=f"go {i}") for i in range(3)])

    return wf


async def test_a_run_budget_given_at_start_fails_the_step_that_would_exceed_it_with_one_line(engine, llm):
    eng, store = engine
    wf = run_budget_wf(llm)
    ex = await eng.start(wf, f"module:{__name__}:x", None, budget=Budget(tokens=30))
    assert await ex.execute() == "failed"
    run = await store.get_run(ex.run_id)
    assert run.error == "step 'a2' failed: the run's budget is spent (36 of 30 tokens spent): the step did not start"
    assert "\n" not in run.error


@workflow(budget=Budget(tokens=1000))
def spending_child(ctx):
    return Sequence(*[Task(f"c{i}", agent=ctx.input["agent"], prompt=f"child {i}") for i in range(3)])


async def test_a_subflow_gets_what_is_left_of_the_budgets_around_it(engine, llm, monkeypatch):
    eng, store = engine
    agent_name = "fake"
    from engine.config import Settings

    monkeypatch.setenv("FAKE_LLM_KEY", "sk-fake")
    settings = Settings.model_validate({"agents": {agent_name: {"model": "openai/fake-model",
                                                                "api_base": llm.openai_base,
                                                                "api_key_env": "FAKE_LLM_KEY"}}})

    @workflow
    def outer(ctx):
        return Sequence(Task("first", agent=agent_name, prompt="first"),
                        Subflow("sub", spending_child, input={"agent": agent_name}),
                        id="outer", budget=Budget(tokens=48))

    eng2 = Engine(store, settings=settings)
    try:
        status, ex = await run_workflow(eng2, outer)
    finally:
        await eng2.close()
    assert status == "failed"
    kid = await store.get_run(f"{ex.run_id}.sub")
    assert kid.meta["budget"] == {"tokens": 30, "usd": None}  # 48 - 18: tighter than its own 1,000
    assert kid.error == "step 'c2' failed: the run's budget is spent (36 of 30 tokens spent): the step did not start"
    assert (await store.get_run(ex.run_id)).error.startswith("step 'sub' failed: sub-workflow run")

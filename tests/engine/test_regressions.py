"""Regressions: each test exposed a bug found while writing the engine tests (now fixed); the
docstrings say where it was and what the fix was."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections import Counter

import pytest
from pydantic import BaseModel

from engine import Loop, Parallel, Sequence, Task, workflow
from engine.errors import SchemaTooNew
from engine.store import Store
from engine.store.schema import SCHEMA_VERSION
from tests.support import blocks_once, interrupt_when, line_of, nodes_of, report, run_workflow, target_of

CALLS: Counter = Counter()
FLAKY = {"fail": True}
GATE: dict = {}


@pytest.fixture(autouse=True)
def fresh_state():
    CALLS.clear()
    FLAKY["fail"] = True
    GATE.clear()


class Point(BaseModel):
    x: int
    y: int


async def plain_step(ctx):
    CALLS[ctx.node_id] += 1
    return ctx.node_id


async def flaky_step(ctx):
    CALLS[ctx.node_id] += 1
    if FLAKY["fail"]:
        raise RuntimeError("not yet")
    return "fixed"


@workflow(name="resumable")
def resumable(ctx):
    return Sequence(
        Task("a", run=plain_step),
        Parallel(Task("b", run=plain_step), Task("c", run=flaky_step, retries=0)),
        Task("d", run=plain_step),
    )


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
    path = tmp_path / "newer.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE future (x)")
    conn.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    conn.commit()
    conn.close()
    before = path.read_bytes()
    with pytest.raises(SchemaTooNew):
        await Store.open(path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["newer.db"]


async def gated_step(ctx):
    CALLS[ctx.node_id] += 1
    GATE["started"].set()
    if ctx.attempt == 1:
        await asyncio.sleep(30)
    return f"attempt {ctx.attempt}"


@workflow(name="interrupted")
def interrupted(ctx):
    return Task("g", run=gated_step)


async def test_an_attempt_in_flight_at_a_crash_is_recorded_as_interrupted(engine):
    """engine/run.py:73-76 RunExecutor.recover: the node goes back to pending with error
    "interrupted", but its attempt row is left with outcome NULL and finished_at NULL forever
    (DESIGN: "attempts that were running are marked interrupted"). Fix: in recover, for each
    RUNNING task add an attempts row update (same key, attempt=rec.attempts) with
    outcome="interrupted", finished_at=now."""
    eng, store = engine
    GATE["started"] = asyncio.Event()
    ex = await eng.start(interrupted, target_of(interrupted))
    await interrupt_when(ex, GATE["started"])
    ex2 = await eng.resume(ex.run_id)
    assert await asyncio.wait_for(ex2.execute(), 10) == "finished"
    attempts = sorted(await store.attempts(ex.run_id), key=lambda a: a.attempt)
    assert [(a.attempt, a.outcome) for a in attempts] == [(1, "interrupted"), (2, "done")]
    assert attempts[0].finished_at is not None


# --- CLI ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("args", [["run", "hello", "--bogus"], ["ps", "--status", "bogus"], ["no-such-command"]])
def test_a_bad_flag_is_one_line_and_exit_4(smithers, db_path, args):
    """smithers_tui/cli.py:27 build_parser: argparse reports a bad flag / choice / command with exit
    code 2 (which the contract reserves for "cancelled") and two lines (usage + error). DESIGN:
    "4 bad input (unknown workflow or run, invalid input, bad flag)", one line. Fix: an
    ArgumentParser subclass whose error(message) prints `smithers: {message} (see smithers
    {cmd} --help)` on one line and exits 4 (pass it as parser_class to add_subparsers too)."""
    done = smithers(*args)
    assert done.returncode == 4, (done.returncode, done.stderr)
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert not db_path.exists()


@pytest.mark.parametrize("value", ["0", "-1"])
def test_max_concurrency_below_1_is_refused(smithers, db_path, value):
    """smithers_tui/cli.py:45 and :250 cmd_run: `--max-concurrency 0` silently becomes 4 (`args.max_concurrency
    or 4`), and `--max-concurrency -1` is stored as the run's limit, so RunExecutor._loop computes
    room = -1 - 0 < 0, never starts a step and waits forever (the process hangs). Fix: refuse
    values < 1 as bad input (exit 4) in the CLI, and raise BadInput in Engine.start /
    Engine.__init__ for max_concurrency < 1."""
    done = smithers("run", "hello", "--max-concurrency", value, timeout=8)
    assert done.returncode == 4, (done.returncode, done.stderr)
    assert "concurrency" in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert not db_path.exists()


def test_cli_leaves_a_newer_database_byte_identical(smithers, tmp_path):
    """Same root cause as test_a_database_from_a_newer_schema_is_not_modified (Store.open sets WAL
    before reading user_version), seen through `smithers run`: the contract says bad input writes
    nothing, but the file header is rewritten and -wal/-shm files appear."""
    newer = tmp_path / "newer.db"
    conn = sqlite3.connect(newer)
    conn.execute("CREATE TABLE future (x)")
    conn.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    conn.commit()
    conn.close()
    before = newer.read_bytes()
    done = smithers("run", "hello", db=newer)
    assert done.returncode == 4
    assert newer.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["newer.db"]




def test_an_owner_displaced_by_force_stops_with_one_line_and_writes_nothing(smithers, write_workflow, tmp_path):
    """engine/run.py RunExecutor.commit + engine/store/sqlite.py:200 commit_ops: commits are not fenced by the lease (`UPDATE runs SET
    ... WHERE id=?` without `AND owner_id=?`). After `resume --force`, the old owner's next commit
    only fails by accident, on the frames primary key (sqlite3.IntegrityError: UNIQUE constraint
    failed: frames.run_id, frames.frame), and the old process dies with a raw traceback and exit 1.
    If the old owner commits between the new owner's lease update and its first frame, the old
    owner's frame wins and the new owner is the one that crashes, with stale state. Fix: add
    `AND owner_id=?` to the runs UPDATE in commit_ops, check its rowcount in commit (rollback
    when 0) and stop the executor with a one-line LeaseLost error ("run X was taken over by pid
    N; this process stops") and exit 4, without publishing anything."""
    import signal as _signal
    import time as _time

    path = write_workflow("blocks.py", blocks_once(2))
    old = smithers.spawn("run", path, "--run-id", "fence", "--quiet")
    try:
        deadline = _time.monotonic() + 20
        while not (tmp_path / "blocked-once").exists() and old.poll() is None and _time.monotonic() < deadline:
            _time.sleep(0.02)
        assert old.poll() is None
        done = smithers("resume", "fence", "--force", "--quiet")
        assert done.returncode == 0, done.stderr
        frames_after_takeover = smithers.json("frames", "fence")
        _, err = old.communicate(timeout=20)
    finally:
        if old.poll() is None:
            old.send_signal(_signal.SIGKILL)
            old.communicate()
    assert smithers.json("frames", "fence") == frames_after_takeover
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1 and "taken over" in err, err
